"""The legacy block types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: 32 elements a block, one fp16 scale (and
min), encoded and decoded bit for bit as ggml's reference C (ggml-quants.c, ggml-impl.h) as
gguf-py mirrors it (gguf/quants.py, the oracle in tests/test_quant.py).

`x` is a block's 32 floats, `q` its integer codes; multi-byte fields are little-endian.

Q8_0  32 elements, 34 bytes; x = d * q
      [0:2]   d    '<f2'     max|x| / 127
      [2:34]  q    int8[32]  roundf(x * (1/d)), halves away from zero

Q4_0  32 elements, 18 bytes; x = d * (q - 8)
      [0:2]   d    '<f2'     m / -8, m = the element of largest magnitude (the first on ties)
      [2:18]  qs   u8[16]    byte j = q[j] | q[j+16] << 4;  q = min(15, trunc(x * (1/d) + 8.5))

Q4_1  32 elements, 20 bytes; x = d * q + m
      [0:2]   d    '<f2'     (max - min) / 15
      [2:4]   m    '<f2'     min
      [4:20]  qs   u8[16]    packed as Q4_0;  q = min(15, trunc((x - min) * (1/d) + 0.5))

Q5_0  32 elements, 22 bytes; x = d * (q - 16)
      [0:2]   d    '<f2'     m / -16, m as in Q4_0
      [2:6]   qh   '<u4'     bit j = bit 4 of q[j]
      [6:22]  qs   u8[16]    the low 4 bits, packed as Q4_0;  q = min(31, trunc(x * (1/d) + 16.5))

Q5_1  32 elements, 24 bytes; x = d * q + m
      [0:2] d '<f2' (max - min) / 31;  [2:4] m '<f2' min;  [4:8] qh;  [8:24] qs, both as Q5_0;
      q = min(31, trunc((x - min) * (1/d) + 0.5))

Bit identity is in the float details. Every intermediate is float32 (C's float); x is multiplied
by the reciprocal 1/d (0 where d == 0), never divided by d; C's integer casts truncate toward zero
while roundf rounds halves away from zero (np.round rounds them to even). A block whose d is below
2**-128 (values of magnitude about 1e-37 and less) has an infinite 1/d: its codes are what the
float-to-int cast makes of inf and NaN, as in gguf-py, and its d rounds to fp16 zero, so it
decodes to zeros all the same.
"""

import numpy as np

from formats.quants.codes import grouped
from formats.quants.fields import f16, field
from formats.quants.record import Mins, QuantType


def _reciprocal(d):
    """1/d, and 0 where d == 0 (ggml: `id = d ? 1.0f/d : 0.0f`), float32."""
    return np.where(d == 0, np.float32(0), np.float32(1) / d)


def _abs_bits(blocks):
    """|x| as uint32 bit patterns: clearing the sign bit is abs, and non-negative floats order like
    their bits, so integer max/argmax (faster than float ones, which watch for NaN) give max|x|."""
    return blocks.view("<u4") & 0x7FFFFFFF


def _round_half_away(y):
    """C roundf of float32 y (|y| < 2**14) as int16: halves go away from zero (2.5 -> 3, -0.5 -> -1).

    roundf(y) = trunc(y) + trunc(2 * frac(y)) = trunc(2y) - trunc(y). Doubling is exact in float32
    and the casts truncate, so nothing rounds on the way; an inf or NaN y (a block whose 1/d
    overflowed) casts to the same integer in both terms and gives 0, as gguf-py's cast of NaN does.
    """
    twice = np.add(y, y, out=np.empty(y.shape, dtype=np.int16), casting="unsafe")
    return twice - y.astype(np.int16)


def _codes_symmetric(blocks, half):
    """Q4_0 (half 8) and Q5_0 (half 16): d = m / -half, q = min(2*half - 1, trunc(x/d + half + 0.5)).

    m is the element of largest magnitude, the first of equals as ggml keeps only a strictly
    larger one. Dividing by -half maps m to code 0, i.e. -half: the extreme value gets the extra
    level of the asymmetric range [-half, half - 1]; its opposite, code 2*half, is clipped.
    """
    first = np.argmax(_abs_bits(blocks), axis=1)
    m = np.take_along_axis(blocks, first[:, None], axis=1)[:, 0]
    d = m / np.float32(-half)
    v = blocks * _reciprocal(d)[:, None] + np.float32(half + 0.5)
    q = v.astype(np.uint8)                                 # truncates, like C's (int8_t) cast
    return d, np.minimum(q, 2 * half - 1, out=q)


