"""llama2.c checkpoints (v0, v1, v2) and tokenizer.bin, read and written with NumPy.

Layouts, little-endian throughout (checked against llama2.c's export.py, run.c, runq.c and
tokenizer.py). D dim, F hidden_dim, L n_layers, V vocab_size, T max_seq_len, hd = D / n_heads,
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
          row-major flattened tensor; w[k] ≈ q[k] * scales[k // group_size]. (An early export.py
          wrote every q first and all scales after; runq.c and later export.py interleave them.)

  tokenizer.bin (the vocabulary size is not stored: it comes from the model)
    0     uint32 max_token_length, the longest piece in bytes
    4     per id 0..V-1: f32 score, uint32 n, n bytes of UTF-8 piece text

A checkpoint in memory uses llama2.c's (Meta's) state-dict names: `tok_embeddings.weight`,
`layers.{i}.attention.wq.weight`, `layers.{i}.feed_forward.w1.weight`, `norm.weight`, ...; an
absent `output.weight` means the classifier is shared with the embedding.
"""

import dataclasses
import math
import re
import struct
import types

import numpy as np

from formats import spec
from formats.atomic import atomic_write
from formats.binary import Cursor, map_file
from formats.vocab import TokenType, Vocab

MAGIC = 0x616B3432
HEADER_SIZE = 256        # v1 and v2
VERSIONS = (0, 1, 2)
DEFAULT_GROUP_SIZE = 64  # export.py's starting group size; halved until it divides dim
ROPE_THETA = 10000.0     # llama2.c's precompute_freqs_cis default

F32 = np.dtype("<f4")
I8 = np.dtype("i1")

_CONFIG = struct.Struct("<7i")
_V1_HEADER = struct.Struct("<Ii7iB")   # magic, version, config, shared_classifier
_V2_HEADER = struct.Struct("<Ii7iBi")  # ... and group_size at byte 37
_CONFIG_OFFSET = {0: 0, 1: 8, 2: 8}
_INT32_MAX = 2**31 - 1

OUTPUT = spec.OUTPUT
# The order each version stores its weights in; a layer kind expands to all L layers. The v0
# RoPE tables go between norm and output; v2 stores _NORMS as f32 and _MATRICES as int8 groups.
_V0_ORDER = ("tok_embeddings", "attention_norm", "attention.wq", "attention.wk", "attention.wv",
             "attention.wo", "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3",
             "norm")
