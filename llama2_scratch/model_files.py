"""Open a model file once: `open_model(path)` tells its kind and parses it, the commands read the rest.

    kind      file                        parsed by                      carries a tokenizer
    gguf      llama.cpp's GGUF            formats.gguf.read (mapped)     tokenizer.ggml.* when present
    llama2c   llama2.c .bin, v0/v1/v2     formats.llama2c.read (mapped)  never (tokenizer.bin is apart)
    ckpt      torch.save ckpt.pt          trainer.checkpoint.load        the SentencePiece .model bytes
    hf        Hugging Face Llama folder   formats.hf.read_folder         tokenizer.model, else tokenizer.json

A folder is a Hugging Face model (config.json + model.safetensors or a sharded index); a file's
kind comes from its first bytes (formats.detect), never its name. GGUF and llama2.c files and
Hugging Face folders are parsed when opened: header and tensor table (config.json and the
safetensors headers), the tensor data staying in the file's memory map until a weight is asked
for. A ckpt.pt is read by torch, so it is loaded on first use: until then nothing needs torch,
and `inspect` can refuse one without it.

This module is the one place the commands reach formats/, reference/ and trainer/ to read a model:
`generate`, `tokenize`, `inspect`, `verify` (parity/) and `export` (its source) go through it.
"""

import errno
import functools
import os

import numpy as np

from formats import detect, gguf, hf, llama2c, mapping, spm
from formats.errors import FormatError
from formats.spec import ModelArgs
from reference.runtime import load
from reference.runtime.fast_tokenizer import FastTokenizer

# How each kind is named in messages.
KIND_NAMES = {"gguf": "a GGUF", "llama2c": "a llama2.c file", "ckpt": "a torch checkpoint (ckpt.pt)",
              "hf": "a Hugging Face folder"}


def _kind(path):
    """The kind of model at `path`: "hf" for a folder, else what the file's first bytes tell
    ("gguf", "ckpt" or "llama2c": llama2.c v0 has no magic, so a file whose first bytes read as a
    v0 config is taken for llama2.c and its reader says what is wrong); None for none of them."""
    if os.path.isdir(path):
        return "hf"
    head = detect.first_bytes(path, 28)
    if head[:4] == detect.GGUF_MAGIC:
        return "gguf"
    if head[:4] == detect.TORCH_ZIP_MAGIC:
        return "ckpt"
    if head[:4] == detect.LLAMA2C_MAGIC or detect.v0_rejection(head) is None:
        return "llama2c"
    return None


def open_model(path):
    """A GGUFModel, Llama2cModel, CkptModel or HFModel for the file or folder at `path` (see
    the table above); FormatError, saying which kinds were tried, for a file that is none of them."""
    path = str(path)
    kind = _kind(path)
    if kind is None:
        reason = detect.v0_rejection(detect.first_bytes(path, 28))
        raise FormatError(path, "kind", None, "not a model file: no GGUF magic (\"GGUF\"), no llama2.c v1/v2 "
                          "magic (\"24ka\"), not a torch.save zip (ckpt.pt, \"PK\\x03\\x04\"; the legacy pickle "
                          f"format is not read), not a Hugging Face folder, and not a headerless llama2.c v0 "
                          f"file: {reason}")
    return _open(path, kind)


def _open(path, kind):
    if kind == "gguf":
        return GGUFModel(path, gguf.read(path))
    if kind == "ckpt":
        return CkptModel(path)
    if kind == "hf":
        return HFModel(path, hf.read_folder(path))
    return Llama2cModel(path, llama2c.read(path))


def open_checkpoint(path):
    """`path` as a ckpt.pt whatever its first bytes (what `verify --ckpt` reads): a
    damaged one gets trainer.checkpoint's error saying what is wrong, not a guess at another kind."""
    return CkptModel(str(path))


