"""Per layer, the NumPy reference against the torch training model on the same random inputs.

Bit-identical where both do the same float32 operations in the same order: the embedding lookup,
the RoPE tables and rotation, and RMSNorm whenever the sum of squares is exact. Everything that
sums many products (matmuls, the mean in RMSNorm) or calls exp (silu, softmax) is compared within
a named tolerance: NumPy (OpenBLAS, its own SIMD exp) and torch (its own BLAS and vectorized
exp) add in other orders and round exp differently, so equal bits there would be luck.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference.attention import attention
from formats.spec import ModelArgs
from reference.model import Llama
from reference.rmsnorm import rmsnorm
from reference.rope import apply_rope, rope_tables
from reference.swiglu import silu, swiglu
from tests.support.compare import ulp_distance
from tests.support.models import torch_model
from tests.support.weights import wide_logit_weights
from trainer import model as torch_llama

# RMSNorm on random inputs: mean(x²) is a 288-term float32 sum that NumPy (pairwise) and torch
# (vectorized cascade) add in different orders, so it can differ by an ulp or two; rsqrt and the
# two products after it pass that on and round again. Measured max 5 ulps; 8 leaves a margin.
RMSNORM_MAX_ULPS = 8
# silu = a / (1 + exp(-a)): NumPy's and torch's float32 exp are different vectorized
# implementations (each accurate to an ulp or so) that round differently on ~40% of inputs;
# measured max 4 ulps in silu. Same margin as above.
SILU_MAX_ULPS = 8
# Matmul-based layers, as max |Δ| / max |torch output|: each output sums up to 768 float32
# products (hd, D or F terms) in a BLAS-specific order, error ~ sqrt(K) * eps. Measured max
# 7.3e-7 (attention core, 1 to 256 queries), 5.1e-7 (attention module), 7.2e-7 (SwiGLU), 5.2e-7
# (whole block); 2e-6 (~17 float32 eps) leaves ~2.5x for other CPUs' BLAS kernels.
MATMUL_RTOL = 2e-6

# The seed shape and a grouped-query one (4 query heads per kv head), one layer each.
LAYER_CONFIGS = {
    "seed": ModelArgs(n_layers=1),
    "gqa": ModelArgs(dim=128, n_layers=1, n_heads=8, n_kv_heads=2, vocab_size=512),
}


def relative_error(candidate, reference):
    return float(np.max(np.abs(candidate - reference)) / np.max(np.abs(reference)))


def as_torch(array):
    return torch.from_numpy(np.ascontiguousarray(array))


@pytest.fixture(params=list(LAYER_CONFIGS), scope="module")
def one_layer(request):
    """(args, torch Transformer, NumPy Llama, input x (T, D)) sharing one set of random weights."""
    args = LAYER_CONFIGS[request.param]
    weights = wide_logit_weights(args, seed=1)
    x = np.random.default_rng(2).standard_normal((args.max_seq_len, args.dim)).astype(np.float32)
    return args, torch_model(args, weights), Llama(args, weights), x


def test_embedding_lookup_is_bit_identical():
    args = ModelArgs(dim=64, n_layers=1, n_heads=4, vocab_size=1013)
    weights = wide_logit_weights(args, seed=3)
    tokens = np.random.default_rng(4).integers(0, args.vocab_size, 300)
    with torch.no_grad():
        expected = torch_model(args, weights).tok_embeddings(as_torch(tokens)).numpy()
    np.testing.assert_array_equal(Llama(args, weights).tok_embeddings[tokens], expected, strict=True)


@pytest.mark.parametrize("head_dim, max_seq_len, theta", [(48, 256, 1e4), (64, 2048, 1e4), (16, 4096, 5e5)])
def test_rope_tables_are_bit_identical(head_dim, max_seq_len, theta):
    # Both build the angles in float64 and round once: same maths, same bits.
    cos, sin = rope_tables(head_dim, max_seq_len, theta)
    torch_cos, torch_sin = torch_llama.rope_tables(head_dim, max_seq_len, theta)
    np.testing.assert_array_equal(cos, torch_cos.numpy(), strict=True)
    np.testing.assert_array_equal(sin, torch_sin.numpy(), strict=True)


@pytest.mark.parametrize("n_heads, head_dim", [(6, 48), (2, 64)])
def test_rope_rotation_is_bit_identical(n_heads, head_dim):
    # x_even*cos - x_odd*sin and x_even*sin + x_odd*cos: four products and two sums, same order.
    T = 256
    cos, sin = rope_tables(head_dim, T)
    x = np.random.default_rng(5).standard_normal((T, n_heads, head_dim)).astype(np.float32)
    expected = torch_llama.apply_rope(as_torch(x)[None], as_torch(cos), as_torch(sin))[0].numpy()
    ours = apply_rope(x.swapaxes(0, 1), cos, sin).swapaxes(0, 1)           # (H, T, hd) layout
    np.testing.assert_array_equal(ours, expected, strict=True)


def torch_rmsnorm(x, weight, eps):
    norm = torch_llama.RMSNorm(x.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(as_torch(weight))
        return norm(as_torch(x)).numpy()


def test_rmsnorm_is_bit_identical_when_the_sum_of_squares_is_exact():
    # Multiples of 1/8 below 16 in magnitude: squares are multiples of 1/64 below 256, and 288
    # of them sum to < 2^17 in steps of 2^-6, within float32's 24-bit mantissa. Every order of
    # addition gives the same exact sum, so the remaining operations must match bit for bit.
    rng = np.random.default_rng(6)
    x = (rng.integers(-127, 128, (64, 288)) / 8).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(288)).astype(np.float32)
    np.testing.assert_array_equal(rmsnorm(x, weight, 1e-5), torch_rmsnorm(x, weight, 1e-5), strict=True)


def test_rmsnorm_on_random_inputs_is_within_ulps():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((256, 288)).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(288)).astype(np.float32)
    ulps = ulp_distance(rmsnorm(x, weight, 1e-5), torch_rmsnorm(x, weight, 1e-5)).max()
    assert ulps <= RMSNORM_MAX_ULPS, f"RMSNorm differs from torch by {ulps} ulps"


def test_silu_is_within_ulps():
    a = (4 * np.random.default_rng(8).standard_normal((256, 768))).astype(np.float32)
    ulps = ulp_distance(silu(a), F.silu(as_torch(a)).numpy()).max()
    assert ulps <= SILU_MAX_ULPS, f"silu differs from torch by {ulps} ulps"


def test_swiglu_matches_torch_feed_forward(one_layer):
    args, model, reference, x = one_layer
    layer = reference.layers[0]
    with torch.no_grad():
        expected = model.layers[0].feed_forward(as_torch(x)).numpy()
    error = relative_error(swiglu(x, layer.w1, layer.w2, layer.w3), expected)
    assert error <= MATMUL_RTOL, f"SwiGLU relative error {error:.3g}"


@pytest.mark.parametrize("n_heads, n_kv_heads", [(6, 6), (8, 2), (4, 1)])
@pytest.mark.parametrize("n_queries", [256, 17, 1])
def test_attention_matches_sdpa(n_heads, n_kv_heads, n_queries):
    """The core attention, GQA and MQA included, against F.scaled_dot_product_attention; with
    fewer queries than keys (a KV-cache step) the queries are the last positions."""
    n_keys, head_dim = 256, 32
    rng = np.random.default_rng(9)
    q = rng.standard_normal((n_heads, n_queries, head_dim)).astype(np.float32)
    k, v = rng.standard_normal((2, n_kv_heads, n_keys, head_dim)).astype(np.float32)
    # Query t sits at position n_keys - n_queries + t and sees keys up to there.
    visible = torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=n_keys - n_queries)
    expected = F.scaled_dot_product_attention(
        as_torch(q)[None], as_torch(k)[None], as_torch(v)[None], attn_mask=visible,
        enable_gqa=True)[0].numpy()
    error = relative_error(attention(q, k, v), expected)
    assert error <= MATMUL_RTOL, f"attention relative error {error:.3g}"


def test_attention_module_matches_torch(one_layer):
    """Projections, RoPE, causal GQA attention and wo, as in the torch Attention module."""
    args, model, reference, x = one_layer
    T = x.shape[0]
    with torch.no_grad():
        expected = model.layers[0].attention(as_torch(x)[None], model.rope_cos[:T], model.rope_sin[:T])
    error = relative_error(reference.self_attention(0, x, start_pos=0), expected[0].numpy())
    assert error <= MATMUL_RTOL, f"attention module relative error {error:.3g}"


def test_transformer_block_matches_torch(one_layer):
    args, model, reference, x = one_layer
    T = x.shape[0]
    with torch.no_grad():
        expected = model.layers[0](as_torch(x)[None], model.rope_cos[:T], model.rope_sin[:T])
    error = relative_error(reference.transformer_block(0, x, start_pos=0), expected[0].numpy())
    assert error <= MATMUL_RTOL, f"transformer block relative error {error:.3g}"
