"""What a new user hit on a fresh clone (issue 26, item 6): a Hugging Face folder with only
tokenizer.json, `inspect` on a file that is no model, `generate` past the context, tokenizer.bin's
dummy prefix on a vocabulary trained without one, and what `verify` says about a folder.

The models: a small random GGUF (dim 64, context 48) with Llama 2's vocabulary, a llama2.c v0 file
of a made-up vocabulary, and random ckpt.pt files for verify; in-process CLI runs (the no-torch
subprocess runs are test_generate_cli's).
"""

import dataclasses
import json
import struct
import sys

import pytest

from formats import hf, llama2c
from formats.spec import ModelArgs
from formats.spm import read as read_spm
from llama2_scratch.cli import main
from models import tokenizers
from tests.support.files import small_vocab, write_gguf
from tests.support.weights import normal_weights

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, max_seq_len=48, vocab_size=32000,
                 tie_embeddings=True)


@pytest.fixture(scope="module")
def llama2_model(shared_data):
    return shared_data / "llama2" / "tokenizer.model"


@pytest.fixture(scope="module")
def model_gguf(tmp_path_factory, llama2_model):
    path = tmp_path_factory.mktemp("first-run") / "m.gguf"
    write_gguf(ARGS, normal_weights(ARGS, scale=0.5), path, vocab=read_spm(llama2_model).vocab)
    return path


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of `llama2-scratch ARGV` run in this process."""
    capsys.readouterr()
    status = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys, *argv):
    """(exit status, the JSON document `llama2-scratch ARGV --json` printed, stderr)."""
    status, out, err = run_cli(capsys, *argv, "--json")
    return status, json.loads(out) if out else None, err


def refused(capsys, *argv):
    """The one line on stderr of a command that must exit with status 2."""
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and err.count("\n") == 1, err
    return err


def test_a_folder_with_only_tokenizer_json_generates_and_tokenizes_the_same(model_gguf, llama2_model, tmp_path,
                                                                            capsys):
    """tokenizer.json alone (as many Hugging Face repositories ship it) gives the ids the .model gives."""
    folder = tmp_path / "hf"
    assert main(["export", str(model_gguf), "--to", "hf", "-o", str(folder), "--tokenizer", str(llama2_model)]) == 0
    text = "ROMEO: Wherefore art thou, Ромео? 🌹"
    runs = []
    for _ in range(2):
        generated = run_json(capsys, "generate", folder, "--prompt", text, "--temperature", "0",
                             "--max-new-tokens", "8", "--threads", "1")
        tokenized = run_json(capsys, "tokenize", folder, text)
        assert generated[0] == tokenized[0] == 0, (generated[2], tokenized[2])
        runs.append((generated[1]["prompt_ids"], generated[1]["ids"], tokenized[1]))
        (folder / hf.TOKENIZER).unlink(missing_ok=True)
    assert not (folder / hf.TOKENIZER).exists() and (folder / hf.TOKENIZER_JSON).exists()
    assert runs[0] == runs[1] and len(runs[0][1]) == 8
    assert "<0xF0>" in runs[0][2]["pieces"]     # the emoji falls back to bytes in both


@pytest.fixture(scope="module")
def no_prefix_bin(tmp_path_factory):
    """(tokenizer.bin, llama2.c v0 model) of a vocabulary whose capitalized words are bare pieces,
    as SentencePiece learns them without the dummy prefix ("ROMEO", not "▁ROMEO")."""
    words = ["ROMEO"] + [f"Name{chr(97 + i)}" for i in range(tokenizers.MIN_CAPITALIZED_PIECES)]
    vocab = small_vocab(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", ":"] + words)
    root = tmp_path_factory.mktemp("no-prefix")
    llama2c.write_tokenizer(vocab, root / "tokenizer.bin")
    args = dataclasses.replace(ARGS, vocab_size=len(vocab.pieces))
    llama2c.write(llama2c.Checkpoint(args, normal_weights(args)), root / "m.bin", version=0)
    return root / "tokenizer.bin", root / "m.bin"


def test_a_tokenizer_bin_on_a_vocabulary_without_the_dummy_prefix_warns(no_prefix_bin, model_gguf, llama2_model,
                                                                         tmp_path, capsys):
    """generate and tokenize say once, as trace does, that tokenizer.bin's '▁' was not in training."""
    tokenizer, model = no_prefix_bin
    warning = f"{tokenizer}: a tokenizer.bin adds a '▁' before the prompt, but its pieces look trained without"
    status, _, err = run_json(capsys, "tokenize", tokenizer, "ROMEO:")
    assert status == 0 and err.startswith(f"warning: {warning}") and err.count("\n") == 1, err
    status, _, err = run_json(capsys, "generate", model, "--tokenizer", tokenizer, "--prompt", "ROMEO:",
                              "--temperature", "0", "--max-new-tokens", "2")
    assert status == 0 and err.startswith(f"warning: --tokenizer {warning}") and err.count("\n") == 1, err
    # the model's own flag decides where it carries a vocabulary: a GGUF saying add_space_prefix false
    flagged = tmp_path / "flagged.gguf"
    vocab = dataclasses.replace(read_spm(llama2_model).vocab, add_space_prefix=False)
    write_gguf(ARGS, normal_weights(ARGS, scale=0.5), flagged, vocab=vocab)
    llama2_bin = tmp_path / "llama2.bin"
    llama2c.write_tokenizer(vocab, llama2_bin)
    status, _, err = run_json(capsys, "generate", flagged, "--tokenizer", llama2_bin, "--prompt", "ROMEO:",
                              "--temperature", "0", "--max-new-tokens", "2")
    assert status == 0 and "says its vocabulary adds no dummy prefix" in err and err.count("\n") == 1, err
    # Llama 2's pieces were learned with the prefix: no warning from either command
    for argv in (("tokenize", llama2_bin, "ROMEO:"),
                 ("generate", model_gguf, "--tokenizer", llama2_bin, "--prompt", "ROMEO:", "--max-new-tokens", "2")):
        status, _, err = run_json(capsys, *argv)
        assert status == 0 and err == "", err


