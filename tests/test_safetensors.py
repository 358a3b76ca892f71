"""formats/safetensors.py against hand-built bytes, against itself and against the safetensors
package (`pip install safetensors`), the oracle: for the same tensors and metadata our bytes are
its bytes, we read what it writes, and the hostile headers below are refused by both."""

import doctest
import json
import struct

import numpy as np
import pytest
import safetensors.numpy as st_numpy
import safetensors.torch as st_torch
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from formats import safetensors
from formats.errors import FormatError
from formats.safetensors import SafetensorsFile, Tensor
from tests.support.crafted import SAFETENSORS_BAD

# Every dtype numpy can hold natively, and odd names: non-ASCII, control characters, quotes,
# backslashes, U+2028 (escaped by some JSON writers, not by serde_json), DEL.
ARRAYS = {
    "b": np.array([True, False]), "u8": np.arange(3, dtype=np.uint8), "i8": np.arange(-2, 1, dtype=np.int8),
    "i16": np.arange(2, dtype=np.int16), "u16": np.arange(2, dtype=np.uint16),
    "f16": np.float16([0.5, -2]), "i32": np.int32([-7]), "u32": np.uint32([2**32 - 1]),
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f64": np.float64([np.pi]),
    "i64": np.int64([-2**63]), "u64": np.uint64([2**64 - 1]),
    "scalar": np.array(1.5, np.float32), "empty": np.zeros((0, 3), np.float32),
    "ü 👋\n\x01\u2028\x7f\"\\": np.arange(4, dtype=np.float32),
}


def ours(arrays, metadata=None):
    return SafetensorsFile({name: Tensor.from_array(a) for name, a in arrays.items()}, metadata)


def written(st_file, tmp_path):
    safetensors.write(st_file, tmp_path / "x.safetensors")
    return (tmp_path / "x.safetensors").read_bytes()


def header_of(data):
    (n,) = struct.unpack_from("<Q", data)
    return json.loads(data[8:8 + n]), n


# ------------------------------------------------------------------------------ known answer


def test_docstring_examples():
    result = doctest.testmod(safetensors)
    assert result.attempted > 0 and result.failed == 0


def test_one_tensor_byte_by_byte(tmp_path):
    """The package's own serialization example, spelled out."""
    header = b'{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'   # 64 bytes
    assert len(header) == 64                   # already a multiple of 8: no padding
    expected = (struct.pack("<Q", 64) + header
                + struct.pack("<6f", 0, 1, 2, 3, 4, 5))          # 00 00 00 00 | 00 00 80 3f | ...
    st_file = ours({"attn.0": np.arange(6, dtype=np.float32).reshape(1, 2, 3)})
    assert written(st_file, tmp_path) == expected
    (tmp_path / "k.safetensors").write_bytes(expected)
    back = safetensors.read(tmp_path / "k.safetensors")
    assert back.metadata is None and list(back.tensors) == ["attn.0"]
    np.testing.assert_array_equal(back.tensors["attn.0"].data, np.arange(6).reshape(1, 2, 3))


def test_empty_file_is_an_empty_object_padded(tmp_path):
    assert written(SafetensorsFile(), tmp_path) == struct.pack("<Q", 8) + b"{}      "


# ---------------------------------------------------------------------- against the package


@pytest.mark.parametrize("metadata", [None, {}, {"format": "pt"}])
def test_bytes_identical_to_the_package(tmp_path, metadata):
    assert written(ours(ARRAYS, metadata), tmp_path) == st_numpy.save(ARRAYS, metadata=metadata)


def test_bf16_and_f16_identical_to_torch(tmp_path):
    """BF16 rounds to nearest even as torch does; both wider-first ordered with the rest."""
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)) * 1000
    theirs = st_torch.save({"b": x.bfloat16(), "h": x.half(), "f": x})
    st_file = SafetensorsFile({"b": Tensor.from_array(x.numpy(), "BF16"), "h": Tensor.from_array(x.numpy(), "F16"),
                               "f": Tensor.from_array(x.numpy())})
    assert written(st_file, tmp_path) == theirs
    back = safetensors.read(tmp_path / "x.safetensors").tensors
    np.testing.assert_array_equal(back["b"].to_float32(), x.bfloat16().float().numpy())
    np.testing.assert_array_equal(back["h"].to_float32(), x.half().float().numpy())


def test_several_metadata_keys_same_header_any_order(tmp_path):
    """The package keeps metadata in a Rust HashMap: its key order changes from run to run."""
    metadata = {"format": "pt", "b": "1", "a": "ü", "z": ""}
    mine, theirs = written(ours(ARRAYS, metadata), tmp_path), st_numpy.save(ARRAYS, metadata=metadata)
    (mine_header, n), (their_header, m) = header_of(mine), header_of(theirs)
    assert mine_header == their_header and n == m and mine[8 + n:] == theirs[8 + m:]


