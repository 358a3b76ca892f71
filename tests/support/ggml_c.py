"""llama.cpp's own C, reached through the llama-cpp-python install: a second oracle for the
ggml types, independent of gguf-py.

- `c_dequantize`: ggml's dequantize_row_<type> (ggml-quants.c), called through ctypes from the
  libggml-base shared library that llama-cpp-python ships.
- `quantize_model`: llama_model_quantize, llama.cpp's quantizer, on a whole GGUF; the fixtures
  `source` (a small f32 GGUF) and `quantized` (every file llama.cpp makes of it, by label).

A missing llama_cpp is a test failure, never a skip: `llama_cpp` below, which tests/test_verify.py's
fixture returns too.
"""

import ctypes
import functools
from pathlib import Path

import numpy as np
import pytest

from formats import gguf
from formats.ggml import BLOCK, GGMLType
from formats.spec import ModelArgs
from tests.support.files import byte_vocab, write_gguf
from tests.support.weights import wide_logit_weights


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


ARGS = ModelArgs(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=320, hidden_dim=512,
                 max_seq_len=64, tie_embeddings=False)


# llama_ftype names (LLAMA_FTYPE_MOSTLY_<name>) llama.cpp quantizes to without an imatrix ...
FTYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
          "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS",
          "TQ1_0", "TQ2_0", "MXFP4_MOE"]


# ... and those it refuses to make without one.
IMATRIX_FTYPES = ["Q2_K_S", "IQ3_XXS", "IQ3_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M"]


# Types only a tensor-type override makes (on a Q8_0 file): token_embd and output.
OVERRIDE_TYPES = [GGMLType.MXFP4, GGMLType.NVFP4]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_cpp_quant") / "f32.gguf"
    return write_gguf(ARGS, wide_logit_weights(ARGS, seed=0), path, vocab=byte_vocab(ARGS.vocab_size, "\u2581w"))


def ftype(name):
    return getattr(llama_cpp(), "LLAMA_FTYPE_MOSTLY_" + name)


def matrices(path):
    return [(t.name, t.shape[1]) for t in gguf.read(path).tensors if len(t.shape) == 2]


@pytest.fixture(scope="module")
def quantized(source):
    """label -> path of every file llama.cpp made from the source."""
    files = {}
    for name in FTYPES:
        files[name] = source.with_name(f"{name}.gguf")
        assert quantize_model(source, files[name], ftype(name)) == 0, name
    for name in IMATRIX_FTYPES:
        files[name] = source.with_name(f"{name}.gguf")
        assert quantize_model(source, files[name], ftype(name), imatrix_tensors=matrices(source)) == 0, name
    for ggml_type in OVERRIDE_TYPES:
        files[ggml_type.name] = source.with_name(f"override_{ggml_type.name}.gguf")
        assert quantize_model(source, files[ggml_type.name], ftype("Q8_0"), tensor_type=ggml_type) == 0
    return files
