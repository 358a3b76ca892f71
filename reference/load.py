"""Build the NumPy model from a file: a GGUF, a llama2.c .bin (v0, v1, v2) or a torch ckpt.pt.

Each `weights_from_*` returns `(ModelArgs, weights)` with llama2.c tensor names; `load_model`
picks the reader from the file's first bytes and returns a ready `Llama`.

How stored types become float32 (the dtype the model computes in):
- F32: used as is; the arrays stay read-only views into the memory-mapped file (no copy).
- F16, BF16: upcast, which is exact (every half and bfloat16 value is a float32 value).
- GGUF Q8_0, Q4_0, ... and llama2.c v2 int8 groups: dequantized once at load by formats/, so
  the model multiplies by exactly the values the file encodes.
Torch is imported only to read ckpt.pt: GGUF and llama2.c files load without it.
"""

import numpy as np

from formats import gguf, llama2c, mapping
from formats.ggml import GGMLType
from reference.config import ModelArgs
from reference.model import Llama

GGUF_MAGIC = b"GGUF"
ZIP_MAGIC = b"PK\x03\x04"           # torch.save writes a zip archive
LLAMA2C_NORM_EPS = 1e-5             # llama2.c files store neither eps nor theta: its defaults
COMPILED_PREFIX = "_orig_mod."      # torch.compile's wrapper prefixes every state-dict key


def weights_from_gguf(path):
    """(ModelArgs, weights) from a llama GGUF; hyperparameters come from its `llama.*` keys."""
    tensors, model_args, _vocab = mapping.from_gguf(gguf.read(path), path=str(path))
    weights = {name: tensor.data if tensor.type == GGMLType.F32 else tensor.to_float32()
               for name, tensor in tensors.items()}
    return ModelArgs.from_dict(model_args), weights


def weights_from_llama2c(path):
    """(ModelArgs, weights) from a llama2.c checkpoint of any version."""
    checkpoint = llama2c.read(path)
    config = checkpoint.config
    args = ModelArgs(dim=config.dim, n_layers=config.n_layers, n_heads=config.n_heads,
                     n_kv_heads=config.n_kv_heads, vocab_size=config.vocab_size,
                     hidden_dim=config.hidden_dim, max_seq_len=config.max_seq_len,
                     norm_eps=LLAMA2C_NORM_EPS, rope_theta=llama2c.ROPE_THETA,
                     tie_embeddings=checkpoint.shared_classifier)
    weights = {name: w.to_float32() if isinstance(w, llama2c.Int8Groups) else w
               for name, w in checkpoint.weights.items()}
    return args, weights


def weights_from_ckpt(path):
    """(ModelArgs, weights) from a torch checkpoint dict {"model": state_dict, "model_args": ...},
    ours or llama2.c's (whose model_args lack hidden_dim, norm_eps, rope_theta: derived as
    llama2.c does). A tied model's output.weight is passed on; Llama checks it equals the
    embeddings."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs torch; GGUF and llama2.c files do not") from None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    args = ModelArgs.from_dict(checkpoint["model_args"])
    weights = {name.removeprefix(COMPILED_PREFIX): tensor.detach().float().numpy()
               for name, tensor in checkpoint["model"].items()}
    return args, weights


def load_model(path, dtype=np.float32):
    """A `Llama` from a GGUF, llama2.c or ckpt.pt file, recognized by its first bytes."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == GGUF_MAGIC:
        args, weights = weights_from_gguf(path)
    elif magic == ZIP_MAGIC:
        args, weights = weights_from_ckpt(path)
    else:
        # v1/v2 start with the magic (bytes "24ka"), v0 with none: llama2c.read tells them apart.
        args, weights = weights_from_llama2c(path)
    return Llama(args, weights, dtype)
