"""What kind of file a path holds, told from its first bytes, never from its name (the byte
tests; models.kinds.detect is the one place that picks a model's kind from them).

    GGUF               b"GGUF"
    torch.save (zip)   b"PK\\x03\\x04" — ckpt.pt
    SentencePiece      0x0A L 0x0A: a protobuf whose first field is `pieces` (field 1, wire type 2,
                       length L > 0 as a varint), itself starting with its `piece` string (0x0A)
    tokenizer.bin      uint32 max_token_length: may start with 0x0A too (a longest piece of 10
                       bytes), but never continues as above
    llama2.c           v1/v2 start with the magic "24ka", v0 with its config (no magic at all):
                       formats.llama2c.read tells those apart; v0_rejection says whether a file
                       without the magic can be a v0 one at all
"""

import struct

from formats import llama2c
from formats.files import open_regular
from formats.gguf import MAGIC as GGUF_MAGIC

TORCH_ZIP_MAGIC = b"PK\x03\x04"
LLAMA2C_MAGIC = struct.pack("<I", llama2c.MAGIC)      # b"24ka"

# The largest config value a real model has is well below 2^24 (dim 16384, hidden_dim 53248,
# vocab_size 256000, max_seq_len 131072); text read as int32 is above 0x20202020 = 538,976,288.
V0_FIELD_LIMIT = 1 << 24
# A v0 file with one damaged field is still a v0 file (llama2c.read names that field); more
# fields out of range than this and the bytes are no v0 config.
V0_BAD_FIELDS_TOLERATED = 1
_V0_CONFIG = struct.Struct("<" + "i" * len(llama2c.CONFIG_FIELDS))
_PROTOBUF_STRING_1 = 0x0A       # tag of field 1, wire type 2 (length-delimited)


def first_bytes(path, n=4):
    """The first `n` bytes of the file (fewer if it is shorter); FormatError for anything but a
    regular file, refused before a byte is read (a FIFO would block, /dev/zero never end)."""
    with open_regular(path) as f:
        return f.read(n)


def is_sentencepiece_model(path):
    """Whether a tokenizer file is a SentencePiece .model rather than a llama2.c tokenizer.bin.

    >>> looks_like_sentencepiece(bytes([0x0A, 0x09, 0x0A, 0x05]) + b"<unk>")   # Llama 2's first piece
    True
    >>> looks_like_sentencepiece(bytes([0x0A, 0, 0, 0]))     # tokenizer.bin, max_token_length 10
    False
    """
    return looks_like_sentencepiece(first_bytes(path, 8))


def looks_like_sentencepiece(head):
    """See is_sentencepiece_model: `head` is the file's first bytes (8 are enough)."""
    if head[:1] != bytes([_PROTOBUF_STRING_1]):
        return False
    length, shift, pos = 0, 0, 1
    while pos < len(head) and head[pos] & 0x80:         # the varint L, low 7 bits first
        length |= (head[pos] & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
    if pos >= len(head):
        return False
    length |= head[pos] << shift
    return length > 0 and pos + 1 < len(head) and head[pos + 1] == _PROTOBUF_STRING_1


def v0_rejection(head):
    """None when `head` (a file's first bytes, 28 are enough) reads as a llama2.c v0 config, at
    most V0_BAD_FIELDS_TOLERATED field outside 1..V0_FIELD_LIMIT (vocab_size by its absolute
    value: v0 negates it for an unshared classifier); else why it does not, naming the first field.

    >>> v0_rejection(struct.pack("<7i", 288, 768, 6, 6, 6, -32000, 256)) is None     # stories15M
    True
    >>> v0_rejection(b"# llama2-scratch -- a Llama 2 model")
    'its first 28 bytes as a v0 config: 7 of 7 fields outside 1..16777216 (dim 1819025443)'
    """
    if len(head) < _V0_CONFIG.size:
        return f"{len(head)} bytes, shorter than a v0 config ({_V0_CONFIG.size} bytes)"
    config = dict(zip(llama2c.CONFIG_FIELDS, _V0_CONFIG.unpack_from(head)))
    bad = [(name, value) for name, value in config.items()
           if not 0 < (abs(value) if name == "vocab_size" else value) <= V0_FIELD_LIMIT]
    if len(bad) <= V0_BAD_FIELDS_TOLERATED:
        return None
    return (f"its first {_V0_CONFIG.size} bytes as a v0 config: {len(bad)} of {len(config)} fields outside "
            f"1..{V0_FIELD_LIMIT} ({bad[0][0]} {bad[0][1]})")
