"""ggml block quantization in vectorized NumPy: `quantize` and `dequantize` produce the same bytes
and floats as ggml's reference C (ggml-quants.c, ggml-impl.h) as gguf-py mirrors it
(gguf/quants.py, the oracle in tests/test_quant.py and tests/test_quant_types.py).

Types: quantize F32, F16, BF16 and the legacy Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; dequantize those and
every other type gguf-py 0.19 dequantizes. Each type is one record in its family module under
formats/quants/ (plain.py, legacy.py, kquants.py, lookup.py, ternary.py, lattice.py), whose
docstring gives its byte layout and formula; the tables here are derived from those records.

A row of n elements is n / block_size blocks stored back to back (sizes in formats.ggml.BLOCK).

Decoding any bytes gives a defined result, never an error: a stored scale that is NaN or
infinite makes NaN or infinite values exactly as ggml's float arithmetic does (inf * 0 is NaN),
bit for bit as gguf-py (NaNs' payloads included), with no NumPy warning.
"""

import math

import numpy as np

from formats.ggml import BLOCK, GGMLType, row_nbytes
from formats.quants import TYPES
from formats.quants.codes import Codes
from formats.quants.record import QuantType

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
    group, read = CODES[ggml_type].group, CODES[ggml_type].decode
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


def _decoder(read):
    """The decoder of a type read as Codes: its values, written into out."""
    return lambda blocks, out: read(blocks).values(out)


# The records by type (formats/quants/record.py): the quantized types are read as Codes.
_RECORDS = {GGMLType(record.ggml_type): record for record in TYPES}
CODES = {ggml_type: record for ggml_type, record in _RECORDS.items() if isinstance(record, QuantType)}
# Encoders fill out (n_blocks, type_size) uint8 from blocks (n_blocks, block_size) float32;
# decoders the reverse.
_ENCODERS = {ggml_type: record.encode for ggml_type, record in _RECORDS.items() if record.encode}
_DECODERS = {ggml_type: _decoder(record.decode) if ggml_type in CODES else record.decode
             for ggml_type, record in _RECORDS.items() if record.decode}