def _codes_affine(blocks, top):
    """Q4_1 (top 15) and Q5_1 (top 31): d = (max - min) / top, q = min(top, trunc((x - min)/d + 0.5))."""
    lo = blocks.min(axis=1)
    d = (blocks.max(axis=1) - lo) / np.float32(top)
    v = (blocks - lo[:, None]) * _reciprocal(d)[:, None] + np.float32(0.5)
    q = v.astype(np.uint8)
    return d, lo, np.minimum(q, top, out=q)


def _pack_nibbles(q):
    """(n, 32) codes -> (n, 16) bytes: byte j = q[j] & 15 | q[j+16] << 4 (bit 4 falls off)."""
    return (q[:, :16] & 15) | (q[:, 16:] << 4)


def _unpack_nibbles(qs):
    """(n, 16) bytes -> (n, 32) codes, the inverse of _pack_nibbles."""
    return np.concatenate([qs & 15, qs >> 4], axis=1)


def _pack_high_bits(q):
    """(n, 32) five-bit codes -> (n, 4) bytes of the '<u4' whose bit j is bit 4 of q[j]."""
    return np.packbits(q >> 4, axis=1, bitorder="little")


def _unpack_high_bits(qh):
    """(n, 4) bytes of qh -> (n, 32) bits worth 16, the inverse of _pack_high_bits."""
    return np.unpackbits(qh, axis=1, bitorder="little") << 4


# Encoders fill out (n_blocks, type_size) uint8 from blocks (n_blocks, block_size) float32.

def _encode_q8_0(blocks, out):
    d = _abs_bits(blocks).max(axis=1).view("<f4") / np.float32(127)
    field(out, 0, "<f2")[...] = d
    out[:, 2:].view(np.int8)[...] = _round_half_away(blocks * _reciprocal(d)[:, None])


def _encode_q4_0(blocks, out):
    d, q = _codes_symmetric(blocks, 8)
    field(out, 0, "<f2")[...] = d
    out[:, 2:] = _pack_nibbles(q)


def _encode_q4_1(blocks, out):
    d, m, q = _codes_affine(blocks, 15)
    field(out, 0, "<f2")[...] = d
    field(out, 2, "<f2")[...] = m
    out[:, 4:] = _pack_nibbles(q)


def _encode_q5_0(blocks, out):
    d, q = _codes_symmetric(blocks, 16)
    field(out, 0, "<f2")[...] = d
    out[:, 2:6] = _pack_high_bits(q)
    out[:, 6:] = _pack_nibbles(q)


def _encode_q5_1(blocks, out):
    d, m, q = _codes_affine(blocks, 31)
    field(out, 0, "<f2")[...] = d
    field(out, 2, "<f2")[...] = m
    out[:, 4:8] = _pack_high_bits(q)
    out[:, 8:] = _pack_nibbles(q)


# Readers: blocks (n_blocks, type_size) uint8 -> Codes (formats/quants/codes.py), whose `values`
# do ggml's arithmetic.

def codes_q8_0(blocks):
    return grouped(blocks[:, 2:], f16(blocks, 0))


def codes_q4_0(blocks):
    return grouped(_unpack_nibbles(blocks[:, 2:]).view(np.int8) - 8, f16(blocks, 0))


def codes_q4_1(blocks):
    return grouped(_unpack_nibbles(blocks[:, 4:]), f16(blocks, 0), f16(blocks, 2))


def codes_q5_0(blocks):
    q = (_unpack_nibbles(blocks[:, 6:]) | _unpack_high_bits(blocks[:, 2:6])).view(np.int8) - 16
    return grouped(q, f16(blocks, 0))


def codes_q5_1(blocks):
    q = _unpack_nibbles(blocks[:, 8:]) | _unpack_high_bits(blocks[:, 4:8])
    return grouped(q, f16(blocks, 0), f16(blocks, 2))


TYPES = (
    QuantType("Q4_0", 2, 32, 2 + 16, 32, Mins.NONE, codes_q4_0, _encode_q4_0),
    QuantType("Q4_1", 3, 32, 2 + 2 + 16, 32, Mins.ADD, codes_q4_1, _encode_q4_1),
    QuantType("Q5_0", 6, 32, 2 + 4 + 16, 32, Mins.NONE, codes_q5_0, _encode_q5_0),
    QuantType("Q5_1", 7, 32, 2 + 2 + 4 + 16, 32, Mins.ADD, codes_q5_1, _encode_q5_1),
    QuantType("Q8_0", 8, 32, 2 + 32, 32, Mins.NONE, codes_q8_0, _encode_q8_0),
)
