"""Build the NumPy model from a file: a GGUF or a llama2.c .bin (v0, v1, v2).

Each `weights_from_*` returns `(ModelArgs, weights)` with llama2.c tensor names; `load_model`
picks the reader from the file's first bytes and returns a ready `Llama`. A torch ckpt.pt needs
torch to read, so it is read in trainer/ (trainer.export.load_exportable) and the model built
from its weights with `build_model`; llama2_scratch.model_files.load_model does both.

How stored types become float32 (the dtype the model computes in):
- F32: used as is; the arrays stay read-only views into the memory-mapped file (no copy).
- F16, BF16: upcast, which is exact (every half and bfloat16 value is a float32 value).
- GGUF Q8_0, Q4_0, ... and llama2.c v2 int8 groups: dequantized once at load by formats/, so
  the model multiplies by exactly the values the file encodes.
With `fast=True` (what `generate` uses) the model is reference.runtime.fast.FastLlama: float32 matrices
are read out of the file into one huge-page buffer (reference/runtime/memory.py), and quantized
matrices are not expanded: Q8_0 and v2 int8 groups keep their int8 codes and scales, other block
types their bytes, and each matmul dequantizes a cache-sized chunk of rows at a time
(reference/runtime/blockwise.py); the values multiplied are the same.
Nothing here imports torch.

Runtime (reference/runtime/__init__.py): files -> models; the maths is in reference/model.py.
"""

import numpy as np

from formats import detect, gguf, llama2c, mapping
from formats.ggml import BLOCK, GGMLType
from formats.llama2c_quant import Int8Groups
from reference.runtime.blockwise import Int8BlockMatrix, block_matrix
from reference.runtime.fast import FastLlama
from reference.runtime.memory import resident
from reference.model import Llama


def weights_from_gguf(gguf_file, keep_quantized=False):
    """(ModelArgs, weights) from a parsed llama GGUF (formats.gguf.read); hyperparameters come
    from its `llama.*` keys.

    keep_quantized: matrices of other types than F32 become BlockMatrix objects (for FastLlama)
    instead of float32 arrays; Q8_0 ones are read by `read_q8_0`.
    """
    tensors, args, _vocab = mapping.from_gguf(gguf_file, path=gguf_file.path)
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
              for i in range(args.n_layers) for group in fused]
    groups = [group for group in groups if q8_0.issuperset(group)]
    groups += [[name] for name in sorted(q8_0 - {name for group in groups for name in group})]
    if groups:
        with open(gguf_file.path, "rb") as f:
            for group in groups:
                weights.update(zip(group, read_q8_0(f, gguf_file, [tensors[name] for name in group])))
    return args, weights


# Bytes read from the file at a time by read_q8_0.
READ_CHUNK_BYTES = 1 << 20


def read_q8_0(f, gguf_file, tensors):
    """Int8BlockMatrix objects for 2-D Q8_0 `tensors`, their codes rows of one contiguous array.

    A Q8_0 block interleaves its 2-byte scale with its 32 codes; a one-token product casts the
    codes to float32 at every step, and casting from one contiguous array made Q8_0 decode 1.19x
    faster than casting from the file's strided blocks (seed config). So the codes are gathered
    once, reading the file (`f`, open for binary reading) in READ_CHUNK_BYTES pieces rather than
    through the memory map: the
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


def weights_from_llama2c(checkpoint, keep_quantized=False):
    """(ModelArgs, weights) from a parsed llama2.c checkpoint of any version (formats.llama2c.read;
    keep_quantized: v2's int8 matrices become Int8BlockMatrix objects, for FastLlama)."""
    weights = {name: (_int8_groups_matrix(w) if keep_quantized and len(w.shape) == 2 else w.to_float32())
               if isinstance(w, Int8Groups) else w
               for name, w in checkpoint.weights.items()}
    return checkpoint.args, weights


def read_weights(path, keep_quantized=False):
    """(ModelArgs, weights) from a GGUF or a llama2.c file, told apart by their first bytes.

    A torch ckpt.pt is refused with a pointer: reading one needs torch, and reference/ runs
    without it (llama2_scratch.model_files.load_model reads ckpt.pt through trainer/)."""
    if detect.is_gguf(path):
        return weights_from_gguf(gguf.read(path), keep_quantized=keep_quantized)
    if detect.is_torch_checkpoint(path):
        raise ValueError(f"{path}: a torch checkpoint; reference/ reads GGUF and llama2.c files "
                         "(export it, or load it with llama2_scratch.model_files.load_model, which needs torch)")
    # v1/v2 start with the magic (bytes "24ka"), v0 with none: llama2c.read tells them apart.
    return weights_from_llama2c(llama2c.read(path), keep_quantized=keep_quantized)


def build_model(args, weights, dtype=np.float32, fast=False, threads=1, mmap=False):
    """A `Llama` computing in `dtype`, or with fast=True a `FastLlama` (float32 only) that shares
    large one-token products between `threads` threads and reads float32 matrices into huge-page
    memory (reference/runtime/memory.py) unless `mmap`: then they are used where they lie in the file's
    memory map (no copy at load, pages shared with other processes; decode may be slower)."""
    if not fast:
        return Llama(args, weights, dtype)
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"the fast path computes in float32, not {np.dtype(dtype)}")
    return FastLlama(args, weights if mmap else resident(weights), threads)


def load_model(path, dtype=np.float32, fast=False, threads=1, mmap=False):
    """The model in a GGUF or llama2.c file (see read_weights and build_model)."""
    args, weights = read_weights(path, keep_quantized=fast)
    return build_model(args, weights, dtype, fast, threads, mmap)
