"""Causal scaled dot-product attention with grouped-query heads (GQA), and softmax.

    attention(q, k, v) = softmax(q kᵀ / sqrt(hd) + causal mask) v

GQA: n_heads query heads share n_kv_heads key/value heads; query head h reads kv head
h // (n_heads / n_kv_heads). With n_kv_heads == n_heads it is plain multi-head attention.
Shapes: H query heads, Hkv kv heads, G = H / Hkv queries per kv head, T queries, S keys, hd.

Maths, read 3rd of reference/'s eight (reference/__init__.py gives the order).
"""

import math

import numpy as np

from reference.cache import no_record


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, shifted by the max so exp never overflows; -inf -> 0.

    >>> softmax(np.array([0.0, np.log(3.0)], dtype=np.float32))
    array([0.25, 0.75], dtype=float32)
    """
    exp = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return exp / np.sum(exp, axis=axis, keepdims=True)


def attention(q, k, v, record=no_record):
    """Causal GQA attention for the last T of S positions.

    q: (H, T, hd), the queries at positions S-T .. S-1.
    k, v: (Hkv, S, hd), the keys and values at positions 0 .. S-1 (the KV cache plus the new T).
    Returns (H, T, hd). Query t may attend to keys 0 .. S-T+t: itself and everything before.
    record: given `scores` and `pattern` (H, T, S) and the output `z` (reference/cache.py).
    """
    n_heads, n_queries, head_dim = q.shape
    n_kv_heads, n_keys, _ = k.shape
    group = n_heads // n_kv_heads
    # Heads h = kv*G + g share kv head kv: split the head axis instead of copying k and v G times.
    q = q.reshape(n_kv_heads, group, n_queries, head_dim)                # (Hkv, G, T, hd)
    k, v = k[:, None], v[:, None]                                         # (Hkv, 1, S, hd)
    # A Python float scale keeps float32 arrays float32 (a NumPy float64 scalar would promote).
    scores = (q @ k.swapaxes(-1, -2)) * (1 / math.sqrt(head_dim))        # (Hkv, G, T, S)
    query_pos = np.arange(n_keys - n_queries, n_keys)[:, None]           # (T, 1)
    visible = np.arange(n_keys)[None, :] <= query_pos                     # (T, S) causal mask
    scores = np.where(visible, scores, np.array(-np.inf, dtype=scores.dtype))
    record("scores", scores.reshape(n_heads, n_queries, n_keys))         # views: heads h = kv*G + g
    pattern = softmax(scores, axis=-1)                                    # (Hkv, G, T, S)
    record("pattern", pattern.reshape(n_heads, n_queries, n_keys))
    out = pattern @ v                                                     # (Hkv, G, T, hd)
    return record("z", out.reshape(n_heads, n_queries, head_dim))
