"""formats/hf_tokenizer.py: the tokenizer.json `export --to hf` writes gives our ids in transformers
with neither protobuf nor sentencepiece importable (what a folder with only tokenizer.model
cannot do), and in the `tokenizers` package on whitespace edge cases, for Meta's Llama 2 model
(dummy prefix) and vocabularies trained here (train-vocab's options: none; sentencepiece's
defaults: dummy prefix, extra whitespace removed); a folder with only tokenizer.json reads back to
the same ids. Ids must be equal, not close: there is no tolerance.
"""

import doctest
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"      # before transformers reads it: a local folder needs no network

import numpy as np
import pytest
import tokenizers

from formats import hf, hf_tokenizer, spm
from formats.errors import FormatError
from formats.spec import ModelArgs
from formats.vocab import TokenType
from reference.runtime.fast_tokenizer import FastTokenizer
from tests.support import files
from tests.support.cli import run_python
from tests.support.tokenizer import train_bpe
from tests.support.weights import small_normal_weights
from trainer.vocab import train_vocab

ENGLISH = ("tinyshakespeare/input.txt", 5000)     # lines the vocabularies below were not trained on
THAI = ("thai/wisesight-neg.txt", 0)
# Whitespace SentencePiece's normalizer treats specially, and a typed '▁'.
EDGES = ["", " ", "  ", "  a  b ", " Hello", "\n a", "a\tb  \n  c ", "x   ", "\u2581", "a \u2581 b\u2581"]


def lines(shared_data, path, start, count=100):
    """The first `count` non-empty lines from line `start` on."""
    text = (shared_data / path).read_text(encoding="utf-8").split("\n")[start:]
    return [line for line in text if line][:count]


@pytest.fixture(scope="module")
def models(shared_data, tmp_path_factory):
    """name -> .model bytes: Meta's Llama 2 model, one trained with train-vocab's own function and
    options (no dummy prefix), one with sentencepiece's defaults (dummy prefix, extra whitespace
    removed); both trained on 400 lines, with byte fallback."""
    text = (lines(shared_data, "tinyshakespeare/input.txt", 0, 200)
            + lines(shared_data, "thai/wisesight-pos.txt", 0, 200))
    path = tmp_path_factory.mktemp("vocab") / "tok.model"
    train_vocab(text, path, 1000)
    return {"llama2": (shared_data / "llama2" / "tokenizer.model").read_bytes(),
            "train-vocab": path.read_bytes(), "sentencepiece-defaults": train_bpe(text)}


def ours(model_bytes, tmp_path):
    path = tmp_path / "ours.model"
    path.write_bytes(model_bytes)
    return FastTokenizer.from_spm(path)


def samples(shared_data):
    english, thai = lines(shared_data, *ENGLISH), lines(shared_data, *THAI)
    assert len(english) == len(thai) == 100
    return english + thai + ["\n".join(english), "\n".join(thai)]


# ------------------------------------------------------------------ transformers without protobuf

# The child: sentencepiece and google (protobuf) cannot be found, as on a machine without them;
# it prints the ids transformers' AutoTokenizer gives for each text of the JSON list in argv[2],
# and their decoding.
WITHOUT_PROTOBUF = r'''
import json, sys

BLOCKED = ("sentencepiece", "google")


class Without:
    """A meta-path finder that finds nothing of BLOCKED and defers the rest to `finder`."""
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [Without(finder) for finder in sys.meta_path]
for blocked in BLOCKED:
    try:
        __import__(blocked)
        raise SystemExit(f"{blocked} is still importable")
    except ImportError:
        pass
import transformers
tokenizer = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(open(sys.argv[2], encoding="utf-8").read())
ids = [tokenizer(text).input_ids for text in texts]
print(json.dumps({"ids": ids, "decoded": [tokenizer.decode(i, skip_special_tokens=True) for i in ids]}))
'''


