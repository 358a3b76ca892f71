"""formats/gguf.py against hand-built bytes, against itself (round trips) and against gguf-py.

gguf-py (`pip install gguf`) is the oracle: GGUFReader must agree with our reader on every field
and tensor of files we write, our reader must agree with files GGUFWriter writes, and for the same
KVs and tensors in the same order our bytes must be identical to GGUFWriter's.
"""

import struct

import gguf as ggufpy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats import gguf
from formats.errors import FormatError
from formats.ggml import BLOCK, GGMLType
from formats.gguf import Array, GGUFFile, Tensor, Value, ValueType
from tests.support.crafted import GGUF_BAD_FILES

V = ValueType

# ------------------------------------------------------------------------------ strategies

_INT_RANGES = {
    V.UINT8: (0, 2**8 - 1), V.INT8: (-2**7, 2**7 - 1), V.UINT16: (0, 2**16 - 1), V.INT16: (-2**15, 2**15 - 1),
    V.UINT32: (0, 2**32 - 1), V.INT32: (-2**31, 2**31 - 1), V.UINT64: (0, 2**64 - 1), V.INT64: (-2**63, 2**63 - 1),
}
_NP = {V.UINT8: np.uint8, V.INT8: np.int8, V.UINT16: np.uint16, V.INT16: np.int16, V.UINT32: np.uint32,
       V.INT32: np.int32, V.UINT64: np.uint64, V.INT64: np.int64, V.FLOAT32: np.float32, V.FLOAT64: np.float64}


def scalar(vtype, allow_nan=True):
    if vtype in _INT_RANGES:
        return st.integers(*_INT_RANGES[vtype])
    if vtype == V.FLOAT32:
        return st.floats(width=32, allow_nan=allow_nan)
    if vtype == V.FLOAT64:
        return st.floats(allow_nan=allow_nan)
    if vtype == V.BOOL:
        return st.booleans()
    return st.text(max_size=12)


SCALAR_TYPES = [t for t in V if t != V.ARRAY]


@st.composite
def array_value(draw, depth=0, allow_empty=True, element_types=None):
    etypes = element_types or (SCALAR_TYPES + ([V.ARRAY] if depth < 2 else []))
    etype = draw(st.sampled_from(etypes))
    if etype == V.ARRAY:
        items = draw(st.lists(array_value(depth + 1, allow_empty, element_types),
                              min_size=0 if allow_empty else 1, max_size=3))
        return Array(etype, items)
    items = draw(st.lists(scalar(etype), min_size=0 if allow_empty else 1, max_size=6))
    if etype in _NP:
        return Array(etype, np.array(items, dtype=_NP[etype]))
    if etype == V.BOOL:
        return Array(etype, np.array(items, dtype=bool))
    return Array(etype, items)


@st.composite
def value(draw, allow_empty=True):
    vtype = draw(st.sampled_from(list(V)))
    if vtype == V.ARRAY:
        return Value(vtype, draw(array_value(allow_empty=allow_empty)))
    v = draw(scalar(vtype))
    if vtype == V.STRING and not allow_empty and not v:
        v = "x"
    return Value(vtype, v)


WRITABLE_TYPES = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1,
                  GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64,
                  GGMLType.F64]


