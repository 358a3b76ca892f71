"""Open what `generate` and `tokenize` are pointed at: a model file and its tokenizer.

A GGUF carries its tokenizer; a llama2.c .bin or a ckpt.pt needs one beside it (`--tokenizer`: a
llama2.c tokenizer.bin or a SentencePiece .model). Files are recognized by their first bytes,
not their names.
"""

import os

import numpy as np

from formats import detect, gguf, llama2c
from reference import load
from formats.spec import ModelArgs
from reference.tokenizer import Tokenizer


def load_model(path, dtype=np.float32, fast=False, threads=1, mmap=False):
    """reference.load.load_model, plus torch checkpoints: a ckpt.pt is read by trainer/ (torch
    needed; it resolves llama2.c-style model_args and tied weights as `export` does) and the
    NumPy model built from its float32 weights."""
    if not detect.is_torch_checkpoint(path):
        return load.load_model(path, dtype, fast, threads, mmap)
    try:
        import torch  # noqa: F401  (only to fail early with a clear message)
    except ImportError:
        raise ImportError(f"reading {path} needs torch; GGUF and llama2.c files do not") from None
    from trainer.export import ExportError, load_exportable

    try:
        exportable = load_exportable(path)
    except ExportError as exc:
        raise ValueError(str(exc)) from None
    return load.build_model(ModelArgs.from_dict(exportable.model_args), exportable.weights, dtype, fast, threads,
                            mmap)


def load_tokenizer(path, vocab_size=None):
    """A Tokenizer from a GGUF, a SentencePiece .model or a llama2.c tokenizer.bin."""
    if detect.is_gguf(path):
        return Tokenizer.from_gguf(gguf.read(path))
    if detect.is_sentencepiece_model(path):
        return Tokenizer.from_spm(path)
    return Tokenizer(llama2c.read_tokenizer(path, vocab_size))


def usable_cpus():
    """How many CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_model_and_tokenizer(model_path, tokenizer_path=None, threads=1, mmap=False):
    """(FastLlama, Tokenizer); raises ValueError naming the file when they do not fit together.

    The fast path (reference/fast.py): float32 weights are read once into huge-page memory and
    quantized ones stay quantized, so memory stays near the file's size; `threads` share large
    one-token products (reference.fast.Linear)."""
    model = load_model(model_path, fast=True, threads=threads, mmap=mmap)
    return model, model_tokenizer(model_path, tokenizer_path, model.args.vocab_size)


def model_tokenizer(model_path, tokenizer_path, vocab_size):
    """The Tokenizer of a model file: `tokenizer_path` when given, else the GGUF's own; raises
    ValueError naming the file when there is none or its size is not the model's vocab_size."""
    if tokenizer_path is None:
        if not detect.is_gguf(model_path):
            raise ValueError(f"{model_path}: not a GGUF, so it holds no tokenizer: pass --tokenizer "
                             "(a tokenizer.bin or a SentencePiece .model)")
        tokenizer_path = model_path
    tokenizer = load_tokenizer(tokenizer_path, vocab_size)
    if len(tokenizer.vocab) != vocab_size:
        raise ValueError(f"{tokenizer_path}: the tokenizer has {len(tokenizer.vocab)} pieces but the model's "
                         f"embedding has {vocab_size} rows")
    return tokenizer
