"""safetensors: read and write, by hand (the `safetensors` package is only a test oracle).

Byte layout:

    offset 0       uint64    N, the header's length in bytes, little-endian
           8       N bytes   the header: a UTF-8 JSON object, padded with spaces (0x20) so that
                             the data starts at a multiple of 8 (the package's writer does so;
                             a reader takes any N)
           8 + N   data      every tensor's bytes, little-endian, C order, back to back

The header maps each tensor name to its dtype, numpy-order shape and [begin, end) byte offsets
relative to the start of the data; an optional "__metadata__" object maps strings to strings:

    {"__metadata__":{"format":"pt"},
     "norm.weight":{"dtype":"F32","shape":[288],"data_offsets":[0,1152]}}

What the package's reader requires, and ours too: N <= 100,000,000; sorted by begin, the tensors
tile the data exactly (the first begins at 0, each begins where the previous one ends, the last
ends at the end of the file); end - begin = prod(shape) * the dtype's size. Ours also refuses
what the package lets through: repeated names, entry keys other than those three, and shapes
NumPy cannot describe (over 32 dims, or dims whose product, zeros left out, passes 2**63 bytes).

What the package's writer does, and so ours, byte for byte: tensors in order of dtype, widest
first (DTYPES below, reversed), then by name; "__metadata__" first; compact JSON (no spaces),
non-ASCII as raw UTF-8, control characters escaped. The package keeps the metadata in a Rust
HashMap, so with several keys its order differs from run to run; ours keeps the dict's order.

A file in memory is a `SafetensorsFile`: ordered `Tensor`s whose arrays are read-only views into
the memory-mapped file (zero-copy), and the metadata. Every length and offset read is checked
against the file's size first, so a hostile header raises `FormatError` naming the file, the
field and a byte offset, and never allocates beyond what the file holds.

A sharded checkpoint (Hugging Face's `model.safetensors.index.json`: {"metadata": {...},
"weight_map": {tensor name: shard file name}}) is read by `read_index`.
"""

import dataclasses
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from formats import quant
from formats.atomic import atomic_write
from formats.binary import Cursor, map_file
from formats.errors import FormatError
from formats.files import MAX_JSON_BYTES, confined, parse_json, read_capped
from formats.ggml import GGMLType

# dtype name -> numpy dtype, in the package's order (its Rust enum, by increasing alignment).
# NumPy has no bfloat16: BF16 is kept as its uint16 bit pattern (`Tensor.to_float32` widens it).
DTYPES = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "U64": np.dtype("<u8"),
}
_RANK = {name: rank for rank, name in enumerate(DTYPES)}
# numpy dtype -> name, for arrays given without a dtype name (uint16 is U16, never BF16).
_NAME_OF = {dtype: name for name, dtype in DTYPES.items() if name != "BF16"}

METADATA = "__metadata__"
ENTRY_KEYS = ("dtype", "shape", "data_offsets")
MAX_HEADER = 100_000_000        # the package's MAX_HEADER_SIZE
MAX_DIMS = 32                   # NumPy 1.x's limit (2.x allows 64)
# A Llama of 126 layers has 1,140 tensors; a header of a million empty ones is not a model.
MAX_TENSORS = 1 << 16
INT64_MAX = 2**63 - 1
_HEADER_START = 8
_U64 = struct.Struct("<Q")


@dataclasses.dataclass(eq=False)
class Tensor:
    """A tensor: `dtype` a DTYPES name, `data` an array of the tensor's shape in DTYPES[dtype]."""
    dtype: str
    data: np.ndarray

    @classmethod
    def from_array(cls, array, dtype=None):
        """Wrap a numpy array; `dtype` (a DTYPES name) converts it, BF16 rounding to nearest even.

        >>> Tensor.from_array(np.float32([1, 2.5])).dtype
        'F32'
        >>> hex(Tensor.from_array(np.float32([1 + 2**-8]), "BF16").data[0])   # a tie: rounds to even
        '0x3f80'
        """
        array = np.asarray(array)
        if dtype is None:
            dtype = _NAME_OF.get(array.dtype.newbyteorder("<"))
            if dtype is None:
                raise ValueError(f"no safetensors dtype for numpy {array.dtype}")
        if dtype not in DTYPES:
            raise ValueError(f"unknown safetensors dtype {dtype!r}; dtypes: {', '.join(DTYPES)}")
        if dtype == "BF16":
            # quantize reads rows along the last axis: a 0-d array is one row of one.
            bits = quant.quantize(array.reshape(array.shape or (1,)), GGMLType.BF16)
            return cls(dtype, bits.view(DTYPES[dtype]).reshape(array.shape))
        return cls(dtype, array.astype(DTYPES[dtype], copy=False))

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def nbytes(self):
        return self.data.size * DTYPES[self.dtype].itemsize

    def to_float32(self):
        """The values as float32: F32 as is (still a view), others converted, BF16 widened."""
        if self.dtype == "BF16":
            return quant.dequantize(self.data, GGMLType.BF16, self.shape or (1,)).reshape(self.shape)
        return np.asarray(self.data, dtype=np.float32)


