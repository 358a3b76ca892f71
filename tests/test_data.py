"""prepare (every source), the train/val split, train-vocab on Thai, pretokenize, CLI errors."""

import json
import zipfile

import numpy as np
import pytest
import sentencepiece as spm

from data.paths import DataError, token_dir, vocab_model_path
from data.prepare import in_val, load_documents, paragraphs, prepare, read_documents, split_documents
from llama2_scratch.cli import main
from trainer.pretokenize import load_tokens, pretokenize, token_dtype
from trainer.vocab import measure, train_vocab


def test_tinyshakespeare_from_input_keeps_speeches_whole(shared_data, tmp_path):
    report = prepare("tinyshakespeare", shared_data / "tinyshakespeare/input.txt", tmp_path)
    train = read_documents(report["train"][0])
    val = read_documents(report["val"][0])
    assert len(train) + len(val) == 7222            # the speeches between blank lines
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.12
    first = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert first in train + val
    assert all(not d.startswith("\n") and not d.endswith("\n") for d in train + val)


def test_split_is_by_content_and_deterministic():
    docs = [f"document {i}" for i in range(200)]
    split = split_documents(docs, 0.2)
    assert set(split["val"]) == {d for d in docs if in_val(d, 0.2)}
    assert set(split_documents(list(reversed(docs)), 0.2)["val"]) == set(split["val"])
    assert not set(split["train"]) & set(split["val"])
    assert split_documents(docs[:2], 0.1)["val"]           # tiny corpora still get a val document


def test_prachathai_zip_and_jsonl(tmp_path):
    records = [{"title": f"หัวข้อ {i}", "body_text": f"เนื้อหา {i}\nบรรทัดสอง", "url": "x"} for i in range(30)]
    records.append({"title": "", "body_text": ""})        # skipped: nothing to learn from
    jsonl = "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n"
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/train.jsonl", jsonl)
        z.writestr("data/README.md", "not data")
    docs = load_documents("prachathai", archive)
    assert len(docs) == 30 and docs[0] == "หัวข้อ 0\nเนื้อหา 0\nบรรทัดสอง"
    (tmp_path / "one.jsonl").write_text(jsonl, encoding="utf-8")
    assert load_documents("prachathai", tmp_path / "one.jsonl") == docs


def test_wisesight_folder_one_message_per_line(tmp_path):
    (tmp_path / "wisesight-pos.txt").write_text("ชอบมาก\n\nอร่อย\n", encoding="utf-8")
    (tmp_path / "wisesight-neg.txt").write_text("ไม่ชอบ\r\n", encoding="utf-8")
    assert load_documents("wisesight", tmp_path) == ["ไม่ชอบ", "ชอบมาก", "อร่อย"]


def test_text_file_or_folder_by_paragraph(tmp_path):
    (tmp_path / "b.txt").write_text("one\ntwo\n\n\nthree\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/a.txt").write_text("four", encoding="utf-8")
    assert load_documents("text", tmp_path / "b.txt") == ["one\ntwo", "three"]
    assert load_documents("text", tmp_path) == ["one\ntwo", "three", "four"]
    assert paragraphs("") == []


def test_not_utf8_is_a_data_error(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok\xff")
    with pytest.raises(DataError, match="not UTF-8 at byte 2"):
        load_documents("text", tmp_path / "bad.txt")


def test_thai_vocabulary_with_byte_fallback(shared_data, tmp_path):
    prepare("wisesight", shared_data / "thai", tmp_path)
    train = read_documents(tmp_path / "wisesight/train.jsonl")
    model = train_vocab(train, vocab_model_path(tmp_path, "wisesight", 2000), 2000)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert all(sp.is_byte(3 + b) for b in range(256))
    text = "ร้านนี้อร่อยมาก  ราคา 1234 บาท 🤤\nกลับมาอีกแน่นอน "
    ids = sp.encode(text)
    assert sp.decode(ids) == text                              # lossless: spaces and newline kept
    assert sp.piece_to_id("<0x0A>") in ids
    assert all(len(sp.decode([i])) == 1 for i in sp.encode("1234"))      # split_digits
    stats = measure(model, read_documents(tmp_path / "wisesight/val.jsonl"))
    assert stats["chars_per_token"] > 1.5 and 0 <= stats["byte_fallback_rate"] < 0.05
    rare = "\U0001F9EC"                                       # an emoji not in the corpus: bytes
    assert all(sp.is_byte(i) for i in sp.encode(rare))


def test_pretokenize_frames_documents_and_writes_meta(shared_data, tmp_path):
    (tmp_path / "in.txt").write_text((shared_data / "tinyshakespeare/input.txt").read_text()[:30000])
    prepare("text", tmp_path / "in.txt", tmp_path)
    model = train_vocab(read_documents(tmp_path / "text/train.jsonl"), vocab_model_path(tmp_path, "text", 400), 400)
    meta = pretokenize(tmp_path, "text", model, token_dir(tmp_path, "text", "tok400"))
    tokens, meta_back = load_tokens(token_dir(tmp_path, "text", "tok400"), "val")
    assert meta_back == json.loads(json.dumps(meta)) and tokens.dtype == np.dtype("<u2")
    assert tokens[0] == 1 and tokens[-1] == 2
    assert (tokens == 1).sum() == (tokens == 2).sum() == meta["splits"]["val"]["documents"]
    assert meta["splits"]["val"]["tokens"] == len(tokens)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    val = read_documents(tmp_path / "text/val.jsonl")
    assert sp.decode(tokens[1:list(tokens).index(2)].tolist()) == val[0]
    assert meta["splits"]["val"]["bytes"] == sum(len(d.encode()) for d in val)


def test_token_dtype_widens_for_large_vocabularies():
    assert token_dtype(32000) == np.dtype("<u2") and token_dtype(65536) == np.dtype("<u2")
    assert token_dtype(65537) == np.dtype("<u4")


@pytest.mark.parametrize("argv, needle", [
    (["train-vocab", "tinyshakespeare", "--vocab-size", "512"], "prepare tinyshakespeare"),
    (["pretokenize", "text", "--vocab-size", "512"], "train-vocab text"),
    (["prepare", "text"], "--input"),
    (["prepare", "text", "--input", "NOPE"], "NOPE: not found"),
    (["train", "--dataset", "text", "--vocab-size", "512"], "train-vocab text"),
])
def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys, argv, needle):
    status = main([*argv, "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and needle in err and len(err.strip().splitlines()) == 1, err
