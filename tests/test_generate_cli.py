"""`generate` and `tokenize` end to end, in a subprocess where torch cannot be imported."""

import json

import numpy as np
import pytest
import sentencepiece as spm

from formats import llama2c
from formats.spm import read as read_spm
from formats.vocab import TokenType, Vocab
from formats.spec import ModelArgs
from reference.model import Llama
from tests.support.cli import run_cli
from tests.support.files import small_vocab, write_gguf
from tests.support.weights import normal_weights

ARGS = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 96, "max_seq_len": 48,
        "tie_embeddings": True}


@pytest.fixture(scope="module")
def llama2_vocab(shared_data):
    return read_spm(shared_data / "llama2" / "tokenizer.model").vocab


@pytest.fixture(scope="module")
def model_gguf(tmp_path_factory, llama2_vocab):
    args = dict(ARGS, vocab_size=len(llama2_vocab))
    path = tmp_path_factory.mktemp("gen") / "m.gguf"
    weights = normal_weights(ModelArgs.from_dict(args), scale=0.5)
    write_gguf(ModelArgs.from_dict(args), weights, path, vocab=llama2_vocab)
    return path, args, weights


def greedy_reference(args, weights, prompt_ids, n):
    """Greedy ids by full recompute over the growing sequence (no KV cache)."""
    ids = list(prompt_ids)
    for _ in range(n):
        logits = Llama(ModelArgs.from_dict(args), weights).forward(ids, all_logits=True)[-1]
        ids.append(int(np.argmax(logits)))
    return ids[len(prompt_ids):]


