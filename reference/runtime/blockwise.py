"""Weight matrices as the fast path multiplies them: float32 views of the file, or compressed
blocks multiplied a chunk of rows at a time.

`product(x, w, out, start, stop)` is out[:, start:stop] = x @ w[start:stop].T for every kind of
weight; reference/runtime/fast.py splits the rows of a large product between threads with it.

Float32 weights, one token (T = 1): a matrix-vector product, which only streams the weights from
memory. np.vecdot (a SIMD dot per row) reads them at ~30 GB/s on one core of this machine, where
OpenBLAS's sgemv (`x @ w.T`) reached 13 GB/s and np.einsum 25 (the 32000 x 288 classifier, cold
caches); T > 1 is a real matrix product and goes to BLAS sgemm.

Compressed weights: a Q8_0 GGUF holds int8 codes with one float16 scale per block of 32 (W = d * q,
formats/quant.py); expanding every matrix to float32 at load would take ~3.8x the file's size.
Every other quantized type is, per block of 16, 32 or 256, small integer codes times one scale
(plus a min for some): formats/quants/codes.py reads each that way, and load.py transcodes each
matrix into that form once. A BlockMatrix keeps it and works through an L2-sized chunk of rows
at a time:

    one token:  t[b, o] = sum_j q[o, b, j] x[b, j]       codes cast to float32 in a scratch, then
                out[o]  = sum_b d[o, b] t[b, o]           one batched matmul over the blocks
                        (+ or - sum_b m[o, b] s[b])       mins m: s[b] = sum_j x[b, j], once a call
    T tokens:   W[r0:r1] = d[r0:r1, :, None] * q[r0:r1]   dequantized in the scratch (exactly
                out[:, r0:r1] = x @ W[r0:r1].T            formats.quant's values), then BLAS

The one-token form never multiplies weights by scales: it scales n_blocks partial sums per row
instead of every weight, which measured 1.5x faster than dequantizing the chunk first (NumPy has no
int8 matrix product, so the cast itself cannot be avoided). Both forms hold at most one chunk of
float32 weights per thread.

Shapes: a matrix is (rows, cols) as torch's nn.Linear.weight (out, in); x is (T, cols).

Runtime (reference/runtime/__init__.py): the matrix products of model.py's `x @ w.T`, for
every way a weight is stored.
"""

import numpy as np

from formats import quant
from formats.ggml import BLOCK, GGMLType

# Elements per chunk: 512 Ki float32 = 2 MiB of scratch. Measured on the seed and dim-768 models
# (Q8_0 decode and prefill, chunks of 2^15 .. 2^22 elements): smaller chunks lose to the Python
# work per chunk (the classifier alone holds 9.2M weights at the seed config), chunks past 2^20
# (4 MiB) to the scratch leaving the caches before the product reads it back.
CHUNK_ELEMENTS = 1 << 19


def fused_rows(matrices):
    """The matrices stacked along axis 0, as a view when they lie back to back in one buffer (same
    dtype, trailing shape and strides, each starting where the one before ends), else None.

    >>> w = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> fused_rows([w[:2], w[2:5], w[5:]]) is not None, fused_rows([w[:2], w[3:]])
    (True, None)
    """
    first = matrices[0]
    if not all(isinstance(m, np.ndarray) for m in matrices):
        return None
    if any(m.dtype != first.dtype or m.shape[1:] != first.shape[1:] or m.strides != first.strides
           for m in matrices):
        return None
    if len({id(_root(m)) for m in matrices}) != 1:
        return None     # adjacent addresses in two different buffers are no single array
    address = first.__array_interface__["data"][0]
    for m in matrices:
        if m.__array_interface__["data"][0] != address:
            return None
        address += m.shape[0] * m.strides[0]
    n_rows = sum(m.shape[0] for m in matrices)
    return np.lib.stride_tricks.as_strided(first, (n_rows, *first.shape[1:]), first.strides,
                                           writeable=False)


def _root(array):
    """The object that owns `array`'s memory (a memmap, an mmap, bytes, or the array itself)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array


def _vecdot(w, x, out):
    """out[i] = w[i] · x: np.vecdot from NumPy 2.0, einsum's loop before (same dots, slower here)."""
    if hasattr(np, "vecdot"):
        return np.vecdot(w, x, out=out)
    return np.einsum("vd,d->v", w, x, out=out)


