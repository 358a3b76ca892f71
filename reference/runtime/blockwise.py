"""The fast path's kernels: weight matrices as products use them, float32 arrays or int8 codes
times block scales, multiplied a chunk of rows at a time.

`product(x, w, out, start, stop)` is out[:, start:stop] = x @ w[start:stop].T for every kind of
weight; executor.py splits a large product's rows between threads with it.

Float32, one token: np.vecdot, a SIMD dot per row, streams the weights faster than OpenBLAS's
sgemv; a prompt (T > 1) goes to BLAS sgemm.

Compressed: every quantized type is, per block of 16, 32 or 256, small integer codes times one
scale (plus a min for some), and load.py transcodes each matrix into that form once (formats/
quants/codes.py reads each type that way), the codes q stored block-major (n_blocks, block, rows):

    one token:  t[b, o] = sum_j x[b, j] q[b, j, o]       codes cast to float32 in a scratch, then
                                                          per block one BLAS sgemv over the rows
                out[o]  = sum_b d[b, o] t[b, o]           the scales, once per row and block
                        (+ or - sum_b m[b, o] s[b])       mins m: s[b] = sum_j x[b, j], once a call
    T tokens:   V[r0:r1].T = d[:, None, r0:r1] * q[:, :, r0:r1]   scaled codes in the scratch
                out[:, r0:r1] = x @ V[r0:r1].T            then BLAS sgemm
                        (+ or - S @ m[:, r0:r1])          mins: in the same sgemm, B more rows of
                                                          the scratch; S[t, b] = sum_j x[t, b, j]

NumPy has no int8 matrix product, so the cast cannot be avoided; each thread holds at most one
chunk of float32 weights (`_buffer`). The one-token form is many small BLAS calls, so it runs with
BLAS on one thread (blas.py). Why each choice, with figures: docs/benchmarks.md.

Shapes: a matrix is (rows, cols) as torch's nn.Linear.weight (out, in); x is (T, cols).

Runtime (reference/runtime/__init__.py): the matrix products of model.py's `x @ w.T`, for
every way a weight is stored.
"""

import threading

import numpy as np

# Elements per chunk: 2 MiB of float32 scratch. Smaller chunks lose to the Python work per
# chunk, larger ones to the scratch leaving the caches (docs/benchmarks.md).
CHUNK_ELEMENTS = 1 << 19
# Columns per part of a prompt's chunk: longer rows are multiplied a part at a time, so that a
# chunk still holds hundreds of rows (each sgemm packs x's part anew; docs/benchmarks.md).
PROMPT_PART_COLS = 1024


_BUFFERS = threading.local()


