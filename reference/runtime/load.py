"""Build the NumPy model from a parsed file: a GGUF or a llama2.c .bin (v0, v1, v2).

Each `weights_from_*` returns `(ModelArgs, weights)` with llama2.c tensor names; `build_model`
turns them into a ready `Llama` or `FastLlama`. Which reader a path needs (and a ckpt.pt, read by
trainer/ with torch) is models/'s to tell: models.load_model(path) is the one entry.

How stored types become float32 (the dtype the model computes in): F32 is used as is (read-only
views into the memory-mapped file), F16 and BF16 are upcast (exact), and quantized types are
dequantized once at load by formats/. With `fast=True` (what `generate` uses) the model is
reference.runtime.fast.FastLlama: float32 matrices are read into huge-page memory (memory.py),
and quantized ones stay quantized, transcoded at load into int8 codes and block scales (+ mins)
for blockwise.Int8BlockMatrix; the values multiplied are the same. Nothing here imports torch.

Runtime (reference/runtime/__init__.py): files -> models; the maths is in reference/model.py.
"""

import numpy as np

from formats import mapping, quant
from formats.errors import FormatError
from formats.ggml import GGMLType, row_nbytes
from formats.llama2c_quant import Int8Groups
from formats.spec import layer_weight
from reference.runtime.blockwise import Int8BlockMatrix
from reference.runtime.fast import FastLlama
from reference.runtime.memory import huge_page_array, read_exactly, resident
from reference.model import LAYER_TENSORS, Llama


def weights_from_gguf(gguf_file, fast=False):
    """(ModelArgs, weights) from a parsed llama GGUF (formats.gguf.read); hyperparameters come
    from its `llama.*` keys.

    fast: weights for FastLlama, where matrices of a quantized type (formats.quant.CODES) become
    Int8BlockMatrix objects (`read_codes`) instead of float32 arrays. F16 and BF16 are upcast
    either way: NumPy's float16 cast is too slow to run at every token (docs/benchmarks.md).
    """
    tensors, args, _vocab = mapping.from_gguf(gguf_file, path=gguf_file.path)
    weights, quantized = {}, {}
    for name, tensor in tensors.items():
        if tensor.type == GGMLType.F32:
            weights[name] = tensor.data             # a read-only view of the mapped file
        elif fast and len(tensor.shape) == 2 and tensor.type in quant.CODES:
            quantized[name] = tensor                # read below
        else:
            weights[name] = tensor.to_float32()
    # Matrices used side by side share one codes array where their codes have one form (group,
    # mins), whatever their types (llama.cpp mixes types), so FastLlama fuses them for free.
    fusable = (("wq", "wk", "wv"), ("wq", "wk"), ("w1", "w3"))        # LayerWeights fields
    groups, grouped = [], set()
    for i in range(args.n_layers):
        for fields in fusable:
            group = [layer_weight(i, LAYER_TENSORS[field]) for field in fields]
            if (grouped.isdisjoint(group) and all(name in quantized for name in group)
                    and len({codes_form(quantized[n].type) for n in group}) == 1):
                groups.append(group)
                grouped.update(group)
    groups += [[name] for name in sorted(set(quantized) - grouped)]
    if groups:
        with open(gguf_file.path, "rb") as f:
            for group in groups:
                weights.update(zip(group, read_codes(f, gguf_file, [quantized[name] for name in group])))
    return args, weights


# Bytes read from the file at a time by read_codes.
READ_CHUNK_BYTES = 1 << 20


def codes_form(ggml_type):
    """CodesForm(group, mins) of a quantized type's codes (formats.quant.codes_rows), as its record
    declares them: the group sharing a scale, and how its mins enter (none, add, subtract)."""
    return quant.CODES[ggml_type].form