def product(x, w, out, start=0, stop=None):
    """out[:, start:stop] = x @ w[start:stop].T, for a float32 (rows, cols) array or a BlockMatrix.

    x: (T, cols) float32, out: (T, rows) float32. Returns out.
    """
    stop = w.shape[0] if stop is None else stop
    if isinstance(w, BlockMatrix):
        w.product(x, out, start, stop)
    elif x.shape[0] == 1:
        _vecdot(w[start:stop], x[0], out=out[0, start:stop])                  # a dot per row
    else:
        np.matmul(x, w[start:stop].T, out=out[:, start:stop])                 # BLAS sgemm
    return out


class BlockMatrix:
    """A (rows, cols) weight in a compressed form; subclasses decode rows to float32.

    `product(x, out, start, stop)` is out[:, start:stop] = x @ W[start:stop].T and `take(ids)` is
    W[ids]; neither holds more than CHUNK_ELEMENTS float32 weights at once.
    """

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)
        self.chunk_rows = max(1, CHUNK_ELEMENTS // self.shape[1])

    def rows(self, start, stop, scratch):
        """Rows start..stop-1 as float32 (stop-start, cols), written into `scratch` if it is used."""
        raise NotImplementedError

    def take(self, ids):
        """Rows `ids` as float32: (T,) ints -> (T, cols). Used for the embedding lookup."""
        raise NotImplementedError

    def product(self, x, out, start, stop):
        """out[:, start:stop] = x @ W[start:stop].T, dequantizing one chunk of rows at a time."""
        scratch = np.empty((self.chunk_rows, self.shape[1]), dtype=np.float32)   # reused per chunk
        for r0 in range(start, stop, self.chunk_rows):
            r1 = min(r0 + self.chunk_rows, stop)
            w = self.rows(r0, r1, scratch[:r1 - r0])                               # (n, cols)
            np.matmul(x, w.T, out=out[:, r0:r1])                                    # (T, n)

    def matmul(self, x):
        """x @ W.T: (T, cols) -> (T, rows)."""
        return product(x, self, np.empty((x.shape[0], self.shape[0]), dtype=np.float32))

    @property
    def nbytes(self):
        """Bytes held by the compressed form (views into a file count too)."""
        return sum(a.nbytes for a in self._arrays())

    def _arrays(self):
        raise NotImplementedError


class Int8BlockMatrix(BlockMatrix):
    """W = scales[:, :, None] * codes (+ or - mins[:, :, None]): int8 codes (rows, n_blocks, block)
    and a float32 scale per block (rows, n_blocks), and for some types a float32 min per block,
    added (Q4_1, Q5_1) or subtracted (Q2_K, Q4_K, Q5_K) as `subtract` says. Every quantized ggml
    type is this (formats/quants/codes.py: its `Codes`, the block being the group sharing a
    scale: 16, 32 or 256 elements), and so are llama2.c v2 int8 groups (any group size that
    divides a row, scales stored as float32).

    `codes` may be a strided view into the file (Q8_0's 34-byte blocks interleave the 2-byte
    scale with the 32 codes): nothing is copied but the scales, 1/8 of the codes' size as float32
    at block 32 (1/32 of the elements, 4 bytes each). Scales and mins are kept block-major,
    (n_blocks, rows), the layout the one-token product reads.

    One token with mins: sum_j (d q_j + m) x_j = d sum_j q_j x_j + m sum_j x_j, so the mins cost
    one (n_blocks,) @ (n_blocks, rows) product per call on the block sums of x, not a pass over
    the weights.
    """

    def __init__(self, codes, scales, mins=None, subtract=False):
        n_rows, n_blocks, block = codes.shape
        if (codes.dtype != np.int8 or scales.shape != (n_rows, n_blocks)
                or (mins is not None and mins.shape != scales.shape)):
            raise ValueError(f"codes {codes.dtype} {codes.shape}, scales {scales.shape} and mins "
                             f"{None if mins is None else mins.shape} do not fit")
        super().__init__((n_rows, n_blocks * block))
        self.codes = codes
        self.block_scales = _block_major(scales)                        # (n_blocks, rows)
        self.scales = self.block_scales.T                               # (rows, n_blocks)
        self.block_mins = None if mins is None else _block_major(mins)
        self.mins = None if mins is None else self.block_mins.T
        self.subtract = bool(subtract)
        self.block = block

    @classmethod
    def from_codes(cls, codes):
        """From a formats.quants.codes.Codes of a matrix: codes (rows, n_blocks, block)."""
        return cls(codes.codes, codes.scales, codes.mins, codes.subtract)

    @classmethod
    def from_q8_0(cls, raw, shape):
        """From a Q8_0 tensor's bytes, (rows, row_bytes) uint8 (formats.gguf's Tensor.data)."""
        n_rows, n_cols = shape
        block, type_size = BLOCK[GGMLType.Q8_0]                        # 32 codes + 2-byte scale
        blocks = raw.reshape(n_rows, n_cols // block, type_size)       # (rows, n_blocks, 34)
        # ggml's block_q8_0 is {ggml_half d; int8_t qs[32];}: bytes 0-1 the scale, then the codes.
        scales = blocks[:, :, :2].view("<f2")[:, :, 0]                 # (rows, n_blocks)
        codes = blocks[:, :, 2:].view(np.int8)                         # (rows, n_blocks, 32)
        return cls(codes, scales)

    @classmethod
    def fused(cls, matrices):
        """The matrices stacked along their rows when their codes lie back to back (as wq, wk, wv
        do in a GGUF) and their blocks and mins are alike: the codes stay a view, the small
        scales and mins are copied. Else None."""
        first = matrices[0]
        if not all(isinstance(m, cls) and (m.block, m.mins is None, m.subtract)
                   == (first.block, first.mins is None, first.subtract) for m in matrices):
            return None
        codes = fused_rows([m.codes for m in matrices])
        if codes is None:
            return None
        mins = None if first.mins is None else np.concatenate([m.mins for m in matrices])
        return cls(codes, np.concatenate([m.scales for m in matrices]), mins, first.subtract)

    def rows(self, start, stop, scratch):
        # One ufunc call: int8 -> float32 cast and the per-block scale, as Codes.values; the
        # mins then in a second, in the same order.
        self._weights(self.codes[start:stop], self.scales[start:stop], self.mins, slice(start, stop),
                      scratch.reshape(stop - start, -1, self.block))
        return scratch

    def take(self, ids):
        w = np.empty((len(ids), *self.codes.shape[1:]), dtype=np.float32)
        return self._weights(self.codes[ids], self.scales[ids], self.mins, ids, w).reshape(len(ids), -1)

    def _weights(self, codes, scales, mins, which, out):
        """out = scales * codes (+ or - mins[which]), (n, n_blocks, block); an infinite or NaN
        scale gives what that arithmetic gives (inf * 0 is NaN), without a warning, as
        formats.quant.dequantize."""
        with np.errstate(invalid="ignore", over="ignore"):
            np.multiply(scales[:, :, None], codes, out=out)
            if mins is not None:
                self._min_op(out, mins[which][:, :, None], out=out)
        return out

    @property
    def _min_op(self):
        return np.subtract if self.subtract else np.add

    def product(self, x, out, start, stop):
        if x.shape[0] > 1:
            return super().product(x, out, start, stop)
        n_blocks = self.block_scales.shape[0]
        xb = x.reshape(n_blocks, self.block, 1)                                   # (B, bs, 1)
        scratch = np.empty(self.chunk_rows * self.shape[1], dtype=np.float32)
        partial = np.empty((n_blocks, self.chunk_rows, 1), dtype=np.float32)
        for r0 in range(start, stop, self.chunk_rows):
            r1 = min(r0 + self.chunk_rows, stop)
            q = scratch[:(r1 - r0) * self.shape[1]].reshape(r1 - r0, n_blocks, self.block)
            np.copyto(q, self.codes[r0:r1])                                       # int8 -> float32
            # Block b of every row against block b of x: B matrix-vector products (n, bs) @ (bs,).
            t = np.matmul(q.transpose(1, 0, 2), xb, out=partial[:, :r1 - r0])    # (B, n, 1)
            np.einsum("bo,bo->o", t[:, :, 0], self.block_scales[:, r0:r1], out=out[0, r0:r1])
        if self.block_mins is not None:
            sums = np.add.reduce(xb[:, :, 0], axis=1)                             # (B,) block sums of x
            self._min_op(out[0, start:stop], sums @ self.block_mins[:, start:stop], out=out[0, start:stop])

    def _arrays(self):
        return (self.codes, self.block_scales) + (() if self.block_mins is None else (self.block_mins,))


def _block_major(per_row):
    """(rows, n_blocks) -> a contiguous float32 (n_blocks, rows) copy."""
    return np.ascontiguousarray(np.asarray(per_row, dtype=np.float32).T)
