"""formats/hf.py against transformers, the oracle: the folder `to_hf` writes loads in
`LlamaForCausalLM.from_pretrained` and computes our NumPy reference's logits (MHA and GQA, tied and
untied), its `AutoTokenizer` gives our tokenizer's ids (Llama 2's tokenizer.model and vocabularies
trained here, on English and Thai text), and `from_hf` reads back exactly what was written, and
what transformers itself saves (sharded). transformers runs offline: it reads only the folder.
"""

import dataclasses
import doctest
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"      # before transformers reads it: a local folder needs no network

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.llama import modeling_llama

from formats import hf, safetensors, spm
from formats.errors import FormatError
from formats.spec import ModelArgs
from reference.model import Llama
from reference.rope import apply_rope, rope_tables
from reference.tokenizer import Tokenizer
from tests.support.cli import run_python
from tests.support.crafted import HF_BAD_CONFIGS
from tests.support.tokenizer import train_bpe
from tests.support.weights import small_normal_weights

# Max |logit difference| between transformers (float64 weights, dtype=torch.float64) and
# reference.model.Llama in float64, on the four MODELS below (1000 pieces, 32 positions, logits
# up to ~7). As shipped, transformers computes the RoPE angles in float32 (LlamaRotaryEmbedding)
# and casts RMSNorm's input to float32 (LlamaRMSNorm) even in a float64 run: measured 5.5e-6 to
# 8.9e-6, mostly the float32 rounding of angles up to 31 rad (4.2e-6 to 7.8e-6 with RMSNorm alone
# lifted to float64).
AS_SHIPPED_ATOL = 2e-5
# With both lifted to float64 (the patches below; nothing else changes) the two implementations
# agree to float64 rounding: measured 1.9e-14 to 2.7e-14.
FLOAT64_ATOL = 1e-13

MODELS = {
    "mha-tied": dict(n_heads=4, n_kv_heads=4, tie_embeddings=True),
    "mha-untied": dict(n_heads=4, n_kv_heads=4, tie_embeddings=False),
    "gqa-tied": dict(n_heads=4, n_kv_heads=2, tie_embeddings=True),
    "gqa-untied": dict(n_heads=8, n_kv_heads=2, tie_embeddings=False),
}


def lines(shared_data, path, start, count):
    return (shared_data / path).read_text(encoding="utf-8").split("\n")[start:start + count]


@pytest.fixture(scope="module")
def tokenizers(shared_data):
    """name -> .model bytes: Llama 2's, and byte-fallback BPE vocabularies trained on a few
    English and Thai lines, one Llama-style (dummy prefix), one with this project's options
    (trainer/vocab.py: no dummy prefix, digits split, spaces kept)."""
    text = (lines(shared_data, "tinyshakespeare/input.txt", 0, 200)
            + lines(shared_data, "thai/wisesight-pos.txt", 0, 200))
    return {"llama2": (shared_data / "llama2" / "tokenizer.model").read_bytes(),
            "trained": train_bpe(text),
            "trained-project": train_bpe(text, remove_extra_whitespaces=False, add_dummy_prefix=False,
                                          split_digits=True, allow_whitespace_only_pieces=True)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tokenizers, tmp_path_factory):
    """(args, weights, .model bytes, folder) of a model written by to_hf."""
    model = tokenizers["trained"]
    vocab_size = len(spm.from_bytes(model).vocab)
    args = ModelArgs(dim=64, n_layers=2, vocab_size=vocab_size, max_seq_len=32, rope_theta=500.0,
                     norm_eps=1e-5, hidden_dim=96, **MODELS[request.param])
    weights = small_normal_weights(args, seed=sorted(MODELS).index(request.param))
    folder = tmp_path_factory.mktemp(request.param)
    hf.to_hf(weights, args, model, folder)
    return args, weights, model, folder


def hf_logits(folder, tokens):
    model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float64)
    with torch.no_grad():
        return model(torch.tensor(tokens)[None]).logits[0].numpy()       # (T, V)


def our_logits(args, weights, tokens):
    return Llama(args, weights, np.float64).forward(tokens, all_logits=True)   # (T, V)


# ------------------------------------------------------------------- logits against transformers


def test_transformers_as_shipped_computes_our_logits(exported):
    args, weights, _, folder = exported
    tokens = np.random.default_rng(1).integers(0, args.vocab_size, args.max_seq_len)
    delta = np.abs(hf_logits(folder, tokens) - our_logits(args, weights, tokens)).max()
    assert delta <= AS_SHIPPED_ATOL, delta


