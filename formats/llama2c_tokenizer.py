"""llama2.c's tokenizer.bin, read and written with NumPy (as tokenizer.py exports it, run.c reads it).

Layout, little-endian (the vocabulary size is not stored: it comes from the model):

    0     uint32 max_token_length, the longest piece in bytes (run.c sizes a buffer from it)
    4     per id 0..V-1: f32 score, uint32 n, n bytes of UTF-8 piece text

Pieces are stored as tokenizer.py writes them: '▁' as a plain space, and BOS / EOS as
"\n<s>\n" / "\n</s>\n" (so that run.c prints them on a line of their own).
"""

import re
import struct

from formats.atomic import atomic_write
from formats.binary import Cursor, map_file
from formats.vocab import TokenType, Vocab, check_piece

_BOS_TEXT = "\n<s>\n"
_EOS_TEXT = "\n</s>\n"
_MARKER_PIECES = {_BOS_TEXT: "<s>", _EOS_TEXT: "</s>"}
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_SCORE_AND_LENGTH = struct.Struct("<fI")


def read_tokenizer(path, vocab_size=None):
    """Read a tokenizer.bin holding `vocab_size` pieces (the model's vocab_size), or, with
    vocab_size None, every piece up to the end of the file (each takes at least 8 bytes, so the
    loop is bounded by the file size).

    Pieces come back in SentencePiece's spelling (' ' -> '▁', "\\n<s>\\n" -> "<s>"). Token types
    are not stored, so they are inferred: CONTROL for the BOS/EOS markers, UNKNOWN for "<unk>" at
    id 0, BYTE for "<0xXX>", NORMAL otherwise. bos_id/eos_id are where the markers are (run.c's
    fixed 1 and 2 when absent).
    """
    if vocab_size is not None and vocab_size < 0:
        raise ValueError(f"vocab_size must be >= 0, got {vocab_size}")
    cur = Cursor(map_file(path), path)
    max_length = cur.u32("max_token_length")
    texts, scores, seen = [], [], {}
    i = 0
    while (i < vocab_size) if vocab_size is not None else (cur.pos < cur.size):
        scores.append(cur.unpack(_F32, f"token[{i}].score"))
        length_at = cur.pos
        length = cur.u32(f"token[{i}].length")
        # run.c sizes its merge buffer from max_token_length: a longer piece would overflow it.
        if length > max_length:
            raise cur.error(f"token[{i}].length", f"{length} bytes is longer than max_token_length "
                                                  f"{max_length}", length_at)
        text = cur.utf8(length, f"token[{i}].bytes")
        # Checked as read back: " a" and "\u2581a" would both be the piece '\u2581a'.
        check_piece(seen, _piece(text), lambda message, whole: (cur.error(f"token[{i}]", message, length_at - 4) if whole
                                                        else cur.error(f"token[{i}].bytes", message, length_at)))
        texts.append(text)
        i += 1
    if cur.pos != cur.size:
        raise cur.error("end of vocabulary", f"{cur.size - cur.pos} bytes follow the {vocab_size} "
                                             "pieces: is vocab_size right?")
    pieces = [_piece(text) for text in texts]
    bos_id = texts.index(_BOS_TEXT) if _BOS_TEXT in texts else 1
    eos_id = texts.index(_EOS_TEXT) if _EOS_TEXT in texts else 2
    types = [_token_type(i, text, piece) for i, (text, piece) in enumerate(zip(texts, pieces))]
    return Vocab(pieces, scores, types, unk_id=0, bos_id=bos_id, eos_id=eos_id)


def _piece(text):
    """A stored text in SentencePiece's spelling: the BOS/EOS markers as "<s>"/"</s>", ' ' as '\u2581'."""
    return _MARKER_PIECES.get(text) or text.replace(" ", "\u2581")


def _token_type(i, text, piece):
    if text in _MARKER_PIECES:
        return TokenType.CONTROL
    if i == 0 and piece == "<unk>":
        return TokenType.UNKNOWN
    if _BYTE_PIECE.fullmatch(piece):
        return TokenType.BYTE
    return TokenType.NORMAL


def write_tokenizer(vocab, path):
    """Write `vocab` as llama2.c's tokenizer.py exports it, atomically.

    The pieces at vocab.bos_id / eos_id are written as "\\n<s>\\n" / "\\n</s>\\n" whatever their
    text, and '▁' as ' ' (so a piece holding a literal ' ' reads back with '▁'): exactly
    tokenizer.py's output, byte for byte, for the same pieces and scores.
    """
    encoded = [_stored_text(vocab, i).encode("utf-8") for i in range(len(vocab))]
    parts = [_U32.pack(max((len(b) for b in encoded), default=0))]
    for score, data in zip(vocab.scores.tolist(), encoded):
        parts += [_SCORE_AND_LENGTH.pack(score, len(data)), data]
    with atomic_write(path) as f:
        f.write(b"".join(parts))


def _stored_text(vocab, i):
    if i == vocab.bos_id:
        return _BOS_TEXT
    if i == vocab.eos_id:
        return _EOS_TEXT
    return vocab.pieces[i].replace("\u2581", " ")
