"""What kind of file a path holds, told from its first bytes, never from its name.

    GGUF               b"GGUF"
    torch.save (zip)   b"PK\\x03\\x04" — ckpt.pt
    SentencePiece      0x0A: a protobuf whose first field is `pieces` (field 1, wire type 2)
    llama2.c           v1/v2 start with the magic "24ka", v0 with its config (no magic at all):
                       formats.llama2c.read tells those apart
"""

from formats.gguf import MAGIC as GGUF_MAGIC

TORCH_ZIP_MAGIC = b"PK\x03\x04"
SPM_FIRST_BYTE = b"\x0a"


def first_bytes(path, n=4):
    """The first `n` bytes of the file (fewer if it is shorter)."""
    with open(path, "rb") as f:
        return f.read(n)


def is_gguf(path):
    return first_bytes(path) == GGUF_MAGIC


def is_torch_checkpoint(path):
    return first_bytes(path) == TORCH_ZIP_MAGIC


def is_sentencepiece_model(path):
    """Only meaningful where a tokenizer is expected: a llama2.c v0 model whose dim is 10 mod 256
    starts with the same byte."""
    return first_bytes(path, 1) == SPM_FIRST_BYTE
