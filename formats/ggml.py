"""ggml tensor types: ids as stored in GGUF files, block sizes and bytes per block, derived
from the one record per type that formats/quants/ declares (each family module's `TYPES`).

Ids and sizes are those of ggml's `ggml_type` / `type_traits` table (ggml.h, ggml.c) and of
gguf-py's `GGMLQuantizationType` / `GGML_QUANT_SIZES`. A row of `n` elements of a block type
takes `n // block_size * type_size` bytes and `n` must divide by `block_size`. The types are
those formats.quant decodes (every one gguf-py 0.19 dequantizes) and the plain integer ones; a
file holding another (Q8_1, Q8_K, ...) is refused as "unknown or unsupported" when read.
"""

import enum

from formats.quants import TYPES
from formats.quants.record import PlainType

# ggml type name -> id, from the records (formats/quants/record.py) of every family module.
GGMLType = enum.IntEnum("GGMLType", [(record.name, record.ggml_type) for record in TYPES],
                        module=__name__, qualname="GGMLType")

# type -> (elements per block, bytes per block)
BLOCK = {GGMLType(record.ggml_type): (record.block, record.type_size) for record in TYPES}

# Types whose elements are plain little-endian numbers; numpy has no bfloat16, so BF16 is its
# raw uint16 bit pattern.
PLAIN_DTYPE = {GGMLType(record.ggml_type): record.dtype
               for record in TYPES if isinstance(record, PlainType)}


def row_nbytes(ggml_type, n):
    """Bytes taken by a row of `n` elements (n must divide by the block size)."""
    block_size, type_size = BLOCK[ggml_type]
    if n % block_size:
        raise ValueError(f"row of {n} elements is not a multiple of {ggml_type.name}'s block size {block_size}")
    return n // block_size * type_size
