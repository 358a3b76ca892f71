"""Where each pipeline step reads and writes, under one data directory (default `data/`).

    DATA_DIR/<dataset>/train.jsonl, val.jsonl    prepare: one {"text": document} per line
    DATA_DIR/<dataset>/tok<N>.model              train-vocab --vocab-size N (+ tok<N>.vocab)
    DATA_DIR/<dataset>/<tokenizer tag>/          pretokenize: train.bin, val.bin, meta.json

The tokenizer tag is `tok<N>` for a vocabulary trained here and `tok-<first 12 hex of the
sha256>` for any other .model file (e.g. Meta's Llama 2 tokenizer), so two tokenizers never share
a folder. Every step finds its inputs through these functions and fails with a `DataError`
naming the missing file and the command that makes it.
"""

import hashlib
from pathlib import Path

DEFAULT_DATA_DIR = "data"
SPLITS = ("train", "val")


class DataError(Exception):
    """A dataset or tokenizer that is missing or unusable; the CLI prints it as one line."""


def dataset_dir(data_dir, dataset):
    return Path(data_dir) / dataset


def split_path(data_dir, dataset, split):
    return dataset_dir(data_dir, dataset) / f"{split}.jsonl"


def vocab_model_path(data_dir, dataset, vocab_size):
    return dataset_dir(data_dir, dataset) / f"tok{vocab_size}.model"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_tokenizer(data_dir, dataset, vocab_size=None, tokenizer=None):
    """(path of the .model, tag of its token folder) for `--vocab-size N` or `--tokenizer PATH`."""
    if (vocab_size is None) == (tokenizer is None):
        raise DataError("give exactly one of --vocab-size N or --tokenizer PATH")
    if tokenizer is not None:
        path = Path(tokenizer)
        if not path.is_file():
            raise DataError(f"{path}: tokenizer file not found")
        return path, f"tok-{file_sha256(path)[:12]}"
    path = vocab_model_path(data_dir, dataset, vocab_size)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `llama2-scratch train-vocab {dataset} "
                        f"--vocab-size {vocab_size} --data-dir {data_dir}` first")
    return path, f"tok{vocab_size}"


def token_dir(data_dir, dataset, tag):
    return dataset_dir(data_dir, dataset) / tag


def require_prepared(data_dir, dataset, split="train"):
    """The split's JSONL path, or a DataError telling the user to run `prepare`."""
    path = split_path(data_dir, dataset, split)
    if not path.is_file():
        raise DataError(f"{path}: dataset {dataset!r} is not prepared; run `llama2-scratch prepare "
                        f"{dataset} --data-dir {data_dir}` first")
    return path
