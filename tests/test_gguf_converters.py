"""GGUFs as llama.cpp's own Hugging Face converter (convert_hf_to_gguf.py) writes them read as
models with mapping.from_gguf, and the architectures we do not compute are refused in one line.

The files are written with gguf-py's GGUFWriter, the writer the converter uses, making the calls
it makes for a SentencePiece Llama (TextModel and LlamaModel.set_gguf_parameters, the Metadata
and SpecialVocab keys): general.* (type, name, basename, finetune, size_label, license, tags,
languages, base models), llama.* hyperparameters (with or without llama.vocab_size,
rope.dimension_count, head_count_kv and freq_base, which older converters or Llama-1 configs omit;
key_length/value_length, which newer ones add), tokenizer.ggml.* with `pre`, a padding id,
add_bos_token/add_eos_token and a chat template, and the general.file_type of each quantized mix.
"""

import dataclasses

import gguf as ggufpy
import numpy as np
import pytest

from formats import gguf, mapping
from formats.errors import FormatError
from formats.spec import ModelArgs
from tests.support.cli import run_cli
from tests.support.weights import normal_weights

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, hidden_dim=96,
                 max_seq_len=128, tie_embeddings=False)
PIECES = ["<unk>", "<s>", "</s>"] + [f"\u2581p{i}" for i in range(ARGS.vocab_size - 3)]
CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
                 "{% endfor %}")


def write_converted(path, args=ARGS, arch="llama", file_type=1, omit=(), extra=None):
    """A GGUF shaped like convert_hf_to_gguf.py's for a Llama of `args` (matrices F16, norms F32);
    `omit` drops keys it may leave out, `extra` = {key: (gguf-py value type, value)} adds others."""
    writer = ggufpy.GGUFWriter(path, arch)
    writer.add_type("model")
    writer.add_name("Tiny Llama Chat")
    writer.add_basename("Tiny-Llama")
    writer.add_finetune("Chat")
    writer.add_size_label("0.3M")
    writer.add_license("apache-2.0")
    writer.add_tags(["text-generation"])
    writer.add_languages(["en"])
    writer.add_base_model_count(1)
    writer.add_base_model_name(0, "Tiny Llama")
    # The converter's add_block_count, add_rope_freq_base, ... write UINT32s and FLOAT32s.
    hparams = {"block_count": args.n_layers, "context_length": args.max_seq_len, "embedding_length": args.dim,
               "feed_forward_length": args.hidden_dim, "attention.head_count": args.n_heads,
               "attention.head_count_kv": args.n_kv_heads, "rope.freq_base": args.rope_theta,
               "attention.layer_norm_rms_epsilon": args.norm_eps, "vocab_size": args.vocab_size,
               "rope.dimension_count": args.head_dim, "attention.key_length": args.head_dim,
               "attention.value_length": args.head_dim}
    for key, value in hparams.items():
        if "llama." + key not in omit:
            (writer.add_float32 if isinstance(value, float) else writer.add_uint32)("llama." + key, value)
    writer.add_file_type(file_type)
    writer.add_quantization_version(2)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(PIECES)
    writer.add_token_scores([-float(i) for i in range(len(PIECES))])
    writer.add_token_types([2, 3, 3] + [1] * (len(PIECES) - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for key, (vtype, value) in (extra or {}).items():
        writer.add_key_value(key, value, vtype)
    for name, array in normal_weights(args).items():
        writer.add_tensor(mapping.gguf_name(name), array.astype(np.float16) if array.ndim == 2 else array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_model(path):
    return mapping.from_gguf(gguf.read(path), str(path))


# llama_ftype values a converted-then-quantized file declares: F32, F16, Q2_K, Q3_K_M, Q4_K_S,
# Q4_K_M, Q5_K_M, Q6_K, IQ4_XS, BF16. Its tensors' own types are what count; the key is a label.
FILE_TYPES = [0, 1, 10, 12, 14, 15, 17, 18, 30, 32]
# (the model written, the keys left out)
VARIANTS = {
    "every key": (ARGS, ()),
    "no llama.vocab_size": (ARGS, ("llama.vocab_size",)),
    "a Llama-1 config": (dataclasses.replace(ARGS, n_kv_heads=ARGS.n_heads),
                         ("llama.attention.head_count_kv", "llama.rope.freq_base", "llama.rope.dimension_count")),
    "no key/value lengths": (ARGS, ("llama.attention.key_length", "llama.attention.value_length")),
}


def assert_reads_as(path, written):
    tensors, args, vocab = read_model(path)
    assert args.norm_eps == float(np.float32(written.norm_eps))          # stored as FLOAT32
    assert args == dataclasses.replace(written, norm_eps=args.norm_eps)
    for name, array in normal_weights(written).items():
        stored = array.astype(np.float16).astype(np.float32) if array.ndim == 2 else array
        np.testing.assert_array_equal(tensors[name].to_float32(), stored)
    assert vocab.pieces == PIECES and (vocab.bos_id, vocab.eos_id, vocab.unk_id) == (1, 2, 0)
    assert vocab.add_bos and not vocab.add_eos


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda name: name.replace(" ", "-"))
def test_a_converted_file_reads_as_a_model(tmp_path, variant):
    written, omit = VARIANTS[variant]
    assert_reads_as(write_converted(tmp_path / "m.gguf", written, omit=omit), written)


def test_any_file_type_label_reads(tmp_path):
    for file_type in FILE_TYPES:
        assert_reads_as(write_converted(tmp_path / f"{file_type}.gguf", file_type=file_type), ARGS)


UNSUPPORTED = [
    ({"arch": "qwen2"}, "general.architecture: is 'qwen2'; only 'llama' is supported"),
    ({"arch": "gemma"}, "general.architecture: is 'gemma'; only 'llama' is supported"),
    ({"extra": {"llama.expert_count": (ggufpy.GGUFValueType.UINT32, 8)}},
     "llama.expert_count: is 8: mixture-of-experts models are not supported"),
    ({"extra": {"llama.rope.scaling.type": (ggufpy.GGUFValueType.STRING, "linear"),
                "llama.rope.scaling.factor": (ggufpy.GGUFValueType.FLOAT32, 4.0)}},
     "llama.rope.scaling.type: is 'linear': only unscaled RoPE is supported"),
]


@pytest.mark.parametrize("kwargs, message", UNSUPPORTED, ids=lambda x: str(x)[:40])
def test_what_we_do_not_compute_is_refused_in_one_line(tmp_path, kwargs, message):
    path = write_converted(tmp_path / "m.gguf", **kwargs)
    with pytest.raises(FormatError) as info:
        read_model(path)
    assert str(info.value) == f"{path}: {message}"


def test_generate_says_so_in_one_line(tmp_path):
    path = write_converted(tmp_path / "qwen.gguf", arch="qwen2")
    result = run_cli("generate", path, "--prompt", "hi", with_torch=True)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"llama2-scratch: error: {path}: general.architecture: "
                                                  "is 'qwen2'; only 'llama' is supported"]
