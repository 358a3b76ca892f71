"""Read and write SentencePiece `.model` files without the sentencepiece package.

A .model file is one protobuf message, `ModelProto` (sentencepiece_model.proto, proto2). Only the
fields that change how text is tokenized are read; every other field is skipped:

    ModelProto
      1  pieces           repeated SentencePiece
      2  trainer_spec     TrainerSpec
      3  normalizer_spec  NormalizerSpec
    SentencePiece
      1  piece    string   never empty, no duplicates
      2  score    float
      3  type     enum     TokenType: NORMAL 1 (default), UNKNOWN 2, CONTROL 3, USER_DEFINED 4,
                           UNUSED 5, BYTE 6
    TrainerSpec
      3  model_type                  enum    UNIGRAM 1 (default), BPE 2, WORD 3, CHAR 4
      4  vocab_size                  int32
      24 treat_whitespace_as_suffix  bool    default false
      35 byte_fallback               bool    default false
      40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id
                                     int32   defaults 0, 1, 2, -1 (-1: the model has none)
      44 unk_surface                 string  default " \u2047 " (what decoding prints for <unk>)
    NormalizerSpec
      1  name                        string  e.g. "identity", "nmt_nfkc"
      2  precompiled_charsmap        bytes   empty for the identity rule
      3  add_dummy_prefix            bool    default true
      4  remove_extra_whitespaces    bool    default true
      5  escape_whitespaces          bool    default true

Wire format: every field is a varint key `field_number << 3 | wire_type` and then its value. Wire
type 0 is a varint, 1 eight bytes, 2 a varint length and that many bytes (strings, bytes and
nested messages), 5 four bytes (float32, little-endian). A varint is little-endian base 128, seven
bits a byte, high bit set on all bytes but the last, at most 10 bytes; a negative int32 is written
as the 10-byte two's complement of its int64 value. A field may repeat: the last scalar wins, a
nested message merges. Worked example, the piece "▁t" with score -1.5 and the default type:

    0a 0b                   key 1<<3|2 (pieces, length-delimited), 11 bytes follow
       0a 04 e2 96 81 74    key 1<<3|2 (piece), 4 bytes: UTF-8 of "▁t"
       15 00 00 c0 bf       key 2<<3|5 (score, 4 bytes): float32 -1.5

The reader never trusts a length: every varint and every length is checked against the end of the
message that holds it, so a bad file raises `FormatError` naming the field and its byte offset,
never an IndexError, a hang or an allocation larger than the file.
"""

import dataclasses
import enum
import numpy as np

from formats.atomic import atomic_write
from formats.errors import FormatError
from formats.files import read_capped
from formats.vocab import TokenType, Vocab, check_piece

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# Llama 2's .model is 500 KB, Gemma's 4 MB: 64 MiB is far beyond any real one.
MAX_MODEL_BYTES = 64 << 20
_TOKEN_TYPES = frozenset(t.value for t in TokenType)


class ModelType(enum.IntEnum):
    """TrainerSpec.ModelType."""
    UNIGRAM = 1
    BPE = 2
    WORD = 3
    CHAR = 4


@dataclasses.dataclass
class SentencePieceModel:
    """What a .model file says about tokenization.

    `vocab` holds the pieces, scores, types and special ids; `vocab.add_space_prefix` is the
    normalizer's add_dummy_prefix. A .model has no add-BOS/EOS flag (SentencePiece adds neither
    unless asked), so the reader follows Llama's convention, as llama.cpp's converter does: add
    BOS when the model has one, never EOS.
    """
    vocab: Vocab
    model_type: ModelType = ModelType.BPE
    byte_fallback: bool = False
    normalizer_name: str = "identity"
    precompiled_charsmap: bytes = b""
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    treat_whitespace_as_suffix: bool = False
    pad_id: int = -1
    unk_surface: str = " \u2047 "

    @property
    def add_dummy_prefix(self):
        return self.vocab.add_space_prefix


# (name, kind) per field number; kinds decide both the wire type and the conversion. vocab_size
# is only written (as the piece count, for sentencepiece's benefit): the pieces are the truth.
_PIECE_FIELDS = {1: ("piece", "string"), 2: ("score", "float"), 3: ("type", "int32")}
_TRAINER_FIELDS = {
    3: ("model_type", "int32"), 4: ("vocab_size", "int32"),
    24: ("treat_whitespace_as_suffix", "bool"), 35: ("byte_fallback", "bool"),
    40: ("unk_id", "int32"), 41: ("bos_id", "int32"), 42: ("eos_id", "int32"),
    43: ("pad_id", "int32"), 44: ("unk_surface", "string"),
}
_NORMALIZER_FIELDS = {
    1: ("name", "string"), 2: ("precompiled_charsmap", "bytes"), 3: ("add_dummy_prefix", "bool"),
    4: ("remove_extra_whitespaces", "bool"), 5: ("escape_whitespaces", "bool"),
}
_WIRE_OF_KIND = {"string": _LEN, "bytes": _LEN, "float": _FIXED32, "int32": _VARINT, "bool": _VARINT}
_TRAINER_DEFAULTS = {"model_type": ModelType.UNIGRAM, "vocab_size": 8000,
                     "treat_whitespace_as_suffix": False, "byte_fallback": False, "unk_id": 0,
                     "bos_id": 1, "eos_id": 2, "pad_id": -1, "unk_surface": " \u2047 "}
