"""Encode a prepared dataset into flat token files the trainer can memory-map.

    <token dir>/train.bin, val.bin   every document as BOS, its tokens, EOS, back to back;
                                     little-endian uint16, or uint32 when ids reach 65536
    <token dir>/meta.json            tokenizer path and sha256, vocab size, dtype, and per split
                                     the documents, tokens and UTF-8 bytes (bits/byte needs both)

Why EOS as well as BOS: a model that only ever sees BOS between documents never learns to stop,
so llama.cpp (which stops at EOS) would run on forever; with EOS it ends where a document would.
"""

import json
from pathlib import Path

import numpy as np

from data.paths import SPLITS, DataError, file_sha256, require_prepared
from data.prepare import read_documents
from formats.atomic import atomic_write
from formats.binary import map_file
from formats.errors import FormatError

META_NAME = "meta.json"


def token_dtype(vocab_size):
    """uint16 while every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def encode_documents(sp, documents):
    """[BOS, ...doc..., EOS] for every document, concatenated -> int64 array."""
    bos, eos = sp.bos_id(), sp.eos_id()
    if bos < 0 or eos < 0:
        raise DataError("the tokenizer has no BOS or EOS piece; documents cannot be framed")
    chunks = [np.asarray([bos, *ids, eos], dtype=np.int64) for ids in sp.encode(documents)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def pretokenize(data_dir, dataset, tokenizer_path, out_dir):
    """Write the token files and meta.json into out_dir; returns the meta dict."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    vocab_size = sp.get_piece_size()
    dtype = token_dtype(vocab_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"tokenizer": str(Path(tokenizer_path).resolve()), "tokenizer_sha256": file_sha256(tokenizer_path),
            "vocab_size": vocab_size, "dtype": dtype.str, "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
            "splits": {}}
    for split in SPLITS:
        documents = read_documents(require_prepared(data_dir, dataset, split))
        tokens = encode_documents(sp, documents)
        with atomic_write(out_dir / f"{split}.bin") as f:
            f.write(tokens.astype(dtype).tobytes())
        meta["splits"][split] = {"documents": len(documents), "tokens": int(tokens.size),
                                 "bytes": sum(len(d.encode("utf-8")) for d in documents)}
    with atomic_write(out_dir / META_NAME) as f:
        f.write((json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return meta


def load_tokens(out_dir, split):
    """(memmap of the split's tokens, meta dict).

    Raises FormatError naming the file, field and byte offset when meta.json or the token file
    is damaged: a token file that does not match its meta.json, or an id outside the vocabulary
    (torch's embedding would fail on it mid-run with an opaque index error).
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / META_NAME
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found; run `llama2-scratch pretokenize` first")
    meta = _read_meta(meta_path, split)
    path = out_dir / f"{split}.bin"
    buf = map_file(path)
    dtype = np.dtype(meta["dtype"])
    if buf.size % dtype.itemsize:
        raise FormatError(path, "tokens", buf.size - buf.size % dtype.itemsize,
                          f"{buf.size} bytes is not a whole number of {meta['dtype']} tokens")
    tokens = buf.view(dtype)
    expected = meta["splits"][split]["tokens"]
    if tokens.size != expected:
        raise FormatError(path, "tokens", None, f"holds {tokens.size} tokens, {META_NAME} says {expected}")
    vocab_size = meta["vocab_size"]
    if tokens.size and tokens.max() >= vocab_size:
        i = int(np.argmax(tokens >= vocab_size))
        raise FormatError(path, f"token[{i}]", i * dtype.itemsize,
                          f"id {tokens[i]} is outside the {vocab_size}-piece vocabulary")
    return tokens, meta


def _read_meta(path, split):
    """meta.json, parsed and checked for the fields that load_tokens and the trainer use."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise FormatError(path, "json", None, "nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of > 4300 digits
        offset = getattr(exc, "pos", getattr(exc, "start", None))
        raise FormatError(path, "json", offset, str(exc).splitlines()[0]) from None
    if not isinstance(meta, dict):
        raise FormatError(path, "json", None, f"must be a JSON object, found {type(meta).__name__}")
    if meta.get("dtype") not in ("<u2", "<u4"):
        raise FormatError(path, "dtype", None, f"must be '<u2' or '<u4', found {meta.get('dtype')!r}")
    if not isinstance(meta.get("tokenizer_sha256"), str):
        raise FormatError(path, "tokenizer_sha256", None, "must be a string")
    splits = meta.get("splits")
    split_meta = splits.get(split) if isinstance(splits, dict) else None
    if not isinstance(split_meta, dict):
        raise FormatError(path, f"splits.{split}", None, "is missing")
    _check_count(path, "vocab_size", meta.get("vocab_size"), 1)
    _check_count(path, f"splits.{split}.tokens", split_meta.get("tokens"), 0)
    # Bits per byte divides by the split's bytes.
    _check_count(path, f"splits.{split}.bytes", split_meta.get("bytes"), 1 if split_meta["tokens"] else 0)
    return meta


def _check_count(path, field, value, lowest):
    # bool is an int in Python, but a count of `true` is still a damaged file.
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
        raise FormatError(path, field, None, f"must be an int >= {lowest}, found {value!r}")
