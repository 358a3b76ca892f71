"""Open a model file once: `open_model(path)` tells its kind (models.kinds) and parses it, the
commands read the rest.

    kind      file                        parsed by                      carries a tokenizer
    gguf      llama.cpp's GGUF            formats.gguf.read (mapped)     tokenizer.ggml.* when present
    llama2c   llama2.c .bin, v0/v1/v2     formats.llama2c.read (mapped)  never (tokenizer.bin is apart)
    ckpt      torch.save ckpt.pt          trainer.checkpoint.load        the SentencePiece .model bytes
    hf        Hugging Face Llama folder   formats.hf.read_folder         tokenizer.model, else tokenizer.json

GGUF and llama2.c files and Hugging Face folders are parsed when opened: header and tensor table
(config.json and the safetensors headers), the tensor data staying in the file's memory map until
a weight is asked for. A ckpt.pt is read by torch, so it is loaded on first use: until then
nothing needs torch, and `inspect` can refuse one without it.

This module is the one place that reads a model for the commands, parity/ and bench/: `generate`,
`tokenize`, `inspect`, `verify` and `export` (its source) go through it.
"""

import errno
import functools

import numpy as np

from formats import gguf, hf, llama2c, mapping, spm
from formats.errors import FormatError
from formats.spec import ModelArgs
from models.kinds import Kind, detect
from reference.runtime import load
from reference.runtime.fast_tokenizer import FastTokenizer

def open_model(path):
    """A GGUFModel, Llama2cModel, CkptModel or HFModel for the file or folder at `path` (see
    the table above); FormatError, saying which kinds were tried, for a file that is none of them."""
    path = str(path)
    return _open(path, detect(path))


def _open(path, kind):
    if kind == Kind.GGUF:
        return GGUFModel(path, gguf.read(path))
    if kind == Kind.CKPT:
        return CkptModel(path)
    if kind == Kind.HF:
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
            raise ValueError(f"{self.path}: {self.kind.described} holding no tokenizer")
        return FastTokenizer(self.vocab)

    def model(self, dtype=np.float32, fast=False, threads=1, mmap=False):
        """The NumPy model: reference.model.Llama computing in `dtype`, or with fast=True a
        reference.runtime.fast.FastLlama (float32; quantized matrices kept quantized; `threads` share
        one-token products; float32 matrices read into huge-page memory unless `mmap`)."""
        args, weights = self.spec, self.weights(fast=fast)
        try:
            return load.build_model(args, weights, self.path, self.stored_name, dtype, fast, threads, mmap)
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
    kind = Kind.GGUF

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
    kind = Kind.LLAMA2C
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
    kind = Kind.CKPT
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
    kind = Kind.HF

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
        """The file the SentencePiece bytes came from (formats/hf.py's read_folder says which)."""
        return str(self.source.tokenizer_path)

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