def read_codes(f, gguf_file, tensors):
    """Int8BlockMatrix objects for 2-D `tensors` of one row length and one codes form (codes_form:
    the same group and mins, of one type or several), their codes rows of one contiguous array (and
    so their scales and mins).

    Each type's blocks become int8 codes and float32 scales (+ mins) per group
    (formats.quant.codes_rows), in Int8BlockMatrix's layout: exactly the dequantized weights. The
    file (`f`, open for binary reading) is read in READ_CHUNK_BYTES pieces, never mapped, so
    memory holds the codes once (per type: docs/formats.md's type table).
    """
    form, n_cols = codes_form(tensors[0].type), tensors[0].shape[1]
    if any(codes_form(t.type) != form or len(t.shape) != 2 or t.shape[1] != n_cols for t in tensors):
        raise ValueError("read_codes takes 2-D tensors of one codes form and one row length")
    group = form.group
    n_groups, n_rows = n_cols // group, sum(t.shape[0] for t in tensors)
    # Int8BlockMatrix's layout, in huge pages where large (memory.huge_page_array).
    codes = huge_page_array((n_groups, group, n_rows), np.int8)
    scales = huge_page_array((n_groups, n_rows), np.float32)
    mins, subtract = None, False
    pieces, row = [], 0
    for tensor in tensors:
        first, row_bytes = row, row_nbytes(tensor.type, n_cols)
        rows_per_read = max(1, READ_CHUNK_BYTES // row_bytes)
        buffer = np.empty(rows_per_read * row_bytes, dtype=np.uint8)
        for start in range(0, tensor.shape[0], rows_per_read):
            n = min(rows_per_read, tensor.shape[0] - start)
            raw = buffer[:n * row_bytes]
            read_exactly(f, gguf_file.data_offset + tensor.offset + start * row_bytes, raw, gguf_file.path,
                         tensor.name)
            piece = quant.codes_rows(raw.reshape(n, row_bytes), tensor.type, n_cols)
            codes[:, :, row:row + n] = piece.codes.transpose(1, 2, 0)
            scales[:, row:row + n] = piece.scales.T
            if piece.mins is not None:
                if mins is None:
                    mins, subtract = huge_page_array((n_groups, n_rows), np.float32), piece.subtract
                mins[:, row:row + n] = piece.mins.T
            row += n
        pieces.append((first, row))
    return [Int8BlockMatrix(codes[:, :, a:b], scales[:, a:b], None if mins is None else mins[:, a:b], subtract)
            for a, b in pieces]


def _int8_groups_matrix(w):
    """A v2 matrix as an Int8BlockMatrix when its groups tile the rows (they do whenever the group
    size divides the row length, as export.py chooses it), else dequantized."""
    n_rows, n_cols = w.shape
    if n_cols % w.group_size:
        return w.to_float32()
    n_blocks = n_cols // w.group_size
    return Int8BlockMatrix.from_rows(w.q.reshape(n_rows, n_blocks, w.group_size),
                                     w.scales.reshape(n_rows, n_blocks))


def weights_from_llama2c(checkpoint, fast=False):
    """(ModelArgs, weights) from a parsed llama2.c checkpoint of any version (formats.llama2c.read;
    fast: v2's int8 matrices become Int8BlockMatrix objects, for FastLlama)."""
    weights = {name: (_int8_groups_matrix(w) if fast and len(w.shape) == 2 else w.to_float32())
               if isinstance(w, Int8Groups) else w
               for name, w in checkpoint.weights.items()}
    return checkpoint.args, weights


def check_finite(weights, path, stored_name=str):
    """FormatError naming the first tensor (by `stored_name`, the file's own name for it) of
    `path` that holds a NaN or an infinity: such a model's logits are NaN, and every product
    and sampler downstream would fail on them instead. Float arrays are checked whole; a
    quantized matrix kept quantized by its scales and mins (its codes are small ints).

    A float32 value summed in float64 cannot overflow (2^60 of them stay below 1e57), so the
    sum is finite exactly when every value is: one pass, no temporary the size of the tensor."""
    for name, w in weights.items():
        parts = (w.scales, w.mins) if isinstance(w, Int8BlockMatrix) else (w,)
        with np.errstate(invalid="ignore"):         # inf + -inf: the NaN looked for, no warning
            finite = all(p is None or np.isfinite(np.sum(p, dtype=np.float64)) for p in parts)
        if not finite:
            raise FormatError(path, f"tensor {stored_name(name)}", None, "holds NaN or infinite values")


def build_model(args, weights, path, stored_name=str, dtype=np.float32, fast=False, threads=1, mmap=False):
    """A `Llama` computing in `dtype`, or with fast=True a `FastLlama` (float32 only) that shares
    large one-token products between `threads` threads and reads float32 matrices into huge-page
    memory (reference/runtime/memory.py) unless `mmap`: then they are used where they lie in the file's
    memory map (no copy at load, pages shared with other processes; decode may be slower).
    The weights are checked finite first (check_finite, naming `path`), after the copy: checking
    them through the file's map would make its pages resident too, the file's size twice in RSS."""
    if fast and not mmap:
        weights = resident(weights)
    check_finite(weights, path, stored_name)
    if not fast:
        return Llama(args, weights, dtype)
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"the fast path computes in float32, not {np.dtype(dtype)}")
    return FastLlama(args, weights, threads)