def rmsnorm_float64(self, hidden_states):
    """LlamaRMSNorm.forward without its cast to float32."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def rope_float64(self, x, position_ids):
    """LlamaRotaryEmbedding.forward with float64 angles: cos and sin of m * theta^(-2j/hd),
    repeated for the two halves (Hugging Face's layout)."""
    head_dim = self.config.hidden_size // self.config.num_attention_heads
    theta = self.config.rope_parameters["rope_theta"]
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)   # (hd/2,)
    angles = position_ids[..., None].to(torch.float64) * freqs                          # (B, T, hd/2)
    angles = torch.cat((angles, angles), dim=-1)                                        # (B, T, hd)
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def test_transformers_in_float64_computes_our_logits(exported, monkeypatch):
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rmsnorm_float64)
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", rope_float64)
    args, weights, _, folder = exported
    tokens = np.random.default_rng(1).integers(0, args.vocab_size, args.max_seq_len)
    delta = np.abs(hf_logits(folder, tokens) - our_logits(args, weights, tokens)).max()
    assert delta <= FLOAT64_ATOL, delta


# ------------------------------------------------------------------------------------ the files


def test_from_hf_reads_back_exactly_what_to_hf_wrote(exported):
    args, weights, model, folder = exported
    back, back_args, back_model = hf.from_hf(folder)
    assert back_args == args and back_model == model and list(back) == list(weights)
    for name, w in weights.items():
        assert back[name].dtype == np.float32 and back[name].tobytes() == w.tobytes(), name


def test_the_folder_says_llama_float32(exported):
    args, _, _, folder = exported
    config = json.loads((folder / hf.CONFIG).read_text())
    assert (config["architectures"], config["model_type"], config["torch_dtype"]) == (
        ["LlamaForCausalLM"], "llama", "float32")
    assert (config["num_key_value_heads"], config["tie_word_embeddings"]) == (args.n_kv_heads, args.tie_embeddings)
    assert json.loads((folder / hf.GENERATION_CONFIG).read_text()) == {"bos_token_id": 1, "eos_token_id": 2}
    tensors = safetensors.read(folder / hf.WEIGHTS)
    assert tensors.metadata == {"format": "pt"} and {t.dtype for t in tensors.tensors.values()} == {"F32"}
    assert ("lm_head.weight" in tensors.tensors) == (not args.tie_embeddings)


def test_from_hf_reads_what_transformers_saves_sharded(exported, tmp_path):
    """transformers 5's own config (rope_parameters, dtype) and a sharded model.safetensors.index.json."""
    args, weights, _, folder = exported
    transformers.LlamaForCausalLM.from_pretrained(folder).save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / hf.INDEX).exists() and not (tmp_path / hf.WEIGHTS).exists()
    back, back_args, back_model = hf.from_hf(tmp_path)
    assert back_args == args and back_model is None
    for name, w in weights.items():
        assert back[name].tobytes() == w.tobytes(), name


# ----------------------------------------------------------------------------------- tokenizer

TEXTS = {"english": ("tinyshakespeare/input.txt", 5000), "thai": ("thai/wisesight-neg.txt", 100)}


@pytest.mark.parametrize("text", sorted(TEXTS))
@pytest.mark.parametrize("name", ["llama2", "trained", "trained-project"])
def test_auto_tokenizer_gives_our_ids(shared_data, tokenizers, tmp_path, name, text):
    """On 100 lines the vocabularies were not trained on, one at a time and as one text."""
    hf.write_tokenizer(tokenizers[name], tmp_path, max_seq_len=1 << 20)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = Tokenizer.from_spm(tmp_path / hf.TOKENIZER)
    samples = [line for line in lines(shared_data, *TEXTS[text], 100) if line]
    for sample in samples + ["\n".join(samples)]:
        ids = ours.encode(sample)
        assert theirs(sample).input_ids == ids, sample
        assert theirs.decode(ids, skip_special_tokens=True) == ours.decode(ids)