def test_reads_the_package_files_as_views(tmp_path):
    path = tmp_path / "theirs.safetensors"
    path.write_bytes(st_numpy.save(ARRAYS, metadata={"format": "np"}))
    back = safetensors.read(path)
    assert back.metadata == {"format": "np"} and set(back.tensors) == set(ARRAYS)
    for name, array in ARRAYS.items():
        tensor = back.tensors[name]
        assert tensor.data.dtype == array.dtype and tensor.shape == array.shape
        np.testing.assert_array_equal(tensor.data, array)
        # zero-copy: a read-only view into the mapped file
        assert not tensor.data.flags.writeable and not tensor.data.flags.owndata
    assert written(back, tmp_path) == path.read_bytes()


NUMPY_DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, np.int32, np.uint32,
                np.float32, np.float64, np.int64, np.uint64]


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    raw = draw(st.binary(min_size=np.dtype(dtype).itemsize * int(np.prod(shape)),
                         max_size=np.dtype(dtype).itemsize * int(np.prod(shape))))
    array = np.frombuffer(raw, dtype=np.uint8).view(np.uint8 if dtype == np.bool_ else dtype)
    return (array % 2 == 1 if dtype == np.bool_ else array).reshape(shape)


@settings(max_examples=150)
@given(tensors=st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"),
                               arrays(), max_size=5),
       metadata=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=1))
def test_any_tensors_match_the_package_and_round_trip(tmp_path_factory, tensors, metadata):
    # The package writes '{},"__metadata__":{}}' (not JSON) for no tensors and empty metadata.
    assume(tensors or metadata != {})
    tmp_path = tmp_path_factory.mktemp("st")
    data = written(ours(tensors, metadata), tmp_path)
    assert data == st_numpy.save(tensors, metadata=metadata)
    back = safetensors.read(tmp_path / "x.safetensors")
    assert written(back, tmp_path_factory.mktemp("again")) == data


# --------------------------------------------------------------------------------- sharded


def shards(tmp_path, index):
    st_numpy.save_file({"a": np.float32([1, 2]), "b": np.float32([3])}, str(tmp_path / "s1.safetensors"))
    st_numpy.save_file({"c": np.float16([4])}, str(tmp_path / "s2.safetensors"))
    (tmp_path / "index.json").write_text(json.dumps(index))
    return tmp_path / "index.json"


def test_sharded_read_in_index_order(tmp_path):
    path = shards(tmp_path, {"metadata": {"total_size": 14},
                             "weight_map": {"c": "s2.safetensors", "a": "s1.safetensors", "b": "s1.safetensors"}})
    tensors = safetensors.read_index(path)
    assert list(tensors) == ["c", "a", "b"]
    np.testing.assert_array_equal(tensors["a"].data, [1, 2])
    assert tensors["c"].dtype == "F16"


@pytest.mark.parametrize("weight_map, fragment", [
    ({"a": "s1.safetensors"}, "the file holds [\"'b'\"]"),
    ({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s1.safetensors"}, "lists [\"'c'\"] here"),
    ({"a": "../s1.safetensors"}, "not a file name beside the index"),
    ({"a": "s3.safetensors"}, "s3.safetensors: file"),
    ([], "weight_map"),
])
def test_sharded_refusals(tmp_path, weight_map, fragment):
    with pytest.raises(FormatError) as info:
        safetensors.read_index(shards(tmp_path, {"weight_map": weight_map}))
    assert fragment in str(info.value)


def test_an_index_is_json_as_config_json_is(tmp_path):
    """The index is read as the folder's other JSON is (formats.files.parse_json): NaN is not JSON."""
    path = shards(tmp_path, {"metadata": {"total_size": float("nan")}, "weight_map": {"a": "s1.safetensors"}})
    with pytest.raises(FormatError, match="index: not a JSON text: NaN is not a JSON number"):
        safetensors.read_index(path)


# -------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("st_file, message", [
    (SafetensorsFile({"__metadata__": Tensor.from_array(np.float32([1]))}), "cannot name a tensor"),
    (SafetensorsFile({"t": Tensor("F32", np.float64([1]))}), "float64 data for dtype 'F32'"),
    (SafetensorsFile({}, {"k": 1}), "strings to strings"),
])
def test_write_refuses(tmp_path, st_file, message):
    with pytest.raises(ValueError, match=message):
        safetensors.write(st_file, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_from_array_refuses_what_has_no_dtype():
    with pytest.raises(ValueError, match="no safetensors dtype for numpy complex64"):
        Tensor.from_array(np.zeros(2, np.complex64))
    with pytest.raises(ValueError, match="unknown safetensors dtype 'F8_E4M3'"):
        Tensor.from_array(np.zeros(2), "F8_E4M3")


# ------------------------------------------------------------------------------ hostile files


@pytest.mark.parametrize("case", sorted(SAFETENSORS_BAD))
def test_hostile_files_raise_one_format_error(tmp_path, case):
    data, fragment, package_refuses = SAFETENSORS_BAD[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(FormatError) as info:
        safetensors.read(path)
    message = str(info.value)
    assert fragment in message and message.startswith(str(path)) and "\n" not in message, message
    if package_refuses:
        with pytest.raises(Exception):
            st_torch.load(data)
    else:
        st_torch.load(data)
