"""llama.cpp's own C, reached through the llama-cpp-python install: a second oracle for the
ggml types, independent of gguf-py.

- `c_dequantize`: ggml's dequantize_row_<type> (ggml-quants.c), called through ctypes from the
  libggml-base shared library that llama-cpp-python ships.
- `quantize_model`: llama_model_quantize, llama.cpp's quantizer, on a whole GGUF.

A missing llama_cpp is a test failure, never a skip: `llama_cpp` below, which tests/test_verify.py's
fixture returns too.
"""

import ctypes
import functools
from pathlib import Path

import numpy as np
import pytest

from formats.ggml import BLOCK


def llama_cpp():
    """The llama_cpp module; a missing install fails the test (a skipped llama.cpp check would let a
    broken file through)."""
    try:
        import llama_cpp
    except ImportError as exc:
        pytest.fail(f"llama_cpp cannot be imported ({exc}): pip install -e '.[test]' installs "
                    "llama-cpp-python, which these tests use as llama.cpp's reference")
    return llama_cpp


@functools.cache
def _ggml_base():
    return ctypes.CDLL(str(Path(llama_cpp().__file__).parent / "lib" / "libggml-base.so"))


def c_dequantize(raw, ggml_type):
    """ggml's dequantize_row_<type> over the blocks in `raw` (any shape) -> float32 (n_elements,)."""
    block_size, type_size = BLOCK[ggml_type]
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    n = raw.size // type_size * block_size
    out = np.empty(n, dtype=np.float32)
    name = ggml_type.name.lower().replace("_k", "_K")          # dequantize_row_q4_K, _iq2_xxs, ...
    fn = getattr(_ggml_base(), "dequantize_row_" + name)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    fn(raw.ctypes.data, out.ctypes.data, n)
    return out


def quantize_model(src, dst, ftype, imatrix_tensors=(), tensor_type=None, pure=False, threads=1):
    """llama_model_quantize(src -> dst) to llama_ftype `ftype` (an int); returns its status (0 ok).

    imatrix_tensors: (name, n_columns) of the matrices to give an importance matrix of all ones
    (every column equally important): the very-low-bit types need one. tensor_type: a ggml type
    id for the token embedding and the output matrix (how llama.cpp makes types no ftype picks).
    pure: every matrix in the ftype's main type (no mix of types for some layers); a matrix whose
    rows do not divide into that type's blocks still gets llama.cpp's fallback type. threads:
    llama.cpp's quantizing threads.
    """
    lc = llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.pure = ftype, threads, pure
    if tensor_type is not None:
        params.token_embedding_type = params.output_tensor_type = int(tensor_type)
    ones = [(ctypes.c_float * n)(*[1.0] * n) for _, n in imatrix_tensors]
    if imatrix_tensors:                 # an array ended by an entry whose name is NULL
        entries = (lc.llama_model_imatrix_data * (len(imatrix_tensors) + 1))()
        for entry, (name, n), data in zip(entries, imatrix_tensors, ones):
            entry.name, entry.size = name.encode(), n
            entry.data = ctypes.cast(data, ctypes.POINTER(ctypes.c_float))
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(lc.llama_model_imatrix_data))
    return lc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
