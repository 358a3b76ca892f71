"""The readers the fuzz tests attack, and one small valid file for each.

Shared by tests/test_fuzz.py (hypothesis, in CI), tests/test_failure_safety.py and
tests/fuzz_atheris.py (coverage-guided, optional). A reader here is what the CLI and the trainer
run on a file, not just the parser:

  kind            files               reader
  gguf-rich       m.gguf              formats.gguf.read, then every tensor's to_float32
  gguf-quants     m.gguf              the same, on a tensor of every k-quant, i-quant, ternary and
                                      FP4 type whose blocks have hostile scales
  gguf-llama      m.gguf              ... then mapping.from_gguf (its ModelArgs), as `generate` loads it
  llama2c-v0/1/2  m.bin               formats.llama2c.read, its tensor table, v2 groups dequantized
  tokenizer.bin   tok.bin             formats.llama2c.read_tokenizer, with the model's vocab_size and
                                      with none
  spm             m.model             formats.spm.read
  tokens          train.bin, meta.json  trainer.pretokenize.load_tokens
  ckpt            ckpt.pt             trainer.checkpoint.load
  safetensors     m.safetensors       formats.safetensors.read, then every tensor's to_float32
  hf              config.json,        formats.hf.from_hf, as a Hugging Face folder is read
                  model.safetensors

Each reader takes the folder holding its files and either returns or raises FormatError. The GGUF
readers run with NumPy's warnings as errors: a decoder that lets one escape fails the contract.
"""

import io
import json
import os
import warnings

import numpy as np
import torch

from formats import gguf, hf, llama2c, mapping, safetensors, spm
from formats.ggml import BLOCK, GGMLType
from formats.gguf import Array, GGUFFile, Tensor, Value, ValueType
from formats.llama2c_quant import Int8Groups
from formats.spec import ModelArgs
from trainer import checkpoint
from trainer.pretokenize import load_tokens
from tests.support.files import small_vocab, written
from tests.support.quant import F16_FIELDS, map_scales
from tests.support.weights import normal_weights

# ---------------------------------------------------------------------------- the valid files

ARGS = dict(dim=4, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=8, hidden_dim=8, max_seq_len=4,
            norm_eps=1e-5, rope_theta=10000.0)
PIECES = ["<unk>", "<s>", "</s>", "<0x0A>", "\u2581a", "b", "é", "👋"]
V = len(PIECES)


def llama_gguf():
    """A whole 1-layer llama (dim 4, 8 pieces) as mapping.to_gguf builds it for export."""
    args = ModelArgs(**ARGS)
    return mapping.to_gguf(normal_weights(args), args, small_vocab(PIECES))


def rich_gguf():
    """Every value type, nested and empty arrays, block and plain tensor types, a 0-dim tensor,
    a non-default alignment: the paths the llama file does not take."""
    VT = ValueType
    md = {"general.alignment": Value(VT.UINT32, 64), "u8": Value(VT.UINT8, 255), "i8": Value(VT.INT8, -1),
          "u16": Value(VT.UINT16, 65535), "i16": Value(VT.INT16, -2), "i32": Value(VT.INT32, -3),
          "f32": Value(VT.FLOAT32, 1.5), "bool": Value(VT.BOOL, True), "str": Value(VT.STRING, "héllo 👋"),
          "u64": Value(VT.UINT64, 2**64 - 1), "i64": Value(VT.INT64, -2**63), "f64": Value(VT.FLOAT64, -0.0),
          "a.str": Value(VT.ARRAY, Array(VT.STRING, ["a", "", "ü"])),
          "a.bool": Value(VT.ARRAY, Array(VT.BOOL, np.array([True, False]))),
          "a.empty": Value(VT.ARRAY, Array(VT.UINT64, np.zeros(0, np.uint64))),
          "a.nested": Value(VT.ARRAY, Array(VT.ARRAY, [Array(VT.INT16, np.array([1, -2], np.int16)),
                                                       Array(VT.STRING, ["x"])]))}
    ramp = np.linspace(-1, 1, 64, dtype=np.float32)
    tensors = [Tensor.from_array("q8", ramp.reshape(2, 32), GGMLType.Q8_0),
               Tensor.from_array("q4", ramp[:32].reshape(1, 32), GGMLType.Q4_0),
               Tensor.from_array("f16", ramp[:3], GGMLType.F16),
               Tensor.from_array("bf16", ramp[:4].reshape(2, 2), GGMLType.BF16),
               Tensor.from_array("i32", np.array([7, -7], np.int32), GGMLType.I32),
               Tensor("scalar", GGMLType.F32, (), np.array(2.5, np.float32))]
    return GGUFFile(md, tensors)


