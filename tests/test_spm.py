"""formats.spm: our protobuf parser against sentencepiece, hand-built bytes, and bad input."""

import dataclasses
import doctest

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from formats import spm as spm_format
from formats.errors import FormatError
from formats.vocab import TokenType
from reference.tokenizer import Tokenizer
from tests.support.crafted import SPM_BAD
from tests.support.tokenizer import USER_DEFINED, thai_lines, train_bpe

# A whole .model file written out field by field (the layout is in formats/spm.py's docstring).
KNOWN = bytes.fromhex(
    "0a 09"  "0a 05 3c756e6b3e"  "18 02"             # pieces[0]: "<unk>", type UNKNOWN, score 0
    "0a 0b"  "0a 04 e2968174"    "15 0000c0bf"       # pieces[1]: "▁t", score -1.5, type NORMAL
    "0a 08"  "0a 01 61"          "15 000000c0"       # pieces[2]: "a", score -2.0
    "12 1a"  "18 02"                                 # trainer_spec: model_type BPE
             "c8 02 ffffffffffffffffff 01"           #   bos_id -1 (field 41: key 41<<3 = c8 02)
             "d0 02 ffffffffffffffffff 01"           #   eos_id -1
    "1a 0e"  "0a 08 6964656e74697479"                # normalizer_spec: name "identity"
             "18 00"  "20 00"                        #   add_dummy_prefix, remove_extra_whitespaces off
)


def read_bytes(data, tmp_path):
    path = tmp_path / "m.model"
    path.write_bytes(data)
    return spm_format.read(path)


def check_against_sentencepiece(model, sp):
    v = model.vocab
    n = sp.get_piece_size()
    assert v.pieces == [sp.id_to_piece(i) for i in range(n)]
    # Exact float32 bits: get_score returns the stored float32 widened to a double.
    assert np.array_equal(v.scores.view(np.uint32),
                          np.array([sp.get_score(i) for i in range(n)], np.float32).view(np.uint32))
    for kind, flag in ((TokenType.CONTROL, sp.is_control), (TokenType.UNKNOWN, sp.is_unknown),
                       (TokenType.BYTE, sp.is_byte), (TokenType.UNUSED, sp.is_unused)):
        assert [t == kind for t in v.types] == [bool(flag(i)) for i in range(n)], kind.name
    ids = (v.unk_id, v.bos_id, v.eos_id, model.pad_id)
    assert ids == (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id())


def test_docstring_examples():
    result = doctest.testmod(spm_format)
    assert result.attempted > 0 and result.failed == 0


def test_known_bytes(tmp_path):
    model = read_bytes(KNOWN, tmp_path)
    v = model.vocab
    assert v.pieces == ["<unk>", "\u2581t", "a"]
    assert v.scores.tolist() == [0.0, -1.5, -2.0]
    assert v.types.tolist() == [TokenType.UNKNOWN, TokenType.NORMAL, TokenType.NORMAL]
    assert (v.unk_id, v.bos_id, v.eos_id, v.add_bos, v.add_eos) == (0, -1, -1, False, False)
    assert model.model_type == spm_format.ModelType.BPE and not model.byte_fallback
    assert model.normalizer_name == "identity" and model.precompiled_charsmap == b""
    assert not model.add_dummy_prefix and not model.remove_extra_whitespaces
    assert model.escape_whitespaces and model.unk_surface == " \u2047 "  # absent: proto defaults
    sp = spm.SentencePieceProcessor(model_proto=KNOWN)
    check_against_sentencepiece(model, sp)
    # 't' alone is no piece, so it is unknown (no byte fallback): "tat" -> <unk> a <unk>.
    assert Tokenizer.from_spm(tmp_path / "m.model").encode("tat") == sp.encode("tat") == [0, 2, 0]


def test_llama_matches_sentencepiece(shared_data):
    path = shared_data / "llama2" / "tokenizer.model"
    model = spm_format.read(path)
    check_against_sentencepiece(model, spm.SentencePieceProcessor(model_file=str(path)))
    assert model.model_type == spm_format.ModelType.BPE and model.byte_fallback
    assert model.normalizer_name == "identity" and model.precompiled_charsmap == b""
    assert model.add_dummy_prefix and not model.remove_extra_whitespaces and model.escape_whitespaces
    assert model.vocab.add_bos and not model.vocab.add_eos


