"""The k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (dequantize only).

A super-block of 256 elements is cut into sub-blocks of 16 or 32, each with its own small integer
scale (and for Q2_K, Q4_K, Q5_K a min), times one or two fp16 super-scales. Fields are bytes or
little-endian; element e of the block is x[e]. "h" below is a half of the block (128 elements),
"l" a lane of 32.

Q2_K  256 elements, 84 bytes: 16 groups of 16, x = (d * sc[e // 16]) * q - (dmin * mn[e // 16])
      [0:16]   scales u8[16]   sc = scales[j] & 15, mn = scales[j] >> 4
      [16:80]  qs     u8[64]   e = 128h + 32k + l (k < 4): q = qs[32h + l] >> 2k & 3
      [80:82]  d      '<f2'
      [82:84]  dmin   '<f2'

Q3_K  256 elements, 110 bytes: 16 groups of 16, x = (d * sc[e // 16]) * q
      [0:32]   hmask  u8[32]   e = 128h + 32k + l: q = (qs[32h + l] >> 2k & 3) - 4, plus 4 when
      [32:96]  qs     u8[64]                       bit 4h + k of hmask[l] is set (q in -4..3)
      [96:108] scales u8[12]   six-bit sc[j] - 32: low 4 bits scales[j] & 15 (j < 8) or
                               scales[j - 8] >> 4 (j >= 8); high 2 bits scales[8 + j % 4] >> 2(j // 4) & 3
      [108:110] d     '<f2'

Q4_K  256 elements, 144 bytes: 8 sub-blocks of 32, x = (d * sc[i]) * q - (dmin * mn[i]), i = e // 32
      [0:2]    d      '<f2'
      [2:4]    dmin   '<f2'
      [4:16]   s      u8[12]   six-bit sc[i] and mn[i] (get_scale_min_k4):
                               i < 4:  sc = s[i] & 63                  mn = s[i+4] & 63
                               i >= 4: sc = s[i+4] & 15 | s[i-4] >> 6 << 4
                                       mn = s[i+4] >> 4 | s[i] >> 6 << 4
      [16:144] qs     u8[128]  4 runs of 32 bytes; run r holds sub-block 2r in its low nibbles and
                               sub-block 2r+1 in its high nibbles

Q5_K  256 elements, 176 bytes: as Q4_K with a fifth bit, x = (d * sc[i]) * q - (dmin * mn[i])
      [0:16]   d, dmin, s      as Q4_K
      [16:48]  qh     u8[32]   bit 4 of q[32i + l] = qh[l] >> i & 1
      [48:176] qs     u8[128]  the low 4 bits, as Q4_K's qs

Q6_K  256 elements, 210 bytes: 16 groups of 16, x = (d * sc[e // 16]) * (q - 32)
      [0:128]   ql   u8[128]   e = 128h + 32k + l: low 4 bits = ql[64h + 32(k % 2) + l] >> 4(k // 2) & 15
      [128:192] qh   u8[64]                         high 2 bits = qh[32h + l] >> 2k & 3
      [192:208] sc   int8[16]
      [208:210] d    '<f2'

The products are float32 in ggml's order: the scale d * sc first, then times q, then the min
subtracted; each type is read as Codes (codes.py) of one float32 d * sc (and dmin * mn) per
sub-block, which `Codes.values` multiplies in that order. A NaN or infinite d or dmin gives what
that arithmetic gives (inf * 0 is NaN), as in ggml and gguf-py.
"""

import numpy as np

from formats.quants.codes import grouped
from formats.quants.fields import bit_planes, crumbs, f16, nibbles
from formats.quants.record import Mins, QuantType


def _k4_scales(s):
    """(n, 12) packed bytes -> six-bit scales sc and mins mn, (n, 8) each (get_scale_min_k4)."""
    lo, mid, hi = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([lo & 63, (hi & 15) | (lo >> 6) << 4], axis=1)
    mn = np.concatenate([mid & 63, (hi >> 4) | (mid >> 6) << 4], axis=1)
    return sc, mn