def transformers_without_protobuf(folder, texts, tmp_path):
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    result = run_python("-c", WITHOUT_PROTOBUF, folder, tmp_path / "texts.json", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", ["llama2", "train-vocab"])
def test_transformers_without_protobuf_gives_our_ids(shared_data, models, tmp_path, name):
    """The folder `to_hf` writes (what `export --to hf` writes), loaded by AutoTokenizer with
    neither protobuf nor sentencepiece: ids equal ours on 100 English and 100 Thai lines, one at
    a time and joined, and on whitespace edge cases, byte-fallback pieces included; decoding gives
    our text."""
    vocab_size = len(spm.from_bytes(models[name]).vocab)
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, vocab_size=vocab_size, hidden_dim=16)
    hf.to_hf(small_normal_weights(args), args, models[name], tmp_path / "folder")
    texts = samples(shared_data) + EDGES
    theirs = transformers_without_protobuf(tmp_path / "folder", texts, tmp_path)
    tokenizer = ours(models[name], tmp_path)
    expected = [tokenizer.encode(text) for text in texts]
    for text, got, want in zip(texts, theirs["ids"], expected):
        assert got == want, text
    assert theirs["decoded"] == [tokenizer.decode(ids) for ids in expected]
    byte_ids = {i for i, t in enumerate(tokenizer.types) if t == TokenType.BYTE}
    assert byte_ids & set(expected[len(texts) - len(EDGES) - 1]), "the Thai lines use no byte piece"


# ------------------------------------------------------------------------ the tokenizers package


@pytest.mark.parametrize("name", ["llama2", "train-vocab", "sentencepiece-defaults"])
def test_tokenizers_package_gives_our_ids_and_text(shared_data, models, tmp_path, name):
    """tokenizer.json as the `tokenizers` package loads it (no transformers), on the lines and
    on whitespace edge cases (leading, trailing and repeated spaces, tabs, newlines, typed '▁')."""
    model = spm.from_bytes(models[name])
    theirs = tokenizers.Tokenizer.from_str(json.dumps(hf_tokenizer.to_json(model)))
    tokenizer = ours(models[name], tmp_path)
    for text in samples(shared_data) + EDGES:
        ids = tokenizer.encode(text)
        assert theirs.encode(text).ids == ids, text
        assert theirs.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids), text


def test_the_three_models_cover_both_whitespace_settings(models):
    flags = {name: (spm.from_bytes(b).add_dummy_prefix, spm.from_bytes(b).remove_extra_whitespaces)
             for name, b in models.items()}
    assert flags == {"llama2": (True, False), "train-vocab": (False, False),
                     "sentencepiece-defaults": (True, True)}


# ----------------------------------------------------------------------- reading tokenizer.json


@pytest.mark.parametrize("name", ["llama2", "train-vocab", "sentencepiece-defaults"])
def test_a_folder_with_only_tokenizer_json_reads_to_the_same_ids(shared_data, models, tmp_path, name):
    """from_hf on a folder without tokenizer.model rebuilds a .model from tokenizer.json (and
    tokenizer_config.json's bos/eos): our ids from it equal those from the original .model."""
    vocab_size = len(spm.from_bytes(models[name]).vocab)
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, vocab_size=vocab_size, hidden_dim=16)
    folder = tmp_path / "folder"
    hf.to_hf(small_normal_weights(args), args, models[name], folder)
    (folder / hf.TOKENIZER).unlink()
    _, _, rebuilt = hf.from_hf(folder)
    model, back = spm.from_bytes(models[name]), spm.from_bytes(rebuilt)
    assert back.vocab.pieces == model.vocab.pieces and np.array_equal(back.vocab.types, model.vocab.types)
    assert (back.vocab.bos_id, back.vocab.eos_id, back.vocab.unk_id) == (model.vocab.bos_id, model.vocab.eos_id,
                                                                         model.vocab.unk_id)
    original, from_json = ours(models[name], tmp_path), ours(rebuilt, tmp_path / "folder")
    for text in samples(shared_data) + EDGES:
        assert from_json.encode(text) == original.encode(text), text
    assert hf_tokenizer.to_json(back) == hf_tokenizer.to_json(model)