def test_generate_says_once_that_the_context_cut_it_short(model_gguf, capsys):
    """--max-new-tokens 500 on a 48-token context: the context's last position is the limit, and
    stderr and --json say so; a run that reaches --max-new-tokens says nothing."""
    argv = ("generate", model_gguf, "--prompt", "ROMEO:", "--temperature", "0", "--threads", "1")
    status, doc, err = run_json(capsys, *argv, "--max-new-tokens", "500")
    assert status == 0 and doc["stopped"] == "context"
    assert len(doc["prompt_ids"]) + len(doc["ids"]) == ARGS.max_seq_len
    note = (f"generate: stopped at the model's {ARGS.max_seq_len}-token context after {len(doc['ids'])} new tokens "
            "(--max-new-tokens 500)\n")
    assert err == note
    status, _, err = run_cli(capsys, *argv, "--max-new-tokens", "500")
    assert status == 0 and err.count(note) == 1 and err.count("\n") == 2      # the note and the speed line
    status, doc, err = run_json(capsys, *argv, "--max-new-tokens", "3")
    assert status == 0 and doc["stopped"] == "max_new_tokens" and len(doc["ids"]) == 3 and err == ""


def test_a_file_that_is_no_model_says_so_and_which_kinds_were_tried(tmp_path, capsys):
    """Text read as a llama2.c v0 config gave "config.n_heads at byte 12: 1751348321 does not divide
    dim 1819025443"; it is no model file, and the message says which kinds it is not."""
    readme = tmp_path / "README.md"
    readme.write_text("# llama2-scratch\n\nUnderstand, train and run a Llama 2 model.\n", encoding="utf-8")
    for command in ("inspect", "generate"):
        err = refused(capsys, command, readme)
        assert err.startswith(f"llama2-scratch: error: {readme}: kind: not a model file:"), err
        for tried in ('"GGUF"', 'llama2.c v1/v2 magic ("24ka")', "torch.save zip (ckpt.pt", "Hugging Face folder",
                      "llama2.c v0 file: its first 28 bytes as a v0 config: 7 of 7 fields outside 1..16777216 "
                      "(dim 1819025443)"):
            assert tried in err, (tried, err)


@pytest.mark.parametrize("field, value, message", [
    ("n_heads", 5, "config.n_heads at byte 12: 5 does not divide dim 64"),
    ("dim", 2**31 - 1, "does not divide dim 2147483647"),     # one field out of range: still a v0 file
    ("vocab_size", -(2**31), "config.vocab_size at byte 20: must be a positive int32")])
def test_a_damaged_llama2c_v0_file_keeps_its_specific_message(no_prefix_bin, tmp_path, capsys, field, value,
                                                             message):
    data = bytearray(no_prefix_bin[1].read_bytes())
    struct.pack_into("<i", data, 4 * llama2c.CONFIG_FIELDS.index(field), value)
    damaged = tmp_path / "m.bin"
    damaged.write_bytes(bytes(data))
    err = refused(capsys, "inspect", damaged)
    assert message in err and "not a model file" not in err, err


# ---------------------------------------------------------------------------------- verify
# Random untied models with Llama 2's vocabulary (tests/support/verify.py scales their logits so
# top-1 and greedy checks mean something), context 32 to keep the runs short.
VERIFY_ARGS = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32, tie_embeddings=False)


@pytest.fixture(scope="module")
def verify_models(llama2_model, tmp_path_factory):
    """(ckpt.pt, the folder exported from it, a ckpt of another shape)."""
    from tests.support.verify import random_checkpoint

    root = tmp_path_factory.mktemp("first-run-verify")
    ckpt = random_checkpoint(root / "ckpt.pt", llama2_model, seed=1, **VERIFY_ARGS)
    other = random_checkpoint(root / "other.pt", llama2_model, seed=2, **dict(VERIFY_ARGS, n_layers=3))
    assert main(["export", str(ckpt), "--to", "hf", "-o", str(root / "hf")]) == 0
    return ckpt, root / "hf", other


def test_verify_a_mismatched_ckpt_shows_the_files_own_config(verify_models, capsys, monkeypatch):
    """The header line is MODEL's config (2 layers), not the ckpt's (3): the config row says they
    differ. transformers made unimportable: the note names it, not torch (which is installed), and
    says nothing of llama.cpp (not asked for)."""
    ckpt, folder, other = verify_models
    monkeypatch.setitem(sys.modules, "transformers", None)
    status, out, _ = run_cli(capsys, "verify", folder, "--ckpt", other, "--threads", "1")
    lines = out.splitlines()
    assert status == 1 and lines[0] == f"verify {folder} [f32]: dim 64, 2 layers, 4/2 heads, vocab 32000, context 32"
    assert any(line.startswith("config ") and line.endswith("FAIL") for line in lines), out
    notes = [line for line in lines if line.startswith("note: ")]
    assert len(notes) == 1 and notes[0].startswith("note: transformers cannot be imported ("), notes
    assert "torch" not in notes[0] and "llama.cpp" not in out
    status, doc, _ = run_json(capsys, "verify", folder, "--ckpt", ckpt, "--threads", "1")
    assert status == 0 and doc["implementations"] == ["torch", "numpy"] and len(doc["notes"]) == 1