# fp16 scales a decoder must survive: NaN, -inf, inf, -0, the largest, a signalling NaN.
HOSTILE_F16 = [0x7E00, 0xFC00, 0x7C00, 0x8000, 0x7BFF, 0xFD01]
LEGACY_TYPES = {GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1}


def hostile_quant_gguf():
    """One random block of every block type beyond rich_gguf's, its fp16 scales taken in turn from
    HOSTILE_F16; MXFP4's exponent the largest (its products overflow to inf), NVFP4's scales
    UE4M3's NaN code 0x7f, 0xff, 0 and the largest."""
    rng = np.random.default_rng(3)
    hostile = iter(HOSTILE_F16 * 8)
    tensors = []
    for ggml_type in (t for t in F16_FIELDS if t not in LEGACY_TYPES):
        block_size, type_size = BLOCK[ggml_type]
        raw = rng.integers(0, 256, size=(1, type_size), dtype=np.uint8)
        map_scales(raw, ggml_type, lambda bits: np.full(bits.shape, next(hostile), np.uint16))
        if ggml_type == GGMLType.MXFP4:
            raw[:, 0] = 255
        elif ggml_type == GGMLType.NVFP4:
            raw[:, :4] = [0x7F, 0xFF, 0x00, 0x7E]
        tensors.append(Tensor(ggml_type.name.lower(), ggml_type, (block_size,), raw.reshape(type_size)))
    return GGUFFile({}, tensors)


def llama2c_checkpoint(shared):
    args = ModelArgs(**ARGS, tie_embeddings=shared)
    return llama2c.Checkpoint(args, normal_weights(args, seed=1))


def token_files(n_tokens=200):
    tokens = (np.arange(n_tokens) * 5 % V).astype("<u2")
    meta = {"tokenizer": "/data/tok8.model", "tokenizer_sha256": "0" * 64, "vocab_size": V, "dtype": "<u2",
            "bos_id": 1, "eos_id": 2, "splits": {"train": {"documents": 3, "tokens": n_tokens, "bytes": 600}}}
    return {"train.bin": tokens.tobytes(), "meta.json": json.dumps(meta, indent=2).encode()}


def small_ckpt():
    """A checkpoint shaped like train.py's, small enough to cut at every byte."""
    state = {"tok_embeddings.weight": torch.ones(V, 4), "norm.weight": torch.ones(4)}
    return {"model": state, "model_args": dict(ARGS, multiple_of=32, dropout=0.0), "iter_num": 3,
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]}}


def rich_safetensors():
    """Float, bfloat16 and integer tensors, a 0-d and an empty one, and metadata."""
    ramp = np.linspace(-1, 1, 12, dtype=np.float32)
    T = safetensors.Tensor
    return safetensors.SafetensorsFile(
        {"f32": T.from_array(ramp.reshape(3, 4)), "bf16": T.from_array(ramp[:4], "BF16"),
         "f16": T.from_array(ramp[:3], "F16"), "i64": T.from_array(np.int64([-1, 2**40])),
         "scalar": T.from_array(np.float32(2.5)), "empty": T.from_array(np.zeros((0, 2), np.float32))},
        {"format": "pt"})


def hf_folder(tmp_path):
    """config.json and model.safetensors of the 1-layer llama, as hf.to_hf writes them."""
    args = ModelArgs(**ARGS)
    folder = tmp_path / "hf"
    model = spm.to_bytes(spm.SentencePieceModel(small_vocab(PIECES), byte_fallback=True))
    hf.to_hf(normal_weights(args), args, model, folder)
    return {name: (folder / name).read_bytes() for name in (hf.CONFIG, hf.WEIGHTS)}


