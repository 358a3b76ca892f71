"""What kind of model a path holds: `Kind`, and `detect(path)`, the one place that tells.

A folder is a Hugging Face model; a file's kind comes from its first bytes (formats.detect), never
its name. llama2.c v0 has no magic, so a file is taken for one only where its first bytes read as
a v0 config (formats.detect.v0_rejection).
"""

import enum
import os

from formats import detect as magic
from formats.errors import FormatError


class Kind(str, enum.Enum):
    """A model's kind; a str, so it compares equal to (and prints as) its value: Kind.GGUF == "gguf"."""
    GGUF = "gguf"           # llama.cpp's GGUF
    LLAMA2C = "llama2c"     # llama2.c .bin, v0/v1/v2
    CKPT = "ckpt"           # torch.save ckpt.pt, ours or llama2.c's
    HF = "hf"               # Hugging Face Llama folder

    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def described(self):
        """How messages name it: "a GGUF", "a llama2.c file", ..."""
        return {Kind.GGUF: "a GGUF", Kind.LLAMA2C: "a llama2.c file", Kind.CKPT: "a torch checkpoint (ckpt.pt)",
                Kind.HF: "a Hugging Face folder"}[self]


# llama2.c v0's config is 7 int32 fields: enough bytes to tell every kind.
_HEAD_BYTES = 28


def kind_of(path):
    """The Kind at `path`, or None when it is none of them (a tokenizer file, text, ...)."""
    if os.path.isdir(path):
        return Kind.HF
    head = magic.first_bytes(path, _HEAD_BYTES)
    if head[:4] == magic.GGUF_MAGIC:
        return Kind.GGUF
    if head[:4] == magic.TORCH_ZIP_MAGIC:
        return Kind.CKPT
    if head[:4] == magic.LLAMA2C_MAGIC or magic.v0_rejection(head) is None:
        return Kind.LLAMA2C
    return None


def detect(path):
    """The Kind at `path`; FormatError, saying which kinds were tried and why the bytes are no
    llama2.c v0 config, for a file that is none of them."""
    path = str(path)
    kind = kind_of(path)
    if kind is None:
        reason = magic.v0_rejection(magic.first_bytes(path, _HEAD_BYTES))
        raise FormatError(path, "kind", None, "not a model file: no GGUF magic (\"GGUF\"), no llama2.c v1/v2 "
                          "magic (\"24ka\"), not a torch.save zip (ckpt.pt, \"PK\\x03\\x04\"; the legacy pickle "
                          f"format is not read), not a Hugging Face folder, and not a headerless llama2.c v0 "
                          f"file: {reason}")
    return kind
