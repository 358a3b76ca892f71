"""The activation cache (run_with_cache) and its readings (reference/study.py).

Three oracles: an independent float64 forward pass written in this file as loops over positions
and heads (nothing from reference/ or trainer/); the torch training model's own cache; and
hand-made attention patterns whose summaries can be checked on paper.
"""

import doctest
import math

import numpy as np
import pytest
import torch

import reference.cache
import reference.study
from formats.spec import ModelArgs
from reference.attention import softmax
from reference.model import Llama
from reference.study import (Patching, ablate_heads, agreement, compare_caches, head_summary, logit_attribution,
                             logit_difference, logit_lens, patch_activations, top_tokens)
from tests.support.compare import relative_error
from tests.support.models import torch_model
from tests.support.study import spec_points
from tests.support.weights import wide_logit_weights


# Small enough for the loop oracle; GQA (2 query heads per kv head), untied output, 2 blocks.
ARGS = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, hidden_dim=48, max_seq_len=16,
                 tie_embeddings=False)
TOKENS = [1, 7, 39, 7, 0, 22, 13, 5, 30]

# float64 reference vs the float64 loops: the same real numbers summed in other orders (BLAS
# blocks vs Python's left-to-right sum), each rounding ~1e-16 relative; through 2 blocks the
# worst point differs by a few ulps of its largest value. Measured max 1.8e-15 (relative to the
# point's max |x|, 6 seeds); 1e-13 leaves a 50x margin and is far inside the 1e-10 asked for.
FLOAT64_RTOL = 1e-13
# float32 reference vs the float64 loops: float32 rounding (eps 6e-8) of sums of up to F = 48
# terms, compounded over 2 blocks. Measured max 5.2e-7 relative to the point's max |x| (6 seeds);
# 4e-6 leaves ~8x for other CPUs' BLAS kernels.
FLOAT32_RTOL = 4e-6
# torch float32 vs NumPy float32, point by point: the same float32 operations but other summation
# orders (BLAS kernels, torch's vectorized reductions) and exp implementations, so after the first
# matmul only some values keep equal bits (tests/test_layers.py has the per-layer analysis).
# Measured max 1.2e-6 relative to the point's max |x| on these models (2.9e-6 on a 6-block dim-288
# one, 3 seeds each); 1e-5 leaves a margin for other BLAS kernels and deeper models.
TORCH_FLOAT32_RTOL = 1e-5
# torch float64 vs NumPy float64: the same orders-of-summation argument at eps 1.1e-16. Measured
# max 2.4e-15 relative (7.0e-15 on the dim-288 model); 1e-13 as above.
TORCH_FLOAT64_RTOL = 1e-13
# Points whose float32 values are bit-identical between torch and NumPy on any input: the
# embedding lookup copies the weights (so resid_pre of block 0 too). Everything after sums
# products in an implementation-specific order.
BIT_IDENTICAL_POINTS = ("embed", "blocks.0.resid_pre")


