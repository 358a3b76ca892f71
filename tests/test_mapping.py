"""formats/mapping.py: llama2.c-named weights + ModelArgs <-> llama GGUF, with exact key types."""

import gguf as ggufpy
import numpy as np
import pytest
import sentencepiece as spm

from formats import gguf, mapping, quant, spec
from formats.errors import FormatError
from formats.ggml import GGMLType
from formats.gguf import Value, ValueType
from formats.spec import ModelArgs
from formats.vocab import TokenType, Vocab
from tests.support.files import byte_vocab
from tests.support.weights import normal_weights


def make_args(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, hidden_dim=96, tie=True):
    return ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                     vocab_size=vocab_size, hidden_dim=hidden_dim, multiple_of=32, norm_eps=1e-5,
                     rope_theta=10000.0, max_seq_len=48, dropout=0.0, tie_embeddings=tie)


def write_read(tmp_path, gf, name="m.gguf"):
    path = tmp_path / name
    gguf.write(gf, path)
    return path, gguf.read(path)


@pytest.mark.parametrize("tie", [True, False])
def test_f32_round_trip_is_bit_exact(tmp_path, tie):
    args = make_args(tie=tie)
    weights = normal_weights(args)
    vocab = byte_vocab(args.vocab_size)
    _, gf = write_read(tmp_path, mapping.to_gguf(weights, args, vocab))
    tensors, back_args, back_vocab = mapping.from_gguf(gf)
    assert set(tensors) == set(weights)
    for name, w in weights.items():
        assert tensors[name].type == GGMLType.F32
        assert tensors[name].data.tobytes() == w.tobytes(), name
    for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "max_seq_len",
                  "tie_embeddings"):
        assert getattr(back_args, field) == getattr(args, field), field
    assert back_args.norm_eps == np.float32(1e-5) and back_args.rope_theta == 10000.0
    assert back_vocab == vocab


def test_key_types_are_what_llama_cpp_reads(tmp_path):
    """Checked through gguf-py's reader: UINT32 hyperparameters, FLOAT32 eps/base, INT32 token types."""
    args = make_args(dim=288, n_layers=1, n_heads=6, n_kv_heads=6, hidden_dim=768, vocab_size=300)
    path, _ = write_read(tmp_path, mapping.to_gguf(normal_weights(args), args, byte_vocab(300)))
    fields = ggufpy.GGUFReader(path).fields
    expect = {
        "general.architecture": (ValueType.STRING, "llama"),
        "general.file_type": (ValueType.UINT32, 0),
        "llama.context_length": (ValueType.UINT32, 48),
        "llama.embedding_length": (ValueType.UINT32, 288),
        "llama.block_count": (ValueType.UINT32, 1),
        "llama.feed_forward_length": (ValueType.UINT32, 768),
        "llama.attention.head_count": (ValueType.UINT32, 6),
        "llama.attention.head_count_kv": (ValueType.UINT32, 6),
        # 288 / 6: the trap an old converter fell into wrote 144 here (and head_count 2)
        "llama.rope.dimension_count": (ValueType.UINT32, 48),
        "llama.rope.freq_base": (ValueType.FLOAT32, 10000.0),
        "tokenizer.ggml.model": (ValueType.STRING, "llama"),
        "tokenizer.ggml.bos_token_id": (ValueType.UINT32, 1),
        "tokenizer.ggml.eos_token_id": (ValueType.UINT32, 2),
        "tokenizer.ggml.add_bos_token": (ValueType.BOOL, True),
        "tokenizer.ggml.add_space_prefix": (ValueType.BOOL, True),
    }
    for key, (vtype, value) in expect.items():
        assert fields[key].types == [vtype], key
        assert fields[key].contents() == value, key
    assert fields["llama.attention.layer_norm_rms_epsilon"].types == [ValueType.FLOAT32]
    assert fields["tokenizer.ggml.token_type"].types == [ValueType.ARRAY, ValueType.INT32]
    assert fields["tokenizer.ggml.scores"].types == [ValueType.ARRAY, ValueType.FLOAT32]
    assert "general.quantization_version" not in fields
    assert "output.weight" not in [t.name for t in ggufpy.GGUFReader(path).tensors]


@pytest.mark.parametrize("dtype,file_type,ggml_type", [
    ("f16", 1, GGMLType.F16), ("bf16", 32, GGMLType.BF16), ("q8_0", 7, GGMLType.Q8_0), ("q4_0", 2, GGMLType.Q4_0)])
def test_dtypes_type_matrices_and_keep_norms_f32(tmp_path, dtype, file_type, ggml_type):
    args = make_args()
    weights = normal_weights(args)
    _, gf = write_read(tmp_path, mapping.to_gguf(weights, args, byte_vocab(40), dtype=dtype))
    assert gf.metadata["general.file_type"] == Value(ValueType.UINT32, file_type)
    quantized = ggml_type in (GGMLType.Q8_0, GGMLType.Q4_0)
    assert ("general.quantization_version" in gf.metadata) == quantized
    tensors, _, _ = mapping.from_gguf(gf)
    for name, w in weights.items():
        t = tensors[name]
        assert t.type == (ggml_type if w.ndim == 2 else GGMLType.F32), name
        expected = quant.dequantize(quant.quantize(w, t.type), t.type, w.shape)
        np.testing.assert_array_equal(t.to_float32(), expected)


