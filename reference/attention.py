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
    record: given `scores` and `pattern` (H, T, S) and the output `z`; each goes on as record
    returns it, so a hook's replacement is what the later steps use (reference/cache.py).
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
    # Recorded as (H, T, S), heads h = kv*G + g; what the recorder returns goes on, split back.
    grouped = scores.shape
    scores = record("scores", scores.reshape(n_heads, n_queries, n_keys)).reshape(grouped)
    pattern = record("pattern", softmax(scores, axis=-1).reshape(n_heads, n_queries, n_keys)).reshape(grouped)
    out = pattern @ v                                                     # (Hkv, G, T, hd)
    return record("z", out.reshape(n_heads, n_queries, head_dim))


def softmax_backward(probs, grad_out, axis=-1):
    """∂loss/∂x from grad_out = ∂loss/∂softmax(x) and probs = softmax(x): probs (grad_out - Σ probs grad_out).

    The Jacobian of p = softmax(x) is ∂p_i/∂x_j = p_i (δ_ij - p_j), so
    dx_j = Σ_i grad_i p_i (δ_ij - p_j) = p_j (grad_j - Σ_i p_i grad_i). Where p_j = 0 (a masked
    -inf) dx_j = 0: no gradient flows to a score the mask hid. Shapes: any, summed along `axis`.
    >>> softmax_backward(np.array([0.25, 0.75, 0.0]), np.array([1.0, 0.0, 5.0]))  # Σ p grad = 0.25
    array([ 0.1875, -0.1875,  0.    ])
    """
    return probs * (grad_out - np.sum(probs * grad_out, axis=axis, keepdims=True))


def attention_backward(q, k, v, pattern, grad_out):
    """The gradients of attention(q, k, v) given grad_out = ∂loss/∂out: (dq, dk, dv).

    q: (H, T, hd), k, v: (Hkv, S, hd), pattern: (H, T, S) (the forward's softmax, recorded as
    `pattern`), grad_out: (H, T, hd) -> dq (H, T, hd), dk and dv (Hkv, S, hd). Backward through
    out = P v, P = softmax(s), s = q kᵀ / sqrt(hd) + mask:

        dv = Pᵀ grad_out          dP = grad_out vᵀ          ds = P (dP - Σ_keys P dP)
        dq = ds k / sqrt(hd)      dk = dsᵀ q / sqrt(hd)

    The mask adds a constant (0 or -inf): it passes ds through unchanged, and ds is 0 wherever
    P is 0, so masked keys get no gradient. The scale 1/sqrt(hd) multiplies s, so it multiplies
    dq and dk once each. GQA: kv head j is read by the G = H/Hkv query heads j*G .. j*G+G-1, so
    its dk and dv are the sums over those heads of what each sends back.
    >>> q, k, v = np.ones((2, 1, 1)), np.ones((1, 1, 1)), np.ones((1, 1, 1))    # 2 heads, 1 kv head
    >>> dq, dk, dv = attention_backward(q, k, v, np.ones((2, 1, 1)), np.array([[[1.0]], [[2.0]]]))
    >>> dv.ravel(), dk.ravel()       # dv = 1 + 2: both query heads read the one value; one key: ds = 0
    (array([3.]), array([0.]))
    """
    n_heads, n_queries, head_dim = q.shape
    n_kv_heads, n_keys, _ = k.shape
    group = n_heads // n_kv_heads
    # The forward's grouping, heads h = kv*G + g: summing over axis 1 (g) is GQA's sum.
    q = q.reshape(n_kv_heads, group, n_queries, head_dim)                  # (Hkv, G, T, hd)
    grad_out = grad_out.reshape(n_kv_heads, group, n_queries, head_dim)
    pattern = pattern.reshape(n_kv_heads, group, n_queries, n_keys)        # (Hkv, G, T, S)
    dv = np.sum(pattern.swapaxes(-1, -2) @ grad_out, axis=1)               # (Hkv, S, hd)
    d_pattern = grad_out @ v[:, None].swapaxes(-1, -2)                     # (Hkv, G, T, S)
    d_scores = softmax_backward(pattern, d_pattern) * (1 / math.sqrt(head_dim))
    dq = d_scores @ k[:, None]                                             # (Hkv, G, T, hd)
    dk = np.sum(d_scores.swapaxes(-1, -2) @ q, axis=1)                     # (Hkv, S, hd)
    return dq.reshape(n_heads, n_queries, head_dim), dk, dv