@pytest.mark.parametrize("remove_extra_whitespaces", [False, True])
def test_trained_model_matches_sentencepiece(shared_data, remove_extra_whitespaces, tmp_path):
    data = train_bpe(thai_lines(shared_data)[:1000], user_defined_symbols=USER_DEFINED,
                     remove_extra_whitespaces=remove_extra_whitespaces)
    model = read_bytes(data, tmp_path)
    check_against_sentencepiece(model, spm.SentencePieceProcessor(model_proto=data))
    user = [p for p, t in zip(model.vocab.pieces, model.vocab.types) if t == TokenType.USER_DEFINED]
    assert user == USER_DEFINED
    assert model.byte_fallback and model.remove_extra_whitespaces == remove_extra_whitespaces


def test_write_read_round_trip(shared_data, tmp_path):
    """read(write(m)) == m, and sentencepiece reads our file as it reads Meta's."""
    path = shared_data / "llama2" / "tokenizer.model"
    model = spm_format.read(path)
    spm_format.write(model, tmp_path / "copy.model")
    assert spm_format.read(tmp_path / "copy.model") == model
    ours = spm.SentencePieceProcessor(model_file=str(tmp_path / "copy.model"))
    meta = spm.SentencePieceProcessor(model_file=str(path))
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20_000]
    assert ours.encode(text) == meta.encode(text)
    changed = dataclasses.replace(model, remove_extra_whitespaces=True, unk_surface="?", pad_id=3)
    spm_format.write(changed, tmp_path / "changed.model")
    assert spm_format.read(tmp_path / "changed.model") == changed


def test_unknown_fields_are_skipped(tmp_path):
    # field 4 (self_test_data, length-delimited), field 99 fixed64, field 100 fixed32, field 7 varint
    extra = bytes.fromhex("22 02 0a 00" "99 06 0102030405060708" "a5 06 01020304" "38 96 01")
    assert read_bytes(extra + KNOWN + extra, tmp_path) == read_bytes(KNOWN, tmp_path)


def test_repeated_messages_merge(tmp_path):
    # A second trainer_spec sets byte_fallback (field 35: key 35<<3 = 98 02) and keeps the rest.
    model = read_bytes(KNOWN + bytes.fromhex("12 03 98 02 01"), tmp_path)
    assert model.byte_fallback and model.model_type == spm_format.ModelType.BPE


@pytest.mark.parametrize("data, field, offset, message", SPM_BAD)
def test_bad_bytes_raise_format_error(tmp_path, data, field, offset, message):
    with pytest.raises(FormatError, match=message) as info:
        read_bytes(data, tmp_path)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert info.value.path == str(tmp_path / "m.model")


@settings(max_examples=300)
@given(cut=st.integers(0, len(KNOWN)), at=st.integers(0, len(KNOWN)), junk=st.binary(max_size=12),
       keep_tail=st.booleans())
def test_damaged_files_parse_or_raise_format_error(tmp_path_factory, cut, at, junk, keep_tail):
    """Truncated or overwritten bytes: a model or a FormatError, never another exception.
    (A cut at a field boundary is a valid, shorter protobuf.)"""
    data = KNOWN[:cut] if not keep_tail else KNOWN[:at] + junk + KNOWN[at + len(junk):]
    path = tmp_path_factory.mktemp("fuzz") / "m.model"
    path.write_bytes(data)
    try:
        model = spm_format.read(path)
    except FormatError:
        return
    assert len(model.vocab) >= 1


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(FormatError) as info:
        spm_format.read(tmp_path / "absent.model")
    assert str(info.value) == f"{tmp_path / 'absent.model'}: file: No such file or directory"


def test_from_bytes_equals_reading_the_file(shared_data):
    """ckpt.pt stores the .model's bytes; parsing them in memory gives what reading the file gives."""
    path = shared_data / "llama2" / "tokenizer.model"
    assert spm_format.from_bytes(path.read_bytes()) == spm_format.read(path)
    with pytest.raises(FormatError, match="^in memory: pieces"):
        spm_format.from_bytes(b"", "in memory")