@dataclasses.dataclass(eq=False)
class SafetensorsFile:
    """A whole file: name -> Tensor (in data order when read) and the optional str -> str
    metadata (None when the header has no "__metadata__")."""
    tensors: dict = dataclasses.field(default_factory=dict)
    metadata: dict = None
    path: str = None


# ------------------------------------------------------------------------------------ reading


def _label(name, limit=60):
    """A tensor name for an error message: quoted, escaped to one line, cut when long."""
    text = repr(name)
    return text if len(text) <= limit else text[:limit] + "...'"


def _parse_header(text, path):
    """The header text -> dict; refuses invalid JSON, repeated keys and a non-object."""
    def unique(pairs):
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen = set()
            repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise FormatError(path, "header", _HEADER_START, f"key {_label(repeated)} appears twice")
        return obj

    try:
        header = json.loads(text, object_pairs_hook=unique)
    except FormatError:
        raise
    except RecursionError:
        raise FormatError(path, "header", _HEADER_START, "JSON nested too deeply") from None
    except ValueError as exc:       # JSONDecodeError, or an int past Python's digit limit
        raise FormatError(path, "header", _HEADER_START, f"invalid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError(path, "header", _HEADER_START,
                          f"must be a JSON object, got a JSON {type(header).__name__}")
    return header