_NORMALIZER_DEFAULTS = {"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": True,
                        "remove_extra_whitespaces": True, "escape_whitespaces": True}


def _read_varint(data, pos, end, path, field, offset):
    """Decode the varint at data[pos:end]; return (value, position after it). Errors name
    `field` and `offset`, where that field's key starts.

    >>> _read_varint(bytes([0x96, 0x01]), 0, 2, "f", "x", 0)   # 0x16 + (0x01 << 7)
    (150, 2)
    """
    start = pos
    value = shift = 0
    while True:
        if pos >= end:
            raise FormatError(path, field, offset,
                              f"the varint at byte {start} runs past the end of its message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            # Keep the low 64 bits, as protobuf does with an overlong 10th byte.
            return value & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
        if shift >= 70:
            raise FormatError(path, field, offset, f"the varint at byte {start} is longer than 10 bytes")


def _iter_fields(data, start, end, path, where):
    """Yield (field_number, wire_type, value, offset) for each field in data[start:end].

    `value` is an int for varints, and a (begin, end) byte range for the other wire types, already
    checked to lie inside the message. `offset` is where the field's key starts.
    """
    pos = start
    while pos < end:
        offset = pos
        key, pos = _read_varint(data, pos, end, path, f"{where}.key", offset)
        number, wire = key >> 3, key & 7
        field = f"{where}.field{number}"
        if number == 0:
            raise FormatError(path, field, offset, "field number 0 is not allowed")
        if wire == _VARINT:
            value, pos = _read_varint(data, pos, end, path, field, offset)
            yield number, wire, value, offset
            continue
        if wire == _LEN:
            size, pos = _read_varint(data, pos, end, path, field, offset)
        elif wire == _FIXED64:
            size = 8
        elif wire == _FIXED32:
            size = 4
        else:
            # 3 and 4 are proto2 groups, which no SentencePiece message uses; 6 and 7 do not exist.
            raise FormatError(path, field, offset, f"unsupported wire type {wire}")
        if size > end - pos:
            raise FormatError(path, field, offset,
                              f"needs {size} bytes but its message has {end - pos} left")
        yield number, wire, (pos, pos + size), offset
        pos += size


def _parse_message(data, start, end, schema, path, where, out):
    """Decode the fields named in `schema` from data[start:end] into `out`; skip the others."""
    for number, wire, value, offset in _iter_fields(data, start, end, path, where):
        spec = schema.get(number)
        if spec is None:
            continue
        name, kind = spec
        field = f"{where}.{name}"
        if wire != _WIRE_OF_KIND[kind]:
            raise FormatError(path, field, offset,
                              f"wire type {wire}, expected {_WIRE_OF_KIND[kind]}")
        if kind == "int32":
            value &= 0xFFFFFFFF  # int32 keeps the low 32 bits of the varint, two's complement
            out[name] = value - (1 << 32) if value >= 1 << 31 else value
        elif kind == "bool":
            out[name] = value != 0
        elif kind == "float":
            out[name] = data[value[0]:value[1]]  # raw 4 bytes: keeps the float32 bits exact
        elif kind == "bytes":
            out[name] = data[value[0]:value[1]]
        else:
            try:
                out[name] = data[value[0]:value[1]].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError(path, field, offset,
                                  f"invalid UTF-8 at byte {value[0] + exc.start}") from None
    return out


def _checked_id(spec, name, n_pieces, path, lowest):
    value = spec[name]
    if not lowest <= value < n_pieces:
        raise FormatError(path, f"trainer_spec.{name}", None,
                          f"{value} is not a piece id (the model has {n_pieces} pieces)")
    return value


def read(path):
    """Parse a SentencePiece .model file (at most MAX_MODEL_BYTES) into a `SentencePieceModel`."""
    return from_bytes(read_capped(path, MAX_MODEL_BYTES), path)


def from_bytes(data, path="<bytes>"):
    """Parse the bytes of a .model (e.g. those a ckpt.pt stores); `path` names them in errors."""
    data = bytes(data)
    path = str(path)
    pieces, scores, types = [], [], []
    trainer, normalizer = {}, {}
    seen = {}
    for number, wire, value, offset in _iter_fields(data, 0, len(data), path, "model"):
        if number not in (1, 2, 3):
            continue
        name = {1: "pieces", 2: "trainer_spec", 3: "normalizer_spec"}[number]
        if wire != _LEN:
            raise FormatError(path, name, offset, f"wire type {wire}, expected {_LEN}")
        if number == 1:
            i = len(pieces)
            where = f"pieces[{i}]"
            sp = _parse_message(data, *value, _PIECE_FIELDS, path, where, {})
            piece = sp.get("piece", "")
            check_piece(seen, piece, lambda message, whole: FormatError(path, where if whole else f"{where}.piece",
                                                                        offset, message))
            kind = sp.get("type", TokenType.NORMAL)
            if kind not in _TOKEN_TYPES:
                raise FormatError(path, f"{where}.type", offset, f"unknown piece type {kind}")
            pieces.append(piece)
            scores.append(sp.get("score", b"\0\0\0\0"))
            types.append(kind)
        elif number == 2:
            _parse_message(data, *value, _TRAINER_FIELDS, path, "trainer_spec", trainer)
        else:
            _parse_message(data, *value, _NORMALIZER_FIELDS, path, "normalizer_spec", normalizer)

    if not pieces:
        raise FormatError(path, "pieces", None, "the model has no pieces")
    trainer = {**_TRAINER_DEFAULTS, **trainer}
    normalizer = {**_NORMALIZER_DEFAULTS, **normalizer}
    if trainer["model_type"] not in {t.value for t in ModelType}:
        raise FormatError(path, "trainer_spec.model_type", None,
                          f"unknown model type {trainer['model_type']}")
    n = len(pieces)
    bos_id = _checked_id(trainer, "bos_id", n, path, -1)
    vocab = Vocab(
        pieces=pieces,
        scores=np.frombuffer(b"".join(scores), dtype="<f4").astype(np.float32),
        types=np.array(types, dtype=np.int32),
        unk_id=_checked_id(trainer, "unk_id", n, path, 0),
        bos_id=bos_id,
        eos_id=_checked_id(trainer, "eos_id", n, path, -1),
        add_bos=bos_id >= 0,
        add_eos=False,
        add_space_prefix=normalizer["add_dummy_prefix"],
    )
    return SentencePieceModel(
        vocab=vocab,
        model_type=ModelType(trainer["model_type"]),
        byte_fallback=trainer["byte_fallback"],
        normalizer_name=normalizer["name"],
        precompiled_charsmap=bytes(normalizer["precompiled_charsmap"]),
        remove_extra_whitespaces=normalizer["remove_extra_whitespaces"],
        escape_whitespaces=normalizer["escape_whitespaces"],
        treat_whitespace_as_suffix=trainer["treat_whitespace_as_suffix"],
        pad_id=_checked_id(trainer, "pad_id", n, path, -1),
        unk_surface=trainer["unk_surface"],
    )


def _varint(value):
    """Encode a non-negative int, or a negative int32/int64 as its 64-bit two's complement.

    >>> _varint(150).hex(), _varint(-1).hex()
    ('9601', 'ffffffffffffffffff01')
    """
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number, kind, value):
    """One encoded field of the given kind (see `_WIRE_OF_KIND`)."""
    key = _varint(number << 3 | _WIRE_OF_KIND[kind])
    if kind in ("int32", "bool"):
        return key + _varint(int(value))
    if kind == "float":
        return key + value  # already the 4 little-endian bytes
    if kind == "string":
        value = value.encode("utf-8")
    return key + _varint(len(value)) + bytes(value)


