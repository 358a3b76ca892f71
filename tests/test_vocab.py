"""formats.vocab.check_piece: the one check of a vocabulary's pieces (too many, an empty one, a
repeated one) that the GGUF, SentencePiece .model and llama2.c tokenizer.bin readers share, each
raising a one-line FormatError that names the file, the field and, where the reader has one, the
byte offset."""

import re
import struct

import pytest

from formats import gguf, llama2c, mapping, spm, vocab
from formats.errors import FormatError
from tests.support.files import small_vocab


def gguf_file(pieces, tmp_path):
    """A GGUF of `pieces` (tensor-less) read back, and its vocabulary read from its metadata."""
    metadata = mapping.vocab_to_metadata(small_vocab([f"p{i}" for i in range(len(pieces))]))
    metadata["tokenizer.ggml.tokens"] = gguf.Value(gguf.ValueType.ARRAY, gguf.Array(gguf.ValueType.STRING, pieces))
    path = tmp_path / "m.gguf"
    gguf.write(gguf.GGUFFile(metadata=metadata), path)
    return mapping.vocab_from_metadata(gguf.read(path).metadata, path)


def model_file(pieces, tmp_path):
    """A .model of `pieces`, each a pieces message holding only its piece field (set even when empty)."""
    data = b"".join(b"\x0a" + bytes([len(p) + 2]) + b"\x0a" + bytes([len(p)]) + p.encode() for p in pieces)
    path = tmp_path / "m.model"
    path.write_bytes(data)
    return spm.read(path)


def tokenizer_bin(pieces, tmp_path):
    """A tokenizer.bin of `pieces`, written byte by byte (write_tokenizer would rename ids 1 and 2)."""
    data = [p.encode() for p in pieces]
    path = tmp_path / "tok.bin"
    path.write_bytes(struct.pack("<I", max(map(len, data)))
                     + b"".join(struct.pack("<fI", 0, len(d)) + d for d in data))
    return llama2c.read_tokenizer(path)


READERS = {"gguf": gguf_file, "model": model_file, "tokenizer.bin": tokenizer_bin}

# (reader, pieces, the whole message after the file's path)
CASES = [
    ("gguf", ["a", "", "b"], r"tokenizer\.ggml\.tokens\[1\]: empty piece"),
    ("gguf", ["a", "b", "c", "a"], r"tokenizer\.ggml\.tokens\[3\]: 'a' repeats piece 0"),
    ("model", ["a", "", "b"], r"pieces\[1\]\.piece at byte 5: empty piece"),
    ("model", ["a", "b", "c", "a"], r"pieces\[3\]\.piece at byte 15: 'a' repeats piece 0"),
    ("tokenizer.bin", ["a", "", "b"], r"token\[1\]\.bytes at byte 17: empty piece"),
    ("tokenizer.bin", ["a", "b", "c", "a"], r"token\[3\]\.bytes at byte 35: 'a' repeats piece 0"),
    # Read back in SentencePiece's spelling, " a" is '\u2581a' and "\n<s>\n" is "<s>".
    ("tokenizer.bin", [" a", "b", "\u2581a"], r"token\[2\]\.bytes at byte 27: '\u2581a' repeats piece 0"),
    ("tokenizer.bin", ["<unk>", "\n<s>\n", "<s>"], r"token\[2\]\.bytes at byte 34: '<s>' repeats piece 1"),
]


@pytest.mark.parametrize("reader, pieces, message", CASES, ids=[f"{c[0]}: {c[2]}" for c in CASES])
def test_each_reader_refuses_an_empty_and_a_repeated_piece(tmp_path, reader, pieces, message):
    name = {"gguf": "m.gguf", "model": "m.model", "tokenizer.bin": "tok.bin"}[reader]
    with pytest.raises(FormatError) as info:
        READERS[reader](pieces, tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert re.fullmatch(re.escape(str(tmp_path / name)) + ": " + message, text), text


LIMIT_CASES = [
    ("gguf", r"tokenizer\.ggml\.tokens: 5 pieces, over the limit of 4"),
    ("model", r"pieces\[4\] at byte 20: more than 4 pieces, the limit for a vocabulary"),
    ("tokenizer.bin", r"token\[4\] at byte 40: more than 4 pieces, the limit for a vocabulary"),
]


@pytest.mark.parametrize("reader, message", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_each_reader_refuses_a_piece_past_max_vocab(tmp_path, monkeypatch, reader, message):
    """MAX_VOCAB lowered to 4 (test_hostile.py tries the real limit on a tokenizer.bin)."""
    monkeypatch.setattr(vocab, "MAX_VOCAB", 4)
    with pytest.raises(FormatError) as info:
        READERS[reader](["a", "b", "c", "d", "e"], tmp_path)
    assert re.fullmatch(r".*?: " + message, str(info.value)), str(info.value)
    READERS[reader](["a", "b", "c", "d"], tmp_path)