def test_tokenizer_config_carries_the_model_flags(tokenizers, tmp_path):
    hf.write_tokenizer(tokenizers["trained-project"], tmp_path, max_seq_len=32)
    config = json.loads((tmp_path / hf.TOKENIZER_CONFIG).read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["add_prefix_space"] is False
    assert (config["bos_token"], config["eos_token"], config["unk_token"]) == ("<s>", "</s>", "<unk>")
    assert (tmp_path / hf.TOKENIZER).read_bytes() == tokenizers["trained-project"]


# --------------------------------------------------------------------------------- permutation


def test_docstring_examples():
    result = doctest.testmod(hf)
    assert result.attempted > 0 and result.failed == 0


def rope_half_split(x, cos, sin):
    """transformers' RoPE: x * cos + rotate_half(x) * sin, pairing x[j] with x[j + hd/2].
    x: (T, hd), cos and sin: (T, hd/2)."""
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


@settings(max_examples=50)
@given(n_heads=st.integers(1, 4), half=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_permuted_rows_under_half_split_rope_are_our_rope(n_heads, half, seed):
    """Rotating q = W h our way, then reordering its rows, equals reordering W's rows
    (to_half_split) and rotating transformers' way; to_adjacent_pairs undoes to_half_split."""
    head_dim, dim, n_tokens = 2 * half, 8, 5
    rng = np.random.default_rng(seed)
    w, h = rng.standard_normal((n_heads * head_dim, dim)), rng.standard_normal((n_tokens, dim))
    cos, sin = rope_tables(head_dim, n_tokens, 10000.0, np.float64)
    ours = apply_rope((h @ w.T).reshape(n_tokens, n_heads, head_dim).transpose(1, 0, 2), cos, sin)
    theirs = np.stack([rope_half_split(q, cos, sin) for q in
                       (h @ hf.to_half_split(w, n_heads).T).reshape(n_tokens, n_heads, head_dim).transpose(1, 0, 2)])
    reordered = hf.to_half_split(ours.transpose(1, 0, 2).reshape(n_tokens, -1).T, n_heads).T
    np.testing.assert_allclose(theirs.transpose(1, 0, 2).reshape(n_tokens, -1), reordered, rtol=0, atol=1e-12)
    assert np.array_equal(hf.to_adjacent_pairs(hf.to_half_split(w, n_heads), n_heads), w)


# ----------------------------------------------------------------------------------- refusals


@pytest.fixture
def small_folder(tmp_path, tokenizers):
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=32000, hidden_dim=16)
    hf.to_hf(small_normal_weights(args), args, tokenizers["llama2"], tmp_path)
    return tmp_path


@pytest.mark.parametrize("case", sorted(HF_BAD_CONFIGS))
def test_configs_we_cannot_run_are_refused(small_folder, case):
    edit, fragment = HF_BAD_CONFIGS[case]
    path = small_folder / hf.CONFIG
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(FormatError) as info:
        hf.from_hf(small_folder)
    assert fragment in str(info.value) and str(small_folder) in str(info.value), str(info.value)


def edit_tensors(folder, edit):
    st_file = safetensors.read(folder / hf.WEIGHTS)
    tensors = {name: safetensors.Tensor(t.dtype, np.array(t.data)) for name, t in st_file.tensors.items()}
    edit(tensors)
    safetensors.write(dataclasses.replace(st_file, tensors=tensors), folder / hf.WEIGHTS)


EMBED, NORM, LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.pop(NORM), f"{NORM}: missing"),
    (lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": safetensors.Tensor.from_array(np.zeros(8, np.float32))}),
     "q_proj.bias: not a tensor of this Llama model"),
    (lambda t: t.update({NORM: safetensors.Tensor.from_array(np.zeros(9, np.float32))}), "shape (9,), config.json"),
    (lambda t: t.update({NORM: safetensors.Tensor.from_array(np.zeros(8, np.int32))}), "must be floating point"),
    (lambda t: t.update({LM_HEAD: safetensors.Tensor.from_array(np.zeros((32000, 8), np.float32))}),
     "differs from model.embed_tokens.weight"),
], ids=["missing", "bias", "shape", "int32", "tied lm_head differs"])
def test_weights_that_do_not_fit_are_refused(small_folder, edit, fragment):
    edit_tensors(small_folder, edit)
    with pytest.raises(FormatError) as info:
        hf.from_hf(small_folder)
    assert fragment in str(info.value), str(info.value)


def test_derived_buffers_and_a_tied_copy_are_accepted_and_bf16_widened(small_folder):
    weights, args, _ = hf.from_hf(small_folder)

    def edit(tensors):
        tensors[LM_HEAD] = tensors[EMBED]
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = safetensors.Tensor.from_array(np.ones(2, np.float32))
        tensors[NORM] = safetensors.Tensor.from_array(weights["norm.weight"], "BF16")
    edit_tensors(small_folder, edit)
    back, back_args, _ = hf.from_hf(small_folder)
    assert back_args == args and set(back) == set(weights)
    np.testing.assert_array_equal(back["norm.weight"], torch.tensor(weights["norm.weight"]).bfloat16().float().numpy())


def test_to_hf_refuses_a_tokenizer_larger_than_the_model(tokenizers, tmp_path):
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, vocab_size=100, hidden_dim=16)
    with pytest.raises(ValueError, match="the tokenizer has 32000 pieces, the model only 100 rows"):
        hf.to_hf(small_normal_weights(args), args, tokenizers["llama2"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# The formats need NumPy only: transformers, the safetensors package and torch are test oracles.
WITHOUT_ORACLES = r'''
import sys
for name in ("torch", "transformers", "safetensors", "sentencepiece", "google.protobuf"):
    sys.modules[name] = None
import numpy as np
from formats import hf, spec, spm
from formats.spec import ModelArgs
from formats.vocab import Vocab
vocab = Vocab(["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"], np.zeros(8), [2, 3, 3, 1, 1, 1, 1, 1])
args = ModelArgs(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=8, hidden_dim=16, tie_embeddings=False)
weights = {name: np.ones(shape, np.float32) for name, shape in spec.weight_shapes(args).items()}
hf.to_hf(weights, args, spm.to_bytes(spm.SentencePieceModel(vocab)), sys.argv[1])
back, back_args, _ = hf.from_hf(sys.argv[1])
assert back_args == args and all(np.array_equal(back[n], w) for n, w in weights.items())
print("ok")
'''


def test_formats_need_none_of_the_oracles(tmp_path):
    result = run_python("-c", WITHOUT_ORACLES, tmp_path, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