def _message(number, body):
    return _varint(number << 3 | _LEN) + _varint(len(body)) + body


def to_bytes(model):
    """Serialize `model` as a ModelProto holding exactly the fields this module reads."""
    vocab = model.vocab
    scores = vocab.scores.astype("<f4").tobytes()
    parts = []
    for i, (piece, kind) in enumerate(zip(vocab.pieces, vocab.types.tolist())):
        parts.append(_message(1, _field(1, "string", piece) + _field(2, "float", scores[4 * i:4 * i + 4])
                              + _field(3, "int32", kind)))
    trainer = {"model_type": model.model_type, "vocab_size": len(vocab),
               "treat_whitespace_as_suffix": model.treat_whitespace_as_suffix,
               "byte_fallback": model.byte_fallback, "unk_id": vocab.unk_id,
               "bos_id": vocab.bos_id, "eos_id": vocab.eos_id, "pad_id": model.pad_id,
               "unk_surface": model.unk_surface}
    normalizer = {"name": model.normalizer_name,
                  "precompiled_charsmap": model.precompiled_charsmap,
                  "add_dummy_prefix": vocab.add_space_prefix,
                  "remove_extra_whitespaces": model.remove_extra_whitespaces,
                  "escape_whitespaces": model.escape_whitespaces}
    for number, fields, values in ((2, _TRAINER_FIELDS, trainer), (3, _NORMALIZER_FIELDS, normalizer)):
        body = b"".join(_field(num, kind, values[name]) for num, (name, kind) in fields.items())
        parts.append(_message(number, body))
    return b"".join(parts)


def write(model, path):
    """Write `model` as a .model file that both `read` and sentencepiece load."""
    with atomic_write(path) as f:
        f.write(to_bytes(model))