def _metadata(value, path):
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise FormatError(path, f"header[{METADATA!r}]", _HEADER_START,
                          "must be an object of strings to strings")
    return value


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(name, entry, path):
    """Check one header entry -> (dtype, shape, begin, end); every check before any arithmetic
    that a hostile value could make huge."""
    field = f"header[{_label(name)}]"

    def fail(what, message):
        return FormatError(path, f"{field}{what}", _HEADER_START, message)

    if not isinstance(entry, dict):
        raise fail("", f"must be an object, got a JSON {type(entry).__name__}")
    if set(entry) != set(ENTRY_KEYS):
        raise fail("", f"keys {sorted(entry)}, expected exactly {list(ENTRY_KEYS)}")
    dtype, shape, offsets = (entry[key] for key in ENTRY_KEYS)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise fail(".dtype", f"unknown dtype {_label(dtype)}; dtypes: {', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(map(_is_count, shape)):
        raise fail(".shape", f"must be a list of at most {MAX_DIMS} non-negative ints")
    # NumPy cannot even describe an empty array whose other dims multiply past the address space.
    itemsize = DTYPES[dtype].itemsize
    if math.prod(d for d in shape if d) > INT64_MAX // itemsize:
        raise fail(".shape", f"{len(shape)} dims whose product passes 2**63 bytes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
        raise fail(".data_offsets", "must be a list of two non-negative ints")
    begin, end = offsets
    if end < begin:
        raise fail(".data_offsets", f"end {end} is before begin {begin}")
    nbytes = math.prod(shape) * itemsize
    if end - begin != nbytes:
        raise fail(".data_offsets", f"span {end - begin} bytes but shape {tuple(shape)} of {dtype} "
                                    f"takes {nbytes}")
    return dtype, tuple(shape), begin, end


def _tile(entries, data_start, size, path):
    """Check that the entries, sorted by offsets, cover the data exactly, in place."""
    entries.sort(key=lambda e: (e[3], e[4]))
    data_size = size - data_start
    expected, previous = 0, None
    for name, _, _, begin, end in entries:
        field = f"tensor[{_label(name)}].data_offsets"
        if end > data_size:
            raise FormatError(path, field, data_start + begin,
                              f"[{begin}, {end}) passes the end of the data ({data_size} bytes)")
        if begin < expected:
            raise FormatError(path, field, data_start + begin,
                              f"[{begin}, {end}) overlaps tensor {_label(previous)}")
        if begin > expected:
            raise FormatError(path, field, data_start + begin,
                              f"begins at {begin}, leaving bytes {expected}..{begin} unused")
        expected, previous = end, name
    if expected != data_size:
        raise FormatError(path, "data", data_start + expected,
                          f"{data_size - expected} bytes after the last tensor belong to none")


def read(path):
    """Parse a .safetensors file into a `SafetensorsFile` (arrays are views into the file)."""
    path = str(path)
    buf = map_file(path)
    cur = Cursor(buf, path)
    n = cur.u64("header_length")
    if n > MAX_HEADER:
        # The value is not shown: in a file that is not safetensors it is 8 of its bytes.
        raise cur.error("header_length", f"over the {MAX_HEADER}-byte limit: not a safetensors file", 0)
    text = cur.utf8(n, "header")
    # Every entry names "data_offsets" once: count them before json builds a dict for each.
    if text.count('"data_offsets"') > MAX_TENSORS:
        raise FormatError(path, "header", _HEADER_START, f"more than {MAX_TENSORS} tensors, the limit for a "
                                                         "model file")
    header = _parse_header(text, path)
    metadata = _metadata(header.pop(METADATA, None), path)
    entries = [(name, *_entry(name, entry, path)) for name, entry in header.items()]
    data_start = _HEADER_START + n
    _tile(entries, data_start, cur.size, path)
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        raw = buf[data_start + begin:data_start + end]
        tensors[name] = Tensor(dtype, raw.view(DTYPES[dtype]).reshape(shape))
    return SafetensorsFile(tensors, metadata, path)


def read_index(path):
    """Read a sharded checkpoint from its index (model.safetensors.index.json) -> name -> Tensor,
    in the index's order. Each shard is a file beside the index and holds exactly the tensors
    the index assigns to it."""
    path = Path(path)
    index = parse_json(read_capped(path, MAX_JSON_BYTES), path, "index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise FormatError(path, "weight_map", None, "must be an object of tensor names to file names")
    if len(weight_map) > MAX_TENSORS:
        raise FormatError(path, "weight_map", None, f"{len(weight_map)} tensors, over the limit of {MAX_TENSORS}")
    by_shard = {}
    for name, file_name in weight_map.items():
        # A shard is a file beside the index, never a path that leaves its folder.
        if os.path.basename(file_name) != file_name or file_name in ("", ".", "..") or "\0" in file_name:
            raise FormatError(path, f"weight_map[{_label(name)}]", None,
                              f"{_label(file_name)} is not a file name beside the index")
        by_shard.setdefault(file_name, set()).add(name)
    tensors = {}
    for file_name, names in by_shard.items():
        shard = read(confined(path.parent, path.parent / file_name))
        if set(shard.tensors) != names:
            missing, extra = sorted(names - set(shard.tensors)), sorted(set(shard.tensors) - names)
            raise FormatError(shard.path, "tensors", None,
                              f"the index lists {[_label(n) for n in missing[:3]]} here, which the "
                              f"file lacks; the file holds {[_label(n) for n in extra[:3]]}, "
                              f"which the index puts elsewhere")
        tensors.update(shard.tensors)
    return {name: tensors[name] for name in weight_map}


# ------------------------------------------------------------------------------------ writing


def _ordered(st_file):
    """The tensors in the package's order: widest dtype first, then by name."""
    for name, tensor in st_file.tensors.items():
        if name == METADATA or not isinstance(name, str):
            raise ValueError(f"{name!r} cannot name a tensor")
        if tensor.dtype not in DTYPES or tensor.data.dtype.newbyteorder("<") != DTYPES[tensor.dtype]:
            raise ValueError(f"tensor {name!r}: {tensor.data.dtype} data for dtype {tensor.dtype!r}")
    return sorted(st_file.tensors.items(), key=lambda item: (-_RANK[item[1].dtype], item[0]))


def header_bytes(st_file):
    """The first 8 + N bytes of the file: the header length and the padded JSON header."""
    header = {}
    if st_file.metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in st_file.metadata.items()):
            raise ValueError("metadata must map strings to strings")
        header[METADATA] = st_file.metadata
    offset = 0
    for name, tensor in _ordered(st_file):
        header[name] = {"dtype": tensor.dtype, "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    # serde_json's compact form: no spaces, non-ASCII as is, control characters escaped.
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return _U64.pack(len(text)) + text


def write(st_file, path):
    """Write `st_file` to `path` atomically, as the safetensors package would."""
    head = header_bytes(st_file)
    with atomic_write(path) as f:
        f.write(head)
        for _, tensor in _ordered(st_file):
            data = np.ascontiguousarray(tensor.data, dtype=DTYPES[tensor.dtype])
            f.write(data.reshape(-1).view(np.uint8))