class ModelFile:
    """What every kind of model file answers; GGUFModel, Llama2cModel and CkptModel fill it in.

    kind       "gguf" | "llama2c" | "ckpt" | "hf"
    path       the file (the folder, for "hf")
    source     the parsed file: a formats.gguf.GGUFFile, formats.llama2c.Checkpoint, ckpt dict or
               formats.hf.Folder
    dtypes     the stored types of its matrices, sorted: ("q8_0",); a GGUF may mix several
               ("f16", "q6_k"); llama2.c v0/v1 and a ckpt.pt are ("f32",), llama2.c v2 ("int8",),
               a Hugging Face folder its safetensors dtypes ("bf16",)
    spec       formats.spec.ModelArgs; ValueError when the stored hyperparameters do not fit
               together or with the tensors (worked out on first use, so a broken file still opens)
    vocab      formats.vocab.Vocab, or None when the file carries no tokenizer
    spm_model  the SentencePiece .model bytes the file carries (a ckpt.pt, a Hugging Face
               folder's tokenizer.model or those rebuilt from its tokenizer.json), or None
    context    the declared context length (max_seq_len), known even when `spec` fails
    """
    kind = None
    spm_model = None

    def __init__(self, path, source):
        self.path = path
        self.source = source

    def tokenizer(self):
        """reference/runtime/fast_tokenizer.py on the file's own vocabulary; ValueError when it has none."""
        if self.vocab is None:
            raise ValueError(f"{self.path}: {KIND_NAMES[self.kind]} holding no tokenizer")
        return FastTokenizer(self.vocab)

    def model(self, dtype=np.float32, fast=False, threads=1, mmap=False):
        """The NumPy model: reference.model.Llama computing in `dtype`, or with fast=True a
        reference.runtime.fast.FastLlama (float32; quantized matrices kept quantized; `threads` share
        one-token products; float32 matrices read into huge-page memory unless `mmap`)."""
        args, weights = self.spec, self.weights(fast=fast)
        load.check_finite(weights, self.path, self.stored_name)
        try:
            return load.build_model(args, weights, dtype, fast, threads, mmap)
        except (MemoryError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno != errno.ENOMEM:
                raise
            cache = 2 * args.n_layers * args.max_seq_len * args.kv_dim * np.dtype(dtype).itemsize
            raise FormatError(self.path, "max_seq_len", None, f"a context of {args.max_seq_len} positions needs "
                              f"a {cache / 2**30:.3g} GiB KV cache, which cannot be allocated") from None

    def stored_name(self, name):
        """What the file calls the weight of llama2.c name `name` (messages name it so)."""
        return name

    def weights(self, fast=False):
        """llama2.c name -> float32 array (F16/BF16 upcast, quantized types dequantized), read when
        called; fast: 2-D quantized matrices as reference.runtime.blockwise objects instead."""
        raise NotImplementedError

    def stored_hparams(self):
        """{where: (ModelArgs field, value)}: each hyperparameter as the file stores it, before
        any check, under the name a reader finds it by in the file ('llama.block_count')."""
        raise NotImplementedError

    def exportable(self, tokenizer_path=None):
        """What `export` writes (trainer.export.Exportable): the float32 weights, `spec` and the
        vocabulary (--tokenizer's .model, else the file's own); ExportError when they do not fit."""
        from trainer.export import ExportError, exportable

        try:
            args, weights = self.spec, self.weights()
            own = (self.vocab, self.spm_model) if tokenizer_path is None else (None, None)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        return exportable(weights, args, *own, tokenizer_path)


class GGUFModel(ModelFile):
    kind = "gguf"

    @property
    def dtypes(self):
        return tuple(sorted({t.type.name.lower() for t in self.source.tensors if len(t.shape) == 2}))

    @functools.cached_property
    def spec(self):
        return mapping.from_gguf(self.source, self.path)[1]

    @functools.cached_property
    def vocab(self):
        return mapping.vocab_from_metadata(self.source.metadata, self.path)

    @property
    def context(self):
        """llama.context_length, or ModelArgs' default where the key is missing."""
        value = self.source.metadata.get(mapping.HPARAM_KEYS["max_seq_len"][0])
        return int(value.value) if value is not None else ModelArgs.max_seq_len

    def stored_name(self, name):
        return mapping.gguf_name(name)

    def weights(self, fast=False):
        return load.weights_from_gguf(self.source, fast)[1]

    def stored_hparams(self):
        metadata, tensors = self.source.metadata, self.source.tensors
        stored = {}
        for field, (key, _) in mapping.HPARAM_KEYS.items():
            value = metadata.get(key)
            stored[key] = (field, None if value is None else value.value)
        stored["tensor output.weight"] = ("tie_embeddings", all(t.name != "output.weight" for t in tensors))
        embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
        stored["token_embd.weight rows"] = ("vocab_size", None if embd is None else embd.shape[0])
        return stored


class Llama2cModel(ModelFile):
    kind = "llama2c"
    vocab = None

    @property
    def dtypes(self):
        return ("int8",) if self.source.version == 2 else ("f32",)

    @property
    def spec(self):
        """The 7 stored fields, the classifier's tying, and ModelArgs' (llama2.c's) eps and theta."""
        return self.source.args

    @property
    def context(self):
        return self.source.args.max_seq_len

    def weights(self, fast=False):
        return load.weights_from_llama2c(self.source, fast)[1]

    def stored_hparams(self):
        args = self.source.args
        stored = {f"config.{field}": (field, value) for field, value in llama2c.config_of(args).items()}
        stored["shared_classifier"] = ("tie_embeddings", self.source.shared_classifier)
        stored["norm_eps (llama2.c default)"] = ("norm_eps", args.norm_eps)
        stored["rope_theta (llama2.c default)"] = ("rope_theta", args.rope_theta)
        return stored


class CkptModel(ModelFile):
    """A ckpt.pt, ours or llama2.c's, read by trainer/ as `export` reads it (llama2.c-style
    model_args resolved, tied weights found, torch.compile prefixes dropped; float32 weights).
    It is loaded on first use: reading it needs torch."""
    kind = "ckpt"
    dtypes = ("f32",)

    def __init__(self, path):       # no `source` yet: the cached property below reads it
        self.path = path

    @functools.cached_property
    def source(self):
        try:
            import torch  # noqa: F401  (only to fail early with a clear message)
        except ImportError:
            raise ImportError(f"reading {self.path} needs torch; GGUF and llama2.c files do not") from None
        from trainer import checkpoint

        return checkpoint.load(self.path)

    def exportable(self, tokenizer_path=None):
        """Weights, resolved model_args and the vocabulary (--tokenizer's, else the stored one);
        ExportError when they do not fit together."""
        from trainer.export import exportable_from

        return exportable_from(self.source, self.path, tokenizer_path)

    @functools.cached_property
    def _resolved(self):
        from trainer.export import ExportError

        try:
            return self.exportable()
        except ExportError as exc:
            raise ValueError(str(exc)) from None

    @property
    def spec(self):
        return self._resolved.args

    @property
    def vocab(self):
        return self._resolved.vocab

    @property
    def spm_model(self):
        """The SentencePiece .model bytes stored in the checkpoint, or None."""
        from trainer.export import stored_spm_model

        return stored_spm_model(self.source)

    @property
    def context(self):
        return self.spec.max_seq_len

    def weights(self, fast=False):
        return self._resolved.weights

    def stored_hparams(self):
        return {f"model_args.{field}": (field, value) for field, value in self.spec.to_dict().items()
                if field not in ("multiple_of", "dropout")}


class HFModel(ModelFile):
    """A Hugging Face Llama folder (formats/hf.py): config.json read and the safetensors headers
    parsed when opened; weights converted to llama2.c names (q/k rows back to Meta's order) and
    float32 when asked for."""
    kind = "hf"

    @property
    def dtypes(self):
        """The safetensors dtypes of its matrices, lower case: ("f32",), ("bf16",), ..."""
        return tuple(sorted({t.dtype.lower() for t in self.source.tensors.values() if len(t.shape) == 2}))

    @functools.cached_property
    def spec(self):
        return self.source.args

    @property
    def spm_model(self):
        return self.source.tokenizer_model

    @property
    def _tokenizer_name(self):
        """The file the SentencePiece bytes came from: tokenizer.model, else tokenizer.json (which
        formats/hf.py rebuilt them from)."""
        name = hf.TOKENIZER if os.path.exists(os.path.join(self.path, hf.TOKENIZER)) else hf.TOKENIZER_JSON
        return os.path.join(self.path, name)

    @functools.cached_property
    def vocab(self):
        """The folder's vocabulary: tokenizer.model's, else the one rebuilt from tokenizer.json; None
        when it has neither."""
        if self.spm_model is None:
            return None
        return spm.from_bytes(self.spm_model, self._tokenizer_name).vocab

    def tokenizer(self):
        """The SentencePiece model with its normalizer options too (remove_extra_whitespaces, ...), as
        `tokenize X.model` reads it, from the bytes the folder was read with (so tokenizer.json alone
        serves as well)."""
        if self.spm_model is None:
            return super().tokenizer()
        return FastTokenizer.from_spm(self._tokenizer_name, self.spm_model)

    @property
    def context(self):
        """max_position_embeddings, or transformers' default where the key is missing."""
        key = hf.CONFIG_KEYS["max_seq_len"]
        value = self.source.config.get(key)
        return value if type(value) is int else hf.DEFAULTS[key]

    def stored_name(self, name):
        return hf.hf_name(name)

    def weights(self, fast=False):
        return hf.weights_from_hf(self.source.tensors, self.spec, self.path)

    def stored_hparams(self):
        """config.json's values (absent keys as transformers' defaults, rope_theta where
        transformers 5 keeps it) under their config.json names."""
        return {f"{hf.CONFIG} {key}": (field, getattr(self.spec, field)) for field, key in hf.CONFIG_KEYS.items()}


def load_model(path, dtype=np.float32, fast=False, threads=1, mmap=False):
    """The NumPy model in a GGUF, llama2.c file, ckpt.pt or Hugging Face folder (ModelFile.model)."""
    return open_model(path).model(dtype, fast, threads, mmap)


def open_tokenizer(path, vocab_size=None):
    """A Tokenizer from a GGUF, ckpt.pt or Hugging Face folder (the one it carries), a
    SentencePiece .model or a llama2.c tokenizer.bin (`vocab_size` pieces, default: up to the end
    of the file)."""
    path = str(path)
    kind = _kind(path)
    if kind not in ("llama2c", None):
        return _open(path, kind).tokenizer()
    if detect.is_sentencepiece_model(path):
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
    """Whether `path` is a llama2.c tokenizer.bin: a file that is not a GGUF, a ckpt.pt or a .model."""
    if os.path.isdir(path):
        return False
    head = detect.first_bytes(path)
    return head not in (detect.GGUF_MAGIC, detect.TORCH_ZIP_MAGIC) and not detect.is_sentencepiece_model(path)


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


def usable_cpus():
    """How many CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


def model_tokenizer(source, tokenizer_path, vocab_size):
    """The Tokenizer for an opened model file (a ModelFile): `tokenizer_path`'s when given, else
    the one the file carries; ValueError naming the file when there is none or its size is not
    the model's vocab_size."""
    if tokenizer_path is not None:
        tokenizer = open_tokenizer(tokenizer_path, vocab_size)
    elif source.vocab is not None:
        tokenizer, tokenizer_path = source.tokenizer(), source.path
    else:
        raise ValueError(f"{source.path}: {KIND_NAMES[source.kind]} holding no tokenizer: pass --tokenizer "
                         "(a tokenizer.bin or a SentencePiece .model)")
    if len(tokenizer.vocab) != vocab_size:
        raise ValueError(f"{tokenizer_path}: the tokenizer has {len(tokenizer.vocab)} pieces but the model's "
                         f"embedding has {vocab_size} rows")
    return tokenizer
