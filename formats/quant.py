"""ggml block quantization in vectorized NumPy: `quantize` and `dequantize` produce the same bytes
and floats as ggml's reference C (ggml-quants.c, ggml-impl.h) as gguf-py mirrors it
(gguf/quants.py, the oracle in tests/test_quant.py and tests/test_quant_types.py).

Types: quantize and dequantize F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (their layouts
below); dequantize also every other type gguf-py 0.19 dequantizes, decoded in formats/quants/
(whose module docstrings give their layouts): the k-quants Q2_K ... Q6_K (kquants.py), IQ4_NL,
IQ4_XS, MXFP4, NVFP4 (lookup.py), TQ1_0, TQ2_0 (ternary.py), the grid i-quants IQ2_XXS, IQ2_XS,
IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M (lattice.py).

A row of n elements is n / block_size blocks stored back to back (sizes in formats.ggml.BLOCK);
multi-byte fields are little-endian. `x` is a block's 32 (or 256) floats, `q` its integer codes.

F32   '<f4' per element.
F16   '<f2' per element (IEEE half, round to nearest even).
BF16  '<u2' per element: the top half of the float32 bits, rounded to nearest even; a NaN keeps
      its top bits with the quiet bit set (ggml_compute_fp32_to_bf16).

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

Decoding any bytes gives a defined result, never an error: a stored scale that is NaN or
infinite makes NaN or infinite values exactly as ggml's float arithmetic does (inf * 0 is NaN),
bit for bit as gguf-py (NaNs' payloads included), with no NumPy warning.
"""

import math

import numpy as np

from formats.ggml import BLOCK, GGMLType, row_nbytes
from formats.quants import kquants, lattice, lookup, ternary
from formats.quants.codes import Codes, grouped
from formats.quants.fields import f16, field

__all__ = ["quantize", "dequantize", "dequantize_rows", "codes_rows", "CODES"]

# Work through a tensor this many elements (2 MiB of float32) at a time: a chunk's temporaries
# stay in the CPU cache; one pass over a 15M-value tensor made Q8_0 about half as fast.
_CHUNK_ELEMENTS = 1 << 19