def test_reads_the_form_transformers_llama_tokenizer_saves(shared_data, models, tmp_path):
    """transformers' LlamaTokenizer saves a Metaspace pre-tokenizer and no normalizer; read back,
    it gives our ids where that pipeline agrees with SentencePiece (text with no leading space)."""
    import transformers

    model = spm.from_bytes(models["train-vocab"])
    written = hf_tokenizer.to_json(model)["model"]
    transformers.LlamaTokenizer(vocab=written["vocab"], merges=[tuple(m) for m in written["merges"]],
                                add_prefix_space=False).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / hf.TOKENIZER_JSON).read_text(encoding="utf-8"))
    assert saved["pre_tokenizer"]["type"] == "Metaspace" and saved["normalizer"] is None
    back = hf_tokenizer.from_json(saved, tmp_path / hf.TOKENIZER_JSON)
    assert back.add_dummy_prefix is False
    rebuilt, original = FastTokenizer(back.vocab, byte_fallback=True), ours(models["train-vocab"], tmp_path)
    for text in samples(shared_data):
        assert rebuilt.encode(text) == original.encode(text), text


def edit(change):
    """A valid small tokenizer.json, changed by `change` (which edits it in place)."""
    obj = hf_tokenizer.to_json(spm.SentencePieceModel(
        small_vocab(), byte_fallback=False, remove_extra_whitespaces=False))
    change(obj)
    return obj


def small_vocab():
    return files.small_vocab(["<unk>", "<s>", "</s>", "a", "b", "ab"], [0, 0, 0, -3, -4, -1])


@pytest.mark.parametrize("change, fragment", [
    (lambda o: o["model"].update(type="Unigram"), "model.type: 'Unigram'"),
    (lambda o: o["model"]["vocab"].update(b=3), "model.vocab['b']: id 3"),
    (lambda o: o["model"]["vocab"].update(b=-1), "model.vocab['b']: id -1"),
    (lambda o: o["model"]["merges"].append(["b", "a"]), "model.merges[1]"),
    (lambda o: o["model"]["merges"].append("a b c"), "model.merges[1]"),
    (lambda o: o["model"].update(unk_token="?"), "model.unk_token"),
    (lambda o: o["model"].update(byte_fallback="yes"), "model.byte_fallback"),
    (lambda o: o["model"].update(end_of_word_suffix="</w>"), "model.end_of_word_suffix"),
    (lambda o: o["added_tokens"][1].update(content="<S>"), "added_tokens[1]"),
    (lambda o: o["added_tokens"][1].update(special=False), "added_tokens[1].special"),
    (lambda o: o["normalizer"]["normalizers"].insert(0, {"type": "NFKC"}), "normalizer"),
    (lambda o: o.update(pre_tokenizer={"type": "ByteLevel"}), "pre_tokenizer"),
    (lambda o: o.pop("model"), "model: missing"),
], ids=["unigram", "repeated id", "negative id", "merge of no piece", "three-part merge", "unk absent",
        "byte_fallback a string", "word suffix", "added token renamed", "not special", "NFKC", "byte level",
        "no model"])
def test_what_we_cannot_read_is_refused_naming_the_field(change, fragment):
    with pytest.raises(FormatError) as info:
        hf_tokenizer.from_json(edit(change), "tok.json")
    assert f"tok.json: {fragment}" in str(info.value), str(info.value)


def test_what_tokenizer_json_cannot_say_is_refused_before_writing(tmp_path):
    vocab = small_vocab()
    vocab.types[3] = TokenType.USER_DEFINED
    with pytest.raises(ValueError, match="piece 3 'a' is USER_DEFINED"):
        hf_tokenizer.to_json(spm.SentencePieceModel(vocab))
    with pytest.raises(ValueError, match="a UNIGRAM model"):
        hf_tokenizer.to_json(spm.SentencePieceModel(small_vocab(), model_type=spm.ModelType.UNIGRAM))


def test_special_tokens_map_and_config_name_the_pieces(models, tmp_path):
    hf.write_tokenizer(models["train-vocab"], tmp_path, max_seq_len=32)
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    assert json.loads((tmp_path / hf.SPECIAL_TOKENS_MAP).read_text()) == special
    config = json.loads((tmp_path / hf.TOKENIZER_CONFIG).read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and special.items() <= config.items()
    assert config["add_bos_token"] is True and config["add_prefix_space"] is False


def test_docstring_examples():
    result = doctest.testmod(hf_tokenizer)
    assert result.attempted > 0 and result.failed == 0
