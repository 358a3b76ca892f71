"""ggml tensor types: ids as stored in GGUF files, block sizes and bytes per block.

Ids and sizes are those of ggml's `ggml_type` / `type_traits` table (ggml.h, ggml.c) and of
gguf-py's `GGMLQuantizationType` / `GGML_QUANT_SIZES`. A row of `n` elements of a block type
takes `n // block_size * type_size` bytes and `n` must divide by `block_size`.
"""

import enum

import numpy as np


class GGMLType(enum.IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q4_K = 12
    Q6_K = 14
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    BF16 = 30


# type -> (elements per block, bytes per block)
BLOCK = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q4_K: (256, 2 + 2 + 12 + 128),
    GGMLType.Q6_K: (256, 128 + 64 + 16 + 2),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.BF16: (1, 2),
}

# Types whose elements are plain little-endian numbers; numpy has no bfloat16, so BF16 is its
# raw uint16 bit pattern.
PLAIN_DTYPE = {
    GGMLType.F32: np.dtype("<f4"),
    GGMLType.F16: np.dtype("<f2"),
    GGMLType.BF16: np.dtype("<u2"),
    GGMLType.I8: np.dtype("i1"),
    GGMLType.I16: np.dtype("<i2"),
    GGMLType.I32: np.dtype("<i4"),
    GGMLType.I64: np.dtype("<i8"),
    GGMLType.F64: np.dtype("<f8"),
}


def row_nbytes(ggml_type, n):
    """Bytes taken by a row of `n` elements (n must divide by the block size)."""
    block_size, type_size = BLOCK[ggml_type]
    if n % block_size:
        raise ValueError(f"row of {n} elements is not a multiple of {ggml_type.name}'s block size {block_size}")
    return n // block_size * type_size
