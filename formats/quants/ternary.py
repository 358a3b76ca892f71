"""Ternary types: TQ1_0 and TQ2_0, codes -1, 0, 1 times one fp16 scale (dequantize only).

TQ1_0  256 elements, 54 bytes; x = d * (t - 1), t a base-3 digit (0, 1, 2)
       [0:48]   qs  u8[48]   5 digits a byte: element 32i + l (i < 5, l < 32) is digit i of qs[l],
                             element 160 + 16i + l (l < 16) is digit i of qs[32 + l]
       [48:52]  qh  u8[4]    4 digits a byte: element 240 + 4i + l (i, l < 4) is digit i of qh[l]
       [52:54]  d   '<f2'
       A byte holds its digits as a fraction of 256: digits t0 t1 ... read as the base-3 number
       v = t0 t1 t2 t3 t4 (t0 the most significant) are stored as ceil(v * 256 / 243), and digit
       i comes back as ((byte * 3**i) mod 256) * 3 >> 8: multiplying by 3**i shifts the digits
       left by i places (the mod drops those above), and * 3 >> 8 reads the leading one.

TQ2_0  256 elements, 66 bytes; x = d * (q - 1), q a 2-bit code (3 decodes as 2, as in ggml)
       [0:64]   qs  u8[64]   element 128h + 32k + l (h < 2, k < 4, l < 32) is qs[32h + l] >> 2k & 3
       [64:66]  d   '<f2'
"""

import numpy as np

from formats.quants.codes import grouped
from formats.quants.fields import crumbs, f16
from formats.quants.record import Mins, QuantType

_POWERS_OF_3 = 3 ** np.arange(5, dtype=np.uint8)           # 1 3 9 27 81


def _digits(qs, count):
    """(n, m) bytes -> (n, count, m) base-3 digits, [:, i] digit i of every byte (uint8)."""
    shifted = qs[:, None, :] * _POWERS_OF_3[:count, None]   # uint8: wraps mod 256
    return (shifted.astype(np.uint16) * 3 >> 8).astype(np.uint8)


def codes_tq1_0(blocks):
    n = blocks.shape[0]
    t = np.concatenate([_digits(blocks[:, :32], 5).reshape(n, 160),
                        _digits(blocks[:, 32:48], 5).reshape(n, 80),
                        _digits(blocks[:, 48:52], 4).reshape(n, 16)], axis=1)
    return grouped(t.view(np.int8) - 1, f16(blocks, 52))


def codes_tq2_0(blocks):
    n = blocks.shape[0]
    q = crumbs(blocks[:, :64].reshape(n * 2, 32)).reshape(n, 256)   # per half: [k, l]
    return grouped(q.view(np.int8) - 1, f16(blocks, 64))


TYPES = (
    QuantType("TQ1_0", 34, 256, 48 + 4 + 2, 256, Mins.NONE, codes_tq1_0),
    QuantType("TQ2_0", 35, 256, 64 + 2, 256, Mins.NONE, codes_tq2_0),
)