def test_llama2_vocab_goes_in_and_out(tmp_path, shared_data):
    sp = spm.SentencePieceProcessor(model_file=str(shared_data / "llama2" / "tokenizer.model"))
    n = sp.vocab_size()
    types = [TokenType.BYTE if sp.is_byte(i) else TokenType.CONTROL if sp.is_control(i)
             else TokenType.UNKNOWN if sp.is_unknown(i) else TokenType.NORMAL for i in range(n)]
    vocab = Vocab([sp.id_to_piece(i) for i in range(n)], [sp.get_score(i) for i in range(n)], types)
    args = make_args(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=64, vocab_size=n)
    _, gf = write_read(tmp_path, mapping.to_gguf(normal_weights(args), args, vocab))
    assert mapping.from_gguf(gf)[2] == vocab


@pytest.mark.parametrize("mutate,message", [
    (lambda w, a: w.pop("layers.1.feed_forward.w3.weight"), "missing"),
    (lambda w, a: w.__setitem__("extra.weight", np.zeros(3, np.float32)), "unexpected"),
    (lambda w, a: w.__setitem__("layers.0.attention.wk.weight", np.zeros((64, 64), np.float32)),
     "layers.0.attention.wk.weight: shape"),
    (lambda w, a: a.__setitem__("n_heads", 5), "not divisible by n_heads"),
    (lambda w, a: a.__setitem__("n_kv_heads", 3), "not divisible by n_kv_heads"),
])
def test_to_gguf_refuses_inconsistent_requests(mutate, message):
    args = make_args().to_dict()
    weights = normal_weights(ModelArgs.from_dict(args))
    mutate(weights, args)
    with pytest.raises(ValueError, match=message):
        mapping.to_gguf(weights, ModelArgs.from_dict(args))


def test_to_gguf_refuses_rows_not_divisible_by_the_block_and_vocab_mismatch():
    args = make_args(dim=48, n_heads=4, n_kv_heads=4, hidden_dim=64)
    with pytest.raises(ValueError, match="tok_embeddings.weight as q8_0"):
        mapping.to_gguf(normal_weights(args), args, dtype="q8_0")
    args = make_args()
    with pytest.raises(ValueError, match="vocab has 41 pieces"):
        mapping.to_gguf(normal_weights(args), args, byte_vocab(41))


def _file_with(tmp_path, edit, args=None):
    args = args or make_args()
    gf = mapping.to_gguf(normal_weights(args), args, byte_vocab(args.vocab_size))
    edit(gf)
    return write_read(tmp_path, gf)[1]


@pytest.mark.parametrize("edit,fragment", [
    (lambda gf: gf.metadata.__setitem__("llama.attention.head_count", Value(ValueType.UINT32, 2)),
     "llama.rope.dimension_count: is 16 but embedding_length/head_count = 32"),
    (lambda gf: gf.metadata.__setitem__("llama.rope.dimension_count", Value(ValueType.UINT32, 64)),
     "llama.rope.dimension_count: is 64"),
    (lambda gf: gf.metadata.__setitem__("llama.attention.head_count", Value(ValueType.INT32, 4)),
     "llama.attention.head_count: has type INT32, expected UINT32"),
    (lambda gf: gf.metadata.__setitem__("llama.attention.head_count_kv", Value(ValueType.UINT32, 4)),
     "blk.0.attn_k.weight: has shape (32, 64); the hyperparameters imply (64, 64)"),
    (lambda gf: gf.metadata.pop("llama.embedding_length"), "llama.embedding_length: required key is missing"),
    (lambda gf: gf.metadata.__setitem__("general.architecture", Value(ValueType.STRING, "gpt2")), "only 'llama'"),
    (lambda gf: gf.tensors.pop(), "blk.1.ffn_up.weight: is missing"),
    (lambda gf: gf.tensors.append(gguf.Tensor.from_array("blk.2.attn_q.weight", np.zeros((64, 64), np.float32))),
     "blk.2.attn_q.weight: is unexpected"),
    (lambda gf: gf.tensors.append(gguf.Tensor.from_array("rope_freqs.weight", np.zeros(8, np.float32))),
     "not a tensor of the llama architecture"),
    (lambda gf: gf.metadata["tokenizer.ggml.tokens"].value.items.pop(),
     "tokenizer.ggml.scores: expected 39 FLOAT32 items (one per token), found 40"),
])
def test_from_gguf_names_the_wrong_key(tmp_path, edit, fragment):
    gf = _file_with(tmp_path, edit)
    with pytest.raises(FormatError) as info:
        mapping.from_gguf(gf)
    assert fragment in str(info.value)
    assert "m.gguf" in str(info.value)


def test_from_gguf_names_the_key_behind_a_bad_hyperparameter(tmp_path):
    gf = _file_with(tmp_path, lambda gf: gf.metadata.__setitem__("llama.attention.head_count_kv",
                                                                Value(ValueType.UINT32, 3)))
    with pytest.raises(FormatError) as info:
        mapping.from_gguf(gf)
    assert "llama.attention.head_count_kv: n_heads 4 is not divisible by n_kv_heads 3" in str(info.value)


def test_names_map_both_ways():
    assert mapping.gguf_name("layers.3.feed_forward.w1.weight") == "blk.3.ffn_gate.weight"
    assert mapping.gguf_name("layers.0.feed_forward.w3.weight") == "blk.0.ffn_up.weight"
    assert mapping.gguf_name("layers.10.feed_forward.w2.weight") == "blk.10.ffn_down.weight"
    assert mapping.gguf_name("tok_embeddings.weight") == "token_embd.weight"
    for name in spec.weight_shapes(make_args(n_layers=12, tie=False)):
        assert mapping.llama2c_name(mapping.gguf_name(name)) == name
    assert mapping.llama2c_name("blk.x.attn_q.weight") is None
