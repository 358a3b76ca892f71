"""Build the NumPy model from a file: a GGUF, a llama2.c .bin (v0, v1, v2) or a torch ckpt.pt.

Each `weights_from_*` returns `(ModelArgs, weights)` with llama2.c tensor names; `load_model`
picks the reader from the file's first bytes and returns a ready `Llama`.

How stored types become float32 (the dtype the model computes in):
- F32: used as is; the arrays stay read-only views into the memory-mapped file (no copy).
- F16, BF16: upcast, which is exact (every half and bfloat16 value is a float32 value).
- GGUF Q8_0, Q4_0, ... and llama2.c v2 int8 groups: dequantized once at load by formats/, so
  the model multiplies by exactly the values the file encodes.
With `fast=True` (what `generate` uses) the model is reference.fast.FastLlama: float32 matrices
are read out of the file into one huge-page buffer (reference/memory.py), and quantized
matrices are not expanded: Q8_0 and v2 int8 groups keep their int8 codes and scales, other block
types their bytes, and each matmul dequantizes a cache-sized chunk of rows at a time
(reference/blockwise.py); the values multiplied are the same.
Torch is imported only to read ckpt.pt: GGUF and llama2.c files load without it.
"""

import numpy as np

from formats import detect, gguf, llama2c, mapping
from formats.ggml import BLOCK, GGMLType
from reference.blockwise import Int8BlockMatrix, block_matrix
from reference.config import ModelArgs
from reference.fast import FastLlama
from reference.memory import resident
from reference.model import Llama

LLAMA2C_NORM_EPS = 1e-5             # llama2.c files store neither eps nor theta: its defaults
COMPILED_PREFIX = "_orig_mod."      # torch.compile's wrapper prefixes every state-dict key


def weights_from_gguf(path, keep_quantized=False):
    """(ModelArgs, weights) from a llama GGUF; hyperparameters come from its `llama.*` keys.

    keep_quantized: matrices of other types than F32 become BlockMatrix objects (for FastLlama)
    instead of float32 arrays; Q8_0 ones are read by `read_q8_0`.
    """
    gguf_file = gguf.read(path)
    tensors, model_args, _vocab = mapping.from_gguf(gguf_file, path=str(path))
    weights, q8_0 = {}, set()
    for name, tensor in tensors.items():
        if tensor.type == GGMLType.F32:
            weights[name] = tensor.data             # a read-only view of the mapped file
        elif not keep_quantized or len(tensor.shape) != 2:
            weights[name] = tensor.to_float32()
        elif tensor.type == GGMLType.Q8_0:
            q8_0.add(name)                          # read below
        else:
            weights[name] = block_matrix(tensor)
    # Q8_0 matrices used side by side share one codes array, so FastLlama fuses them for free.
    fused = (("attention.wq", "attention.wk", "attention.wv"), ("feed_forward.w1", "feed_forward.w3"))
    groups = [[f"layers.{i}.{kind}.weight" for kind in group]
              for i in range(model_args["n_layers"]) for group in fused]
    groups = [group for group in groups if q8_0.issuperset(group)]
    groups += [[name] for name in sorted(q8_0 - {name for group in groups for name in group})]
    for group in groups:
        weights.update(zip(group, read_q8_0(path, gguf_file, [tensors[name] for name in group])))
    return ModelArgs.from_dict(model_args), weights


# Bytes read from the file at a time by read_q8_0.
READ_CHUNK_BYTES = 1 << 20