def _q3_k_scales(s):
    """(n, 12) packed bytes -> the 16 signed six-bit scales (n, 16) int8 of Q3_K."""
    low = nibbles(s[:, :8]).reshape(-1, 16)                # [nibble, byte]: j = 8 * nibble + byte
    high = crumbs(s[:, 8:]).reshape(-1, 16)                # [crumb, byte]:  j = 4 * crumb + byte
    return (low | high << 4).view(np.int8) - 32


def _crumb_codes(qs):
    """(n, 64) bytes of 2-bit codes -> (n, 256) in element order e = 128h + 32k + l."""
    n = qs.shape[0]
    return crumbs(qs.reshape(n * 2, 32)).reshape(n, 256)   # per half: [k, l]


def codes_q2_k(blocks):
    scales = blocks[:, :16]
    return grouped(_crumb_codes(blocks[:, 16:80]), f16(blocks, 80) * (scales & 15),
                   f16(blocks, 82) * (scales >> 4), subtract=True)


def codes_q3_k(blocks):
    n = blocks.shape[0]
    low = _crumb_codes(blocks[:, 32:96]).view(np.int8)                          # (n, 256)
    high = bit_planes(blocks[:, :32]).reshape(n, 256).view(np.int8)             # [bit, l]
    q = low - 4 + 4 * high                                                      # -4 .. 3
    return grouped(q, f16(blocks, 108) * _q3_k_scales(blocks[:, 96:108]))


def _k4_scale_min(blocks):
    """Q4_K/Q5_K's (d * sc) and (dmin * mn) per sub-block of 32, (n, 8) float32 each."""
    sc, mn = _k4_scales(blocks[:, 4:16])
    return f16(blocks, 0) * sc, f16(blocks, 2) * mn


def _k4_low_bits(qs):
    """(n, 128) bytes -> (n, 8, 32) low 4 bits: run r's low nibbles are sub-block 2r, high 2r+1."""
    n = qs.shape[0]
    return nibbles(qs.reshape(n * 4, 32)).reshape(n, 8, 32)


def codes_q4_k(blocks):
    scale, dmin = _k4_scale_min(blocks)
    return grouped(_k4_low_bits(blocks[:, 16:]), scale, dmin, subtract=True)


def codes_q5_k(blocks):
    scale, dmin = _k4_scale_min(blocks)
    q = _k4_low_bits(blocks[:, 48:]) | bit_planes(blocks[:, 16:48]) << 4   # (n, 8, 32)
    return grouped(q, scale, dmin, subtract=True)


def codes_q6_k(blocks):
    n = blocks.shape[0]
    low = nibbles(blocks[:, :128].reshape(n * 2, 64))      # per half: [k // 2, 32 (k % 2) + l]
    high = crumbs(blocks[:, 128:192].reshape(n * 2, 32))   # per half: [k, l]
    q = (low.reshape(n * 2, 4, 32) | high << 4).view(np.int8) - 32
    return grouped(q, f16(blocks, 208) * blocks[:, 192:208].view(np.int8))


TYPES = (
    QuantType("Q2_K", 10, 256, 16 + 64 + 2 + 2, 16, Mins.SUBTRACT, codes_q2_k),
    QuantType("Q3_K", 11, 256, 32 + 64 + 12 + 2, 16, Mins.NONE, codes_q3_k),
    QuantType("Q4_K", 12, 256, 2 + 2 + 12 + 128, 32, Mins.SUBTRACT, codes_q4_k),
    QuantType("Q5_K", 13, 256, 2 + 2 + 12 + 32 + 128, 32, Mins.SUBTRACT, codes_q5_k),
    QuantType("Q6_K", 14, 256, 128 + 64 + 16 + 2, 16, Mins.NONE, codes_q6_k),
)
