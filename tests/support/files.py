"""Small vocabularies, files written through the project's writers, and GGUF bytes put together
by hand. NumPy only: a child process that blocks torch imports this module too."""

import struct

import numpy as np

from formats import gguf, mapping
from formats.vocab import TokenType, Vocab


# ------------------------------------------------------------------------------ child processes


# --------------------------------------------------------------------------------- vocabularies

SPECIAL_TYPES = {"<unk>": TokenType.UNKNOWN, "<s>": TokenType.CONTROL, "</s>": TokenType.CONTROL}


def small_vocab(pieces, scores=None):
    """A Vocab of `pieces` typed as Llama 2's tokenizer types them: <unk> UNKNOWN, <s> and </s>
    CONTROL, <0xNN> BYTE, any other piece NORMAL; scores -0, -1, -2, ... (float32) unless given.
    >>> [TokenType(t).name for t in small_vocab(["<unk>", "<s>", "</s>", "<0x0A>", "\u2581a"]).types]
    ['UNKNOWN', 'CONTROL', 'CONTROL', 'BYTE', 'NORMAL']
    """
    types = [SPECIAL_TYPES.get(p, TokenType.BYTE if p.startswith("<0x") else TokenType.NORMAL) for p in pieces]
    return Vocab(list(pieces), -np.arange(len(pieces), dtype=np.float32) if scores is None else scores, types)


def byte_vocab(n, word="\u2581p"):
    """An n-piece small_vocab laid out like Llama 2's: <unk>, <s>, </s>, the byte pieces <0x00>,
    <0x01>, ... (as many of the 256 as fit), then `word`0, `word`1, ... up to n pieces."""
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(min(n - 3, 256))]
    return small_vocab(pieces + [f"{word}{i}" for i in range(n - len(pieces))])


# ------------------------------------------------------------------------------------ files


def written(write, obj, path, *args, **kwargs):
    """`path` after `write(obj, path, *args, **kwargs)`. The project's writers (gguf.write,
    llama2c.write, llama2c.write_tokenizer, spm.write, safetensors.write, checkpoint.save) all
    take (object, path, ...) and write only to paths: `.read_bytes()` gives what they wrote."""
    write(obj, path, *args, **kwargs)
    return path


def write_gguf(args, weights, path, dtype="f32", vocab=None):
    """`path`, holding the model (ModelArgs, llama2.c-named weights) as `export` writes it:
    mapping.to_gguf with every matrix stored as `dtype`, tokenizer keys only if `vocab` is given."""
    return written(gguf.write, mapping.to_gguf(weights, args, vocab, dtype=dtype), path)


# ------------------------------------------------------------------------- GGUF bytes by hand


def gguf_string(text):
    """A GGUF string: '<u8' byte length, then the bytes (a str UTF-8 encoded, bytes as they are,
    invalid UTF-8 included).
    >>> gguf_string("ab")
    b'\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00ab'
    """
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def tensor_info(name, ne, ggml_type=0, offset=0):
    """A GGUF tensor info: name (gguf_string), '<u4' n_dims, n_dims '<u8' dims (ne, fastest
    varying first), '<u4' ggml type (0 = F32), '<u8' offset into the data section."""
    return (gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            + struct.pack("<IQ", ggml_type, offset))


def gguf_header(n_tensors, n_kv, body=b""):
    """A version-3 GGUF file: b"GGUF", '<u4' version 3, '<u8' tensor count, '<u8' kv count, then
    `body` (key/value pairs, tensor infos, padding and data) as given: the counts and the body may
    disagree, as a hostile file's do."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body
