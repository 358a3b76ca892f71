"""Properties and known answers of the NumPy reference alone (no torch needed)."""

import dataclasses
import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference.attention
import formats.spec
import reference.rmsnorm
import reference.rope
import reference.swiglu
from reference.attention import attention, softmax
from formats.spec import ModelArgs, default_hidden_dim
from reference.model import Llama
from formats.spec import weight_shapes
from reference.rmsnorm import rmsnorm
from reference.rope import apply_rope, rope_tables
from reference.swiglu import silu, swiglu
from tests.support.models import small_configs
from tests.support.weights import wide_logit_weights

# KV-cached decoding vs one full forward, float32: the same operations on the same values, but
# BLAS may pick other kernels (and summation orders) for a 1-row matmul than for a T-row one.
# Measured max 4.3e-6 over 400 examples with logits up to |11| (~4 ulps there); 1e-5 is about
# twice that, while a real cache bug (a position off by one, a stale entry) moves logits by O(1).
KV_CACHE_ATOL = 1e-5
# RoPE is a rotation: in float64 norms and relative dot products are kept to rounding, ~1e-16
# relative per operation over a handful of operations; angles up to 4096 rad carry an absolute
# error ~4096 * 1.1e-16 in cos/sin. 1e-12 relative covers both with room.
ROPE_FLOAT64_RTOL = 1e-12


def weights_and_tokens(args, seed, n_tokens):
    return wide_logit_weights(args, seed), np.random.default_rng(seed).integers(0, args.vocab_size, n_tokens)


# --- the model ---------------------------------------------------------------------------------

@settings(max_examples=30)
@given(args=small_configs(), seed=st.integers(0, 2**16), data=st.data())
def test_kv_cached_decoding_equals_full_recompute(args, seed, data):
    """Feed the sequence in random chunks (a prompt, then single tokens or more chunks) against
    the cache; every step's logits equal those of one forward over the whole sequence."""
    n_tokens = data.draw(st.integers(1, args.max_seq_len))
    weights, tokens = weights_and_tokens(args, seed, n_tokens)
    full = Llama(args, weights).forward(tokens, all_logits=True)            # (T, V)
    cuts = sorted(data.draw(st.sets(st.integers(1, n_tokens - 1), max_size=n_tokens - 1))) if n_tokens > 1 else []
    model = Llama(args, weights)
    stepped = [model.forward(tokens[start:end], start_pos=start, all_logits=True)
               for start, end in zip([0] + cuts, cuts + [n_tokens])]
    np.testing.assert_allclose(np.concatenate(stepped), full, rtol=0, atol=KV_CACHE_ATOL)


@settings(max_examples=30)
@given(args=small_configs(), seed=st.integers(0, 2**16), data=st.data())
def test_changing_a_later_token_leaves_earlier_logits_unchanged(args, seed, data):
    """Causality, bit for bit: masked scores become exact zeros after softmax, so token t+1
    cannot reach the logits at positions <= t at all."""
    n_tokens = data.draw(st.integers(2, args.max_seq_len))
    weights, tokens = weights_and_tokens(args, seed, n_tokens)
    model = Llama(args, weights)
    t = data.draw(st.integers(0, n_tokens - 2))
    changed = tokens.copy()
    changed[t + 1] = (tokens[t + 1] + data.draw(st.integers(1, args.vocab_size))) % args.vocab_size
    before = model.forward(tokens, all_logits=True)
    after = model.forward(changed, all_logits=True)
    np.testing.assert_array_equal(after[:t + 1], before[:t + 1])


def test_a_new_prompt_overwrites_the_cache():
    """A new prompt at start_pos 0 overwrites the cache: same answers as a fresh model."""
    args = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=32)
    weights, tokens = weights_and_tokens(args, seed=5, n_tokens=20)
    model, fresh = Llama(args, weights), Llama(args, weights)
    model.forward(tokens[::-1].copy())
    np.testing.assert_array_equal(model.forward(tokens[:12]), fresh.forward(tokens[:12]))
    np.testing.assert_array_equal(model.forward(tokens[12:13], start_pos=12),
                                  fresh.forward(tokens[12:13], start_pos=12))


# The cache grows with the positions used (Llama.grow_cache). Where it is held changes no
# arithmetic: attention reads positions 0 .. end_pos-1 of it, the same values in the same shapes,
# so the tests below compare logits bit for bit (assert_array_equal, tolerance 0).
GROWING = ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=32, max_seq_len=2**31)


