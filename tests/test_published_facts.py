"""The conventions checked against published facts, not against our own torch model.

The torch training model shares formats.spec with the reference, so parity with it cannot tell a
convention both got wrong. Here each convention meets an independent statement of it:
- the SwiGLU width rule: the hidden_dim of published checkpoints (llama2.c's stories models, as
  stored in their .bin headers; Meta's Llama 2 7B and 13B, params.json + the 2/3 rule);
- RoPE: Meta's reference formulation, x viewed as complex numbers (x[2j] + i x[2j+1]) times
  exp(i m theta^(-2j/hd)), written here with NumPy's complex type, and a hand-worked value;
- GQA: Meta's repeat_kv (each kv head repeated n_rep times in a row: query head h reads kv head
  h // n_rep), written here as a plain loop over heads and positions in float64.
llama.cpp on the same files is the third oracle (tests/test_oracles.py).
"""

import math

import numpy as np
import pytest

from formats.spec import default_hidden_dim
from reference.attention import attention
from reference.rope import apply_rope, rope_tables

# (dim, multiple_of) -> hidden_dim of a published checkpoint.
PUBLISHED_HIDDEN_DIM = {
    (288, 32): 768,       # stories15M
    (512, 32): 1376,      # stories42M
    (768, 32): 2048,      # stories110M
    (4096, 256): 11008,   # Llama 2 7B
    (5120, 256): 13824,   # Llama 2 13B
}


@pytest.mark.parametrize("dim, multiple_of", sorted(PUBLISHED_HIDDEN_DIM))
def test_hidden_dim_rule_gives_the_published_widths(dim, multiple_of):
    assert default_hidden_dim(dim, multiple_of) == PUBLISHED_HIDDEN_DIM[dim, multiple_of]


def test_rope_rotates_one_pair_by_hand():
    # hd = 4, theta = 10000: freq_0 = 1, freq_1 = 10000^(-1/2) = 0.01. At position 1, pair 0
    # (1, 0) turns by 1 radian and pair 1 (0, 1) by 0.01 radian.
    cos, sin = rope_tables(4, 2, dtype=np.float64)
    x = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    expected = [math.cos(1), math.sin(1), -math.sin(0.01), math.cos(0.01)]
    np.testing.assert_allclose(apply_rope(x, cos, sin)[1], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("head_dim, theta", [(8, 1e4), (48, 1e4), (64, 5e5)])
def test_rope_is_meta_complex_rotation(head_dim, theta):
    # Meta's apply_rotary_emb: view (.., hd) as (.., hd/2) complex numbers of adjacent pairs and
    # multiply by exp(i m freq_j). float64 both ways: only cos/sin rounding differs (~1e-16 each,
    # times positions up to 300 in the angle's argument reduction: 1e-12 bounds it).
    T = 300
    x = np.random.default_rng(0).standard_normal((3, T, head_dim))
    freqs = theta ** (-np.arange(0, head_dim, 2) / head_dim)
    rotation = np.exp(1j * np.outer(np.arange(T), freqs))                    # (T, hd/2)
    expected = (x[..., 0::2] + 1j * x[..., 1::2]) * rotation
    expected = np.stack([expected.real, expected.imag], axis=-1).reshape(x.shape)
    cos, sin = rope_tables(head_dim, T, theta, dtype=np.float64)
    np.testing.assert_allclose(apply_rope(x, cos, sin), expected, rtol=0, atol=1e-12)


def loop_attention(q, k, v):
    """Causal attention one query head and one position at a time; head h reads kv head h // n_rep."""
    n_heads, n_queries, head_dim = q.shape
    n_kv_heads, n_keys, _ = k.shape
    n_rep = n_heads // n_kv_heads
    out = np.zeros_like(q)
    for h in range(n_heads):
        kv = h // n_rep
        for t in range(n_queries):
            last = n_keys - n_queries + t
            scores = [q[h, t] @ k[kv, s] / math.sqrt(head_dim) for s in range(last + 1)]
            weights = np.exp(np.array(scores) - max(scores))
            out[h, t] = (weights / weights.sum()) @ v[kv, :last + 1]
    return out


@pytest.mark.parametrize("n_heads, n_kv_heads, n_queries, n_keys", [(4, 4, 5, 5), (6, 2, 5, 5), (8, 1, 1, 9),
                                                                     (6, 3, 3, 7)])
def test_gqa_head_h_reads_kv_head_h_div_n_rep(n_heads, n_kv_heads, n_queries, n_keys):
    # float64 both ways, different summation orders: a few ulps of values of size ~1.
    rng = np.random.default_rng(n_heads * 10 + n_kv_heads)
    q = rng.standard_normal((n_heads, n_queries, 16))
    k, v = rng.standard_normal((2, n_kv_heads, n_keys, 16))
    np.testing.assert_allclose(attention(q, k, v), loop_attention(q, k, v), rtol=0, atol=1e-13)
