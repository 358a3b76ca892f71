"""The grid i-quants: IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M (dequantize only).

Each code is an index into a grid of points (tables.py): 8 values for the IQ2 and IQ1 types, 4
for IQ3. The IQ2/IQ3 grids hold magnitudes and a sign pattern flips some of them; IQ1's grid
holds -1, 0, 1, shifted by ±1/8. All 256-element blocks; fields are bytes or little-endian.
"Group" g is the 8 elements 8g .. 8g+7, "sub-block" ib the 32 elements 32ib .. 32ib+31.

IQ2_XXS  66 bytes; x = db * grid[a_l] * signs, db = d * (0.5 + s) * 0.25
         [0:2]    d       '<f2'
         [2:66]   8 pairs of '<u4' (a, b), one per sub-block ib: byte l of a is the grid index of
                  group 4ib + l; b holds 4 seven-bit sign indices (bits 7l .. 7l+6, group 4ib + l)
                  and s in bits 28..31
IQ2_XS   74 bytes; x = db * grid[q & 511] * KSIGNS[q >> 9], db as IQ2_XXS
         [0:2]    d       '<f2'
         [2:66]   qs      '<u2'[32]  q of group g
         [66:74]  scales  u8[8]      s of elements 16j .. 16j+15 = scales[j // 2] >> 4(j % 2) & 15
IQ2_S    82 bytes; x = db * grid[index] * signs, db as IQ2_XXS, s as IQ2_XS
         [0:2]    d       '<f2'
         [2:34]   qs      u8[32]     index of group g = qs[g] | (qh[g // 4] >> 2(g % 4) & 3) << 8
         [34:66]  signs   u8[32]     bit j of signs[g]: element j of group g is negative
         [66:74]  qh      u8[8]
         [74:82]  scales  u8[8]
IQ3_XXS  98 bytes; grid points of 4, x = db * grid[qs[..]] * signs, db = d * (0.5 + s) * 0.5
         [0:2]    d       '<f2'
         [2:66]   qs      u8[64]     group g is grid[qs[2g]] followed by grid[qs[2g + 1]]
         [66:98]  '<u4'[8]           per sub-block: sign indices and s, as IQ2_XXS's b
IQ3_S    110 bytes; grid points of 4, x = db * grid[index] * signs, db = d * (1 + 2 * s)
         [0:2]    d       '<f2'
         [2:66]   qs      u8[64]     index of point p = qs[p] | (qh[p // 8] >> (p % 8) & 1) << 8
         [66:74]  qh      u8[8]
         [74:106] signs   u8[32]     as IQ2_S
         [106:110] scales u8[4]      s of sub-block ib = scales[ib // 2] >> 4(ib % 2) & 15
IQ1_S    50 bytes; x = dl * (grid[index] + delta), dl = d * (2 * ((h >> 12) & 7) + 1)
         [0:2]    d       '<f2'
         [2:34]   qs      u8[32]     index of group 4ib + l = qs[4ib + l] | (h >> 3l & 7) << 8
         [34:50]  qh      '<u2'[8]   h of sub-block ib; delta = -1/8 if bit 15 of h else +1/8
IQ1_M    56 bytes; x = dl * (grid[index] + delta), dl = d * (2 * s + 1)
         [0:32]   qs      u8[32]     index of group g = qs[g] | (c & 7) << 8, c = qh[g // 2] >> 4(g % 2)
         [32:48]  qh      u8[16]     delta = -1/8 if c & 8 else +1/8
         [48:56]  sc      '<u2'[4]   three-bit s of elements 16j .. 16j+15 = sc[j // 4] >> 3(j % 4) & 7;
                                     the top nibbles of sc[0], sc[1], sc[2], sc[3] are the
                                     fp16 d's bits 0-3, 4-7, 8-11, 12-15

The derived tables: KSIGNS[i] (IQ2_XXS, IQ2_XS, IQ3_XXS) is the sign pattern of the byte
i | parity(i) << 7 (ggml's ksigns_iq2xs): seven stored signs and an eighth that makes the number
of negative ones even. IQ3_S's levels are 1, 3, ..., 15 and IQ1's -1, 0, 1.

Arithmetic: ggml computes db (or dl) first, in float32 in the order written above, then
db * grid * sign; here each type is read as Codes (codes.py): db per group of 16 or 32 times the
signed grid value, an int8, which is the same float32 for every db, NaN and infinities included
(a sign flip is exact and NaN * -1 keeps the NaN's bits in gguf-py's float product). IQ1's grid +
delta (exact, as in ggml) is read as code 8 * grid ± 1 times scale dl / 8: the same products
(codes.py says why). (llama.cpp's compiled C flips
the sign bit instead, so where db is NaN its NaNs can differ from gguf-py's and ours in that bit.)
"""