def stepped_logits(model, tokens, n_prompt):
    """A prompt of n_prompt tokens from position 0, then one token per call: (T - n_prompt + 1, V)."""
    logits = [model.forward(tokens[:n_prompt])]
    logits += [model.forward(tokens[pos:pos + 1], start_pos=pos) for pos in range(n_prompt, len(tokens))]
    return np.stack(logits)


def test_a_huge_declared_context_costs_only_the_positions_used():
    """max_seq_len 2^31 (a 256 GiB float32 cache if it were allocated up front): an 8-token
    prompt and 4 decode steps give the logits of max_seq_len 64 bit for bit, and the cache
    holds 16 positions (8, then doubled once)."""
    weights, tokens = weights_and_tokens(GROWING, seed=3, n_tokens=12)
    huge, small = Llama(GROWING, weights), Llama(dataclasses.replace(GROWING, max_seq_len=64), weights)
    np.testing.assert_array_equal(stepped_logits(huge, tokens, 8), stepped_logits(small, tokens, 8))
    assert huge.n_cached == 12
    assert huge.key_cache.shape == huge.value_cache.shape == (1, 2, 16, 8)


def test_cache_growth_keeps_every_cached_position():
    """Decoding 37 tokens after a 3-token prompt grows the cache 3 -> 6 -> 12 -> 24 -> 48
    positions; every step's logits equal, bit for bit, those of the same calls on a model of
    max_seq_len 40 whose cache already has room for all 40 positions (a first pass over the
    whole sequence made it), so none of its steps grows the cache."""
    weights, tokens = weights_and_tokens(GROWING, seed=7, n_tokens=40)
    growing = Llama(GROWING, weights)
    rooms = []
    logits = [growing.forward(tokens[:3])]
    for pos in range(3, 40):
        rooms.append(growing.key_cache.shape[2])
        logits.append(growing.forward(tokens[pos:pos + 1], start_pos=pos))
    assert sorted(set(rooms + [growing.key_cache.shape[2]])) == [3, 6, 12, 24, 48]
    roomy = Llama(dataclasses.replace(GROWING, max_seq_len=40), weights)
    roomy.forward(tokens)
    assert roomy.key_cache.shape[2] == 40
    np.testing.assert_array_equal(np.stack(logits), stepped_logits(roomy, tokens, 3))
    assert roomy.key_cache.shape[2] == 40


def test_a_new_prompt_after_growth_reuses_the_grown_cache():
    """After the cache grew to 48 positions, a new 60-token sequence from start_pos 0 (a 5-token
    prompt, then one token per call) gives a fresh model's logits bit for bit: the stale
    positions past n_cached are never read, and growing again (48 -> 96) keeps the new ones."""
    weights, tokens = weights_and_tokens(GROWING, seed=11, n_tokens=60)
    model = Llama(GROWING, weights)
    stepped_logits(model, tokens[:40], 3)
    assert model.key_cache.shape[2] == 48
    other = tokens[::-1].copy()
    np.testing.assert_array_equal(stepped_logits(model, other, 5), stepped_logits(Llama(GROWING, weights), other, 5))
    assert model.n_cached == 60 and model.key_cache.shape[2] == 96


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_keeps_its_dtype(dtype):
    args = ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=11, max_seq_len=8)
    model = Llama(args, wide_logit_weights(args, seed=0), dtype=dtype)
    assert model.forward([1, 2, 3]).dtype == dtype
    assert model.forward([4], start_pos=3, all_logits=True).dtype == dtype
    assert model.key_cache.dtype == model.value_cache.dtype == model.rope_cos.dtype == dtype


def test_forward_rejects_bad_input_loudly():
    args = ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=11, max_seq_len=8)
    model = Llama(args, wide_logit_weights(args, seed=0))
    with pytest.raises(ValueError, match="token ids"):
        model.forward([3, 11])
    with pytest.raises(ValueError, match="non-empty"):
        model.forward([])
    with pytest.raises(ValueError, match="uncached"):
        model.forward([1], start_pos=1)                  # nothing cached yet
    with pytest.raises(ValueError, match="max_seq_len"):
        model.forward(list(range(9)))