@st.composite
def tensor(draw, name):
    ggml_type = draw(st.sampled_from(WRITABLE_TYPES))
    block = BLOCK[ggml_type][0]
    n_dims = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 3)) for _ in range(n_dims - 1)] + [block * draw(st.integers(1, 3))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if ggml_type in (GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64):
        array = rng.integers(-100, 100, size=shape)
    else:
        array = rng.standard_normal(shape).astype(np.float32)
    return Tensor.from_array(name, array, ggml_type)


@st.composite
def gguf_file(draw, allow_empty=True):
    keys = draw(st.lists(st.text(min_size=1, max_size=16), max_size=8, unique=True))
    metadata = {k: draw(value(allow_empty)) for k in keys if k != "general.alignment"}
    alignment = draw(st.sampled_from([None, 1, 2, 4, 8, 16, 32, 64, 256]))
    if alignment is not None:
        metadata["general.alignment"] = Value(V.UINT32, alignment)
    names = draw(st.lists(st.text(min_size=1, max_size=12), max_size=4, unique=True))
    tensors = [draw(tensor(n)) for n in names]
    return GGUFFile(metadata, tensors)


def assert_same_tensors(ours, theirs):
    assert [t.name for t in ours] == [t.name for t in theirs]
    for a, b in zip(ours, theirs):
        assert (a.type, tuple(a.shape)) == (b.type, tuple(b.shape)), a.name
        assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes(), a.name


# ------------------------------------------------------------------------- known answer


def test_known_answer_one_tensor_file(tmp_path):
    """A one-KV, one-tensor file spelled out byte by byte."""
    expected = b"".join([
        b"GGUF", struct.pack("<I", 3),            # magic, version
        struct.pack("<QQ", 1, 1),                  # tensor_count, kv_count
        struct.pack("<Q", 4), b"name",             # key "name"
        struct.pack("<I", 8),                      # type STRING
        struct.pack("<Q", 2), b"hi",               # value "hi"
        struct.pack("<Q", 1), b"w",                # tensor name "w"
        struct.pack("<I", 2),                      # n_dims
        struct.pack("<QQ", 3, 2),                  # ne innermost first: numpy shape (2, 3)
        struct.pack("<I", 0),                      # F32
        struct.pack("<Q", 0),                      # offset
    ])
    expected += bytes(-len(expected) % 32)         # pad to the default alignment (32)
    data = np.arange(6, dtype="<f4")
    expected += data.tobytes() + bytes(32 - 24)    # 24 bytes of data, padded to 32

    path = tmp_path / "one.gguf"
    path.write_bytes(expected)
    gf = gguf.read(path)
    assert gf.version == 3 and gf.alignment == 32 and gf.data_offset == 96
    assert gf.metadata == {"name": Value(V.STRING, "hi")}
    (t,) = gf.tensors
    assert (t.name, t.type, t.shape, t.offset) == ("w", GGMLType.F32, (2, 3), 0)
    np.testing.assert_array_equal(t.data, data.reshape(2, 3))

    out = tmp_path / "out.gguf"
    gguf.write(GGUFFile({"name": Value(V.STRING, "hi")}, [Tensor("w", GGMLType.F32, (2, 3), data.reshape(2, 3))]), out)
    assert out.read_bytes() == expected


def test_reading_is_zero_copy(tmp_path):
    path = tmp_path / "z.gguf"
    gguf.write(GGUFFile({}, [Tensor.from_array("w", np.ones((4, 32), np.float32))]), path)
    t = gguf.read(path).tensors[0]
    assert isinstance(t.data.base, np.memmap) or isinstance(t.data, np.memmap)
    assert not t.data.flags.writeable


# ------------------------------------------------------------------------ round trips


@settings(max_examples=200)
@given(gguf_file())
def test_write_read_round_trip_is_exact(tmp_path_factory, gf):
    path = tmp_path_factory.mktemp("rt") / "a.gguf"
    gguf.write(gf, path)
    back = gguf.read(path)
    assert list(back.metadata) == list(gf.metadata)
    for key in gf.metadata:
        assert back.metadata[key] == gf.metadata[key], key
    assert_same_tensors(back.tensors, gf.tensors)
    # write(read(f)) reproduces f byte for byte
    again = path.with_name("b.gguf")
    gguf.write(back, again)
    assert again.read_bytes() == path.read_bytes()


def _ours_vs_ggufpy_reader(path, gf, version=3):
    reader = ggufpy.GGUFReader(path)
    assert reader.alignment == gf.alignment
    assert reader.data_offset == gf.data_offset
    # GGUFReader lists the header as three pseudo-fields first.
    header = ["GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"]
    assert list(reader.fields) == header + list(gf.metadata)
    assert [reader.fields[k].contents() for k in header] == [version, len(gf.tensors), len(gf.metadata)]
    for key, ours in gf.metadata.items():
        field = reader.fields[key]
        assert field.types[0] == ours.type, key
        if ours.type == V.ARRAY:
            if ours.value.element_type != V.ARRAY:
                if len(ours.value):
                    assert field.types[-1] == ours.value.element_type
                theirs = field.contents()
                expected = ours.value.to_python()
                if ours.value.element_type in (V.FLOAT32, V.FLOAT64):
                    np.testing.assert_array_equal(np.array(theirs, dtype=float), np.array(expected, dtype=float))
                else:
                    assert theirs == expected, key
        elif ours.type in (V.FLOAT32, V.FLOAT64):
            np.testing.assert_array_equal(field.contents(), ours.value)
        else:
            assert field.contents() == ours.value, key
    assert [t.name for t in reader.tensors] == [t.name for t in gf.tensors]
    for theirs, ours in zip(reader.tensors, gf.tensors):
        assert int(theirs.tensor_type) == int(ours.type)
        assert tuple(int(n) for n in reversed(theirs.shape)) == tuple(ours.shape)
        assert theirs.data_offset == gf.data_offset + ours.offset
        assert theirs.data.tobytes() == np.asarray(ours.data).tobytes()


@settings(max_examples=100)
@given(gguf_file())
def test_ggufpy_reader_agrees_with_our_files(tmp_path_factory, gf):
    path = tmp_path_factory.mktemp("py") / "a.gguf"
    gguf.write(gf, path)
    _ours_vs_ggufpy_reader(path, gguf.read(path))


@settings(max_examples=50)
@given(gguf_file())
def test_version_2_files_read_write_and_agree_with_ggufpy(tmp_path_factory, gf):
    """GGUF v2 has v3's layout (v1 had 32-bit counts): we read it, keep its version on write,
    and gguf-py reads what we wrote as the same v2 file."""
    gf.version = 2
    path = tmp_path_factory.mktemp("v2") / "a.gguf"
    gguf.write(gf, path)
    assert path.read_bytes()[4:8] == struct.pack("<I", 2)
    back = gguf.read(path)
    assert back.version == 2
    _ours_vs_ggufpy_reader(path, back, version=2)
    again = path.with_name("b.gguf")
    gguf.write(back, again)
    assert again.read_bytes() == path.read_bytes()


def _ggufpy_write(path, gf):
    """The same KVs and tensors through gguf.GGUFWriter, in the same order."""
    keys = list(gf.metadata)
    assert keys and keys[0] == "general.architecture"
    writer = ggufpy.GGUFWriter(path, gf.metadata["general.architecture"].value)
    for key in keys[1:]:
        v = gf.metadata[key]
        if key == "general.alignment":
            writer.data_alignment = v.value
        if v.type == V.ARRAY:
            writer.add_key_value(key, _py_items(v.value), V.ARRAY, sub_type=v.value.element_type)
        else:
            writer.add_key_value(key, v.value, v.type)
    for t in gf.tensors:
        data = np.asarray(t.data)
        if t.type in (GGMLType.BF16,):
            writer.add_tensor(t.name, data.view(np.uint8).reshape(*t.shape[:-1], -1), raw_dtype=ggufpy.GGMLQuantizationType.BF16)
        elif data.dtype == np.uint8:
            writer.add_tensor(t.name, data, raw_dtype=ggufpy.GGMLQuantizationType(int(t.type)))
        else:
            writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _py_items(arr):
    if arr.element_type == V.ARRAY:
        return [_py_items(a) for a in arr.items]
    return arr.to_python()


# gguf-py drops empty strings and empty arrays, and infers nested-array element types from Python
# values (int -> INT32, float -> FLOAT32, str, bool), so the byte-identity test stays inside that.
_NESTABLE = [V.INT32, V.FLOAT32, V.BOOL, V.STRING]


@st.composite
def ggufpy_compatible_file(draw):
    keys = draw(st.lists(st.text(min_size=1, max_size=16).filter(
        lambda k: k not in ("general.architecture", "general.alignment")), max_size=8, unique=True))
    metadata = {"general.architecture": Value(V.STRING, draw(st.text(min_size=1, max_size=8)))}
    for k in keys:
        vtype = draw(st.sampled_from(list(V)))
        if vtype == V.ARRAY:
            nested = draw(st.booleans())
            if nested:
                inner = draw(st.sampled_from(_NESTABLE))
                items = draw(st.lists(array_value(allow_empty=False, element_types=[inner]), min_size=1, max_size=3))
                metadata[k] = Value(V.ARRAY, Array(V.ARRAY, items))
            else:
                metadata[k] = Value(V.ARRAY, draw(array_value(allow_empty=False, element_types=SCALAR_TYPES)))
        elif vtype == V.STRING:
            metadata[k] = Value(vtype, draw(st.text(min_size=1, max_size=12)))
        else:
            metadata[k] = Value(vtype, draw(scalar(vtype, allow_nan=False)))
    alignment = draw(st.sampled_from([None, 1, 8, 32, 64]))
    if alignment is not None:
        metadata["general.alignment"] = Value(V.UINT32, alignment)
    names = draw(st.lists(st.text(min_size=1, max_size=12), max_size=4, unique=True))
    return GGUFFile(metadata, [draw(tensor(n)) for n in names])


@settings(max_examples=100)
@given(ggufpy_compatible_file())
def test_bytes_identical_to_ggufpy_writer_and_we_read_its_files(tmp_path_factory, gf):
    d = tmp_path_factory.mktemp("id")
    theirs, ours = d / "theirs.gguf", d / "ours.gguf"
    _ggufpy_write(theirs, gf)
    gguf.write(gf, ours)
    assert ours.read_bytes() == theirs.read_bytes()
    back = gguf.read(theirs)
    assert list(back.metadata) == list(gf.metadata)
    for key in gf.metadata:
        assert back.metadata[key] == gf.metadata[key], key
    assert_same_tensors(back.tensors, gf.tensors)


def test_empty_string_and_empty_array_survive(tmp_path):
    """gguf-py's writer silently drops these; ours keeps them."""
    md = {"s": Value(V.STRING, ""), "a": Value(V.ARRAY, Array(V.INT32, np.zeros(0, np.int32))),
          "n": Value(V.ARRAY, Array(V.ARRAY, [Array(V.STRING, []), Array(V.UINT8, np.zeros(0, np.uint8))]))}
    path = tmp_path / "e.gguf"
    gguf.write(GGUFFile(md), path)
    back = gguf.read(path)
    assert back.metadata == md
    assert list(ggufpy.GGUFReader(path).fields)[3:] == ["s", "a", "n"]


def test_dequantized_tensor_equals_ggufpy(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.standard_normal((3, 64)).astype(np.float32)
    tensors = [Tensor.from_array(t.name, array, t) for t in
               (GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q5_1)]
    path = tmp_path / "q.gguf"
    gguf.write(GGUFFile({}, tensors), path)
    for ours, theirs in zip(gguf.read(path).tensors, ggufpy.GGUFReader(path).tensors):
        expected = ggufpy.quants.dequantize(theirs.data, theirs.tensor_type)
        np.testing.assert_array_equal(ours.to_float32(), expected.reshape(ours.shape))


# ------------------------------------------------------------------------- bad input


def _small_valid_file(tmp_path):
    md = {"general.architecture": Value(V.STRING, "llama"),
          "k.u32": Value(V.UINT32, 7),
          "k.arr": Value(V.ARRAY, Array(V.STRING, ["a", "bc"])),
          "k.nested": Value(V.ARRAY, Array(V.ARRAY, [Array(V.INT16, np.array([1, -2], np.int16))]))}
    tensors = [Tensor.from_array("a", np.ones((2, 32), np.float32), GGMLType.Q8_0),
               Tensor.from_array("b", np.arange(3, dtype=np.float32))]
    path = tmp_path / "valid.gguf"
    gguf.write(GGUFFile(md, tensors), path)
    return path


def test_truncation_at_every_byte_raises_format_error(tmp_path):
    data = _small_valid_file(tmp_path).read_bytes()
    cut = tmp_path / "cut.gguf"
    # The last tensor ends before the final padding; cuts inside that padding still parse.
    end_of_data = len(data) - (-(3 * 4) % 32)
    for n in range(end_of_data):
        cut.write_bytes(data[:n])
        with pytest.raises(FormatError) as info:
            gguf.read(cut)
        assert str(cut) in str(info.value)


def _patched(tmp_path, data, offset, new):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data[:offset] + new + data[offset + len(new):])
    return path


@pytest.mark.parametrize("case", sorted(GGUF_BAD_FILES))
def test_bad_input_raises_format_error_naming_field(tmp_path, case):
    data, fragment = GGUF_BAD_FILES[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(FormatError) as info:
        gguf.read(path)
    assert type(info.value) is FormatError and isinstance(info.value, ValueError)
    assert fragment in str(info.value), str(info.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="magic at byte 0"):
        gguf.read(empty)
    with pytest.raises(FormatError) as info:
        gguf.read(tmp_path / "missing.gguf")
    assert str(info.value) == f"{tmp_path / 'missing.gguf'}: file: No such file or directory"


@settings(max_examples=200)
@given(st.data())
def test_random_byte_flips_only_raise_format_error(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("flip")
    original = _small_valid_file(d).read_bytes()
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), min_size=1,
                               max_size=4))
    mutated = bytearray(original)
    for pos, byte in flips:
        mutated[pos] = byte
    path = d / "m.gguf"
    path.write_bytes(bytes(mutated))
    try:
        gguf.read(path)
    except FormatError:
        pass


def test_writer_rejects_impossible_files(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        gguf.write(GGUFFile({"general.alignment": Value(V.UINT32, 3)}), tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="does not fit UINT8"):
        gguf.write(GGUFFile({"k": Value(V.UINT8, 256)}), tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="duplicate tensor name"):
        t = Tensor.from_array("t", np.ones(4, np.float32))
        gguf.write(GGUFFile({}, [t, t]), tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="block size"):
        Tensor.from_array("t", np.ones((2, 48), np.float32), GGMLType.Q8_0)
    with pytest.raises(ValueError, match="F32 data must be float32"):
        gguf.write(GGUFFile({}, [Tensor("t", GGMLType.F32, (2,), np.ones(2, np.float64))]), tmp_path / "a.gguf")
    assert not list(tmp_path.iterdir()), "a failed write must leave nothing behind"