def loop_forward(args, weights, tokens):
    """Every SPEC point of Llama 2's forward pass in float64, written as loops over positions,
    heads and RoPE pairs with the math module: an oracle that shares no code with reference/."""
    w = {name: np.asarray(array, np.float64) for name, array in weights.items()}
    n_tokens, hd, group = len(tokens), args.head_dim, args.n_heads // args.n_kv_heads
    cache = {}

    def rmsnorm(x, gain):
        return np.array([row / math.sqrt(sum(v * v for v in row) / len(row) + args.norm_eps) * gain for row in x])

    def heads(x, n):                                    # (T, n*hd) -> (n, T, hd)
        return np.array([[x[t, h * hd:(h + 1) * hd] for t in range(n_tokens)] for h in range(n)])

    def rope(x):                                        # rotate pair (2j, 2j+1) of position t by t * theta^(-2j/hd)
        out = x.copy()
        for h, t, j in np.ndindex(x.shape[0], n_tokens, hd // 2):
            angle = t * args.rope_theta ** (-2 * j / hd)
            a, b = x[h, t, 2 * j], x[h, t, 2 * j + 1]
            out[h, t, 2 * j], out[h, t, 2 * j + 1] = (a * math.cos(angle) - b * math.sin(angle),
                                                      a * math.sin(angle) + b * math.cos(angle))
        return out

    h = cache["embed"] = np.array([w["tok_embeddings.weight"][t] for t in tokens])
    for i in range(args.n_layers):
        p, lw = f"blocks.{i}.", lambda kind: w[f"layers.{i}.{kind}.weight"]  # noqa: E731
        cache[p + "resid_pre"] = h
        x = cache[p + "attn_norm"] = rmsnorm(h, lw("attention_norm"))
        q = cache[p + "attn.q"] = heads(x @ lw("attention.wq").T, args.n_heads)
        k = cache[p + "attn.k"] = heads(x @ lw("attention.wk").T, args.n_kv_heads)
        v = cache[p + "attn.v"] = heads(x @ lw("attention.wv").T, args.n_kv_heads)
        q, k = cache[p + "attn.q_rot"], cache[p + "attn.k_rot"] = rope(q), rope(k)
        scores = np.full((args.n_heads, n_tokens, n_tokens), -np.inf)
        pattern = np.zeros_like(scores)
        z = np.zeros((args.n_heads, n_tokens, hd))
        for head, t in np.ndindex(args.n_heads, n_tokens):
            kv = head // group
            for s in range(t + 1):
                scores[head, t, s] = sum(q[head, t] * k[kv, s]) / math.sqrt(hd)
            top = max(scores[head, t, :t + 1])
            exps = [math.exp(scores[head, t, s] - top) for s in range(t + 1)]
            for s in range(t + 1):
                pattern[head, t, s] = exps[s] / sum(exps)
                z[head, t] += pattern[head, t, s] * v[kv, s]
        cache[p + "attn.scores"], cache[p + "attn.pattern"], cache[p + "attn.z"] = scores, pattern, z
        concat = np.array([np.concatenate([z[head, t] for head in range(args.n_heads)]) for t in range(n_tokens)])
        attn_out = cache[p + "attn_out"] = concat @ lw("attention.wo").T
        h = cache[p + "resid_mid"] = h + attn_out
        x = cache[p + "ffn_norm"] = rmsnorm(h, lw("ffn_norm"))
        gate = cache[p + "mlp.gate"] = x @ lw("feed_forward.w1").T
        up = cache[p + "mlp.up"] = x @ lw("feed_forward.w3").T
        act = cache[p + "mlp.act"] = np.vectorize(lambda g: g / (1 + math.exp(-g)))(gate) * up
        mlp_out = cache[p + "mlp_out"] = act @ lw("feed_forward.w2").T
        h = cache[p + "resid_post"] = h + mlp_out
    final = cache["final_norm"] = rmsnorm(h, w["norm.weight"])
    cache["logits"] = final @ w.get("output.weight", w["tok_embeddings.weight"]).T
    return cache


@pytest.fixture(scope="module")
def weights():
    return wide_logit_weights(ARGS, seed=11)


@pytest.fixture(scope="module")
def oracle(weights):
    return loop_forward(ARGS, weights, TOKENS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("args", [ARGS, ModelArgs(dim=48, n_layers=3, n_heads=6, vocab_size=64, max_seq_len=9)],
                         ids=["gqa-untied", "mha-tied"])
def test_names_shapes_and_dtypes_are_the_spec_table(args, dtype):
    tokens = np.arange(args.max_seq_len) % args.vocab_size
    model = Llama(args, wide_logit_weights(args, seed=1), dtype)
    logits, cache = model.run_with_cache(tokens)
    expected = spec_points(args, len(tokens))
    assert list(cache) == list(expected)                                      # every name, in order
    assert {name: a.shape for name, a in cache.items()} == expected
    assert {a.dtype for a in cache.values()} == {np.dtype(dtype)}
    # The logits returned are the cache's and a plain forward pass's, value for value.
    np.testing.assert_array_equal(cache["logits"], logits, strict=True)
    np.testing.assert_array_equal(Llama(args, wide_logit_weights(args, seed=1), dtype).forward(tokens, all_logits=True),
                                  logits, strict=True)
    assert reference.cache.point_names(args.n_layers) == list(expected)
    assert {name: reference.cache.point_shape(name, args, len(tokens)) for name in expected} == expected


def test_recording_changes_nothing_the_forward_pass_computes(weights):
    model = Llama(ARGS, weights)
    plain = model.forward(TOKENS, all_logits=True)
    next_plain = model.forward([3], start_pos=len(TOKENS))
    logits, cache = model.run_with_cache(TOKENS)
    np.testing.assert_array_equal(logits, plain, strict=True)                 # bit for bit
    np.testing.assert_array_equal(model.forward([3], start_pos=len(TOKENS)), next_plain, strict=True)
    # The cache holds the values the sublayers added, not copies that could drift from them.
    np.testing.assert_array_equal(cache["blocks.1.resid_mid"], cache["blocks.1.resid_pre"] + cache["blocks.1.attn_out"])
    np.testing.assert_array_equal(cache["blocks.0.resid_post"], cache["blocks.1.resid_pre"])


def test_float64_cache_matches_the_loop_oracle_at_every_point(weights, oracle):
    _, cache = Llama(ARGS, weights, np.float64).run_with_cache(TOKENS)
    errors = {name: relative_error(cache[name], oracle[name]) for name in oracle}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FLOAT64_RTOL, f"{worst}: {errors[worst]:.3g}"


def test_float32_cache_matches_the_loop_oracle_at_every_point(weights, oracle):
    _, cache = Llama(ARGS, weights, np.float32).run_with_cache(TOKENS)
    errors = {name: relative_error(cache[name], oracle[name]) for name in oracle}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FLOAT32_RTOL, f"{worst}: {errors[worst]:.3g}"
    assert errors["embed"] == 0                                               # a lookup rounds nothing


@pytest.mark.parametrize("args", [ARGS, ModelArgs(dim=96, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=300,
                                                  max_seq_len=40)], ids=["gqa-untied", "gqa-tied"])
def test_torch_cache_matches_numpy_point_by_point(args):
    weights = wide_logit_weights(args, seed=5)
    tokens = np.random.default_rng(6).integers(0, args.vocab_size, args.max_seq_len)
    _, ours = Llama(args, weights).run_with_cache(tokens)
    logits, theirs = torch_model(args, weights).run_with_cache(tokens)
    theirs = {name: tensor.numpy() for name, tensor in theirs.items()}
    assert list(theirs) == list(ours)
    assert {n: a.shape for n, a in theirs.items()} == {n: a.shape for n, a in ours.items()}
    assert {a.dtype for a in theirs.values()} == {np.dtype(np.float32)}
    for name in BIT_IDENTICAL_POINTS:
        np.testing.assert_array_equal(theirs[name], ours[name], strict=True)
    errors = {name: relative_error(theirs[name], ours[name]) for name in ours}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TORCH_FLOAT32_RTOL, f"{worst}: {errors[worst]:.3g}"
    assert np.array_equal(logits.numpy(), theirs["logits"])


def test_torch_float64_cache_matches_numpy_float64():
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=100, max_seq_len=24)
    weights = wide_logit_weights(args, seed=8)
    tokens = np.arange(args.max_seq_len) * 7 % args.vocab_size
    _, ours = Llama(args, weights, np.float64).run_with_cache(tokens)
    _, theirs = torch_model(args, weights, "float64").run_with_cache(tokens)
    errors = {name: relative_error(theirs[name].numpy(), ours[name]) for name in ours}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TORCH_FLOAT64_RTOL, f"{worst}: {errors[worst]:.3g}"


def test_torch_recording_leaves_the_forward_pass_as_it_was(weights, monkeypatch):
    model = torch_model(ARGS, weights)
    tokens = torch.tensor([TOKENS])
    with torch.no_grad():
        plain, _ = model(tokens)
    logits, cache = model.run_with_cache(TOKENS)
    assert torch.equal(logits, plain[0])                                      # same kernels, same bits
    # The explicit pattern (the fused kernel never returns one) is the one the kernel applied.
    v = cache["blocks.0.attn.v"].repeat_interleave(ARGS.n_heads // ARGS.n_kv_heads, dim=0)
    torch.testing.assert_close(cache["blocks.0.attn.pattern"] @ v, cache["blocks.0.attn.z"], rtol=0, atol=1e-6)
    # A plain forward (training) never computes scores and pattern: nobody records them.
    import trainer.model

    def refuse(*_):
        raise AssertionError("a plain forward pass built the attention pattern")

    monkeypatch.setattr(trainer.model, "causal_scores", refuse)
    _, loss = model(tokens, targets=tokens)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="tokens must be 1 to 16 ids"):
        model.run_with_cache(list(range(17)))


def test_logit_lens_last_block_is_the_models_own_prediction(weights):
    model = Llama(ARGS, weights)
    logits, cache = model.run_with_cache(TOKENS)
    ids, probs = logit_lens(model, cache, top_k=5)
    assert ids.shape == probs.shape == (ARGS.n_layers, len(TOKENS), 5)
    want_ids, want_probs = top_tokens(softmax(logits), 5)
    np.testing.assert_array_equal(ids[-1], want_ids, strict=True)
    np.testing.assert_array_equal(probs[-1], want_probs, strict=True)
    assert np.all(np.diff(probs, axis=-1) <= 0)                               # most likely first
    # An earlier block's reading is final norm + output applied to its residual stream.
    first = softmax(model.unembed(cache["blocks.0.resid_post"]))
    np.testing.assert_array_equal(probs[0], np.take_along_axis(first, ids[0], axis=-1), strict=True)


def handmade_cache(patterns):
    return {f"blocks.{i}.attn.pattern": np.array(p, np.float64) for i, p in enumerate(patterns)}


def test_head_summary_on_patterns_worked_by_hand():
    n = 5
    previous = np.eye(n, k=-1)
    previous[0, 0] = 1                                    # query 0 can only attend to itself
    first = np.zeros((n, n))
    first[:, 0] = 1
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    heads = head_summary(handmade_cache([[previous, first, np.eye(n), uniform]]), n_layers=1)
    # Uniform rows: every key ties and argmax takes the lowest, position 0 (query 1's previous).
    assert [h["attends_most"] for h in heads] == ["previous", "first", "self", "first"]
    assert [(h["layer"], h["head"]) for h in heads] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert [h["entropy_bits"] for h in heads[:3]] == [0.0, 0.0, 0.0]
    # Uniform over t+1 keys has log2(t+1) bits; averaged over queries 1..4: (1 + log2 3 + 2 + log2 5) / 4.
    assert heads[3]["entropy_bits"] == pytest.approx((1 + math.log2(3) + 2 + math.log2(5)) / 4, rel=1e-15)
    assert heads[0]["to_previous"] == 1.0 and heads[0]["to_self"] == 0.0
    assert heads[1]["to_first"] == 1.0 and heads[1]["to_previous"] == 0.25  # query 1's previous is the first
    assert heads[2]["to_self"] == 1.0
    # A one-token prompt: query 0 attends to itself, all weight on the first token.
    (alone,) = head_summary(handmade_cache([[[[1.0]]]]), n_layers=1)
    assert alone == {"layer": 0, "head": 0, "entropy_bits": 0.0, "to_previous": 1.0, "to_first": 1.0,
                     "to_self": 1.0, "attends_most": "self"}


def test_agreement_counts_bits_not_values():
    a = np.array([0.0, 1.0, -np.inf, 2.0], np.float32)
    b = np.array([-0.0, 1.0, -np.inf, np.nextafter(np.float32(2), np.float32(3))], np.float32)
    result = agreement(a, b)
    assert result["bit_identical"] == 0.5                  # +0 and -0 compare equal but differ in bits
    assert result["max_abs_diff"] == float(np.spacing(np.float32(2)))
    with pytest.raises(ValueError, match="cannot compare float32"):
        agreement(a, b.astype(np.float64))


# The experiments in float64 against tests/test_hooks.py's recompute (a forward pass written in the
# tests): other summation orders only, measured <= 2e-15 relative; 1e-12 as there.
EXPERIMENT_RTOL = 1e-12
CLEAN, CORRUPTED = [1, 7, 39, 7, 0, 22, 13], [1, 7, 39, 33, 0, 22, 13]   # first differ at position 3


@pytest.fixture(scope="module")
def model64(weights):
    return Llama(ARGS, weights, np.float64)


def recompute(weights, tokens, substitute=None):
    from tests.support.study import recompute
    return recompute(ARGS, weights, tokens, substitute)


@pytest.mark.parametrize("how", ["zero", "mean"])
def test_ablate_heads_replaces_the_chosen_heads_z_and_nothing_else(model64, weights, how):
    heads = [(0, 1), (1, 3), (1, 0)]

    def ablated(chosen):
        def fn(z):
            z = z.copy()
            z[chosen] = 0 if how == "zero" else z[chosen].mean(axis=1, keepdims=True)
            return z
        return fn

    expected = recompute(weights, TOKENS, {"blocks.0.attn.z": ablated([1]), "blocks.1.attn.z": ablated([3, 0])})
    assert relative_error(ablate_heads(model64, TOKENS, heads, how), expected["logits"]) <= EXPERIMENT_RTOL
    with pytest.raises(ValueError, match="no head 1.4: the model has 2 blocks of 4 heads"):
        ablate_heads(model64, TOKENS, [(1, 4)])
    with pytest.raises(ValueError, match="how must be 'zero' or 'mean', got 'half'"):
        ablate_heads(model64, TOKENS, heads, how="half")
    with pytest.raises(ValueError, match="no heads to ablate"):
        ablate_heads(model64, TOKENS, [])


def test_patching_against_its_definition(model64, weights):
    result = patch_activations(model64, CLEAN, CORRUPTED)
    clean, corrupted = (model64.run_with_hooks(tokens, {}) for tokens in (CLEAN, CORRUPTED))
    top, other = int(np.argmax(clean[-1])), int(np.argmax(corrupted[-1]))
    assert top != other
    assert (result.clean, result.corrupted) == (clean[-1, top] - clean[-1, other], corrupted[-1, top] - corrupted[-1, other])
    assert list(result.patched) == reference.cache.point_names(ARGS.n_layers)
    residual = [name for name in result.patched if name.split(".")[-1] in ("embed", "resid_pre", "resid_mid", "resid_post")]
    assert len(residual) == 1 + 3 * ARGS.n_layers
    for name, value in result.patched.items():
        assert np.shape(value) == ((len(CLEAN),) if name in residual else ())
        if name in residual:
            # Before the first differing token the two prompts' streams are the same numbers.
            assert np.all(value[:3] == result.corrupted), name
    # The whole last stream, or the logits, patched in: the clean run's metric, bit for bit.
    assert result.patched[f"blocks.{ARGS.n_layers - 1}.resid_post"][-1] == result.clean
    assert result.patched["logits"] == result.patched["final_norm"] == result.clean
    # One position of one residual point: the recomputed corrupted pass with that row substituted.
    clean_cache = recompute(weights, CLEAN)

    def row_from_clean(value):
        value = value.copy()
        value[3] = clean_cache["blocks.1.resid_pre"][3]
        return value

    expected = recompute(weights, CORRUPTED, {"blocks.1.resid_pre": row_from_clean})["logits"]
    want = expected[-1, top] - expected[-1, other]
    assert abs(result.patched["blocks.1.resid_pre"][3] - want) <= EXPERIMENT_RTOL * np.max(np.abs(expected))
    recovered = result.recovered()
    assert recovered["logits"] == 1.0 and recovered["embed"][0] == 0.0


def test_patching_options_and_errors(model64):
    metric = logit_difference(4, 9, position=2)
    result = patch_activations(model64, CLEAN, CORRUPTED, metric=metric, points=["blocks.0.attn.pattern", "embed"])
    assert isinstance(result, Patching) and list(result.patched) == ["blocks.0.attn.pattern", "embed"]
    assert result.clean == metric(model64.run_with_hooks(CLEAN, {}))
    with pytest.raises(ValueError, match="patching needs prompts of one length: the clean one has 7 tokens, "
                                         "the corrupted one 6"):
        patch_activations(model64, CLEAN, CORRUPTED[:6])
    with pytest.raises(ValueError, match="no point named 'blocks.2.resid_pre' in a 2-block model"):
        patch_activations(model64, CLEAN, CORRUPTED, points=["blocks.2.resid_pre"])
    with pytest.raises(ValueError, match="both prompts predict token"):
        patch_activations(model64, CLEAN, CLEAN)
    with pytest.raises(ValueError, match=r"token 40 is outside the vocabulary \[0, 40\)"):
        patch_activations(model64, CLEAN, CORRUPTED, metric=logit_difference(40, 0))
    with pytest.raises(ValueError, match="position 7 is outside the prompt's 7 positions"):
        patch_activations(model64, CLEAN, CORRUPTED, metric=logit_difference(1, 0, position=7))


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_logit_attribution_sums_to_the_logit(weights, dtype, rtol):
    """float64: the parts are products summed in another order than the forward pass's, measured
    <= 4.2e-16 of the logits' largest (every position and token); float32: the cache's float32
    rounding (the parts are summed in float64), measured 1.1e-7."""
    model = Llama(ARGS, weights, dtype)
    logits, cache = model.run_with_cache(TOKENS)
    scale = np.max(np.abs(logits.astype(np.float64)))
    for position in (0, 4, -1):
        for token in (0, int(np.argmax(logits[position])), ARGS.vocab_size - 1):
            parts = logit_attribution(model, cache, position, token)
            assert len(parts) == 1 + ARGS.n_layers * (ARGS.n_heads + 1)
            assert abs(sum(parts.values()) - float(logits[position, token])) <= rtol * scale, (position, token)


def test_logit_attribution_parts_are_each_heads_direct_effect(model64, weights):
    """Each head's part is its own attn_out (recomputed with the other heads' z zeroed) read along
    the token's direction with the forward pass's final RMSNorm scale."""
    position, token = 5, 17
    logits, cache = model64.run_with_cache(TOKENS)
    parts = logit_attribution(model64, cache, position, token)
    resid = cache[f"blocks.{ARGS.n_layers - 1}.resid_post"][position]
    gain, output = (weights[name].astype(np.float64) for name in ("norm.weight", "output.weight"))
    direction = output[token] * gain / np.sqrt(np.mean(resid ** 2) + ARGS.norm_eps)
    for i in range(ARGS.n_layers):
        for h in range(ARGS.n_heads):
            def only_head(z, h=h):
                out = np.zeros_like(z)
                out[h] = z[h]
                return out
            alone = recompute(weights, TOKENS, {f"blocks.{i}.attn.z": only_head})[f"blocks.{i}.attn_out"]
            assert abs(parts[f"blocks.{i}.attn.head.{h}"] - alone[position] @ direction) <= 1e-13 * np.max(np.abs(logits))
        assert parts[f"blocks.{i}.mlp_out"] == pytest.approx(cache[f"blocks.{i}.mlp_out"][position] @ direction, rel=1e-13)
    assert parts["embed"] == pytest.approx(cache["embed"][position] @ direction, rel=1e-13)
    with pytest.raises(ValueError, match="position 9 is outside the prompt's 9 positions"):
        logit_attribution(model64, cache, 9, token)
    with pytest.raises(ValueError, match=r"token -1 is outside the vocabulary \[0, 40\)"):
        logit_attribution(model64, cache, 0, -1)


def test_compare_caches_finds_where_two_prompts_first_differ(model64):
    _, a = model64.run_with_cache(CLEAN)
    _, b = model64.run_with_cache(CORRUPTED)
    compared = compare_caches(a, b)
    assert list(compared) == list(a)
    # Causal: every point first differs at position 3, the first differing token (scores and
    # pattern by query).
    assert {name: c["first_position"] for name, c in compared.items()} == {name: 3 for name in a}
    assert all(0 < c["bit_identical"] < 1 and c["max_abs_diff"] > 0 for c in compared.values())
    assert compare_caches(a, a)["logits"] == {"max_abs_diff": 0.0, "bit_identical": 1.0, "first_position": None}
    _, shorter = model64.run_with_cache(CLEAN[:6])
    with pytest.raises(ValueError, match=r"embed: shapes \(7, 32\) and \(6, 32\) differ"):
        compare_caches(a, shorter)


@pytest.mark.parametrize("module", [reference.cache, reference.study])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
