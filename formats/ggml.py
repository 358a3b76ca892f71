"""ggml tensor types: ids as stored in GGUF files, block sizes and bytes per block.

Ids and sizes are those of ggml's `ggml_type` / `type_traits` table (ggml.h, ggml.c) and of
gguf-py's `GGMLQuantizationType` / `GGML_QUANT_SIZES`. A row of `n` elements of a block type
takes `n // block_size * type_size` bytes and `n` must divide by `block_size`. The types are
those formats.quant decodes (every one gguf-py 0.19 dequantizes) and the plain integer ones; a
file holding another (Q8_1, Q8_K, ...) is refused as "unknown or unsupported" when read.
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
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40


# type -> (elements per block, bytes per block)
BLOCK = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q2_K: (256, 16 + 64 + 2 + 2),
    GGMLType.Q3_K: (256, 32 + 64 + 12 + 2),
    GGMLType.Q4_K: (256, 2 + 2 + 12 + 128),
    GGMLType.Q5_K: (256, 2 + 2 + 12 + 32 + 128),
    GGMLType.Q6_K: (256, 128 + 64 + 16 + 2),
    GGMLType.IQ2_XXS: (256, 2 + 64),
    GGMLType.IQ2_XS: (256, 2 + 64 + 8),
    GGMLType.IQ2_S: (256, 2 + 32 + 32 + 8 + 8),
    GGMLType.IQ3_XXS: (256, 2 + 64 + 32),
    GGMLType.IQ3_S: (256, 2 + 64 + 8 + 32 + 4),
    GGMLType.IQ1_S: (256, 2 + 32 + 16),
    GGMLType.IQ1_M: (256, 32 + 16 + 8),
    GGMLType.IQ4_NL: (32, 2 + 16),
    GGMLType.IQ4_XS: (256, 2 + 2 + 4 + 128),
    GGMLType.TQ1_0: (256, 48 + 4 + 2),
    GGMLType.TQ2_0: (256, 64 + 2),
    GGMLType.MXFP4: (32, 1 + 16),
    GGMLType.NVFP4: (64, 4 + 32),
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