import numpy as np

from formats.quants.codes import grouped
from formats.quants.fields import BIT_SHIFTS, crumbs, f16, nibbles
from formats.quants.record import Mins, QuantType
from formats.quants.tables import (IQ1_S_MEMBERS, IQ2_LEVELS, IQ2_S_MEMBERS, IQ2_XS_MEMBERS,
                                   IQ2_XXS_MEMBERS, IQ3_S_MEMBERS, IQ3_XXS_LEVELS, IQ3_XXS_MEMBERS,
                                   grid_digits)


def _grid(members, levels, width):
    return np.array(levels, dtype=np.int8)[grid_digits(members, len(levels), width)]


def _sign_patterns():
    """(256, 8) int8: entry b is -1 where bit j of byte b is set, else 1."""
    return (1 - 2 * (np.arange(256, dtype=np.uint8)[:, None] >> BIT_SHIFTS & 1)).astype(np.int8)


def _ksigns():
    """(128, 8) int8 sign patterns of i | parity(i) << 7 (ggml's ksigns_iq2xs)."""
    i = np.arange(128)
    parity = (SIGNS[i] < 0).sum(axis=1) & 1                 # bits set in i, mod 2
    return SIGNS[i | parity << 7]


IQ2_XXS_GRID = _grid(IQ2_XXS_MEMBERS, IQ2_LEVELS, 8)        # (256, 8)
IQ2_XS_GRID = _grid(IQ2_XS_MEMBERS, IQ2_LEVELS, 8)          # (512, 8)
IQ2_S_GRID = _grid(IQ2_S_MEMBERS, IQ2_LEVELS, 8)            # (1024, 8)
IQ3_XXS_GRID = _grid(IQ3_XXS_MEMBERS, IQ3_XXS_LEVELS, 4)    # (256, 4)
IQ3_S_GRID = _grid(IQ3_S_MEMBERS, range(1, 16, 2), 4)      # (512, 4)
IQ1_GRID = _grid(IQ1_S_MEMBERS, (-1, 0, 1), 8)             # (2048, 8)
SIGNS = _sign_patterns()
KSIGNS = _ksigns()
# IQ1's grid + delta times 8 for both deltas: [0] 8 * grid + 1, [1] 8 * grid - 1, (2, 2048, 8) int8.
IQ1_CODES = (8 * IQ1_GRID + np.array([1, -1], dtype=np.int8)[:, None, None]).astype(np.int8)


def _iq2_scale(d, s, factor):
    """ggml's db = d * (0.5 + s) * factor in float32: d (n, 1), s (n, m) integer codes."""
    return d * (np.float32(0.5) + s.astype(np.float32)) * np.float32(factor)


def _seven_bit_signs(b):
    """(n, m) '<u4' words -> (n, m, 4, 8) sign patterns of their 4 seven-bit indices."""
    return KSIGNS[b[..., None] >> np.array([0, 7, 14, 21], dtype=np.uint32) & 127]


def _nibble_scales(scales):
    """(n, m) bytes -> (n, 2m) four-bit scales, low nibble first."""
    return nibbles(scales).transpose(0, 2, 1).reshape(scales.shape[0], -1)


def codes_iq2_xxs(blocks):
    n = blocks.shape[0]
    words = blocks[:, 2:66].view("<u4").reshape(n, 8, 2)
    b = words[:, :, 1]                                                  # (n, 8)
    index = blocks[:, 2:66].reshape(n, 8, 8)[:, :, :4]                  # bytes of a: (n, 8, 4)
    signed = IQ2_XXS_GRID[index] * _seven_bit_signs(b)                  # (n, 8, 4, 8)
    return grouped(signed, _iq2_scale(f16(blocks, 0), b >> 28, 0.25))  # db (n, 8)


def codes_iq2_xs(blocks):
    q = blocks[:, 2:66].view("<u2")                                     # (n, 32)
    signed = IQ2_XS_GRID[q & 511] * KSIGNS[q >> 9]                      # (n, 32, 8)
    return grouped(signed, _iq2_scale(f16(blocks, 0), _nibble_scales(blocks[:, 66:74]), 0.25))