def test_greedy_json_matches_full_recompute(model_gguf, llama2_vocab):
    path, args, weights = model_gguf
    result = run_cli("generate", path, "--prompt", "Once upon a time", "--temperature", "0",
                     "--max-new-tokens", "12", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["prompt_ids"][0] == 1
    assert doc["ids"] == greedy_reference(args, weights, doc["prompt_ids"], 12)
    assert doc["prefill_tok_s"] > 0 and doc["decode_tok_s"] > 0
    assert doc["threads"] >= 1
    # --threads reaches the model and changes no id (tests/test_fast_path.py splits every product).
    mapped = run_cli("generate", path, "--prompt", "Once upon a time", "--temperature", "0",
                     "--max-new-tokens", "12", "--json", "--mmap")
    assert json.loads(mapped.stdout)["ids"] == doc["ids"]                 # same weights, read in place
    for threads in ("1", "3"):
        again = run_cli("generate", path, "--prompt", "Once upon a time", "--temperature", "0",
                        "--max-new-tokens", "12", "--json", "--threads", threads)
        assert json.loads(again.stdout)["ids"] == doc["ids"] and json.loads(again.stdout)["threads"] == int(threads)


def test_streamed_text_equals_json_text_and_seed_reproduces(model_gguf):
    path, _, _ = model_gguf
    common = ("generate", path, "--prompt", "ก ข", "--max-new-tokens", "30", "--seed", "7", "--temperature", "1.2")
    streamed = run_cli(*common)
    as_json = run_cli(*common, "--json")
    again = run_cli(*common, "--json")
    assert streamed.returncode == as_json.returncode == 0, streamed.stderr + as_json.stderr
    doc = json.loads(as_json.stdout)
    assert streamed.stdout == doc["text"] + "\n"
    assert json.loads(again.stdout)["ids"] == doc["ids"]
    assert "prefill:" in streamed.stderr and "tok/s" in streamed.stderr
    # Another seed draws other tokens: 30 draws at temperature 1.2 from a random model's flat
    # distributions over 32,000 ids all coinciding would mean the seed never reaches the sampler.
    other = run_cli(*common[:-3], "8", "--temperature", "1.2", "--json")
    assert len(json.loads(other.stdout)["ids"]) == len(doc["ids"]) == 30
    assert json.loads(other.stdout)["ids"] != doc["ids"]


def test_llama2c_model_with_each_tokenizer_kind(tmp_path, model_gguf, shared_data):
    path, args, weights = model_gguf
    bin_path = tmp_path / "m.bin"
    llama2c.write(llama2c.Checkpoint(ModelArgs.from_dict(args), weights), bin_path, version=0)
    outputs = []
    for tok in (shared_data / "llama2" / "tokenizer.bin", shared_data / "llama2" / "tokenizer.model"):
        result = run_cli("generate", bin_path, "--tokenizer", tok, "--prompt", "Hi", "--temperature", "0",
                         "--max-new-tokens", "8", "--json")
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    from_gguf = json.loads(run_cli("generate", path, "--prompt", "Hi", "--temperature", "0",
                                   "--max-new-tokens", "8", "--json").stdout)
    assert outputs[0]["ids"] == outputs[1]["ids"] == from_gguf["ids"]
    assert outputs[0]["text"] == outputs[1]["text"] == from_gguf["text"]


def _control_first_vocab(n, stop_piece):
    """A vocabulary whose id 0 is the given control piece, so all-zero logits (greedy picks the
    lowest id) emit it at once."""
    pieces = [stop_piece] + [p for p in ("<unk>", "<s>", "</s>") if p != stop_piece]
    pieces += [f"▁w{i}" for i in range(n - len(pieces))]
    types = [TokenType.CONTROL] + [TokenType.UNKNOWN if p == "<unk>" else TokenType.CONTROL
                                   if p.startswith("<") else TokenType.NORMAL for p in pieces[1:]]
    ids = {"unk_id": pieces.index("<unk>"), "bos_id": pieces.index("<s>"), "eos_id": pieces.index("</s>")}
    return Vocab(pieces, np.zeros(n, np.float32), types, **ids)


@pytest.mark.parametrize("stop_piece,flags,expect_stop", [
    ("</s>", (), True), ("<s>", (), False), ("<s>", ("--stop-at-bos",), True)])
def test_generation_stops_at_eos_and_optionally_bos(tmp_path, stop_piece, flags, expect_stop):
    args = dict(ARGS, vocab_size=20)
    weights = normal_weights(ModelArgs.from_dict(args), scale=0.5)
    weights["norm.weight"] = np.zeros(args["dim"], np.float32)  # all logits 0: greedy picks id 0
    path = tmp_path / "stop.gguf"
    write_gguf(ModelArgs.from_dict(args), weights, path, vocab=_control_first_vocab(20, stop_piece))
    result = run_cli("generate", path, "--prompt", "w1", "--temperature", "0", "--max-new-tokens", "5", "--json",
                     *flags)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ids"] == ([] if expect_stop else [0] * 5)
    assert doc["stopped"] == ("stop_token" if expect_stop else "max_new_tokens")


def test_tokenize_matches_sentencepiece_from_every_source(model_gguf, shared_data):
    text = "Hello  world!\nสวัสดีครับ 😀"
    sp = spm.SentencePieceProcessor(model_file=str(shared_data / "llama2" / "tokenizer.model"))
    expected = [sp.bos_id()] + sp.encode(text)
    for source in (model_gguf[0], shared_data / "llama2" / "tokenizer.model", shared_data / "llama2" / "tokenizer.bin"):
        result = run_cli("tokenize", source, text, "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["ids"] == expected, source
        assert doc["pieces"] == [sp.id_to_piece(i) for i in expected]


@pytest.mark.parametrize("make_args,fragment", [
    (lambda d: ("generate", d["bin"]), "pass --tokenizer"),
    (lambda d: ("generate", d["bin"], "--tokenizer", d["tok"]), "the tokenizer has 32000 pieces but the model's "
                                                                "embedding has 40 rows"),
    (lambda d: ("generate", d["gguf"], "--max-new-tokens", "-1"), "--max-new-tokens must be >= 0"),
    (lambda d: ("generate", d["gguf"], "--threads", "0"), "--threads must be >= 1"),
    (lambda d: ("generate", d["gguf"], "--prompt", "x", "--prompt-file", "y"), "not allowed with argument"),
    (lambda d: ("generate", d["missing"]), "missing.gguf"),
    (lambda d: ("tokenize", d["bin"], "x"), "m.bin"),
])
def test_bad_requests_are_one_line_exit_2(tmp_path, model_gguf, shared_data, make_args, fragment):
    args = dict(ARGS, vocab_size=40)
    bin_path = tmp_path / "m.bin"
    model_args = ModelArgs.from_dict(args)
    llama2c.write(llama2c.Checkpoint(model_args, normal_weights(model_args, scale=0.5)), bin_path, version=1)
    paths = {"bin": bin_path, "tok": shared_data / "llama2" / "tokenizer.model", "gguf": model_gguf[0],
             "missing": tmp_path / "missing.gguf"}
    result = run_cli(*make_args(paths))
    assert result.returncode == 2, result.stdout + result.stderr
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_tokenizer_bin_starting_like_a_sentencepiece_model(tmp_path):
    # max_token_length 10 makes a tokenizer.bin start with 0x0A, a SentencePiece .model's first
    # byte: the demo's own export did, and was read as a broken .model ("empty piece").
    pieces = ["<unk>", "<s>", "</s>", "a", "b", "ab", "abcdefghij"]
    vocab = small_vocab(pieces, np.array([0, 0, 0, -1, -2, -3, -4], np.float32))
    path = tmp_path / "tok.bin"
    llama2c.write_tokenizer(vocab, path)
    assert path.read_bytes()[:4] == bytes([0x0A, 0, 0, 0])
    result = run_cli("tokenize", path, "ab", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pieces"][-1] == "ab"