def read_q8_0(path, gguf_file, tensors):
    """Int8BlockMatrix objects for 2-D Q8_0 `tensors`, their codes rows of one contiguous array.

    A Q8_0 block interleaves its 2-byte scale with its 32 codes; a one-token product casts the
    codes to float32 at every step, and casting from one contiguous array made Q8_0 decode 1.19x
    faster than casting from the file's strided blocks (seed config). So the codes are gathered
    once, reading the file in READ_CHUNK_BYTES pieces rather than through the memory map: the
    file's pages are then never mapped, and resident memory holds the codes once (the file's
    bytes less the scales, which become float32: 1/8 of the codes' size).
    """
    block, type_size = BLOCK[GGMLType.Q8_0]
    n_cols = tensors[0].shape[1]
    if any(t.type != GGMLType.Q8_0 or len(t.shape) != 2 or t.shape[1] != n_cols for t in tensors):
        raise ValueError("read_q8_0 takes 2-D Q8_0 tensors of one row length")
    n_blocks, row_bytes = n_cols // block, n_cols // block * type_size
    n_rows = sum(t.shape[0] for t in tensors)
    codes = np.empty((n_rows, n_blocks, block), dtype=np.int8)
    scales = np.empty((n_rows, n_blocks), dtype=np.float32)
    rows_per_read = max(1, READ_CHUNK_BYTES // row_bytes)
    matrices, row = [], 0
    with open(path, "rb") as f:
        for tensor in tensors:
            first = row
            f.seek(gguf_file.data_offset + tensor.offset)
            for start in range(0, tensor.shape[0], rows_per_read):
                n = min(rows_per_read, tensor.shape[0] - start)
                piece = np.frombuffer(f.read(n * row_bytes), dtype=np.uint8).reshape(n, n_blocks, type_size)
                scales[row:row + n] = piece[:, :, :2].view("<f2")[:, :, 0]   # ggml_half d, then
                codes[row:row + n] = piece[:, :, 2:].view(np.int8)           # int8_t qs[32]
                row += n
            matrices.append(Int8BlockMatrix(codes[first:row], scales[first:row]))
    return matrices


def _int8_groups_matrix(w):
    """A v2 matrix as an Int8BlockMatrix when its groups tile the rows (they do whenever the group
    size divides the row length, as export.py chooses it), else dequantized."""
    n_rows, n_cols = w.shape
    if n_cols % w.group_size:
        return w.to_float32()
    n_blocks = n_cols // w.group_size
    return Int8BlockMatrix(w.q.reshape(n_rows, n_blocks, w.group_size), w.scales.reshape(n_rows, n_blocks))


def weights_from_llama2c(path, keep_quantized=False):
    """(ModelArgs, weights) from a llama2.c checkpoint of any version (keep_quantized: v2's int8
    matrices become Int8BlockMatrix objects, for FastLlama)."""
    checkpoint = llama2c.read(path)
    config = checkpoint.config
    args = ModelArgs(dim=config.dim, n_layers=config.n_layers, n_heads=config.n_heads,
                     n_kv_heads=config.n_kv_heads, vocab_size=config.vocab_size,
                     hidden_dim=config.hidden_dim, max_seq_len=config.max_seq_len,
                     norm_eps=LLAMA2C_NORM_EPS, rope_theta=llama2c.ROPE_THETA,
                     tie_embeddings=checkpoint.shared_classifier)
    weights = {name: (_int8_groups_matrix(w) if keep_quantized and len(w.shape) == 2 else w.to_float32())
               if isinstance(w, llama2c.Int8Groups) else w
               for name, w in checkpoint.weights.items()}
    return args, weights


def weights_from_ckpt(path):
    """(ModelArgs, weights) from a torch checkpoint dict {"model": state_dict, "model_args": ...},
    ours or llama2.c's (whose model_args lack hidden_dim, norm_eps, rope_theta: derived as
    llama2.c does). A tied model's output.weight is passed on; Llama checks it equals the
    embeddings."""
    try:
        import torch  # noqa: F401  (only to fail early with a clear message)
    except ImportError:
        raise ImportError(f"reading {path} needs torch; GGUF and llama2.c files do not") from None
    from trainer.checkpoint import load  # weights_only, and FormatError for a damaged file

    checkpoint = load(path)
    args = ModelArgs.from_dict(checkpoint["model_args"])
    weights = {name.removeprefix(COMPILED_PREFIX): tensor.detach().float().numpy()
               for name, tensor in checkpoint["model"].items()}
    return args, weights


def load_model(path, dtype=np.float32, fast=False, threads=1):
    """A `Llama` from a GGUF, llama2.c or ckpt.pt file, recognized by its first bytes; with
    fast=True a `FastLlama` (float32 only) that keeps quantized matrices quantized and shares
    large one-token products between `threads` threads."""
    if fast and np.dtype(dtype) != np.float32:
        raise ValueError(f"the fast path computes in float32, not {np.dtype(dtype)}")
    if detect.is_gguf(path):
        args, weights = weights_from_gguf(path, keep_quantized=fast)
    elif detect.is_torch_checkpoint(path):
        args, weights = weights_from_ckpt(path)
    else:
        # v1/v2 start with the magic (bytes "24ka"), v0 with none: llama2c.read tells them apart.
        args, weights = weights_from_llama2c(path, keep_quantized=fast)
    if fast:
        return FastLlama(args, resident(weights), threads)
    return Llama(args, weights, dtype)
