"""Packing: several weight matrices made one, so that one product computes them all.

FastLlama multiplies wq, wk, wv as one matrix and w1, w3 as another (fast.STACKED). `stack_rows`
makes each: a view where the matrices lie back to back in one buffer (a GGUF stores wq, wk, wv
so; load.read_codes packs quantized matrices so), else a RowStack of the runs that do.

Runtime (reference/runtime/__init__.py): no maths here; the kernels are in blockwise.py.
"""

import numpy as np

from reference.runtime.blockwise import BlockMatrix, Int8BlockMatrix, product


def stack_rows(matrices):
    """The (rows, cols) matrices stacked along their rows, to be multiplied as one: a view where
    they lie back to back, else a RowStack of the runs that do (wq | wk as Q4_K codes, then wv as
    Q6_K's), never a copy. A copy would cost memory, and a float32 sgemm over stacked rows may
    round differently from one per matrix, for no gain at decode (docs/benchmarks.md)."""
    runs = [[matrices[0]]]
    for m in matrices[1:]:
        if _fused(runs[-1] + [m]) is None:
            runs.append([m])
        else:
            runs[-1].append(m)
    stacked = [_fused(run) for run in runs]
    return stacked[0] if len(stacked) == 1 else RowStack(stacked)


def _fused(matrices):
    """The matrices as one matrix without copying their codes or weights, or None."""
    if len(matrices) == 1:
        return matrices[0]
    fused = fused_rows(matrices)
    return fused_codes(matrices) if fused is None else fused


def row_range(w, start, stop):
    """Rows start..stop-1 of a float32 array or a BlockMatrix, sharing its memory."""
    return w.slice_rows(start, stop) if isinstance(w, BlockMatrix) else w[start:stop]


def fused_rows(matrices):
    """The (rows, cols) matrices stacked along their rows, as a view when they lie back to back
    in one buffer (see adjacent_view), else None.

    >>> w = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> fused_rows([w[:2], w[2:5], w[5:]]) is not None, fused_rows([w[:2], w[3:]])
    (True, None)
    """
    return adjacent_view(matrices, axis=0)


def adjacent_view(arrays, axis):
    """The arrays concatenated along `axis`, as a view when they lie back to back in one buffer
    (same dtype, other dimensions and strides, each starting where the one before ends along
    `axis`), else None.

    >>> w = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> adjacent_view([w[:, :1], w[:, 1:]], axis=1).shape, adjacent_view([w[:, :1], w[:, :1]], axis=1)
    ((6, 2), None)
    """
    first = arrays[0]
    if not all(isinstance(a, np.ndarray) for a in arrays):
        return None
    others = [n for i, n in enumerate(first.shape) if i != axis % first.ndim]
    if any(a.dtype != first.dtype or a.strides != first.strides
           or [n for i, n in enumerate(a.shape) if i != axis % a.ndim] != others for a in arrays):
        return None
    if len({id(_root(a)) for a in arrays}) != 1:
        return None     # adjacent addresses in two different buffers are no single array
    address = first.__array_interface__["data"][0]
    for a in arrays:
        if a.__array_interface__["data"][0] != address:
            return None
        address += a.shape[axis] * a.strides[axis]
    shape = list(first.shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    return np.lib.stride_tricks.as_strided(first, tuple(shape), first.strides, writeable=False)


def _root(array):
    """The object that owns `array`'s memory (a memmap, an mmap, bytes, or the array itself)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array


class RowStack(BlockMatrix):
    """Matrices of one row length stacked along their rows and multiplied as one, each product
    running on the matrices its rows fall in: wq | wk as Q4_K codes over wv as Q6_K's, say."""

    def __init__(self, matrices):
        super().__init__((sum(m.shape[0] for m in matrices), matrices[0].shape[1]))
        self.matrices = list(matrices)
        self.compressed = any(isinstance(m, BlockMatrix) for m in matrices)
        self.starts = np.cumsum([0] + [m.shape[0] for m in matrices]).tolist()    # each one's first row

    def product(self, x, out, start, stop):
        for m, first, end in zip(self.matrices, self.starts, self.starts[1:]):
            if max(start, first) < min(stop, end):
                product(x, m, out[:, first:end], max(start, first) - first, min(stop, end) - first)

    def slice_rows(self, start, stop):
        parts = [row_range(m, max(start, first) - first, min(stop, end) - first)
                 for m, first, end in zip(self.matrices, self.starts, self.starts[1:])
                 if max(start, first) < min(stop, end)]
        return parts[0] if len(parts) == 1 else RowStack(parts)

    def _arrays(self):
        return tuple(a for m in self.matrices for a in (m._arrays() if isinstance(m, BlockMatrix) else (m,)))


def fused_codes(matrices):
    """Int8BlockMatrix objects stacked along their rows when their codes lie side by side in one
    array (as load.read_codes stores wq, wk, wv) and their blocks and mins are alike: the codes
    stay a view, and so do the scales and mins where they lie side by side too (read_codes stores
    them so), else those are copied. Else None."""
    first = matrices[0]
    if not all(isinstance(m, Int8BlockMatrix) and (m.block, m.mins is None, m.subtract)
               == (first.block, first.mins is None, first.subtract) for m in matrices):
        return None
    codes = adjacent_view([m.codes for m in matrices], axis=2)
    if codes is None:
        return None

    def stacked(arrays):                                               # (B, rows) each
        view = adjacent_view(arrays, axis=1)
        return np.concatenate(arrays, axis=1) if view is None else view

    mins = None if first.mins is None else stacked([m.mins for m in matrices])
    return Int8BlockMatrix(codes, stacked([m.scales for m in matrices]), mins, first.subtract)
