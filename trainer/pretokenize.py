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
    """(memmap of the split's tokens, meta dict)."""
    out_dir = Path(out_dir)
    meta_path = out_dir / META_NAME
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found; run `llama2-scratch pretokenize` first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return np.memmap(out_dir / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r"), meta
