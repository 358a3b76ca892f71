"""Plain types: one little-endian number an element (one-element blocks, no scale).

F32   '<f4' per element.
F16   '<f2' per element (IEEE half, round to nearest even).
BF16  '<u2' per element: the top half of the float32 bits, rounded to nearest even; a NaN keeps
      its top bits with the quiet bit set (ggml_compute_fp32_to_bf16).
I8, I16, I32, I64, F64: integers and doubles, read and written by casting (formats.gguf).
"""

import numpy as np

from formats.quants.record import PlainType


def _bf16_bits(x):
    """float32 -> bfloat16 bits (ggml_compute_fp32_to_bf16): add 0x7fff plus the lowest kept bit
    and drop 16 bits (round to nearest even). A NaN keeps its top bits and gains the quiet bit,
    so its low bits cannot carry it into an infinity."""
    bits = x.view("<u4")
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    bits = np.where(nan, (bits & 0xFFFF0000) | 0x00400000, bits)
    return ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype("<u2")


# Encoders fill out (n_blocks, type_size) uint8 from blocks (n_blocks, 1) float32; decoders the reverse.

def _encode_f32(blocks, out):
    out.view("<f4")[...] = blocks


def _encode_f16(blocks, out):
    out.view("<f2")[...] = blocks                          # numpy's cast rounds to nearest even


def _encode_bf16(blocks, out):
    out.view("<u2")[...] = _bf16_bits(blocks)


def _decode_f32(blocks, out):
    out[...] = blocks.view("<f4")


def _decode_f16(blocks, out):
    out[...] = blocks.view("<f2")


def _decode_bf16(blocks, out):
    out[...] = (blocks.view("<u2").astype("<u4") << 16).view("<f4")


TYPES = (
    PlainType("F32", 0, np.dtype("<f4"), _decode_f32, _encode_f32),
    PlainType("F16", 1, np.dtype("<f2"), _decode_f16, _encode_f16),
    PlainType("I8", 24, np.dtype("i1")),
    PlainType("I16", 25, np.dtype("<i2")),
    PlainType("I32", 26, np.dtype("<i4")),
    PlainType("I64", 27, np.dtype("<i8")),
    PlainType("F64", 28, np.dtype("<f8")),
    PlainType("BF16", 30, np.dtype("<u2"), _decode_bf16, _encode_bf16),
)
