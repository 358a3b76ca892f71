"""4-bit codes looked up in a table of 16 values: IQ4_NL, IQ4_XS, MXFP4, NVFP4 (dequantize only).

A block of 32 (or a sub-block of 16) stores its codes as nibbles: byte j of its 16 (or 8) code
bytes holds element j in its low nibble and element j + 16 (or j + 8) in its high nibble.

IQ4_NL  32 elements, 18 bytes; x = d * IQ4_NL_VALUES[code]   (tables.py: int8, -127 .. 113)
        [0:2]    d        '<f2'
        [2:18]   qs       u8[16]    nibbles as above

IQ4_XS  256 elements, 136 bytes: 8 sub-blocks of 32, x = (d * (ls[i] - 32)) * IQ4_NL_VALUES[code]
        [0:2]    d        '<f2'
        [2:4]    scales_h '<u2'     six-bit ls[i] = scales_l[i // 2] >> 4(i % 2) & 15
        [4:8]    scales_l u8[4]                     | (scales_h >> 2i & 3) << 4
        [8:136]  qs       u8[128]   sub-block i: bytes 16i .. 16i+15, nibbles as above

MXFP4   32 elements, 17 bytes (OCP microscaling FP4); x = 2**(e - 128) * E2M1_DOUBLED[code]
        [0:1]    e        u8        E8M0 shared exponent: the scale is 2**(e - 127), halved
                                    because the table holds twice the E2M1 values
        [1:17]   qs       u8[16]    nibbles as above

NVFP4   64 elements, 36 bytes: 4 sub-blocks of 16, x = UE4M3_HALF[d[s]] * E2M1_DOUBLED[code]
        [0:4]    d        u8[4]     UE4M3 scale of sub-block s
        [4:36]   qs       u8[32]    sub-block s: bytes 8s .. 8s+7, nibbles as above

The derived tables:
- E2M1_DOUBLED: a code is FP4 E2M1, sign bit 3, exponent bits 2..1, mantissa bit 0; its value
  is m / 2 for exponent 0, else (1 + m / 2) * 2**(exponent - 1). Doubled they are the integers
  0 1 2 3 4 6 8 12 (and negated), so the table is int8, and code 8 (E2M1's -0) is 0.
- UE4M3_HALF: an unsigned E4M3 byte (bit 7 ignored): exponent bits 6..3, mantissa bits 2..0,
  bias 7; exponent 0 gives m * 2**-9, else (1 + m / 8) * 2**(exponent - 7); 0x7F (E4M3's NaN
  code) reads as 0, as in ggml. Halved to pair with the doubled E2M1 values.
Every product is exact in float32 (a scale of at most 4 significant bits times a value of at most
2), except MXFP4's largest exponents, whose products overflow to ±inf as in ggml.
"""

import numpy as np

from formats.quants.codes import grouped
from formats.quants.fields import f16, field, nibbles
from formats.quants.record import Mins, QuantType
from formats.quants.tables import IQ4_NL_VALUES

IQ4_NL_TABLE = np.array(IQ4_NL_VALUES, dtype=np.int8)


def _e2m1_doubled():
    """(16,) int8: twice the FP4 E2M1 value of each code (see the module docstring)."""
    code = np.arange(16)
    exponent, mantissa = code >> 1 & 3, code & 1
    magnitude = np.where(exponent == 0, mantissa, (2 + mantissa) << np.maximum(exponent - 1, 0))
    return np.where(code & 8, -magnitude, magnitude).astype(np.int8)


def _ue4m3_half():
    """(256,) float32: half the unsigned E4M3 value of each byte (see the module docstring)."""
    byte = np.arange(256)
    exponent, mantissa = byte >> 3 & 15, byte & 7
    value = np.where(exponent == 0, np.ldexp(mantissa, -9), np.ldexp(8 + mantissa, exponent - 10))
    value[byte == 0x7F] = 0
    return (value / 2).astype(np.float32)


E2M1_DOUBLED = _e2m1_doubled()
UE4M3_HALF = _ue4m3_half()


def _codes(qs, group):
    """(n, m) bytes -> (n, 2m) codes for groups of `group` elements whose group // 2 bytes hold
    element j in the low nibble and element j + group // 2 in the high one."""
    n, m = qs.shape
    per = group // 2
    return nibbles(qs.reshape(n * m // per, per)).reshape(n, 2 * m)


def codes_iq4_nl(blocks):
    return grouped(IQ4_NL_TABLE[_codes(blocks[:, 2:], 32)], f16(blocks, 0))


def codes_iq4_xs(blocks):
    n = blocks.shape[0]
    low = nibbles(blocks[:, 4:8]).transpose(0, 2, 1).reshape(n, 8)           # i = 2 * byte + nibble
    high = field(blocks, 2, "<u2")[:, None] >> np.arange(0, 16, 2, dtype=np.uint16) & 3
    scale = f16(blocks, 0) * ((low | high.astype(np.uint8) << 4).view(np.int8) - 32)   # (n, 8)
    return grouped(IQ4_NL_TABLE[_codes(blocks[:, 8:], 32)], scale)


def codes_mxfp4(blocks):
    scale = np.ldexp(np.float32(1), blocks[:, :1].astype(np.int32) - 128)      # (n, 1), exact
    return grouped(E2M1_DOUBLED[_codes(blocks[:, 1:], 32)], scale)


def codes_nvfp4(blocks):
    return grouped(E2M1_DOUBLED[_codes(blocks[:, 4:], 16)], UE4M3_HALF[blocks[:, :4]])


TYPES = (
    QuantType("IQ4_NL", 20, 32, 2 + 16, 32, Mins.NONE, codes_iq4_nl),
    QuantType("IQ4_XS", 23, 256, 2 + 2 + 4 + 128, 32, Mins.NONE, codes_iq4_xs),
    QuantType("MXFP4", 39, 32, 1 + 16, 32, Mins.NONE, codes_mxfp4),
    QuantType("NVFP4", 40, 64, 4 + 32, 16, Mins.NONE, codes_nvfp4),
)
