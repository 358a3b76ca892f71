"""A tokenizer vocabulary as plain data, shared by every format that stores one.

GGUF (`tokenizer.ggml.*`), llama2.c's tokenizer.bin and SentencePiece's .model all hold the same
three parallel lists — piece text, score, type — plus a few ids and flags. Pieces keep
SentencePiece's spelling: U+2581 '▁' stands for a space and byte pieces are "<0xXX>".
"""

import dataclasses
import enum

import numpy as np

from formats.errors import FormatError

# The most pieces a vocabulary may hold: twice the largest real one (Gemma 3's 262,144). A file
# of millions of tiny pieces is refused in the reader, before it costs minutes.
MAX_VOCAB = 1 << 19


class TokenType(enum.IntEnum):
    """SentencePiece's ModelProto.SentencePiece.Type, which GGUF's token_type reuses."""
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


@dataclasses.dataclass
class Vocab:
    pieces: list            # [V] str
    scores: np.ndarray      # [V] float32
    types: np.ndarray       # [V] int32, TokenType values
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    add_bos: bool = True
    add_eos: bool = False
    add_space_prefix: bool = True

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.types = np.asarray(self.types, dtype=np.int32)
        if not (len(self.pieces) == len(self.scores) == len(self.types)):
            raise ValueError(f"vocab lists disagree: {len(self.pieces)} pieces, "
                             f"{len(self.scores)} scores, {len(self.types)} types")

    def __len__(self):
        return len(self.pieces)

    def __eq__(self, other):
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self.pieces == other.pieces
                and np.array_equal(self.scores.view(np.uint32), other.scores.view(np.uint32))
                and np.array_equal(self.types, other.types)
                and (self.unk_id, self.bos_id, self.eos_id, self.add_bos, self.add_eos, self.add_space_prefix)
                == (other.unk_id, other.bos_id, other.eos_id, other.add_bos, other.add_eos, other.add_space_prefix))


def check_piece(seen, piece, error, count=None):
    """Check the next piece of a vocabulary, as it is read, against those before it (`seen`:
    piece -> id, which this extends), and raise `error(message, whole)` (the reader's
    FormatError, naming the file, the field and, where it has one, the byte offset) for what no
    tokenizer can use. `whole` is True where the entry is at fault rather than its text: a piece
    past MAX_VOCAB (`count`, where the reader knows how many pieces there are, goes in the
    message). It is False for an empty piece and for one that repeats an earlier piece.

    Checked per piece, so that a file of millions of bad pieces fails at the first."""
    i = len(seen)
    if i == MAX_VOCAB:
        raise error(f"{count} pieces, over the limit of {MAX_VOCAB}" if count is not None
                    else f"more than {MAX_VOCAB} pieces, the limit for a vocabulary", True)
    if not piece:
        raise error("empty piece", False)
    if piece in seen:
        raise error(f"{piece!r} repeats piece {seen[piece]}", False)
    seen[piece] = i


def check_pieces(pieces, types, path, field, types_field):
    """FormatError naming `path` and `field` ("tokenizer.ggml.tokens"; `types_field` for the
    types) for what no tokenizer can use: what `check_piece` refuses, and a token type TokenType
    lacks."""
    known, seen = {t.value for t in TokenType}, {}
    for i, (piece, kind) in enumerate(zip(pieces, np.asarray(types).tolist())):
        check_piece(seen, piece, lambda message, whole: FormatError(path, field if whole else f"{field}[{i}]",
                                                                    None, message), len(pieces))
        if kind not in known:
            raise FormatError(path, f"{types_field}[{i}]", None, f"unknown token type {kind}")
