"""What kind of file a path holds, told from its first bytes, never from its name.

    GGUF               b"GGUF"
    torch.save (zip)   b"PK\\x03\\x04" — ckpt.pt
    SentencePiece      0x0A L 0x0A: a protobuf whose first field is `pieces` (field 1, wire type 2,
                       length L > 0 as a varint), itself starting with its `piece` string (0x0A)
    tokenizer.bin      uint32 max_token_length: may start with 0x0A too (a longest piece of 10
                       bytes), but never continues as above
    llama2.c           v1/v2 start with the magic "24ka", v0 with its config (no magic at all):
                       formats.llama2c.read tells those apart
"""

from formats.files import open_regular
from formats.gguf import MAGIC as GGUF_MAGIC

TORCH_ZIP_MAGIC = b"PK\x03\x04"
_PROTOBUF_STRING_1 = 0x0A       # tag of field 1, wire type 2 (length-delimited)


def first_bytes(path, n=4):
    """The first `n` bytes of the file (fewer if it is shorter); FormatError for anything but a
    regular file, refused before a byte is read (a FIFO would block, /dev/zero never end)."""
    with open_regular(path) as f:
        return f.read(n)


def is_gguf(path):
    return first_bytes(path) == GGUF_MAGIC


def is_torch_checkpoint(path):
    return first_bytes(path) == TORCH_ZIP_MAGIC


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