def _buffer(name, n_elements):
    """A float32 array of n_elements, this thread's own, reused from call to call: a fresh one
    per product cost ~1000 page faults a call (docs/benchmarks.md)."""
    array = getattr(_BUFFERS, name, None)
    if array is None or array.size < n_elements:
        array = np.empty(n_elements, dtype=np.float32)
        setattr(_BUFFERS, name, array)
    return array[:n_elements]


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
    compressed = True           # its products cast codes (compute-bound), unlike float32's

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)

    def rows(self, start, stop, scratch):
        """Rows start..stop-1 as float32 (stop-start, cols), written into `scratch` if it is used."""
        raise NotImplementedError

    def take(self, ids):
        """Rows `ids` as float32: (T,) ints -> (T, cols). Used for the embedding lookup."""
        raise NotImplementedError

    def product(self, x, out, start, stop):
        """out[:, start:stop] = x @ W[start:stop].T, one chunk of rows at a time."""
        raise NotImplementedError

    def slice_rows(self, start, stop):
        """Rows start..stop-1, sharing this matrix's memory."""
        raise NotImplementedError

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
    """W[o, b * block + j] = scales[b, o] * codes[b, j, o] (+ or - mins[b, o]): int8 codes and a
    float32 scale per block of `block` elements of a row, and for some types a float32 min per
    block, added or subtracted as `subtract` says. Every quantized ggml type is this
    (formats/quants/codes.py's `Codes`), and so are llama2.c v2 int8 groups.

    Stored block-major: codes (n_blocks, block, rows), scales and mins (n_blocks, rows), so that a
    one-token product is per block one long sgemv over the rows. Mins cost one product per call
    on x's block sums: sum_j (d q_j + m) x_j = d sum_j q_j x_j + m sum_j x_j.
    """

    def __init__(self, codes, scales, mins=None, subtract=False):
        n_blocks, block, n_rows = codes.shape
        if (codes.dtype != np.int8 or scales.shape != (n_blocks, n_rows)
                or (mins is not None and mins.shape != scales.shape)):
            raise ValueError(f"codes {codes.dtype} {codes.shape}, scales {scales.shape} and mins "
                             f"{None if mins is None else mins.shape} do not fit")
        super().__init__((n_rows, n_blocks * block))
        self.codes = codes                                              # (n_blocks, block, rows)
        self.scales = np.asarray(scales, dtype=np.float32)              # (n_blocks, rows)
        self.mins = None if mins is None else np.asarray(mins, dtype=np.float32)
        self.subtract = bool(subtract)
        self.block = block
        self.parts = _column_parts(n_blocks, block)         # a prompt's chunks: see _prompt_product
        self.chunk_rows = max(1, CHUNK_ELEMENTS // ((self.parts[0][1] - self.parts[0][0]) * block))

    @classmethod
    def from_rows(cls, codes, scales, mins=None, subtract=False):
        """From row-major arrays, copied into the stored layout: codes (rows, n_blocks, block),
        scales and mins (rows, n_blocks)."""
        def block_major(a):
            return None if a is None else np.ascontiguousarray(np.asarray(a, dtype=np.float32).T)

        return cls(np.ascontiguousarray(codes.transpose(1, 2, 0)), block_major(scales), block_major(mins),
                   subtract)

    @classmethod
    def from_codes(cls, codes):
        """From a formats.quants.codes.Codes of a matrix (formats.quant.codes_rows)."""
        return cls.from_rows(codes.codes, codes.scales, codes.mins, codes.subtract)

    def slice_rows(self, start, stop):
        """Rows start..stop-1 as an Int8BlockMatrix of views into this one's arrays."""
        return Int8BlockMatrix(self.codes[:, :, start:stop], self.scales[:, start:stop],
                               None if self.mins is None else self.mins[:, start:stop], self.subtract)

    def rows(self, start, stop, scratch):
        """Rows start..stop-1 as float32 (stop-start, cols), exactly formats.quant's values: the
        transpose of a (cols, stop-start) array written into `scratch`."""
        n = stop - start
        wt = scratch.reshape(-1)[:n * self.shape[1]].reshape(*self.codes.shape[:2], n)   # (B, bs, n)
        self._weights(self.codes[:, :, start:stop], slice(start, stop), wt)
        return wt.reshape(self.shape[1], n).T

    def take(self, ids):
        ids = np.asarray(ids)
        wt = np.empty((*self.codes.shape[:2], len(ids)), dtype=np.float32)
        self._weights(self.codes[:, :, ids], ids, wt)
        return wt.reshape(self.shape[1], len(ids)).T.copy()

    def _weights(self, codes, which, out):
        """out = scales * codes (+ or - mins) for the rows `which` (a slice or ids): (B, bs, n),
        in the order of Codes.values, so the floats are formats.quant.dequantize's. An infinite
        or NaN scale gives what that arithmetic gives (inf * 0 is NaN), without a warning, as
        dequantize does."""
        self._scaled(self.scales[:, which], codes, out)
        if self.mins is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                self._min_op(out, self.mins[:, None, which], out=out)
        return out

    @staticmethod
    def _scaled(scales, codes, out):
        """out = scales * codes: (B, n) and (B, bs, n) -> (B, bs, n). The int8 cast, then the scale
        in place: faster than one mixed-type multiply (docs/benchmarks.md)."""
        np.copyto(out, codes)
        with np.errstate(invalid="ignore", over="ignore"):
            return np.multiply(out, scales[:, None, :], out=out)

    def _add_mins(self, x, out, start, stop):
        """One token: out[:, start:stop] += or -= s @ M, the mins m of the rows times s (1, B), x's
        block sums (sum_j (d q_j + m) x_j = d sum_j q_j x_j + m sum_j x_j)."""
        n_blocks, block = self.codes.shape[:2]
        sums = np.add.reduce(x.reshape(len(x), n_blocks, block), axis=2)           # (1, B)
        self._min_op(out[:, start:stop], sums @ self.mins[:, start:stop], out=out[:, start:stop])

    def _block_sums(self, x, out):
        """out[t, b] = sum_j x[t, b * block + j]: (T, cols) -> (T, B). One einsum, 4-5x faster for a
        prompt than np.add.reduce over the short last axis (docs/benchmarks.md)."""
        n_blocks, block = self.codes.shape[:2]
        return np.einsum("tbj->tb", x.reshape(len(x), n_blocks, block), out=out)

    @property
    def _min_op(self):
        return np.subtract if self.subtract else np.add

    def product(self, x, out, start, stop):
        if x.shape[0] > 1:
            return self._prompt_product(x, out, start, stop)
        n_blocks, block = self.codes.shape[:2]
        xr = x.reshape(n_blocks, 1, block)
        # A chunk is `per_rows` rows of `per_blocks` blocks, at most CHUNK_ELEMENTS codes.
        per_rows = max(1, min(stop - start, CHUNK_ELEMENTS // block))
        per_blocks = max(1, CHUNK_ELEMENTS // (per_rows * block))
        scratch = _buffer("scratch", per_blocks * block * per_rows)
        partial = _buffer("partial", n_blocks * per_rows).reshape(n_blocks, 1, per_rows)
        for r0 in range(start, stop, per_rows):
            r1 = min(r0 + per_rows, stop)
            t = partial[:, :, :r1 - r0]                                            # (B, 1, n)
            for b0 in range(0, n_blocks, per_blocks):
                b1 = min(b0 + per_blocks, n_blocks)
                q = scratch[:(b1 - b0) * block * (r1 - r0)].reshape(b1 - b0, block, r1 - r0)
                np.copyto(q, self.codes[b0:b1, :, r0:r1])                          # int8 -> float32
                np.matmul(xr[b0:b1], q, out=t[b0:b1])       # t[b, o] = sum_j x[b, j] q[b, j, o]
            np.einsum("bo,bo->o", t[:, 0], self.scales[:, r0:r1], out=out[0, r0:r1])
        if self.mins is not None:
            self._add_mins(x, out, start, stop)

    def _prompt_product(self, x, out, start, stop):
        """T > 1: per chunk of rows and part of the columns (`parts`), the scaled codes d * q in the
        scratch and one sgemm, the parts after the first added up through a (T, n) buffer.
        Mins ride in the last part's sgemm, as B more rows of the chunk against B more columns of
        x, its block sums: out = [x | +-S] @ [d * q; m], S[t, b] = sum_j x[t, b, j], cheaper than a
        product of their own (docs/benchmarks.md)."""
        n_blocks, block = self.codes.shape[:2]
        n_cols, n_mins = self.shape[1], 0 if self.mins is None else n_blocks
        if n_mins:
            xa = _buffer("prompt_x", len(x) * (n_cols + n_mins)).reshape(len(x), n_cols + n_mins)
            xa[:, :n_cols] = x
            self._block_sums(x, xa[:, n_cols:])
            if self.subtract:
                np.negative(xa[:, n_cols:], out=xa[:, n_cols:])
            x = xa
        parts = self.parts
        scratch = _buffer("scratch", self.chunk_rows * ((parts[0][1] - parts[0][0]) * block + n_mins))
        partial = _buffer("partial", len(x) * self.chunk_rows).reshape(len(x), self.chunk_rows)
        for r0 in range(start, stop, self.chunk_rows):
            r1 = min(r0 + self.chunk_rows, stop)
            for i, (b0, b1) in enumerate(parts):
                k0, k1 = b0 * block, b1 * block + (n_mins if b1 == n_blocks else 0)
                wt = scratch[:(k1 - k0) * (r1 - r0)].reshape(k1 - k0, r1 - r0)      # (part cols [+ B], n)
                codes = wt[:(b1 - b0) * block].reshape(b1 - b0, block, r1 - r0)
                self._scaled(self.scales[b0:b1, r0:r1], self.codes[b0:b1, :, r0:r1], codes)
                if k1 > n_cols:
                    wt[(b1 - b0) * block:] = self.mins[:, r0:r1]
                if i == 0:
                    np.matmul(x[:, k0:k1], wt, out=out[:, r0:r1])                   # (T, n)
                else:
                    out[:, r0:r1] += np.matmul(x[:, k0:k1], wt, out=partial[:, :r1 - r0])

    def _arrays(self):
        return (self.codes, self.scales) + (() if self.mins is None else (self.mins,))


def _column_parts(n_blocks, block):
    """The column parts of a prompt's chunks, (first block, end block) pairs: one part where a row
    has at most PROMPT_PART_COLS columns, else equal parts of at most that many (or one block)."""
    n_parts = -(-n_blocks * block // max(PROMPT_PART_COLS, block))
    per_part = -(-n_blocks // n_parts)
    return [(b0, min(b0 + per_part, n_blocks)) for b0 in range(0, n_blocks, per_part)]


