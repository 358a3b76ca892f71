"""The whole NumPy model against the torch training model: logits at every position, top-1,
a 200-token greedy continuation decoded with the KV cache, and float64 agreement."""

import numpy as np
import pytest

from formats.spec import ModelArgs
from reference.model import Llama
from tests.support.models import torch_logits, torch_model
from tests.support.weights import wide_logit_weights

# float32 logits, max |Δ| over every position and vocab entry. Measured 1.8e-5 on the seed
# config (logits up to |11|, 6 layers, each matmul summing up to 768 products in a BLAS-specific
# order) and 0.7-1.1e-5 on the small configs; KV-cached decode 1.4e-5 and below. 5e-5 leaves
# 2.5x for other CPUs' kernels and is tighter than the 1e-4 the issue asks for.
LOGITS_ATOL = 5e-5
# float64 logits: measured max 8.7e-14 (seed config; 2.2e-14 gqa, 1.5e-14 mqa_untied), the
# rounding of two float64 BLAS summation orders. 2e-13 leaves 2.3x. A float32 constant leaking
# into the float64 path (eps as np.float32 in rmsnorm) moves them by 9e-11 to 4e-10: the earlier
# bound of 1e-10 let mqa_untied through.
FLOAT64_LOGITS_ATOL = 2e-13
# Top-1 is only decided by the maths, not by rounding, where the best logit beats the runner-up
# by more than the two models can disagree: the tests check that margin first (on float64
# logits) so a failure there means "choose another weight seed", not a parity bug.
TOP1_MARGIN = 2 * LOGITS_ATOL
PROMPT_LEN = 16
N_GREEDY = 200

CONFIGS = {
    # llama2.c's stories15M shape: dim 288, 6 layers, 6 heads, vocab 32000, seq 256, tied output.
    "seed": ModelArgs(),
    "gqa": ModelArgs(dim=128, n_layers=3, n_heads=8, n_kv_heads=2, vocab_size=512),
    "mqa_untied": ModelArgs(dim=96, n_layers=2, n_heads=6, n_kv_heads=1, vocab_size=300,
                            tie_embeddings=False),
    "odd_vocab": ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=1013),
    "hidden_dim_100": ModelArgs(dim=64, n_layers=2, n_heads=2, vocab_size=257, hidden_dim=100),
}
WEIGHT_SEED = 0


@pytest.fixture(params=list(CONFIGS), scope="module")
def pair(request):
    """(args, weights, torch model) for one config."""
    args = CONFIGS[request.param]
    weights = wide_logit_weights(args, WEIGHT_SEED)
    return args, weights, torch_model(args, weights)


def random_tokens(args, n, seed):
    return np.random.default_rng(seed).integers(0, args.vocab_size, n)


def assert_top1_margin(logits, where):
    """Fail (pointing at the seed, not the model) where the top-1 logit is within TOP1_MARGIN."""
    top2 = np.sort(logits, axis=-1)[..., -2:]
    gaps = top2[..., 1] - top2[..., 0]
    assert gaps.min() > TOP1_MARGIN, (
        f"{where}: top-1 beats top-2 by only {gaps.min():.2g} at position {gaps.argmin()}; "
        "pick another WEIGHT_SEED so that top-1 is not decided by rounding")


def test_logits_at_every_position_match_torch(pair):
    args, weights, model = pair
    tokens = random_tokens(args, args.max_seq_len, seed=1)
    expected = torch_logits(model, tokens)                                   # (T, V)
    ours = Llama(args, weights).forward(tokens, all_logits=True)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    error = np.abs(ours - expected).max()
    assert error <= LOGITS_ATOL, f"max |Δlogits| {error:.3g} > {LOGITS_ATOL}"
    # The logits are informative: spread out, so top-1 is a real check.
    assert expected.std() > 1.0, f"logits nearly flat (std {expected.std():.3g}): raise the init std"
    assert_top1_margin(Llama(args, weights, np.float64).forward(tokens, all_logits=True), "prompt")
    np.testing.assert_array_equal(ours.argmax(-1), expected.argmax(-1))


def test_last_position_logits_are_the_last_row_of_all_logits(pair):
    """The default (last position only, the output matmul on one row) against all positions."""
    args, weights, _ = pair
    tokens = random_tokens(args, 40, seed=2)
    model = Llama(args, weights)
    last = model.forward(tokens)
    every = model.forward(tokens, all_logits=True)
    assert last.shape == (args.vocab_size,)
    np.testing.assert_allclose(last, every[-1], rtol=0, atol=LOGITS_ATOL)


def greedy(model, prompt, n_new):
    """Prefill the prompt, then decode n_new tokens one at a time against the KV cache, taking
    the argmax (lowest id on ties). Returns (new ids, the (n_new, V) logits that chose them)."""
    logits = model.forward(prompt)
    ids, chosen_from = [], []
    for pos in range(len(prompt), len(prompt) + n_new):
        ids.append(int(np.argmax(logits)))
        chosen_from.append(logits)
        logits = model.forward([ids[-1]], start_pos=pos)
    return np.array(ids), np.stack(chosen_from)


def test_greedy_continuation_matches_torch(pair):
    """200 greedy tokens from the NumPy model (prefill + KV-cached decode) are what torch picks.

    Torch, greedy by full recompute, would produce exactly the same ids if and only if on the
    whole sequence prompt + ids its argmax at each position p >= PROMPT_LEN-1 is ids[p+1-
    PROMPT_LEN]: a causal model's logits at p depend only on tokens <= p (checked in
    test_reference_props). So one torch forward checks all 200 steps.
    """
    args, weights, model = pair
    prompt = random_tokens(args, PROMPT_LEN, seed=3)
    ids, decoded_logits = greedy(Llama(args, weights), prompt, N_GREEDY)
    sequence = np.concatenate([prompt, ids])
    expected = torch_logits(model, sequence)[PROMPT_LEN - 1:-1]              # (N_GREEDY, V)
    error = np.abs(decoded_logits - expected).max()
    assert error <= LOGITS_ATOL, f"decode max |Δlogits| {error:.3g} > {LOGITS_ATOL}"
    full64 = Llama(args, weights, np.float64).forward(sequence, all_logits=True)
    assert_top1_margin(full64[PROMPT_LEN - 1:-1], "greedy continuation")
    np.testing.assert_array_equal(expected.argmax(-1), ids)


@pytest.mark.parametrize("name", ["seed", "gqa", "mqa_untied"])
def test_float64_logits_match_torch_float64(name):
    args = CONFIGS[name]
    weights = wide_logit_weights(args, WEIGHT_SEED)
    tokens = random_tokens(args, args.max_seq_len, seed=4)
    expected = torch_logits(torch_model(args, weights, dtype="float64"), tokens)
    ours = Llama(args, weights, dtype=np.float64).forward(tokens, all_logits=True)
    assert ours.dtype == np.float64 and expected.dtype == np.float64
    error = np.abs(ours - expected).max()
    assert error <= FLOAT64_LOGITS_ATOL, f"float64 max |Δlogits| {error:.3g}"
