"""Rotary position embedding (RoPE, Su et al. 2021) on adjacent pairs, Meta's Llama layout.

Each head vector is read as hd/2 pairs (x[2j], x[2j+1]); at position m pair j is rotated by the
angle m * freq_j, with freq_j = theta^(-2j/hd):

    out[2j]   = x[2j] * cos(m freq_j) - x[2j+1] * sin(m freq_j)
    out[2j+1] = x[2j] * sin(m freq_j) + x[2j+1] * cos(m freq_j)

Rotating both q (at position m) and k (at position n) makes q·k depend on m - n only, which is
how attention sees relative position. Hugging Face checkpoints pair x[j] with x[j + hd/2]
instead; llama2.c, llama.cpp's "llama" architecture and this project all use adjacent pairs.

Maths, read 2nd of reference/'s eight (reference/__init__.py gives the order).
"""

import numpy as np


def rope_tables(head_dim, max_seq_len, theta=10000.0, dtype=np.float32):
    """cos and sin of every (position, pair) angle, each (max_seq_len, head_dim/2).

    Computed in float64 and rounded once to `dtype`: the tables are then correctly rounded (up to
    the float64 cos/sin error), and the torch model's float64-built tables match them bit for bit.
    (llama2.c computes them in float32, which differs from these in the last bits.)
    """
    pair = np.arange(head_dim // 2, dtype=np.float64)                  # j = 0 .. hd/2-1
    freqs = theta ** (-2 * pair / head_dim)                             # (hd/2,)
    angles = np.outer(np.arange(max_seq_len, dtype=np.float64), freqs)  # (S, hd/2)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


class RopeTable:
    """rope_tables' cos or sin (part "cos", "sin"), or both as one complex table (part "complex":
    cos + i sin, of a complex `dtype`), for positions 0 .. max_seq_len-1, computed only up to the
    highest position read.

    A header may declare a context of 2^31 positions: full tables would take its length times
    hd/2 times 8 bytes before the first token. Here reading rows [a, b) computes the rows up to
    b (at least doubling what is held, so the work stays linear in the positions used) with
    rope_tables, so every row has rope_tables' bits. Indexing is a NumPy index on the rows
    computed, (rows, ...) as on a (max_seq_len, hd/2) array.
    >>> table = RopeTable(4, 1 << 31)
    >>> table[2:3], table.shape, len(table.computed)
    (array([[-0.41614684,  0.9998    ]], dtype=float32), (2147483648, 2), 64)
    """

    def __init__(self, head_dim, max_seq_len, theta=10000.0, dtype=np.float32, part="cos"):
        self.head_dim, self.theta, self.part = head_dim, theta, part
        self.dtype = np.dtype(dtype)
        self.shape = (max_seq_len, head_dim // 2)
        self.computed = np.empty((0, head_dim // 2), self.dtype)

    def __getitem__(self, key):
        rows = range(self.shape[0])[key[0] if isinstance(key, tuple) else key]
        need = (max(rows) + 1 if len(rows) else 0) if isinstance(rows, range) else rows + 1
        if need > len(self.computed):
            self.computed = self._rows(min(self.shape[0], max(need, 2 * len(self.computed), 64)))
        return self.computed[key]

    def _rows(self, n):
        cos, sin = rope_tables(self.head_dim, n, self.theta, np.finfo(self.dtype).dtype)   # complex64 -> float32
        if self.part != "complex":
            return cos if self.part == "cos" else sin
        out = np.empty(cos.shape, self.dtype)
        out.real, out.imag = cos, sin
        return out


def apply_rope(x, cos, sin):
    """Rotate the adjacent pairs of x by the angles of its positions.

    x: (..., T, hd), cos and sin: (T, hd/2), the table rows of x's positions -> (..., T, hd).
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 4)
    >>> cos, sin = rope_tables(4, 1)
    >>> apply_rope(x, cos, sin)      # position 0: angle 0, the identity
    array([[0., 1., 2., 3.]], dtype=float32)
    """
    x_even, x_odd = x[..., 0::2], x[..., 1::2]                          # (..., T, hd/2) each
    out = np.empty_like(x)
    out[..., 0::2] = x_even * cos - x_odd * sin
    out[..., 1::2] = x_even * sin + x_odd * cos
    return out


def rope_backward(grad_out, cos, sin):
    """∂loss/∂x from grad_out = ∂loss/∂apply_rope(x, cos, sin): the inverse rotation.

    grad_out: (..., T, hd), cos and sin: (T, hd/2) as for apply_rope -> (..., T, hd).
    Each pair is multiplied by the rotation matrix R(θ) = [[cos, -sin], [sin, cos]], a linear map,
    so the gradient is multiplied by its transpose, R(θ)ᵀ = R(-θ): the same rotation with sin
    negated. A rotation keeps lengths, so the gradient's norm is unchanged.
    >>> cos, sin = np.array([[0.0]]), np.array([[1.0]])        # one pair rotated by 90 degrees
    >>> apply_rope(np.array([[1.0, 0.0]]), cos, sin)            # (1, 0) -> (0, 1)
    array([[0., 1.]])
    >>> rope_backward(np.array([[0.0, 1.0]]), cos, sin)         # (0, 1) -> (1, 0): back again
    array([[1., 0.]])
    """
    return apply_rope(grad_out, cos, -sin)
