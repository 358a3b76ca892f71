"""A ggml tensor type as one record of data: each family module (plain.py, legacy.py, kquants.py,
...) lists its types in `TYPES`, and everything else about a type is derived from its record:
formats.ggml's GGMLType, BLOCK and PLAIN_DTYPE, formats.quant's CODES and dispatch, and the type
table of docs/formats.md (checked against the records by tests/test_quant_tables.py).
"""

import dataclasses
import enum
from typing import Callable, NamedTuple

import numpy as np


class Mins(enum.Enum):
    """How a quantized type's per-group min enters its values (formats/quants/codes.py)."""
    NONE = "none"                 # x = scale * code
    ADD = "add"                   # x = scale * code + min         (Q4_1, Q5_1: ggml's m)
    SUBTRACT = "subtract"         # x = scale * code - min         (the k-quants' dmin * mn)


class CodesForm(NamedTuple):
    """What codes of different types must share to be held in one array: the group of elements
    sharing a scale, and how the mins enter."""
    group: int
    mins: Mins


@dataclasses.dataclass(frozen=True)
class QuantType:
    """A block-quantized type: `block` elements stored in `type_size` bytes, read as int8 codes
    times a float32 scale per `group` elements (plus a min per group, as `mins` says).

    decode: blocks (n, type_size) uint8 -> their Codes. encode: None, or a function filling
    out (n, type_size) uint8 from blocks (n, block) float32.
    """
    name: str
    ggml_type: int
    block: int
    type_size: int
    group: int
    mins: Mins
    decode: Callable
    encode: Callable | None = None

    @property
    def form(self):
        return CodesForm(self.group, self.mins)


@dataclasses.dataclass(frozen=True)
class PlainType:
    """A type of plain little-endian numbers, one element a block, stored as `dtype` (BF16 as
    its uint16 bits: NumPy has no bfloat16).

    decode, encode: None (the integer types, read and written by casting), or functions filling
    out (n, 1) float32 from blocks (n, itemsize) uint8, and the reverse.
    """
    name: str
    ggml_type: int
    dtype: np.dtype
    decode: Callable | None = None
    encode: Callable | None = None

    block = 1

    @property
    def type_size(self):
        return self.dtype.itemsize