def saved(obj, **kwargs):
    """torch.save's bytes for `obj`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def build_valid_files(tmp_path):
    """kind -> {file name: bytes} of one small valid instance."""
    return {
        "gguf-llama": {"m.gguf": written(gguf.write, llama_gguf(), tmp_path / "l.gguf").read_bytes()},
        "gguf-rich": {"m.gguf": written(gguf.write, rich_gguf(), tmp_path / "r.gguf").read_bytes()},
        "gguf-quants": {"m.gguf": written(gguf.write, hostile_quant_gguf(), tmp_path / "q.gguf").read_bytes()},
        "llama2c-v0": {"m.bin": written(llama2c.write, llama2c_checkpoint(False), tmp_path / "0", 0).read_bytes()},
        "llama2c-v1": {"m.bin": written(llama2c.write, llama2c_checkpoint(True), tmp_path / "1", 1).read_bytes()},
        "llama2c-v2": {"m.bin": written(llama2c.write, llama2c_checkpoint(False), tmp_path / "2", 2).read_bytes()},
        "tokenizer.bin": {"tok.bin": written(llama2c.write_tokenizer, small_vocab(PIECES),
                                             tmp_path / "t").read_bytes()},
        "spm": {"m.model": written(spm.write, spm.SentencePieceModel(small_vocab(PIECES), byte_fallback=True),
                                   tmp_path / "s").read_bytes()},
        "tokens": token_files(),
        "ckpt": {"ckpt.pt": written(checkpoint.save, small_ckpt(), tmp_path / "c").read_bytes()},
        "safetensors": {"m.safetensors": written(safetensors.write, rich_safetensors(), tmp_path / "st").read_bytes()},
        "hf": hf_folder(tmp_path),
    }


# ------------------------------------------------------------------------------- the readers


def read_gguf(d):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gf = gguf.read(d / "m.gguf")
        for t in gf.tensors:
            t.to_float32()
    return gf


def read_gguf_model(d):
    mapping.from_gguf(read_gguf(d), str(d / "m.gguf"))


def read_llama2c(d):
    ckpt = llama2c.read(d / "m.bin")
    llama2c.tensor_table(ckpt)
    for w in ckpt.weights.values():
        if isinstance(w, Int8Groups):
            w.to_float32()


def read_tokenizer_bin(d):
    llama2c.read_tokenizer(d / "tok.bin", V)
    llama2c.read_tokenizer(d / "tok.bin")


def read_safetensors(d):
    for tensor in safetensors.read(d / "m.safetensors").tensors.values():
        tensor.to_float32()


READERS = {"gguf-llama": read_gguf_model, "gguf-rich": read_gguf, "gguf-quants": read_gguf,
           "llama2c-v0": read_llama2c, "llama2c-v1": read_llama2c, "llama2c-v2": read_llama2c,
           "tokenizer.bin": read_tokenizer_bin, "spm": lambda d: spm.read(d / "m.model"),
           "tokens": lambda d: load_tokens(d, "train"), "ckpt": lambda d: checkpoint.load(d / "ckpt.pt"),
           "safetensors": read_safetensors, "hf": hf.from_hf}
KINDS = sorted(READERS)


# ------------------------------------------------ whole models, and files that are not files

def _read_model(path):
    """What `generate` does with a model before its first token: open it (models.open_model), then build
    the plain and the fast model, whose loader refuses NaN/inf weights (FormatError, both) and a
    context whose KV cache cannot be mapped (FormatError, the fast model; the plain one grows its
    cache with the positions used)."""
    from models import open_model

    source = open_model(path)
    source.model()
    source.model(fast=True)


# Model kinds: (the file kind whose valid files they start from, the file given as MODEL or None
# for the folder itself). Not in KINDS: the suite's per-byte cuts and flips stay on the readers.
MODEL_KINDS = {"model-llama2c-v1": ("llama2c-v1", "m.bin"), "model-gguf-llama": ("gguf-llama", "m.gguf"),
               "model-hf": ("hf", None)}
MODEL_READERS = {kind: (lambda d, name=name: _read_model(d / name if name else d))
                 for kind, (_, name) in MODEL_KINDS.items()}


def place(path, how, data, outside):
    """Put at `path` what a hostile user might: "file" (`data`), "FIFO", "folder", a symlink to
    /dev/zero or /dev/urandom, or "outside" (a symlink to `outside`, a file holding `data`)."""
    if path.is_symlink() or path.exists():
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    if how == "file":
        path.write_bytes(data)
    elif how == "FIFO":
        os.mkfifo(path)
    elif how == "folder":
        path.mkdir()
    elif how == "outside":
        outside.write_bytes(data)
        path.symlink_to(outside)
    else:
        path.symlink_to(how)


PLACES = ("file", "FIFO", "folder", "/dev/zero", "/dev/urandom", "outside")
