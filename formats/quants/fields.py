"""Reading the fields of ggml blocks: `blocks` is (n_blocks, type_size) uint8, one block a row."""

import numpy as np

# Shifts that pick the 2-bit crumbs and the single bits of a byte, and its two nibbles.
CRUMB_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)
BIT_SHIFTS = np.arange(8, dtype=np.uint8)
NIBBLE_SHIFTS = np.array([0, 4], dtype=np.uint8)


def field(blocks, start, dtype):
    """The (n_blocks,) view of the scalar field of `dtype` at byte `start` of every block."""
    dtype = np.dtype(dtype)
    return blocks[:, start:start + dtype.itemsize].view(dtype)[:, 0]


def f16(blocks, start):
    """The '<f2' field at byte `start` of every block, as a float32 column (n_blocks, 1)."""
    return field(blocks, start, "<f2").astype(np.float32)[:, None]


def nibbles(qs):
    """(n, m) bytes -> (n, 2, m) codes: [:, 0] the low nibbles, [:, 1] the high ones."""
    return (qs[:, None, :] >> NIBBLE_SHIFTS[:, None]) & 15


def crumbs(qs):
    """(n, m) bytes -> (n, 4, m) two-bit codes: [:, k] = byte >> 2k & 3."""
    return (qs[:, None, :] >> CRUMB_SHIFTS[:, None]) & 3


def bit_planes(qh):
    """(n, m) bytes -> (n, 8, m) bits: [:, b] = byte >> b & 1."""
    return (qh[:, None, :] >> BIT_SHIFTS[:, None]) & 1