def test_weights_are_checked_by_name_and_shape():
    args = ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=11, max_seq_len=8)
    weights = wide_logit_weights(args, seed=0)
    with pytest.raises(ValueError, match="layers.0.attention.wk.weight: shape"):
        Llama(args, {**weights, "layers.0.attention.wk.weight": np.zeros((16, 8), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        Llama(args, {k: v for k, v in weights.items() if k != "norm.weight"})
    with pytest.raises(ValueError, match="unknown"):
        Llama(args, {**weights, "layers.1.ffn_norm.weight": weights["norm.weight"]})
    # A tied model accepts output.weight only as a copy of the embeddings (as in a state dict).
    Llama(args, {**weights, "output.weight": weights["tok_embeddings.weight"].copy()})
    with pytest.raises(ValueError, match="tie_embeddings"):
        Llama(args, {**weights, "output.weight": np.zeros((11, 16), np.float32)})


# --- RoPE --------------------------------------------------------------------------------------

rope_cases = dict(head_dim=st.sampled_from([2, 8, 48, 64]), seed=st.integers(0, 2**16),
                  theta=st.sampled_from([1e4, 5e5]))


@given(**rope_cases, position=st.integers(0, 4095))
def test_rope_preserves_the_norm_of_every_pair(head_dim, seed, theta, position):
    x = np.random.default_rng(seed).standard_normal((1, head_dim))
    cos, sin = rope_tables(head_dim, position + 1, theta, np.float64)
    rotated = apply_rope(x, cos[position:], sin[position:])
    pair_norms = np.hypot(x[:, 0::2], x[:, 1::2])
    np.testing.assert_allclose(np.hypot(rotated[:, 0::2], rotated[:, 1::2]), pair_norms,
                               rtol=ROPE_FLOAT64_RTOL)


@given(**rope_cases, m=st.integers(0, 2047), n=st.integers(0, 2047), shift=st.integers(0, 2048))
def test_rope_dot_products_depend_only_on_the_offset(head_dim, seed, theta, m, n, shift):
    """<rope(q, m), rope(k, n)> == <rope(q, m+s), rope(k, n+s)>: attention sees m - n only."""
    q, k = np.random.default_rng(seed).standard_normal((2, 1, head_dim))
    cos, sin = rope_tables(head_dim, 4096, theta, np.float64)

    def rope_at(x, pos):
        return apply_rope(x, cos[pos:pos + 1], sin[pos:pos + 1])[0]

    expected = rope_at(q, m) @ rope_at(k, n)
    shifted = rope_at(q, m + shift) @ rope_at(k, n + shift)
    scale = np.linalg.norm(q) * np.linalg.norm(k)       # dot products live on this scale
    assert abs(shifted - expected) <= ROPE_FLOAT64_RTOL * scale


def test_rope_at_position_zero_is_the_identity():
    x = np.random.default_rng(0).standard_normal((3, 1, 48)).astype(np.float32)
    cos, sin = rope_tables(48, 1)
    np.testing.assert_array_equal(apply_rope(x, cos, sin), x, strict=True)


def test_rope_known_answer_rotates_the_first_pair_by_the_position_in_radians():
    # freq_0 = theta^0 = 1: pair 0 at position m turns by m radians; pair 1 (hd 4) by m/100.
    cos, sin = rope_tables(4, 3, 1e4, np.float64)
    rotated = apply_rope(np.array([[1.0, 0.0, 1.0, 0.0]]), cos[2:], sin[2:])
    np.testing.assert_allclose(rotated[0], [math.cos(2), math.sin(2), math.cos(0.02), math.sin(0.02)],
                               rtol=0, atol=1e-15)


# --- known answers -----------------------------------------------------------------------------

def test_rmsnorm_known_answer():
    # mean([9, 16]) = 12.5, so [3, 4] / sqrt(12.5) = [0.8485..., 1.1313...]; gain 2 doubles it.
    out = rmsnorm(np.array([3, 4], np.float32), np.array([1, 2], np.float32), eps=0.0)
    np.testing.assert_allclose(out, [3 / math.sqrt(12.5), 8 / math.sqrt(12.5)], rtol=1e-7)
    assert out.dtype == np.float32


def test_softmax_known_answers():
    np.testing.assert_allclose(softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75], rtol=1e-15)
    np.testing.assert_array_equal(softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])  # no overflow
    np.testing.assert_array_equal(softmax(np.array([0.0, -np.inf])), [1.0, 0.0])


def test_attention_with_zero_queries_averages_the_visible_values():
    # q = 0 makes every visible score equal: query t returns the mean of v[0..t] (causal).
    v = np.random.default_rng(0).standard_normal((1, 5, 4))
    out = attention(np.zeros((2, 5, 4)), np.ones((1, 5, 4)), v)     # 2 query heads, 1 kv head
    prefix_means = np.cumsum(v[0], axis=0) / np.arange(1, 6)[:, None]
    np.testing.assert_allclose(out, np.stack([prefix_means, prefix_means]), rtol=1e-14)


def test_attention_single_query_with_a_single_key_returns_its_value():
    v = np.random.default_rng(1).standard_normal((1, 1, 8)).astype(np.float32)
    out = attention(np.ones((3, 1, 8), np.float32), np.ones((1, 1, 8), np.float32), v)
    np.testing.assert_array_equal(out, np.repeat(v, 3, axis=0))


@pytest.mark.parametrize("group", [1, 2, 3])
def test_query_head_h_reads_kv_head_h_over_group(group):
    """GQA mapping: with per-kv-head constant values, head h's output is kv head h // group's."""
    n_kv_heads, n_queries = 2, 3
    v = np.arange(n_kv_heads, dtype=np.float64)[:, None, None] * np.ones((1, n_queries, 4))
    rng = np.random.default_rng(2)
    q = rng.standard_normal((n_kv_heads * group, n_queries, 4))
    out = attention(q, rng.standard_normal((n_kv_heads, n_queries, 4)), v)
    np.testing.assert_allclose(out[:, 0, 0], np.arange(n_kv_heads * group) // group, rtol=1e-14)


def test_config_hidden_dim_rule_and_round_trip():
    assert ModelArgs().hidden_dim == default_hidden_dim(288, 32) == 768
    assert ModelArgs(dim=64, n_heads=4).hidden_dim == 192     # int(170.67) = 170 -> 6 * 32
    assert ModelArgs(hidden_dim=100).hidden_dim == 100
    args = ModelArgs(dim=128, n_heads=8, n_kv_heads=2, tie_embeddings=False)
    assert (args.head_dim, args.kv_dim) == (16, 32)
    assert ModelArgs.from_dict(args.to_dict()) == args
    # llama2.c's own model_args: no hidden_dim, norm_eps, rope_theta or tie_embeddings.
    llama2c = dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000, multiple_of=32,
                   max_seq_len=256, dropout=0.0)
    assert ModelArgs.from_dict(llama2c) == ModelArgs()
    assert all(type(v) in (int, float, bool) for v in ModelArgs.from_dict(
        {"dim": np.uint32(64), "n_heads": np.int64(4), "norm_eps": np.float32(1e-5)}).to_dict().values())


@pytest.mark.parametrize("bad, message", [
    (dict(dim=30, n_heads=4), "divisible by n_heads"), (dict(n_heads=6, n_kv_heads=4), "n_kv_heads"),
    (dict(dim=18, n_heads=18), "even"), (dict(dim=2.0), "positive int"), (dict(n_layers=True), "positive int"),
    (dict(dropout=1.0), "dropout"), (dict(norm_eps=0.0), "norm_eps")])
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        ModelArgs(**bad)
    with pytest.raises(ValueError, match="unknown model_args keys: typo"):
        ModelArgs.from_dict({"typo": 1})


def test_weight_shapes_follow_the_config():
    shapes = weight_shapes(ModelArgs(dim=128, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=99,
                                     hidden_dim=100, tie_embeddings=False))
    assert len(shapes) == 2 * 9 + 3
    assert shapes["layers.1.attention.wk.weight"] == (32, 128)
    assert shapes["layers.0.feed_forward.w2.weight"] == (128, 100)
    assert shapes["output.weight"] == (99, 128)


# --- float32 in, float32 out -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_function_keeps_the_dtype(dtype):
    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, w = rand(5, 8), rand(8)
    cos, sin = rope_tables(8, 5, dtype=dtype)
    outputs = {
        "rmsnorm": rmsnorm(x, w, 1e-5), "rope_tables": cos, "apply_rope": apply_rope(x, cos, sin),
        "softmax": softmax(x), "attention": attention(rand(4, 5, 8), rand(2, 5, 8), rand(2, 5, 8)),
        "silu": silu(x), "swiglu": swiglu(x, rand(6, 8), rand(8, 6), rand(6, 8)),
    }
    assert {name: out.dtype for name, out in outputs.items()} == {name: dtype for name in outputs}


@pytest.mark.parametrize("module", [formats.spec, reference.rmsnorm, reference.rope,
                                    reference.attention, reference.swiglu])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
