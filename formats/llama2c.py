"""llama2.c checkpoints (v0, v1, v2), read and written with NumPy.

Layouts, little-endian throughout (checked against llama2.c's export.py, run.c and runq.c).
D dim, F hidden_dim, L n_layers, V vocab_size, T max_seq_len, hd = D / n_heads,
KV = n_kv_heads * hd. "×L" means one tensor per layer, layer 0 first; matrices are torch
nn.Linear weights, (out, in), row-major.

  config, 28 bytes: int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len

  v0, legacy and headerless (what run.c reads)
    0     config; vocab_size < 0 says the classifier is not shared (output is stored)
    28    f32 tok_embeddings (V, D)
          f32 attention_norm ×L (D), wq ×L (D, D), wk ×L (KV, D), wv ×L (KV, D), wo ×L (D, D)
          f32 ffn_norm ×L (D), w1 ×L (F, D), w2 ×L (D, F), w3 ×L (F, D)
          f32 norm (D)
          f32 freq_cis_real (T, hd/2), freq_cis_imag (T, hd/2): RoPE tables, skipped on read
          f32 output (V, D), only when vocab_size < 0

  v1, 256-byte header
    0     uint32 magic 0x616b3432 ("24ka" on disk)
    4     int32 version = 1
    8     config (vocab_size > 0)
    36    uint8 shared_classifier (1: output is not stored)
    37    zeros up to 256
    256   f32 attention_norm ×L, ffn_norm ×L, norm, tok_embeddings, wq ×L, wk ×L, wv ×L, wo ×L,
          w1 ×L, w2 ×L, w3 ×L, [output]

  v2, int8 groups (what runq.c reads)
    0     as v1, with version = 2
    37    int32 group_size (unaligned)
    41    zeros up to 256
    256   f32 attention_norm ×L, ffn_norm ×L, norm
          then for each of tok_embeddings, wq ×L, wk ×L, wv ×L, wo ×L, w1 ×L, w2 ×L, w3 ×L,
          [output]: int8 q[numel] and right after it f32 scales[numel / group_size], over the
          row-major flattened tensor; w[k] ≈ q[k] * scales[k // group_size] (formats/llama2c_quant.py).
          (An early export.py wrote every q first and all scales after; runq.c and later
          export.py interleave them.)

`ORDER` below is these layouts as data: `layout` (every array with its offset) and `file_size`
(the size a header implies, without listing its tensors) are both read from it.

A checkpoint in memory is a formats.spec.ModelArgs and llama2.c-named weights: the config's 7
fields and tie_embeddings (= shared classifier) come from the file; the fields it does not store
(norm_eps, rope_theta, multiple_of, dropout) keep ModelArgs' defaults (its eps and theta are
llama2.c's; hidden_dim is stored, so multiple_of is not needed).
tokenizer.bin is formats/llama2c_tokenizer.py; its read_tokenizer and write_tokenizer are part
of this module's API.
"""

import dataclasses
import math
import struct

import numpy as np

from formats import spec
from formats.atomic import atomic_write
from formats.binary import Cursor, map_file
from formats.llama2c_quant import Int8Groups, default_group_size, quantize
from formats.llama2c_tokenizer import read_tokenizer, write_tokenizer

__all__ = ["Checkpoint", "TensorInfo", "CONFIG_FIELDS", "read", "write", "read_tokenizer", "write_tokenizer",
           "args_from_config", "config_of", "file_size", "layout", "tensor_table", "rope_tables"]

MAGIC = 0x616B3432
HEADER_SIZE = 256        # v1 and v2
VERSIONS = (0, 1, 2)
ROPE_THETA = 10000.0     # llama2.c's precompute_freqs_cis default, for the v0 tables

F32 = np.dtype("<f4")
I8 = np.dtype("i1")

# The config, in file order: each an int32, each a formats.spec.ModelArgs field.
CONFIG_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len")
_CONFIG = struct.Struct("<" + "i" * len(CONFIG_FIELDS))
_V1_HEADER = struct.Struct("<Ii" + "i" * len(CONFIG_FIELDS) + "B")   # magic, version, config, shared
_V2_HEADER = struct.Struct("<Ii" + "i" * len(CONFIG_FIELDS) + "Bi")  # ... and group_size at byte 37
_CONFIG_OFFSET = {0: 0, 1: 8, 2: 8}
_DATA_OFFSET = {0: _CONFIG.size, 1: HEADER_SIZE, 2: HEADER_SIZE}
_INT32_MAX = 2**31 - 1

