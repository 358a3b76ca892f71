"""GGUF v3 (and v2, which has the same layout): read and write, by hand, little-endian only.

Byte layout (every integer little-endian; "string" = uint64 byte length + UTF-8 bytes, no NUL):

    offset 0   char[4]   magic "GGUF"
           4   uint32    version (3; 2 is read too — same layout)
           8   uint64    tensor_count
          16   uint64    kv_count
          24   kv_count  times:  string key, uint32 value_type, value
               tensor_count times (the tensor infos):
                         string name, uint32 n_dims (<= 4), uint64 ne[n_dims] (innermost first,
                         the reverse of the numpy shape), uint32 ggml_type, uint64 offset
               zero padding up to a multiple of the alignment  -> data_offset
               tensor data, each tensor at data_offset + its offset, each padded with zeros to
               the alignment (gguf-py and ggml also pad after the last tensor)

A value of type ARRAY is uint32 element_type + uint64 count + the elements (no per-element type
tag); arrays may nest. The alignment is the UINT32 key `general.alignment` (a power of two,
default 32). llama.cpp (gguf.cpp) requires tensor offsets to be contiguous in info order, each
padded to the alignment; we require the same, which also makes write(read(f)) byte-identical.

In memory a file is a `GGUFFile`: an ordered dict of `Value`s (each keeps its exact type, so a
UINT32 stays a UINT32) and a list of `Tensor`s whose data are views into the memory-mapped file.
Every count, length and offset read from the file is checked against the bytes that remain before
it is used, so a hostile header can neither allocate nor loop beyond what the file justifies.
"""

import dataclasses
import enum
import math
import struct

import numpy as np

from formats import quant
from formats.atomic import atomic_write
from formats.binary import Cursor, map_file
from formats.errors import FormatError
from formats.ggml import BLOCK, PLAIN_DTYPE, GGMLType

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
# Arrays of arrays are legal; a depth cap keeps a hostile file from exhausting the Python stack.
MAX_ARRAY_DEPTH = 32
# Python objects a header may make: each string read costs ~2 us, each array in an array ~30 us
# and ~800 bytes, so a header of millions of empty ones costs minutes. A real one holds a
# vocabulary and its merges (2 x 262,144 at most today), no arrays of arrays, and a few hundred
# tensors: the limits are far above that, and bound a header's read to seconds.
MAX_HEADER_ITEMS = {"STRING": 1 << 21, "ARRAY": 1 << 16}
MAX_TENSORS = 1 << 16
MAX_KV = 1 << 16
INT64_MAX = 2**63 - 1


