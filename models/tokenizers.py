"""The tokenizer for a model: the one its file carries or the one named beside it (a llama2.c
tokenizer.bin or a SentencePiece .model), and the warning when a tokenizer.bin's dummy prefix
meets a vocabulary trained without it (`generate`, `trace` and `tokenize` print it)."""

from formats import detect as magic
from formats import llama2c
from models.files import open_model
from models.kinds import Kind, kind_of
from reference.runtime.fast_tokenizer import FastTokenizer


def open_tokenizer(path, vocab_size=None):
    """A Tokenizer from a GGUF, ckpt.pt or Hugging Face folder (the one it carries), a
    SentencePiece .model or a llama2.c tokenizer.bin (`vocab_size` pieces, default: up to the end
    of the file)."""
    path = str(path)
    kind = kind_of(path)
    if kind not in (Kind.LLAMA2C, None):
        return open_model(path).tokenizer()
    if magic.is_sentencepiece_model(path):
        return FastTokenizer.from_spm(path)
    return FastTokenizer(llama2c.read_tokenizer(path, vocab_size))


# A share of capitalized word pieces ("First", ≥ 3 letters) spelt without a leading '▁' above which
# a vocabulary looks trained without the dummy prefix. With the prefix a word that starts a line
# is learned as "▁First"; without it as "First". Measured with trainer/vocab.py's settings on Tiny
# Shakespeare: 0.30 (1024 pieces) and 0.23 (4096) with the prefix, 0.89 and 0.74 without; Llama 2's
# 32000: 0.28. Thai (little case) gives 0.43 with and 0.48 without: no warning either way.
NO_PREFIX_SHARE = 0.55
# Fewer capitalized pieces than this and the share says nothing (a 512-piece Tiny Shakespeare
# vocabulary trained without the prefix has 8).
MIN_CAPITALIZED_PIECES = 20


def looks_trained_without_prefix(pieces):
    """Whether a vocabulary's pieces look learned without SentencePiece's dummy-prefix space (see
    NO_PREFIX_SHARE); False when there are too few capitalized word pieces to tell."""
    bare = sum(1 for p in pieces if len(p) >= 3 and p.isalpha() and p[0].isupper())
    spaced = sum(1 for p in pieces if len(p) >= 4 and p[0] == "\u2581" and p[1:].isalpha() and p[1].isupper())
    return bare + spaced >= MIN_CAPITALIZED_PIECES and bare / (bare + spaced) > NO_PREFIX_SHARE


def is_tokenizer_bin(path):
    """Whether `path` is a llama2.c tokenizer.bin: no model file (kind_of, as open_tokenizer
    asks) and no SentencePiece .model."""
    return kind_of(str(path)) in (Kind.LLAMA2C, None) and not magic.is_sentencepiece_model(path)


def dummy_prefix_warning(source, tokenizer_path, vocab):
    """A line saying that a llama2.c tokenizer.bin (which always adds the dummy-prefix space, as
    run.c does) meets a vocabulary trained without it, or None. `source` is the opened model file
    (None for `tokenize`, which has only the tokenizer); its own flag decides where it carries a
    vocabulary (GGUF add_space_prefix, a ckpt's or folder's .model); else the pieces
    (looks_trained_without_prefix). `generate`, `trace` and `tokenize` print it."""
    if tokenizer_path is None or not is_tokenizer_bin(tokenizer_path):
        return None
    named = str(tokenizer_path) if source is None else f"--tokenizer {tokenizer_path}"
    if source is not None and source.vocab is not None:
        trained_without = not source.vocab.add_space_prefix
        why = f"{source.path} says its vocabulary adds no dummy prefix"
    else:
        trained_without = looks_trained_without_prefix(vocab.pieces)
        why = "its pieces look trained without the dummy prefix (line-initial words lack '▁')"
    if not trained_without:
        return None
    return (f"{named}: a tokenizer.bin adds a '▁' before the prompt, but {why}; "
            "the prompt's first word may split into other tokens than in training (pass the .model instead)")


def model_tokenizer(source, tokenizer_path, vocab_size):
    """The Tokenizer for an opened model file (a ModelFile): `tokenizer_path`'s when given, else
    the one the file carries; ValueError naming the file when there is none or its size is not
    the model's vocab_size."""
    if tokenizer_path is not None:
        tokenizer = open_tokenizer(tokenizer_path, vocab_size)
    elif source.vocab is not None:
        tokenizer, tokenizer_path = source.tokenizer(), source.path
    else:
        raise ValueError(f"{source.path}: {source.kind.described} holding no tokenizer: pass --tokenizer "
                         "(a tokenizer.bin or a SentencePiece .model)")
    if len(tokenizer.vocab) != vocab_size:
        raise ValueError(f"{tokenizer_path}: the tokenizer has {len(tokenizer.vocab)} pieces but the model's "
                         f"embedding has {vocab_size} rows")
    return tokenizer


def load_model_and_tokenizer(model_path, tokenizer_path=None, threads=1, mmap=False):
    """(FastLlama, Tokenizer, dummy_prefix_warning's line or None); raises ValueError naming the
    file when they do not fit together.

    The tokenizer is `tokenizer_path`'s, else the one the model file carries. The fast path
    (reference/runtime/fast.py): float32 weights are read once into huge-page memory and quantized
    ones stay quantized, so memory stays near the file's size; `threads` share large one-token
    products (reference.runtime.executor.Executor)."""
    source = open_model(model_path)
    model = source.model(fast=True, threads=threads, mmap=mmap)
    tokenizer = model_tokenizer(source, tokenizer_path, model.args.vocab_size)
    return model, tokenizer, dummy_prefix_warning(source, tokenizer_path, tokenizer.vocab)