_NORMS = ("attention_norm", "ffn_norm", "norm")
_MATRICES = ("tok_embeddings", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
             "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
_V1_ORDER = _NORMS + _MATRICES

# tokenizer.py's export writes BOS and EOS with newlines around them, so that run.c prints them
# on a line of their own, and every '▁' as a plain space.
_BOS_TEXT = "\n<s>\n"
_EOS_TEXT = "\n</s>\n"
_MARKER_PIECES = {_BOS_TEXT: "<s>", _EOS_TEXT: "</s>"}
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_SCORE_AND_LENGTH = struct.Struct("<fI")


@dataclasses.dataclass(frozen=True)
class Config:
    """The 7 int32 every llama2.c file starts its config with (vocab_size always positive here)."""
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_dim


_FIELDS = tuple(f.name for f in dataclasses.fields(Config))


@dataclasses.dataclass(eq=False)
class Int8Groups:
    """A v2 tensor: w[k] ≈ q[k] * scales[k // group_size] over the row-major flattened tensor.

    q: [numel] int8, scales: [numel / group_size] float32, shape: the tensor's shape.
    """
    q: np.ndarray
    scales: np.ndarray
    group_size: int
    shape: tuple

    def __post_init__(self):
        self.shape = tuple(int(n) for n in self.shape)
        numel = math.prod(self.shape)
        if (self.group_size <= 0 or numel % self.group_size or self.q.shape != (numel,)
                or self.scales.shape != (numel // self.group_size,)):
            raise ValueError(f"Int8Groups of shape {self.shape}, group size {self.group_size}: "
                             f"got q {self.q.shape} and scales {self.scales.shape}")

    def to_float32(self):
        """Dequantize as runq.c does: float(q) * scale, one float32 multiply per element."""
        groups = self.q.reshape(-1, self.group_size).astype(np.float32)  # [n_groups, gs]
        # A file's inf or NaN scale decodes to inf or NaN, as in runq.c: not worth a warning.
        with np.errstate(over="ignore", invalid="ignore"):
            return (groups * self.scales[:, None]).reshape(self.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """A llama2.c model: config and llama2.c-named weights.

    Weights are float32 arrays (read-only views into the file after `read` of v0/v1), or
    Int8Groups for the matrices of a v2 file (its norms stay float32). `shared_classifier` is
    derived from the weights (no `output.weight`: the output layer reuses tok_embeddings); when
    given, it must agree with them. `version` and `group_size` say what the checkpoint was read
    from; `write` takes its own.
    """
    config: Config
    weights: dict
    shared_classifier: bool | None = None
    version: int = 1
    group_size: int | None = None

    def __post_init__(self):
        shared = OUTPUT not in self.weights
        if self.shared_classifier is not None and bool(self.shared_classifier) != shared:
            raise ValueError(f"shared_classifier={self.shared_classifier} but output.weight is "
                             f"{'absent' if shared else 'present'}")
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
        return self.numel * self.dtype.itemsize


# ---------------------------------------------------------------------------------------------
# Shapes, sizes and layout


def weight_shapes(config, shared_classifier=True):
    """llama2.c name -> shape of every weight a model with `config` has (formats.spec's table)."""
    return spec.weight_shapes(types.SimpleNamespace(
        dim=config.dim, hidden_dim=config.hidden_dim, n_layers=config.n_layers,
        vocab_size=config.vocab_size, kv_dim=config.kv_dim, tie_embeddings=shared_classifier))


def _names(kinds, n_layers):
    """Weight names in storage order: each layer kind expands to layers 0..L-1."""
    names = []
    for kind in kinds:
        if kind in spec.LAYER_KINDS:
            names.extend(f"layers.{i}.{kind}.weight" for i in range(n_layers))
        else:
            names.append(f"{kind}.weight")
    return names


def default_group_size(dim):
    """export.py's rule: start at 64 and halve while it does not divide dim (288 -> 32)."""
    group_size = DEFAULT_GROUP_SIZE
    while dim % group_size:
        group_size //= 2
    return group_size


def file_size(config, version, shared_classifier=True, group_size=None):
    """The exact size in bytes of a file with this header, from the config alone.

    The reader compares this with the real size before it lays out a single tensor, so a header
    claiming billions of layers costs one multiplication, not a list of billions of entries.
    """
    D, F, L, V, KV = config.dim, config.hidden_dim, config.n_layers, config.vocab_size, config.kv_dim
    norms = (2 * L + 1) * D
    matrices = V * D + L * (2 * D * D + 2 * KV * D + 3 * F * D) + (0 if shared_classifier else V * D)
    if version == 0:
        rope = config.max_seq_len * config.head_dim  # two tables of (T, hd/2)
        return _CONFIG.size + 4 * (norms + matrices + rope)
    if version == 1:
        return HEADER_SIZE + 4 * (norms + matrices)
    # Every matrix's numel is a multiple of D, hence of group_size: the scales add up exactly.
    return HEADER_SIZE + 4 * norms + matrices + 4 * (matrices // group_size)


def layout(config, version, shared_classifier=True, group_size=None):
    """Every array the file stores, in file order, with its byte offset."""
    shapes = weight_shapes(config, shared_classifier)
    n_layers = config.n_layers
    output = [] if shared_classifier else [OUTPUT]
    if version == 0:
        rope_shape = (config.max_seq_len, config.head_dim // 2)
        arrays = [(name, shapes[name], F32) for name in _names(_V0_ORDER, n_layers)]
        arrays += [("freq_cis_real", rope_shape, F32), ("freq_cis_imag", rope_shape, F32)]
        arrays += [(name, shapes[name], F32) for name in output]
    elif version == 1:
        arrays = [(name, shapes[name], F32) for name in _names(_V1_ORDER, n_layers) + output]
    else:
        arrays = [(name, shapes[name], F32) for name in _names(_NORMS, n_layers)]
        for name in _names(_MATRICES, n_layers) + output:
            n_groups = math.prod(shapes[name]) // group_size
            arrays += [(name, shapes[name], I8), (name + ".scales", (n_groups,), F32)]
    infos = []
    offset = _CONFIG.size if version == 0 else HEADER_SIZE
    for name, shape, dtype in arrays:
        infos.append(TensorInfo(name, shape, dtype, offset))
        offset += infos[-1].nbytes
    return infos


def tensor_table(checkpoint):
    """`inspect --json`'s tensor list: every stored array with its llama2.c name and offset."""
    infos = layout(checkpoint.config, checkpoint.version, checkpoint.shared_classifier,
                   checkpoint.group_size)
    return [{"name": t.name, "shape": list(t.shape), "dtype": "i8" if t.dtype == I8 else "f32",
             "offset": t.offset} for t in infos]


def _config_problem(config):
    """The first (field, message) that makes `config` unusable, or None."""
    for name in _FIELDS:
        value = getattr(config, name)
        if not 0 < value <= _INT32_MAX:
            return name, f"must be a positive int32, got {value}"
    if config.dim % config.n_heads:
        return "n_heads", f"{config.n_heads} does not divide dim {config.dim}"
    if config.n_heads % config.n_kv_heads:
        return "n_kv_heads", f"{config.n_kv_heads} does not divide n_heads {config.n_heads}"
    if config.head_dim % 2:
        return "n_heads", f"head_dim = dim / n_heads = {config.head_dim} is odd; RoPE rotates pairs"
    return None


# ---------------------------------------------------------------------------------------------
# Maths the writers need: RoPE tables (v0) and int8 groups (v2)


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


def quantize(w, group_size):
    """Symmetric int8 quantization of flattened `w` in groups of `group_size` (export.py's
    quantize_q80; not GGUF's Q8_0).

    Per group scale = max|w| / 127 and q = round_half_to_even(w / scale), each step in float32
    as torch computes it, so q and scales are bit-identical to export.py's. A group of zeros
    (or one so small that max|w| / 127 underflows) gets scale 0 and q 0: export.py divides by
    zero there and casts NaN or inf to int8.

    >>> g = quantize([127.0, 0.5, 1.5, -2.5], group_size=4)   # scale 1: halves round to even
    >>> g.q.tolist(), g.scales.tolist()
    ([127, 0, 2, -2], [1.0])
    """
    w = np.asarray(w, dtype=np.float32)
    if w.size == 0 or w.size % group_size:
        raise ValueError(f"a tensor of {w.size} elements does not split into groups of {group_size}")
    groups = w.reshape(-1, group_size)                               # [n_groups, gs]
    scales = np.abs(groups).max(axis=1) / np.float32(127.0)          # [n_groups]
    if not np.isfinite(scales).all():
        raise ValueError("cannot quantize a tensor holding inf or NaN")
    quant = np.zeros_like(groups)
    np.divide(groups, scales[:, None], out=quant, where=scales[:, None] != 0)
    return Int8Groups(np.rint(quant).astype(np.int8).reshape(-1), scales, group_size, w.shape)


# ---------------------------------------------------------------------------------------------
# Reading checkpoints


def read(path):
    """Read a v0, v1 or v2 llama2.c checkpoint; the arrays are views into the mapped file.

    Raises FormatError, naming the field and its byte offset, for anything that is not a
    well-formed file.
    """
    cur = Cursor(map_file(path), path)
    version, config, shared, group_size = _read_header(cur)
    expected = file_size(config, version, shared, group_size)
    if expected != cur.size:
        raise cur.error("file size", f"the header describes a {expected}-byte file but it has "
                                     f"{cur.size} bytes", offset=min(expected, cur.size))
    infos = layout(config, version, shared, group_size)
    arrays = {t.name: cur.array(t.dtype, t.numel, t.name) for t in infos}
    weights = {}
    for name, shape in weight_shapes(config, shared).items():
        if version == 2 and arrays[name].dtype == I8:
            weights[name] = Int8Groups(arrays[name], arrays[name + ".scales"], group_size, shape)
        else:
            weights[name] = arrays[name].reshape(shape)
    return Checkpoint(config, weights, version=version, group_size=group_size)


def _read_header(cur):
    """Parse and check the header; returns (version, config, shared_classifier, group_size)."""
    # v1/v2 start with the magic, v0 with dim: no model has dim 1,634,415,666.
    if cur.u32("magic or config.dim") != MAGIC:
        cur.pos = 0
        values = _read_config(cur)
        shared = values["vocab_size"] > 0  # v0 flags an unshared classifier by a negative vocab
        values["vocab_size"] = abs(values["vocab_size"])
        return 0, _checked_config(cur, values, 0), shared, None
    version = cur.i32("version")
    if version not in (1, 2):
        raise cur.error("version", f"unsupported version {version} (this reader knows 1 and 2)", 4)
    config = _checked_config(cur, _read_config(cur), version)
    flag_at = cur.pos
    shared = cur.u8("shared_classifier")
    if shared not in (0, 1):
        raise cur.error("shared_classifier", f"must be 0 or 1, got {shared}", flag_at)
    group_size = None
    if version == 2:
        group_at = cur.pos
        group_size = cur.i32("group_size")
        if group_size <= 0 or config.dim % group_size:
            raise cur.error("group_size", f"{group_size} does not divide dim {config.dim}", group_at)
    _check_padding(cur)
    return version, config, bool(shared), group_size


def _read_config(cur):
    return {name: cur.i32(f"config.{name}") for name in _FIELDS}


def _checked_config(cur, values, version):
    config = Config(**values)
    problem = _config_problem(config)
    if problem:
        field, message = problem
        raise cur.error(f"config.{field}", message, _CONFIG_OFFSET[version] + 4 * _FIELDS.index(field))
    return config


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
    those tables. Raises ValueError for a config or weights that do not make a model.
    """
    config = checkpoint.config
    problem = _config_problem(config)
    if problem:
        raise ValueError(f"config.{problem[0]} {problem[1]}")
    if version not in VERSIONS:
        raise ValueError(f"unknown llama2.c version {version!r} (known: {VERSIONS})")
    if version != 2 and group_size is not None:
        raise ValueError("group_size applies to version 2 only")
    if version == 2:
        group_size = _choose_group_size(checkpoint, group_size)
    shared = OUTPUT not in checkpoint.weights
    spec.check_weights(checkpoint.weights, weight_shapes(config, shared))
    infos = layout(config, version, shared, group_size)
    arrays = _stored_arrays(checkpoint, infos, group_size)
    with atomic_write(path) as f:
        f.write(_header(config, version, shared, group_size))
        for info in infos:
            f.write(np.ascontiguousarray(arrays[info.name], dtype=info.dtype).tobytes())


def _choose_group_size(checkpoint, group_size):
    if group_size is None:
        group_size = checkpoint.group_size or default_group_size(checkpoint.config.dim)
    # Every matrix has a dimension of size dim, so a divisor of dim divides every numel too.
    if group_size <= 0 or checkpoint.config.dim % group_size:
        raise ValueError(f"group_size {group_size} does not divide dim {checkpoint.config.dim}")
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
    if "freq_cis_real" in {t.name for t in infos}:
        arrays["freq_cis_real"], arrays["freq_cis_imag"] = rope_tables(
            checkpoint.config.head_dim, checkpoint.config.max_seq_len)
    return arrays


def _as_groups(w, group_size):
    if isinstance(w, Int8Groups):
        if w.group_size == group_size:
            return w
        w = w.to_float32()  # regrouping: requantize the dequantized values
    return quantize(w, group_size)


def _header(config, version, shared, group_size):
    values = [getattr(config, name) for name in _FIELDS]
    if version == 0:
        if not shared:
            values[_FIELDS.index("vocab_size")] *= -1
        return _CONFIG.pack(*values)
    if version == 1:
        packed = _V1_HEADER.pack(MAGIC, version, *values, int(shared))
    else:
        packed = _V2_HEADER.pack(MAGIC, version, *values, int(shared), group_size)
    return packed.ljust(HEADER_SIZE, b"\0")


# ---------------------------------------------------------------------------------------------
# tokenizer.bin


def read_tokenizer(path, vocab_size=None):
    """Read a tokenizer.bin holding `vocab_size` pieces (the model's vocab_size), or, with
    vocab_size None, every piece up to the end of the file (each takes at least 8 bytes, so the
    loop is bounded by the file size).

    Pieces come back in SentencePiece's spelling (' ' -> '▁', "\\n<s>\\n" -> "<s>"). Token types
    are not stored, so they are inferred: CONTROL for the BOS/EOS markers, UNKNOWN for "<unk>" at
    id 0, BYTE for "<0xXX>", NORMAL otherwise. bos_id/eos_id are where the markers are (run.c's
    fixed 1 and 2 when absent).
    """
    if vocab_size is not None and vocab_size < 0:
        raise ValueError(f"vocab_size must be >= 0, got {vocab_size}")
    cur = Cursor(map_file(path), path)
    max_length = cur.u32("max_token_length")
    texts, scores = [], []
    i = 0
    while (i < vocab_size) if vocab_size is not None else (cur.pos < cur.size):
        scores.append(cur.unpack(_F32, f"token[{i}].score"))
        length_at = cur.pos
        length = cur.u32(f"token[{i}].length")
        # run.c sizes its merge buffer from max_token_length: a longer piece would overflow it.
        if length > max_length:
            raise cur.error(f"token[{i}].length", f"{length} bytes is longer than max_token_length "
                                                  f"{max_length}", length_at)
        texts.append(cur.utf8(length, f"token[{i}].bytes"))
        i += 1
    if cur.pos != cur.size:
        raise cur.error("end of vocabulary", f"{cur.size - cur.pos} bytes follow the {vocab_size} "
                                             "pieces: is vocab_size right?")
    pieces = [_MARKER_PIECES.get(text) or text.replace(" ", "\u2581") for text in texts]
    bos_id = texts.index(_BOS_TEXT) if _BOS_TEXT in texts else 1
    eos_id = texts.index(_EOS_TEXT) if _EOS_TEXT in texts else 2
    types = [_token_type(i, text, piece) for i, (text, piece) in enumerate(zip(texts, pieces))]
    return Vocab(pieces, scores, types, unk_id=0, bos_id=bos_id, eos_id=eos_id)


def _token_type(i, text, piece):
    if text in _MARKER_PIECES:
        return TokenType.CONTROL
    if i == 0 and piece == "<unk>":
        return TokenType.UNKNOWN
    if _BYTE_PIECE.fullmatch(piece):
        return TokenType.BYTE
    return TokenType.NORMAL


def write_tokenizer(vocab, path):
    """Write `vocab` as llama2.c's tokenizer.py exports it, atomically.

    The pieces at vocab.bos_id / eos_id are written as "\\n<s>\\n" / "\\n</s>\\n" whatever their
    text, and '▁' as ' ' (so a piece holding a literal ' ' reads back with '▁'): exactly
    tokenizer.py's output, byte for byte, for the same pieces and scores.
    """
    encoded = [_stored_text(vocab, i).encode("utf-8") for i in range(len(vocab))]
    parts = [_U32.pack(max((len(b) for b in encoded), default=0))]
    for score, data in zip(vocab.scores.tolist(), encoded):
        parts += [_SCORE_AND_LENGTH.pack(score, len(data)), data]
    with atomic_write(path) as f:
        f.write(b"".join(parts))


def _stored_text(vocab, i):
    if i == vocab.bos_id:
        return _BOS_TEXT
    if i == vocab.eos_id:
        return _EOS_TEXT
    return vocab.pieces[i].replace("\u2581", " ")