def quantize(x, ggml_type):
    """Encode float array x of shape (..., n) as `ggml_type` -> uint8 array (..., n // block * bytes).

    x is cast to float32 first. Types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1. Raises
    ValueError when n does not divide by the block size or the type cannot be quantized here.
    >>> quantize(np.arange(32, dtype=np.float32), GGMLType.Q8_0)[:6]   # d = fp16(31/127) = 0x33d0
    array([208,  51,   0,   4,   8,  12], dtype=uint8)
    """
    ggml_type = GGMLType(ggml_type)
    if ggml_type not in _ENCODERS:
        raise ValueError(f"cannot quantize to {ggml_type.name}; types: {_names(_ENCODERS)}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError("cannot quantize a 0-d array: rows run along the last axis")
    row_bytes = row_nbytes(ggml_type, x.shape[-1])
    block_size, type_size = BLOCK[ggml_type]
    blocks = x.reshape(-1, block_size)                     # copies only a non-contiguous x
    out = np.empty((blocks.shape[0], type_size), dtype=np.uint8)
    # Blocks whose d underflows make inf/NaN on purpose (see the module docstring): no warnings.
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        _blockwise(_ENCODERS[ggml_type], blocks, out, block_size)
    return out.reshape(*x.shape[:-1], row_bytes)


def dequantize(raw, ggml_type, shape):
    """Decode the bytes of a `ggml_type` tensor whose numpy shape is `shape` -> float32 `shape`.

    raw: a uint8 array, any array whose bytes are the data (e.g. a memmap slice shaped
    (..., row_bytes)), or a bytes-like object. Types: those of `quantize`, the k-quants, the
    i-quants, TQ1_0, TQ2_0, MXFP4, NVFP4 (the module docstring).
    >>> dequantize(bytes([0x00, 0x3c]) + bytes(range(0, 256, 17)), GGMLType.Q4_0, (32,))[:4]
    array([-8., -7., -6., -5.], dtype=float32)
    """
    ggml_type = GGMLType(ggml_type)
    if ggml_type not in _DECODERS:
        raise ValueError(f"cannot dequantize {ggml_type.name}; types: {_names(_DECODERS)}")
    shape = tuple(int(n) for n in shape)
    if not shape:
        raise ValueError("shape must have at least one axis: rows run along the last one")
    n_bytes = row_nbytes(ggml_type, shape[-1]) * math.prod(shape[:-1])
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(raw, dtype=np.uint8)
    data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if data.size != n_bytes:
        raise ValueError(f"{ggml_type.name} tensor of shape {shape} takes {n_bytes} bytes, got {data.size}")
    block_size, type_size = BLOCK[ggml_type]
    blocks = data.reshape(-1, type_size)
    out = np.empty((blocks.shape[0], block_size), dtype=np.float32)
    # A stored d of fp16 inf times code 0 is NaN, and MXFP4's largest scale times 12 overflows to
    # inf, as in ggml: no warning.
    with np.errstate(invalid="ignore", over="ignore"):
        _blockwise(_DECODERS[ggml_type], blocks, out, block_size)
    return out.reshape(shape)


def dequantize_rows(raw_rows, ggml_type, n):
    """Decode rows of bytes (..., row_bytes) holding n elements each -> float32 (..., n).

    The piece a blockwise matmul needs: a few rows of a memory-mapped weight at a time.
    """
    return dequantize(raw_rows, ggml_type, (*raw_rows.shape[:-1], n))


def codes_rows(raw_rows, ggml_type, n):
    """Rows of bytes (rows, row_bytes) holding n elements each, of a type in CODES -> their Codes
    (formats/quants/codes.py): codes (rows, n // group, group) int8, scales and mins (rows, n // group)
    float32, whose `values` are dequantize_rows' floats bit for bit.

    The whole input is unpacked at once (temporaries a few times the codes' size): pass a few
    rows at a time, as reference/runtime/load.py does.
    >>> c = codes_rows(np.frombuffer(bytes([0x00, 0x3c]) + bytes(range(0, 256, 17)), np.uint8)[None],
    ...                GGMLType.Q4_0, 32)
    >>> c.codes[0, 0, :4], c.scales
    (array([-8, -7, -6, -5], dtype=int8), array([[1.]], dtype=float32))
    """
    ggml_type = GGMLType(ggml_type)
    if ggml_type not in CODES:
        raise ValueError(f"{ggml_type.name} is not stored as codes and scales; types: {_names(CODES)}")
    group, read = CODES[ggml_type]
    n_rows = raw_rows.shape[0]
    data = np.ascontiguousarray(raw_rows).view(np.uint8)
    if data.size != n_rows * row_nbytes(ggml_type, n):
        raise ValueError(f"{ggml_type.name} rows of {n} elements take {row_nbytes(ggml_type, n)} bytes "
                         f"each, got {data.size} bytes for {n_rows} rows")
    blocks = data.reshape(-1, BLOCK[ggml_type][1])
    with np.errstate(invalid="ignore", over="ignore"):          # as dequantize: inf * 0 is NaN
        c = read(blocks)
    mins = None if c.mins is None else c.mins.reshape(n_rows, n // group)
    return Codes(c.codes.reshape(n_rows, n // group, group), c.scales.reshape(n_rows, n // group),
                 mins, c.subtract)


def _names(table):
    return ", ".join(t.name for t in table)


def _blockwise(fn, src, out, block_size):
    """Call fn(src_chunk, out_chunk) over chunks of whole blocks: src and out are (n_blocks, ·)."""
    step = _CHUNK_ELEMENTS // block_size
    for start in range(0, src.shape[0], step):
        fn(src[start:start + step], out[start:start + step])


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


def _bf16_bits(x):
    """float32 -> bfloat16 bits (ggml_compute_fp32_to_bf16): add 0x7fff plus the lowest kept bit
    and drop 16 bits (round to nearest even). A NaN keeps its top bits and gains the quiet bit,
    so its low bits cannot carry it into an infinity."""
    bits = x.view("<u4")
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    bits = np.where(nan, (bits & 0xFFFF0000) | 0x00400000, bits)
    return ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype("<u2")


# Encoders fill out (n_blocks, type_size) uint8 from blocks (n_blocks, block_size) float32.

def _encode_f32(blocks, out):
    out.view("<f4")[...] = blocks


def _encode_f16(blocks, out):
    out.view("<f2")[...] = blocks                          # numpy's cast rounds to nearest even


def _encode_bf16(blocks, out):
    out.view("<u2")[...] = _bf16_bits(blocks)


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


# Decoders fill out (n_blocks, block_size) float32 from blocks (n_blocks, type_size) uint8. The
# quantized types are read as Codes (formats/quants/codes.py) whose `values` do ggml's arithmetic.

def _decode_f32(blocks, out):
    out[...] = blocks.view("<f4")


def _decode_f16(blocks, out):
    out[...] = blocks.view("<f2")


def _decode_bf16(blocks, out):
    out[...] = (blocks.view("<u2").astype("<u4") << 16).view("<f4")


def _codes_q8_0(blocks):
    return grouped(blocks[:, 2:], f16(blocks, 0))


def _codes_q4_0(blocks):
    return grouped(_unpack_nibbles(blocks[:, 2:]).view(np.int8) - 8, f16(blocks, 0))


def _codes_q4_1(blocks):
    return grouped(_unpack_nibbles(blocks[:, 4:]), f16(blocks, 0), f16(blocks, 2))


def _codes_q5_0(blocks):
    q = (_unpack_nibbles(blocks[:, 6:]) | _unpack_high_bits(blocks[:, 2:6])).view(np.int8) - 16
    return grouped(q, f16(blocks, 0))


def _codes_q5_1(blocks):
    q = _unpack_nibbles(blocks[:, 8:]) | _unpack_high_bits(blocks[:, 4:8])
    return grouped(q, f16(blocks, 0), f16(blocks, 2))


_ENCODERS = {
    GGMLType.F32: _encode_f32,
    GGMLType.F16: _encode_f16,
    GGMLType.BF16: _encode_bf16,
    GGMLType.Q8_0: _encode_q8_0,
    GGMLType.Q4_0: _encode_q4_0,
    GGMLType.Q4_1: _encode_q4_1,
    GGMLType.Q5_0: _encode_q5_0,
    GGMLType.Q5_1: _encode_q5_1,
}

# The quantized types as Codes: type -> (elements per group sharing one scale, the reader).
CODES = {
    GGMLType.Q8_0: (32, _codes_q8_0),
    GGMLType.Q4_0: (32, _codes_q4_0),
    GGMLType.Q4_1: (32, _codes_q4_1),
    GGMLType.Q5_0: (32, _codes_q5_0),
    GGMLType.Q5_1: (32, _codes_q5_1),
    GGMLType.Q2_K: (16, kquants.codes_q2_k),
    GGMLType.Q3_K: (16, kquants.codes_q3_k),
    GGMLType.Q4_K: (32, kquants.codes_q4_k),
    GGMLType.Q5_K: (32, kquants.codes_q5_k),
    GGMLType.Q6_K: (16, kquants.codes_q6_k),
    GGMLType.IQ4_NL: (32, lookup.codes_iq4_nl),
    GGMLType.IQ4_XS: (32, lookup.codes_iq4_xs),
    GGMLType.MXFP4: (32, lookup.codes_mxfp4),
    GGMLType.NVFP4: (16, lookup.codes_nvfp4),
    GGMLType.TQ1_0: (256, ternary.codes_tq1_0),
    GGMLType.TQ2_0: (256, ternary.codes_tq2_0),
    GGMLType.IQ2_XXS: (32, lattice.codes_iq2_xxs),
    GGMLType.IQ2_XS: (16, lattice.codes_iq2_xs),
    GGMLType.IQ2_S: (16, lattice.codes_iq2_s),
    GGMLType.IQ3_XXS: (32, lattice.codes_iq3_xxs),
    GGMLType.IQ3_S: (32, lattice.codes_iq3_s),
    GGMLType.IQ1_S: (32, lattice.codes_iq1_s),
    GGMLType.IQ1_M: (16, lattice.codes_iq1_m),
}


def _decoder(read):
    """The decoder of a type read as Codes: its values, written into out."""
    return lambda blocks, out: read(blocks).values(out)


_DECODERS = {
    GGMLType.F32: _decode_f32,
    GGMLType.F16: _decode_f16,
    GGMLType.BF16: _decode_bf16,
    **{ggml_type: _decoder(read) for ggml_type, (_, read) in CODES.items()},
}