class ValueType(enum.IntEnum):
    """Metadata value types (gguf.h `enum gguf_type`, gguf-py `GGUFValueType`)."""
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: their numpy dtype (BOOL is one byte, 0 or 1).
SCALAR_DTYPE = {
    ValueType.UINT8: np.dtype("u1"),
    ValueType.INT8: np.dtype("i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("u1"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}
# struct codes, spelled out: numpy's dtype.char for int64 is the platform's 'l', which struct's
# standard ("<") sizes read as 4 bytes.
_SCALAR_STRUCT = {t: struct.Struct("<" + c) for t, c in zip(SCALAR_DTYPE, "BbHhIifBQqd")}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# The fewest bytes one element of each type can take; bounds every count before looping on it.
_MIN_SIZE = {**{t: d.itemsize for t, d in SCALAR_DTYPE.items()}, ValueType.STRING: 8, ValueType.ARRAY: 12}


@dataclasses.dataclass(eq=False)
class Array:
    """An ARRAY value: `items` is a numpy array for numbers and BOOL (dtype bool), a list of str
    for STRING and a list of `Array` for nested arrays."""
    element_type: ValueType
    items: object

    def __len__(self):
        return len(self.items)

    def __eq__(self, other):
        if not isinstance(other, Array) or self.element_type != other.element_type:
            return False
        if self.element_type in SCALAR_DTYPE:
            a, b = np.asarray(self.items), np.asarray(other.items)
            if self.element_type == ValueType.BOOL:
                return a.shape == b.shape and np.array_equal(a.astype(bool), b.astype(bool))
            dtype = SCALAR_DTYPE[self.element_type]
            # Compare bit patterns so NaNs and -0.0 compare as the bytes they are.
            return a.shape == b.shape and a.astype(dtype).tobytes() == b.astype(dtype).tobytes()
        return list(self.items) == list(other.items)

    def to_python(self):
        """Plain lists (for JSON)."""
        if self.element_type == ValueType.ARRAY:
            return [item.to_python() for item in self.items]
        if self.element_type in SCALAR_DTYPE:
            return np.asarray(self.items).tolist()
        return list(self.items)


@dataclasses.dataclass(eq=False)
class Value:
    """A metadata value with its exact GGUF type: int, float, bool, str or `Array`."""
    type: ValueType
    value: object

    def __eq__(self, other):
        if not isinstance(other, Value) or self.type != other.type:
            return False
        if self.type in (ValueType.FLOAT32, ValueType.FLOAT64):
            pack = _SCALAR_STRUCT[self.type].pack
            return pack(self.value) == pack(other.value)
        return self.value == other.value


@dataclasses.dataclass(eq=False)
class Tensor:
    """A tensor: numpy-order `shape`; `data` is a typed array of that shape for plain types (BF16
    as its uint16 bit pattern) and a uint8 array of shape (*shape[:-1], row_bytes) for block
    types. `offset` is relative to the data section (set by `read`; `write` recomputes it)."""
    name: str
    type: GGMLType
    shape: tuple
    data: np.ndarray
    offset: int = None

    @classmethod
    def from_array(cls, name, array, ggml_type=GGMLType.F32):
        """Convert/quantize a float array (numpy order) to `ggml_type`; integer arrays to I8..I64."""
        ggml_type = GGMLType(ggml_type)
        array = np.asarray(array)
        if ggml_type in (GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64, GGMLType.F64):
            data = array.astype(PLAIN_DTYPE[ggml_type])
        else:
            data = quant.quantize(array, ggml_type)
            if ggml_type in PLAIN_DTYPE:
                data = data.view(PLAIN_DTYPE[ggml_type]).reshape(array.shape)
        return cls(name, ggml_type, tuple(array.shape), data)

    @property
    def nbytes(self):
        return tensor_nbytes(self.type, self.shape)

    def to_float32(self):
        """The values as float32 (dequantized for block types, upcast for F16/BF16)."""
        if self.type in (GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64, GGMLType.F64):
            return np.asarray(self.data, dtype=np.float32)
        # dequantize reads rows along the last axis; a 0-dim (scalar) tensor is one row of one.
        return quant.dequantize(self.data, self.type, self.shape or (1,)).reshape(self.shape)


@dataclasses.dataclass(eq=False)
class GGUFFile:
    """A whole GGUF file: ordered metadata and tensors in data order."""
    metadata: dict = dataclasses.field(default_factory=dict)
    tensors: list = dataclasses.field(default_factory=list)
    version: int = 3
    data_offset: int = None
    path: str = None

    @property
    def alignment(self):
        value = self.metadata.get("general.alignment")
        return DEFAULT_ALIGNMENT if value is None else value.value

    def tensor(self, name):
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


def tensor_nbytes(ggml_type, shape):
    """Bytes of a tensor of numpy `shape`; its last (innermost) dim must divide by the block."""
    block_size, type_size = BLOCK[ggml_type]
    n_rows = math.prod(shape[:-1]) if shape else 1
    row = shape[-1] if shape else 1
    if row % block_size:
        raise ValueError(f"row length {row} is not a multiple of {ggml_type.name}'s block size {block_size}")
    return n_rows * (row // block_size) * type_size


def _pad(n, alignment):
    return -(-n // alignment) * alignment


# ---------------------------------------------------------------------------------------- read


def read(path):
    """Parse a GGUF file; tensor data are zero-copy views into a read-only memory map."""
    buf = map_file(path)
    cur = Cursor(buf, path)
    mv = memoryview(buf)
    version, n_tensors, n_kv = _read_header(cur)
    metadata = _read_metadata(cur, mv, n_kv)
    alignment = _alignment(metadata, path)
    names = set()
    infos = [_read_tensor_info(cur, mv, i, names) for i in range(n_tensors)]
    data_offset = _pad(cur.pos, alignment)
    tensors = _tensors(buf, infos, data_offset, alignment, path)
    return GGUFFile(metadata, tensors, version, data_offset, str(path))


def _read_header(cur):
    """(version, tensor_count, kv_count) after the magic, each count bounded by the bytes left."""
    path = cur.path
    magic = cur.raw(4, "magic")
    if magic != MAGIC:
        raise FormatError(path, "magic", 0, f"expected b'GGUF', found {magic!r}")
    version = cur.u32("version")
    if version not in VERSIONS:
        raise FormatError(path, "version", 4, f"unsupported GGUF version {version} (reads 2 and 3)")
    n_tensors = cur.u64("tensor_count")
    n_kv = cur.u64("kv_count")
    # Each KV takes at least 13 bytes and each tensor info at least 24: bound both counts by the
    # bytes left so that a count near 2**64 fails here instead of looping.
    if n_kv > (cur.size - cur.pos) // 13:
        raise FormatError(path, "kv_count", 16, f"{n_kv} key-value pairs cannot fit in {cur.size} bytes")
    if n_tensors > (cur.size - cur.pos) // 24:
        raise FormatError(path, "tensor_count", 8, f"{n_tensors} tensor infos cannot fit in {cur.size} bytes")
    if n_tensors > MAX_TENSORS:
        raise FormatError(path, "tensor_count", 8, f"{n_tensors} tensors, over the limit of {MAX_TENSORS}")
    if n_kv > MAX_KV:
        raise FormatError(path, "kv_count", 16, f"{n_kv} key-value pairs, over the limit of {MAX_KV}")
    return version, n_tensors, n_kv


def _read_metadata(cur, mv, n_kv):
    """{key: Value} of the n_kv key-value pairs; a repeated key is refused."""
    cur.items_left = dict(MAX_HEADER_ITEMS)     # spent by _read_array on strings and arrays
    metadata = {}
    for i in range(n_kv):
        start = cur.pos
        key = _read_string(cur, mv, f"kv[{i}].key")
        if key in metadata:
            raise FormatError(cur.path, f"kv[{i}].key", start, f"duplicate key {key!r}")
        vtype = _read_type(cur, f"kv[{i}].type ({key})", cur.pos)
        metadata[key] = Value(vtype, _read_value(cur, mv, vtype, f"kv[{i}].value ({key})", 0))
    return metadata


def _alignment(metadata, path):
    """general.alignment, a UINT32 power of two, else DEFAULT_ALIGNMENT."""
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if value.type != ValueType.UINT32 or value.value == 0 or value.value & (value.value - 1):
        raise FormatError(path, "general.alignment", None,
                          f"must be a UINT32 power of two, found {value.type.name} {value.value!r}")
    return value.value


def _tensors(buf, infos, data_offset, alignment, path):
    """Tensor views into buf for each (name, type, shape, offset, info_pos): contiguous in info
    order, each padded to `alignment`, all inside the file."""
    tensors = []
    expected = 0
    for i, (name, ggml_type, shape, offset, info_pos) in enumerate(infos):
        field = f"tensor_info[{i}].offset ({name})"
        if offset != expected:
            why = "misaligned" if offset % alignment else ("overlaps the previous tensor" if offset < expected
                                                           else "leaves a gap after the previous tensor")
            raise FormatError(path, field, info_pos, f"offset {offset} {why}; tensors must be contiguous "
                                                     f"in info order, padded to {alignment} (expected {expected})")
        nbytes = tensor_nbytes(ggml_type, shape)
        start = data_offset + offset
        if start + nbytes > len(buf):
            raise FormatError(path, field, info_pos, f"data [{start}, {start + nbytes}) passes the end of the "
                                                     f"file ({len(buf)} bytes)")
        raw = buf[start:start + nbytes]
        if ggml_type in PLAIN_DTYPE:
            data = raw.view(PLAIN_DTYPE[ggml_type]).reshape(shape)
        else:
            block_size, type_size = BLOCK[ggml_type]
            data = raw.reshape(tuple(shape[:-1]) + (shape[-1] // block_size * type_size,))
        tensors.append(Tensor(name, ggml_type, shape, data, offset))
        expected = _pad(offset + nbytes, alignment)
    return tensors


def _read_string(cur, mv, field):
    start = cur.pos
    n = cur.u64(field + ".length")
    if n > cur.size - cur.pos:
        raise FormatError(cur.path, field, start, f"string of {n} bytes passes the end of the file ({cur.size} bytes)")
    end = cur.pos + n
    try:
        s = str(mv[cur.pos:end], "utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(cur.path, field, cur.pos + exc.start, "invalid UTF-8") from None
    cur.pos = end
    return s


def _read_type(cur, field, pos):
    raw = cur.u32(field)
    try:
        return ValueType(raw)
    except ValueError:
        raise FormatError(cur.path, field, pos, f"unknown value type {raw}") from None


def _read_value(cur, mv, vtype, field, depth):
    if vtype in _SCALAR_STRUCT:
        pos = cur.pos
        value = cur.unpack(_SCALAR_STRUCT[vtype], field)
        if vtype == ValueType.BOOL:
            if value > 1:
                raise FormatError(cur.path, field, pos, f"BOOL byte must be 0 or 1, found {value}")
            return bool(value)
        return value
    if vtype == ValueType.STRING:
        return _read_string(cur, mv, field)
    return _read_array(cur, mv, field, depth)


def _read_array(cur, mv, field, depth):
    start = cur.pos
    if depth >= MAX_ARRAY_DEPTH:
        raise FormatError(cur.path, field, start, f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
    etype = _read_type(cur, field + ".element_type", start)
    count_pos = cur.pos
    count = cur.u64(field + ".count")
    if count > (cur.size - cur.pos) // _MIN_SIZE[etype]:
        raise FormatError(cur.path, field + ".count", count_pos,
                          f"{count} {etype.name} elements cannot fit in the {cur.size - cur.pos} bytes left")
    if etype.name in MAX_HEADER_ITEMS:
        if count > cur.items_left[etype.name]:
            raise FormatError(cur.path, field + ".count", count_pos,
                              f"{count} {etype.name} items pass the limit of {MAX_HEADER_ITEMS[etype.name]} "
                              f"{etype.name} items in arrays in one header")
        cur.items_left[etype.name] -= count
    if etype in SCALAR_DTYPE:
        pos = cur.pos
        items = cur.array(SCALAR_DTYPE[etype], count, field)
        if etype == ValueType.BOOL:
            if items.size and items.max() > 1:
                bad = int(np.argmax(items > 1))
                raise FormatError(cur.path, f"{field}[{bad}]", pos + bad, "BOOL byte must be 0 or 1")
            items = items.view(np.bool_)
        return Array(etype, items)
    if etype == ValueType.STRING:
        return Array(etype, [_read_string(cur, mv, f"{field}[{j}]") for j in range(count)])
    items = []
    for j in range(count):
        sub = f"{field}[{j}]"
        items.append(_read_array(cur, mv, sub, depth + 1))
    return Array(etype, items)


def _read_tensor_info(cur, mv, i, names):
    info_pos = cur.pos
    name = _read_string(cur, mv, f"tensor_info[{i}].name")
    field = f"tensor_info[{i}] ({name})"
    if name in names:
        raise FormatError(cur.path, field + ".name", info_pos, f"duplicate tensor name {name!r}")
    names.add(name)
    dims_pos = cur.pos
    n_dims = cur.u32(field + ".n_dims")
    if n_dims > MAX_DIMS:
        raise FormatError(cur.path, field + ".n_dims", dims_pos, f"{n_dims} dims; GGUF allows at most {MAX_DIMS}")
    ne_pos = cur.pos
    ne = [cur.u64(f"{field}.ne[{d}]") for d in range(n_dims)]
    numel = 1
    for d, n in enumerate(ne):
        # ggml keeps ne as int64: each must fit, and so must their product.
        if n > INT64_MAX or (n and numel > INT64_MAX // n):
            raise FormatError(cur.path, f"{field}.ne[{d}]", ne_pos + 8 * d, f"dims {ne} overflow int64")
        numel *= n
    type_pos = cur.pos
    raw_type = cur.u32(field + ".type")
    try:
        ggml_type = GGMLType(raw_type)
    except ValueError:
        raise FormatError(cur.path, field + ".type", type_pos, f"unknown or unsupported ggml type {raw_type}") from None
    block_size, type_size = BLOCK[ggml_type]
    row = ne[0] if ne else 1
    if row % block_size:
        raise FormatError(cur.path, f"{field}.ne[0]", ne_pos, f"row length {row} is not a multiple of "
                                                              f"{ggml_type.name}'s block size {block_size}")
    # The data view is shaped by every dim: bound its extent, a zero dim counted as 1 (NumPy
    # refuses shapes whose other dims overflow the address space even when one dim is 0), by the
    # file's size before any view is made.
    extent = math.prod(max(n, 1) for n in ne) // block_size * type_size
    if extent > cur.size:
        raise FormatError(cur.path, f"{field}.ne", ne_pos, f"dims {ne} of {ggml_type.name} span {extent} "
                                                           f"bytes, which passes the end of the file "
                                                           f"({cur.size} bytes)")
    offset = cur.u64(field + ".offset")
    return name, ggml_type, tuple(reversed(ne)), offset, type_pos + 4


# --------------------------------------------------------------------------------------- write


def write(gguf_file, path):
    """Write `gguf_file` to `path` atomically; offsets are recomputed (contiguous, aligned)."""
    alignment = _check_alignment(gguf_file.metadata)
    header = bytearray()
    header += MAGIC
    header += _U32.pack(gguf_file.version)
    header += _U64.pack(len(gguf_file.tensors))
    header += _U64.pack(len(gguf_file.metadata))
    for key, value in gguf_file.metadata.items():
        if not isinstance(value, Value):
            raise TypeError(f"metadata[{key!r}] must be a formats.gguf.Value, got {type(value).__name__}")
        _pack_string(header, key)
        header += _U32.pack(value.type)
        _pack_value(header, value.type, value.value, key)

    blobs = []
    offset = 0
    names = set()
    for t in gguf_file.tensors:
        if t.name in names:
            raise ValueError(f"duplicate tensor name {t.name!r}")
        names.add(t.name)
        blob = _tensor_bytes(t)
        _pack_string(header, t.name)
        header += _U32.pack(len(t.shape))
        for n in reversed(t.shape):
            header += _U64.pack(n)
        header += _U32.pack(t.type)
        header += _U64.pack(offset)
        blobs.append(blob)
        offset = _pad(offset + len(blob), alignment)
    header += bytes(_pad(len(header), alignment) - len(header))

    with atomic_write(path) as f:
        f.write(header)
        for blob in blobs:
            f.write(blob)
            f.write(bytes(_pad(len(blob), alignment) - len(blob)))


def _check_alignment(metadata):
    value = metadata.get("general.alignment")
    if value is None:
        return DEFAULT_ALIGNMENT
    if value.type != ValueType.UINT32 or not isinstance(value.value, int) or value.value <= 0 \
            or value.value & (value.value - 1):
        raise ValueError(f"general.alignment must be a UINT32 power of two, got {value.type.name} {value.value!r}")
    return value.value


def _pack_string(out, s):
    data = s.encode("utf-8")
    out += _U64.pack(len(data))
    out += data


def _pack_value(out, vtype, value, where):
    vtype = ValueType(vtype)
    if vtype in _SCALAR_STRUCT:
        if vtype == ValueType.BOOL and not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{where}: BOOL value must be a bool, got {value!r}")
        try:
            out += _SCALAR_STRUCT[vtype].pack(value)
        except struct.error as exc:
            raise ValueError(f"{where}: {value!r} does not fit {vtype.name}: {exc}") from None
    elif vtype == ValueType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"{where}: STRING value must be a str, got {type(value).__name__}")
        _pack_string(out, value)
    else:
        if not isinstance(value, Array):
            raise ValueError(f"{where}: ARRAY value must be a formats.gguf.Array, got {type(value).__name__}")
        etype = ValueType(value.element_type)
        out += _U32.pack(etype)
        out += _U64.pack(len(value.items))
        if etype in SCALAR_DTYPE:
            items = np.asarray(value.items)
            if etype == ValueType.BOOL:
                if items.size and items.dtype != np.bool_:
                    raise ValueError(f"{where}: BOOL array items must be bools")
                out += items.astype(np.uint8).tobytes()
            else:
                dtype = SCALAR_DTYPE[etype]
                cast = items.astype(dtype)
                if items.size and items.dtype.kind in "iub" and not np.array_equal(cast, items):
                    raise ValueError(f"{where}: array values do not fit {etype.name}")
                out += cast.tobytes()
        else:
            for j, item in enumerate(value.items):
                _pack_value(out, etype, item, f"{where}[{j}]")


def _tensor_bytes(t):
    shape = tuple(int(n) for n in t.shape)
    if len(shape) > MAX_DIMS:
        raise ValueError(f"tensor {t.name!r}: {len(shape)} dims; GGUF allows at most {MAX_DIMS}")
    nbytes = tensor_nbytes(GGMLType(t.type), shape)
    data = np.ascontiguousarray(t.data)
    if t.type in PLAIN_DTYPE and data.dtype != PLAIN_DTYPE[t.type]:
        raise ValueError(f"tensor {t.name!r}: {GGMLType(t.type).name} data must be {PLAIN_DTYPE[t.type]}, "
                         f"got {data.dtype} (use Tensor.from_array to convert)")
    if data.nbytes != nbytes:
        raise ValueError(f"tensor {t.name!r}: {data.nbytes} bytes of data for shape {shape} of "
                         f"{GGMLType(t.type).name}, which takes {nbytes}")
    return memoryview(data.reshape(-1).view(np.uint8))
