"""ckpt.pt: save atomically, load with weights_only=True, and normalize foreign checkpoints.

The dict (docs/interfaces.md, "ckpt.pt"): "model" (llama2.c names); "model_args", a plain dict of
exactly llama2.c's ModelArgs fields (LLAMA2C_FIELDS), so llama2.c's sample.py, export.py and
train.py build `ModelArgs(**ckpt["model_args"])` from it; "extra_model_args", the fields of
formats.spec.ModelArgs that llama2.c lacks (rope_theta, tie_embeddings, ...); and for
resuming "optimizer", "scaler", "iter_num", "rng" (torch CPU and CUDA generator states),
"data_cursor" (the sampler's seed and next step: batches are a function of those two), "config"
(the TrainConfig's flat settings, `TrainConfig.settings()`) and "tokenizer" ({"path", "sha256",
"model": the .model bytes}), so export finds the vocabulary even after the data folder is gone.
"""

import io
import os
import warnings
import zipfile

from formats import detect
from formats.atomic import atomic_write
from formats.errors import FormatError
from formats.spec import FIELDS

# llama2.c's model.py ModelArgs, every field (its scripts call ModelArgs(**model_args)).
LLAMA2C_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "multiple_of",
                  "norm_eps", "max_seq_len", "dropout")
EXTRA_FIELDS = tuple(name for name in FIELDS if name not in LLAMA2C_FIELDS)

# Buffers llama2.c's model.py keeps in some state dicts; they are derived, not weights.
_DERIVED = ("freqs_cos", "freqs_sin")
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")   # torch.compile, DistributedDataParallel


def save(ckpt, path):
    """torch.save into memory, then atomically replace `path`: a crash never leaves half a file."""
    import torch

    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def load(path):
    """The checkpoint dict (tensors on the CPU), safe on a file from anywhere.

    torch's weights_only unpickler builds tensors and plain containers only, so no code in the
    file runs. A missing file is an OSError; anything that is not a checkpoint raises FormatError
    naming the file: torch itself raises almost any type on a damaged archive (RuntimeError,
    UnpicklingError, EOFError, UnicodeDecodeError, ...).
    """
    import torch

    with open(path, "rb") as f:
        _check_archive(f, path)
        try:
            # Before failing, torch warns on stderr about odd pickle protocols; the error says enough.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ckpt = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise FormatError(path, "pickle", None, f"not a loadable checkpoint: {_summary(exc)}") from None
    if not isinstance(ckpt, dict):
        raise FormatError(path, "checkpoint", None, f"is a {type(ckpt).__name__}, not a dict")
    # Every reader indexes these: a state dict of tensors and the model_args dicts.
    model, args = ckpt.get("model"), ckpt.get("model_args")
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        raise FormatError(path, "model", None, "must be a dict of named tensors (a state_dict)")
    for key, value in (("model_args", args), ("extra_model_args", ckpt.get("extra_model_args", {}))):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise FormatError(path, key, None, "must be a dict keyed by field name")
    return ckpt


def _check_archive(f, path):
    """torch.save writes a zip of stored (uncompressed) records; refuse anything else before torch
    reads it. A compressed record could inflate far past the file's size (a zip bomb). torch takes
    any file not starting with a zip header for its legacy pre-1.6 format, whose reads are sized by
    numbers in the pickle: one junk byte before a zip, or a crafted length, makes it allocate
    gigabytes. (Python's zipfile alone would accept the junk byte.)"""
    if f.read(4) != detect.TORCH_ZIP_MAGIC:
        raise FormatError(path, "magic", 0, "not a torch.save zip archive (the legacy pre-1.6 format "
                                            "is refused too)")
    f.seek(0)
    size = os.fstat(f.fileno()).st_size
    try:
        with zipfile.ZipFile(f) as archive:
            records = archive.infolist()
    except Exception as exc:  # BadZipFile, or EOFError, NotImplementedError... from a damaged directory
        raise FormatError(path, "zip archive", None, f"not a torch.save zip archive: {_summary(exc)}") from None
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED or r.compress_size != r.file_size or r.file_size > size:
            raise FormatError(path, f"record {r.filename}", r.header_offset,
                              f"is compressed or larger than the file ({r.compress_size} -> {r.file_size} "
                              f"bytes); torch.save stores records as they are")
    f.seek(0)


def _summary(exc):
    """The informative line of a (often multi-paragraph) torch or zipfile error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # weights_only failures open with a boilerplate paragraph; the next one names what was refused.
    if len(lines) > 1 and lines[0].startswith("Weights only load failed"):
        lines = lines[1:]
    first = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {first}"[:300]


def model_args_entries(args):
    """{"model_args": llama2.c's fields, "extra_model_args": ours} of a formats.spec.ModelArgs."""
    fields = args.to_dict()
    return {"model_args": {name: fields[name] for name in LLAMA2C_FIELDS},
            "extra_model_args": {name: fields[name] for name in EXTRA_FIELDS}}


def stored_model_args(ckpt):
    """The model_args dict of any checkpoint we read: ours (extra_model_args merged in), an earlier
    one of ours (every field in model_args) or llama2.c's (its fields only)."""
    return {**ckpt["model_args"], **ckpt.get("extra_model_args", {})}


def clean_state_dict(state_dict):
    """llama2.c names only: wrapper prefixes stripped, derived RoPE buffers dropped."""
    clean = {}
    for name, tensor in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name not in _DERIVED:
            clean[name] = tensor
    return clean
