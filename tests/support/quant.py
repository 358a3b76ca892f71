"""Where the scales of the ggml block types sit, to make random blocks whose scales are finite
or hostile: shared by tests/test_quant_types.py and the fuzz files (tests/support/fuzz.py)."""

import numpy as np

from formats.ggml import BLOCK, GGMLType
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

T = GGMLType
# Byte offsets of the '<f2' scale fields (d, and m / dmin where the type has one) of every block
# type formats.quant decodes. IQ1_M spreads its
# one fp16 over 4 words (IQ1_M_SCALES); MXFP4 and NVFP4 have 8-bit scales whose every value is
# finite (E8M0, and UE4M3 whose NaN code reads as 0).
F16_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
              T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
              T.IQ4_NL: [0], T.IQ4_XS: [0], T.TQ1_0: [52], T.TQ2_0: [64],
              T.IQ2_XXS: [0], T.IQ2_XS: [0], T.IQ2_S: [0], T.IQ3_XXS: [0], T.IQ3_S: [0],
              T.IQ1_S: [0], T.IQ1_M: [], T.MXFP4: [], T.NVFP4: []}
IQ1_M_SCALES = slice(48, 56)      # 4 '<u2' words; their top nibbles are the fp16 d's bits
_NIBBLE_SHIFTS = np.array([0, 4, 8, 12], dtype=np.uint16)


def iq1_m_scale_bits(raw):
    """IQ1_M's fp16 d of every block as '<u2' bits: raw is (..., 56) bytes."""
    words = raw[..., IQ1_M_SCALES].view("<u2")
    return (words >> 12 << _NIBBLE_SHIFTS).sum(axis=-1, dtype=np.uint16)


def set_iq1_m_scale_bits(raw, bits):
    words = raw[..., IQ1_M_SCALES].view("<u2")
    words[...] = words & 0x0FFF | (bits[..., None] >> _NIBBLE_SHIFTS & 15) << 12


def map_scales(raw, ggml_type, fn):
    """Replace every fp16 scale of raw (..., n_blocks, type_size) by fn(its '<u2' bits); plain
    types (F32, F16, ...) have none."""
    if ggml_type == T.IQ1_M:
        set_iq1_m_scale_bits(raw, fn(iq1_m_scale_bits(raw)))
    for start in F16_FIELDS.get(ggml_type, []):
        field = raw[..., start:start + 2].view("<u2")[..., 0]
        field[...] = fn(field)


def finite(bits):
    """fp16 bits with any inf/NaN made finite (the exponent's top bit cleared)."""
    return np.where(bits & 0x7C00 == 0x7C00, bits & 0xBFFF, bits).astype(np.uint16)


def random_blocks(seed, ggml_type, n_rows, n_blocks):
    """(n_rows, n_blocks * type_size) random bytes with every fp16 scale finite (no inf or NaN
    scale: what a quantizer writes). Plain types keep any bits, NaNs included."""
    raw = np.random.default_rng(seed).integers(0, 256, size=(n_rows, n_blocks, BLOCK[ggml_type][1]),
                                               dtype=np.uint8)
    map_scales(raw, ggml_type, finite)
    return raw.reshape(n_rows, -1)


def oracle_dequantize(raw, ggml_type):
    """gguf-py's floats for raw (n_rows, row_bytes); it wants F32/F16 data as floats."""
    raw = raw.view({T.F32: np.float32, T.F16: np.float16}.get(ggml_type, np.uint8))
    with np.errstate(all="ignore"):
        return np.asarray(gguf_quants.dequantize(raw, GGMLQuantizationType(ggml_type)), np.float32)