def codes_iq2_s(blocks):
    n = blocks.shape[0]
    high = crumbs(blocks[:, 66:74]).transpose(0, 2, 1).reshape(n, 32)  # g = 4 * byte + crumb
    index = blocks[:, 2:34] | high.astype(np.uint16) << 8
    signed = IQ2_S_GRID[index] * SIGNS[blocks[:, 34:66]]               # (n, 32, 8)
    return grouped(signed, _iq2_scale(f16(blocks, 0), _nibble_scales(blocks[:, 74:82]), 0.25))


def codes_iq3_xxs(blocks):
    n = blocks.shape[0]
    b = blocks[:, 66:98].view("<u4")                                    # (n, 8)
    points = IQ3_XXS_GRID[blocks[:, 2:66]].reshape(n, 8, 4, 8)          # two points a group
    return grouped(points * _seven_bit_signs(b), _iq2_scale(f16(blocks, 0), b >> 28, 0.5))


def codes_iq3_s(blocks):
    n = blocks.shape[0]
    high = (blocks[:, 66:74, None] >> BIT_SHIFTS & 1).reshape(n, 64)   # p = 8 * byte + bit
    index = blocks[:, 2:66] | high.astype(np.uint16) << 8
    points = IQ3_S_GRID[index].reshape(n, 32, 8)                       # two points a group
    db = f16(blocks, 0) * (1 + 2 * _nibble_scales(blocks[:, 106:110]))  # (n, 8)
    return grouped(points * SIGNS[blocks[:, 74:106]], db)


def codes_iq1_s(blocks):
    n = blocks.shape[0]
    h = blocks[:, 34:50].view("<u2")                                    # (n, 8)
    high = h[:, :, None] >> np.array([0, 3, 6, 9], dtype=np.uint16) & 7
    index = blocks[:, 2:34].reshape(n, 8, 4) | high << 8               # (n, 8, 4)
    negative = (h >> 15)[:, :, None]                                   # (n, 8, 1)
    dl = f16(blocks, 0) * (2 * (h >> 12 & 7) + 1)                       # (n, 8)
    return grouped(IQ1_CODES[negative, index], dl * np.float32(0.125))


def _iq1_m_d(sc):
    """(n, 4) '<u2' words -> (n, 1) float32 d, whose fp16 bits are their top nibbles."""
    bits = sc >> 12 << np.array([0, 4, 8, 12], dtype=np.uint16)
    return np.bitwise_or.reduce(bits, axis=1).view("<f2").astype(np.float32)[:, None]


def codes_iq1_m(blocks):
    n = blocks.shape[0]
    sc = blocks[:, 48:56].view("<u2")                                   # (n, 4)
    s = (sc[:, :, None] >> np.array([0, 3, 6, 9], dtype=np.uint16) & 7).reshape(n, 16)
    dl = _iq1_m_d(sc) * (2 * s + 1)                                     # (n, 16)
    c = nibbles(blocks[:, 32:48]).transpose(0, 2, 1).reshape(n, 32)    # g = 2 * byte + nibble
    index = blocks[:, :32] | (c & 7).astype(np.uint16) << 8
    return grouped(IQ1_CODES[c >> 3, index], dl * np.float32(0.125))  # codes (n, 32, 8)


TYPES = (
    QuantType("IQ2_XXS", 16, 256, 2 + 64, 32, Mins.NONE, codes_iq2_xxs),
    QuantType("IQ2_XS", 17, 256, 2 + 64 + 8, 16, Mins.NONE, codes_iq2_xs),
    QuantType("IQ3_XXS", 18, 256, 2 + 64 + 32, 32, Mins.NONE, codes_iq3_xxs),
    QuantType("IQ1_S", 19, 256, 2 + 32 + 16, 32, Mins.NONE, codes_iq1_s),
    QuantType("IQ3_S", 21, 256, 2 + 64 + 8 + 32 + 4, 32, Mins.NONE, codes_iq3_s),
    QuantType("IQ2_S", 22, 256, 2 + 32 + 32 + 8 + 8, 16, Mins.NONE, codes_iq2_s),
    QuantType("IQ1_M", 29, 256, 32 + 16 + 8, 16, Mins.NONE, codes_iq1_m),
)
