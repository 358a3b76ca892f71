"""GGUFs quantized by llama.cpp itself (llama_model_quantize, through llama-cpp-python): every
tensor of every file decodes bit-identically to gguf-py's dequantize, and every file reads as a
model (mapping.from_gguf), whatever mix of types its `general.file_type` stands for.

The f32 source is a small llama written by us (dim 256 so every row takes the 256-element
k-quant and i-quant blocks). llama.cpp makes most types from an ftype alone; the very-low-bit
ones refuse to run without an importance matrix ("this quantization requires an imatrix"), so
those get one of all ones (every column equally important); MXFP4 and NVFP4 only appear when
asked for by tensor type. Q1_0 and Q2_0 are types newer than gguf-py 0.19, which cannot decode
them: our reader refuses those files in one line.
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

from formats import gguf, mapping
from formats.errors import FormatError
from formats.ggml import GGMLType
from tests.support.compare import assert_same_bits
from tests.support.ggml_c import ARGS, FTYPES, IMATRIX_FTYPES, OVERRIDE_TYPES, ftype, quantize_model
from tests.support.ggml_c import quantized, source  # noqa: F401 (fixtures, requested by name)

SHAPE_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "max_seq_len",
                "tie_embeddings")
# Files of types gguf-py 0.19 does not know (ggml type 41 is Q1_0, 42 Q2_0).
UNREADABLE_FTYPES = {"Q1_0": 41, "Q2_0": 42}


def test_low_bit_ftypes_need_an_imatrix(source, tmp_path):
    for name in IMATRIX_FTYPES:
        assert quantize_model(source, tmp_path / "refused.gguf", ftype(name)) != 0, name


def gguf_py_floats(tensor):
    """gguf-py's floats for a tensor (its 1-D ones, the norms, are F32)."""
    if tensor.type in (GGMLType.F32, GGMLType.F16):
        return np.asarray(tensor.data, dtype=np.float32)
    rows = np.asarray(tensor.data).view(np.uint8).reshape(tensor.shape[0], -1)
    return np.asarray(gguf_quants.dequantize(rows, GGMLQuantizationType(int(tensor.type))), dtype=np.float32)


@pytest.mark.parametrize("label", FTYPES + IMATRIX_FTYPES + [t.name for t in OVERRIDE_TYPES])
def test_every_tensor_decodes_as_gguf_py_and_the_file_reads_as_a_model(quantized, label):
    gf = gguf.read(quantized[label])
    for tensor in gf.tensors:
        assert_same_bits(tensor.to_float32(), gguf_py_floats(tensor))
    _, args, vocab = mapping.from_gguf(gf, str(quantized[label]))
    assert [getattr(args, f) for f in SHAPE_FIELDS] == [getattr(ARGS, f) for f in SHAPE_FIELDS]
    assert len(vocab) == ARGS.vocab_size


def test_the_files_hold_every_type(quantized):
    held = {t.type for path in quantized.values() for t in gguf.read(path).tensors}
    plain = {GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64, GGMLType.F64}
    assert held == set(GGMLType) - plain


@pytest.mark.parametrize("name", UNREADABLE_FTYPES)
def test_types_gguf_py_cannot_decode_are_refused_in_one_line(source, name):
    path = source.with_name(f"{name}.gguf")
    assert quantize_model(source, path, ftype(name)) == 0
    message = f"unknown or unsupported ggml type {UNREADABLE_FTYPES[name]}$"
    with pytest.raises(FormatError, match=message) as info:
        gguf.read(path)
    assert "\n" not in str(info.value)