OUTPUT = spec.OUTPUT
ROPE_TABLES = ("freq_cis_real", "freq_cis_imag")
# What each version stores, in file order, by kind (formats.spec.kind_shapes): a layer kind is one
# array per layer, "output" is stored only when the classifier is not shared, ROPE_TABLES are
# v0's. v2 stores every matrix (2-D) as int8 groups and the norms (1-D) as f32.
_NORMS = ("attention_norm", "ffn_norm", "norm")
_MATRICES = ("tok_embeddings", *(kind for kind in spec.LAYER_KINDS if kind not in _NORMS), "output")
ORDER = {0: ("tok_embeddings", *spec.LAYER_KINDS, "norm", *ROPE_TABLES, "output"),
         1: _NORMS + _MATRICES,
         2: _NORMS + _MATRICES}


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """A llama2.c model: its ModelArgs and llama2.c-named weights.

    Weights are float32 arrays (read-only views into the file after `read` of v0/v1), or
    Int8Groups for the matrices of a v2 file (its norms stay float32). `shared_classifier` is
    args.tie_embeddings, and the weights must agree (no `output.weight`: the output layer reuses
    tok_embeddings); when given, it must agree too. `version` and `group_size` say what the
    checkpoint was read from; `write` takes its own.
    """
    args: spec.ModelArgs
    weights: dict
    shared_classifier: bool | None = None
    version: int = 1
    group_size: int | None = None

    def __post_init__(self):
        shared = OUTPUT not in self.weights
        present = "absent" if shared else "present"
        if self.shared_classifier is not None and bool(self.shared_classifier) != shared:
            raise ValueError(f"shared_classifier={self.shared_classifier} but output.weight is {present}")
        if self.args.tie_embeddings != shared:
            raise ValueError(f"args.tie_embeddings={self.args.tie_embeddings} but output.weight is {present}")
        object.__setattr__(self, "shared_classifier", shared)  # frozen: set once, here


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One array stored in a llama2.c file: a weight, the scales of a v2 weight
    ("<name>.scales") or a v0 RoPE table ("freq_cis_real", "freq_cis_imag")."""
    name: str
    shape: tuple
    dtype: np.dtype
    offset: int

    @property
    def numel(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return _nbytes(self.shape, self.dtype)


def _nbytes(shape, dtype):
    return math.prod(shape) * dtype.itemsize


# ---------------------------------------------------------------------------------------------
# The config <-> ModelArgs


def args_from_config(config, shared_classifier=True):
    """The ModelArgs of a file whose config is `config` ({field: int} over CONFIG_FIELDS).

    Raises spec.ArgsError whose field is the config field to blame and whose message starts
    "config.<field>": for a value that is not a positive int32 (the file's range), or for values
    that make no model (ModelArgs' checks).
    >>> args_from_config(dict(dim=8, hidden_dim=12, n_layers=2, n_heads=3, n_kv_heads=1, vocab_size=10,
    ...                       max_seq_len=4))
    Traceback (most recent call last):
    ...
    formats.spec.ArgsError: config.n_heads 3 does not divide dim 8
    """
    for name in CONFIG_FIELDS:
        if not 0 < config[name] <= _INT32_MAX:
            raise _config_error(name, f"must be a positive int32, got {config[name]}")
    try:
        return spec.ModelArgs(**config, tie_embeddings=shared_classifier)
    except spec.ArgsError as exc:
        raise _config_error(exc.field, exc.detail) from None


def _config_error(field, detail):
    return spec.ArgsError(field, detail, f"config.{field} {detail}")


def config_of(args):
    """The config a file stores for `args`: {field: value} in CONFIG_FIELDS order (vocab_size
    positive; v0 negates it for an unshared classifier). ValueError when an int32 cannot hold one."""
    config = {name: getattr(args, name) for name in CONFIG_FIELDS}
    for name, value in config.items():
        if value > _INT32_MAX:
            raise ValueError(f"config.{name} {value} does not fit in an int32")
    return config


# ---------------------------------------------------------------------------------------------
# Sizes and layout, read from ORDER


def _stored_kinds(args, version):
    """(kind, shape) of every kind of array the file stores, in file order."""
    shapes = spec.kind_shapes(args)
    shapes.update(dict.fromkeys(ROPE_TABLES, (args.max_seq_len, args.head_dim // 2)))
    return [(kind, shapes[kind]) for kind in ORDER[version]
            if not (kind == "output" and args.tie_embeddings)]


def _names(kind, n_layers):
    """The names of the arrays of one kind, in storage order: a layer kind gives layers 0..L-1."""
    if kind in spec.LAYER_KINDS:
        return [spec.layer_weight(i, kind) for i in range(n_layers)]
    return [kind if kind in ROPE_TABLES else f"{kind}.weight"]


def _arrays(name, shape, version, group_size):
    """(name, shape, dtype) of what one tensor is stored as: float32, or in v2 a matrix's int8
    q and then its float32 scales. Every matrix's numel is a multiple of D, hence of group_size."""
    if version == 2 and len(shape) == 2:
        return [(name, shape, I8), (f"{name}.scales", (math.prod(shape) // group_size,), F32)]
    return [(name, shape, F32)]


def file_size(args, version, group_size=None):
    """The exact size in bytes of a file with this header, from the header alone.

    The reader compares this with the real size before it lays out a single tensor: a kind of
    tensor stored once per layer counts n_layers times, so a header claiming billions of layers
    costs a multiplication, not a list of billions of entries.
    """
    size = _DATA_OFFSET[version]
    for kind, shape in _stored_kinds(args, version):
        count = args.n_layers if kind in spec.LAYER_KINDS else 1
        size += count * sum(_nbytes(s, dtype) for _, s, dtype in _arrays(kind, shape, version, group_size))
    return size


def layout(args, version, group_size=None):
    """Every array the file stores, in file order, with its byte offset."""
    infos, offset = [], _DATA_OFFSET[version]
    for kind, shape in _stored_kinds(args, version):
        for name in _names(kind, args.n_layers):
            for array in _arrays(name, shape, version, group_size):
                infos.append(TensorInfo(*array, offset))
                offset += infos[-1].nbytes
    return infos


def tensor_table(checkpoint):
    """`inspect --json`'s tensor list: every stored array with its llama2.c name and offset."""
    infos = layout(checkpoint.args, checkpoint.version, checkpoint.group_size)
    return [{"name": t.name, "shape": list(t.shape), "dtype": "i8" if t.dtype == I8 else "f32",
             "offset": t.offset} for t in infos]


def rope_tables(head_dim, max_seq_len):
    """The v0 tables freq_cis_real/imag: cos and sin of t * freq_j, each [T, hd/2] float32.

    As llama2.c's model.py builds them (precompute_freqs_cis): freq_j = 1 / theta^(2j/hd) with
    the exponent, the power, the reciprocal and the angle t * freq_j each rounded to float32
    where torch rounds them. The power, cos and sin are evaluated in float64 and rounded once,
    so the tables are reproducible on any machine; torch's float32 powf/cosf/sinf may differ
    from them in the last bits (tests/test_llama2c.py measures by how much).

    >>> cos, sin = rope_tables(4, 2)
    >>> cos[0].tolist(), sin[0].tolist()   # position 0 is the identity rotation
    ([1.0, 1.0], [0.0, 0.0])
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)  # [hd/2]
    power = (ROPE_THETA ** exponent.astype(np.float64)).astype(np.float32)
    freqs = np.float32(1.0) / power                                                  # [hd/2]
    angles = np.arange(max_seq_len, dtype=np.float32)[:, None] * freqs[None, :]      # [T, hd/2]
    angles = angles.astype(np.float64)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Reading checkpoints


def read(path):
    """Read a v0, v1 or v2 llama2.c checkpoint; the arrays are views into the mapped file.

    Raises FormatError, naming the field and its byte offset, for anything that is not a
    well-formed file.
    """
    cur = Cursor(map_file(path), path)
    version, args, group_size = _read_header(cur)
    expected = file_size(args, version, group_size)
    if expected != cur.size:
        raise cur.error("file size", f"the header describes a {expected}-byte file but it has "
                                     f"{cur.size} bytes", offset=min(expected, cur.size))
    arrays = {t.name: cur.array(t.dtype, t.numel, t.name) for t in layout(args, version, group_size)}
    weights = {}
    for name, shape in spec.weight_shapes(args).items():
        if arrays[name].dtype == I8:
            weights[name] = Int8Groups(arrays[name], arrays[name + ".scales"], group_size, shape)
        else:
            weights[name] = arrays[name].reshape(shape)
    return Checkpoint(args, weights, version=version, group_size=group_size)


def _read_header(cur):
    """Parse and check the header; returns (version, args, group_size)."""
    # v1/v2 start with the magic, v0 with dim: no model has dim 1,634,415,666.
    if cur.u32("magic or config.dim") != MAGIC:
        cur.pos = 0
        config = _read_config(cur)
        shared = config["vocab_size"] > 0  # v0 flags an unshared classifier by a negative vocab
        config["vocab_size"] = abs(config["vocab_size"])
        return 0, _checked_args(cur, config, shared, 0), None
    version = cur.i32("version")
    if version not in (1, 2):
        raise cur.error("version", f"unsupported version {version} (this reader knows 1 and 2)", 4)
    config = _read_config(cur)
    flag_at = cur.pos
    shared = cur.u8("shared_classifier")
    if shared not in (0, 1):
        raise cur.error("shared_classifier", f"must be 0 or 1, got {shared}", flag_at)
    args = _checked_args(cur, config, bool(shared), version)
    group_size = None
    if version == 2:
        group_at = cur.pos
        group_size = cur.i32("group_size")
        if group_size <= 0 or args.dim % group_size:
            raise cur.error("group_size", f"{group_size} does not divide dim {args.dim}", group_at)
    _check_padding(cur)
    return version, args, group_size


def _read_config(cur):
    return {name: cur.i32(f"config.{name}") for name in CONFIG_FIELDS}


def _checked_args(cur, config, shared, version):
    """args_from_config, its error located at the field's byte offset."""
    try:
        return args_from_config(config, shared)
    except spec.ArgsError as exc:
        offset = _CONFIG_OFFSET[version] + 4 * CONFIG_FIELDS.index(exc.field)  # int32 each
        raise cur.error(f"config.{exc.field}", exc.detail, offset) from None


def _check_padding(cur):
    """The header's unused bytes must be zero: they are reserved, and writing them back as zeros
    is what keeps write(read(f)) byte-identical."""
    start = cur.pos
    padding = np.frombuffer(cur.raw(HEADER_SIZE - start, "header padding"), dtype=np.uint8)
    nonzero = np.flatnonzero(padding)
    if nonzero.size:
        raise cur.error("header padding", f"byte {padding[nonzero[0]]} where zeros are reserved",
                        start + int(nonzero[0]))


# ---------------------------------------------------------------------------------------------
# Writing checkpoints


def write(checkpoint, path, version, group_size=None):
    """Write `checkpoint` as a llama2.c file of `version` 0, 1 or 2, atomically.

    v2 quantizes the matrices in groups of `group_size` (default: the checkpoint's own group
    size if it was read from v2, else export.py's rule, default_group_size(dim)); Int8Groups
    weights of that group size are written as they are, so write(read(f)) reproduces a v2 file
    byte for byte. v0/v1 dequantize Int8Groups. v0's RoPE tables are recomputed (rope_tables),
    so a v0 file exported by torch comes back identical except possibly for the last bits of
    those tables. Raises ValueError for weights that do not fit the checkpoint's args, or args
    the config cannot store.
    """
    args = checkpoint.args
    if version not in VERSIONS:
        raise ValueError(f"unknown llama2.c version {version!r} (known: {VERSIONS})")
    if version != 2 and group_size is not None:
        raise ValueError("group_size applies to version 2 only")
    if version == 2:
        group_size = _choose_group_size(checkpoint, group_size)
    header = _header(args, version, group_size)
    spec.check_weights(checkpoint.weights, spec.weight_shapes(args))
    infos = layout(args, version, group_size)
    arrays = _stored_arrays(checkpoint, infos, group_size)
    with atomic_write(path) as f:
        f.write(header)
        for info in infos:
            f.write(np.ascontiguousarray(arrays[info.name], dtype=info.dtype).tobytes())


def _choose_group_size(checkpoint, group_size):
    dim = checkpoint.args.dim
    if group_size is None:
        group_size = checkpoint.group_size or default_group_size(dim)
    # Every matrix has a dimension of size dim, so a divisor of dim divides every numel too.
    if group_size <= 0 or dim % group_size:
        raise ValueError(f"group_size {group_size} does not divide dim {dim}")
    return group_size


def _stored_arrays(checkpoint, infos, group_size):
    """TensorInfo name -> the array stored there."""
    arrays = {}
    quantized = {t.name for t in infos if t.dtype == I8}
    for name, w in checkpoint.weights.items():
        if name in quantized:
            groups = _as_groups(w, group_size)
            arrays[name], arrays[name + ".scales"] = groups.q, groups.scales
        elif isinstance(w, Int8Groups):
            arrays[name] = w.to_float32()
        else:
            arrays[name] = np.asarray(w, dtype=np.float32)
    if ROPE_TABLES[0] in {t.name for t in infos}:
        args = checkpoint.args
        arrays.update(zip(ROPE_TABLES, rope_tables(args.head_dim, args.max_seq_len)))
    return arrays


def _as_groups(w, group_size):
    if isinstance(w, Int8Groups):
        if w.group_size == group_size:
            return w
        w = w.to_float32()  # regrouping: requantize the dequantized values
    return quantize(w, group_size)


def _header(args, version, group_size):
    config = config_of(args)
    shared = args.tie_embeddings
    if version == 0:
        if not shared:
            config["vocab_size"] *= -1
        return _CONFIG.pack(*config.values())
    if version == 1:
        packed = _V1_HEADER.pack(MAGIC, version, *config.values(), int(shared))
    else:
        packed = _V2_HEADER.pack(MAGIC, version, *config.values(), int(shared), group_size)
    return packed.ljust(HEADER_SIZE, b"\0")
