"""The console script: `inspect` output schemas, one-line errors with exit status 2, no torch."""

import functools
import json

import numpy as np
import pytest

from formats import gguf, llama2c, spec
from formats.gguf import Array, GGUFFile, Tensor, Value, ValueType
from llama2_scratch import cli
from tests.support import cli as support_cli
from tests.support.weights import normal_weights

# The CLI in a fresh interpreter where `import torch` fails; inspect and --help answer in seconds.
run_cli = functools.partial(support_cli.run_cli, timeout=120)


@pytest.fixture
def small_gguf(tmp_path):
    md = {"general.architecture": Value(ValueType.STRING, "llama"),
          "n": Value(ValueType.UINT32, 7),
          "tokens": Value(ValueType.ARRAY, Array(ValueType.STRING, [f"t{i}" for i in range(12)])),
          "nested": Value(ValueType.ARRAY, Array(ValueType.ARRAY, [Array(ValueType.INT32, np.array([1, 2], np.int32))]))}
    tensors = [Tensor.from_array("w", np.ones((2, 32), np.float32), 8), Tensor.from_array("b", np.ones(3, np.float32))]
    path = tmp_path / "small.gguf"
    gguf.write(GGUFFile(md, tensors), path)
    return path


def test_inspect_gguf_json_schema(small_gguf):
    result = run_cli("inspect", small_gguf, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    gf = gguf.read(small_gguf)
    assert doc["format"] == "gguf" and doc["version"] == 3 and doc["alignment"] == 32
    assert doc["data_offset"] == gf.data_offset
    assert doc["metadata"]["n"] == {"type": "UINT32", "value": 7}
    assert doc["metadata"]["tokens"] == {"type": "ARRAY", "element_type": "STRING",
                                         "value": [f"t{i}" for i in range(12)]}
    assert doc["metadata"]["nested"] == {"type": "ARRAY", "element_type": "ARRAY", "value": [
        {"type": "ARRAY", "element_type": "INT32", "value": [1, 2]}]}
    assert doc["tensors"] == [
        {"name": "w", "shape": [2, 32], "type": "Q8_0", "offset": 0, "nbytes": 68},
        {"name": "b", "shape": [3], "type": "F32", "offset": 96, "nbytes": 12}]


def test_inspect_gguf_table_summarizes_arrays(small_gguf):
    result = run_cli("inspect", small_gguf)
    assert result.returncode == 0, result.stderr
    assert "GGUF v3" in result.stdout
    assert "['t0', 't1', 't2', 't3', 't4', ...] (12 STRING)" in result.stdout
    assert "Q8_0" in result.stdout and "2x32" in result.stdout


def test_inspect_llama2c_json(tmp_path):
    args = spec.ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, hidden_dim=96,
                          max_seq_len=16, tie_embeddings=False)
    weights = normal_weights(args)
    path = tmp_path / "m.bin"
    llama2c.write(llama2c.Checkpoint(args=args, weights=weights, shared_classifier=False, version=2,
                                     group_size=None), path, version=2)
    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["format"] == "llama2c" and doc["version"] == 2
    assert doc["config"] == {"dim": 64, "hidden_dim": 96, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                             "vocab_size": 40, "max_seq_len": 16}
    assert doc["shared_classifier"] is False and doc["group_size"] == 64
    names = [t["name"] for t in doc["tensors"]]
    assert "output.weight" in names and "layers.1.feed_forward.w3.weight" in names
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["tok_embeddings.weight"]["dtype"] == "i8"
    assert by_name["tok_embeddings.weight"]["shape"] == [40, 64]
    assert by_name["norm.weight"]["dtype"] == "f32"
    assert by_name["layers.0.attention_norm.weight"]["offset"] == 256
    assert run_cli("inspect", path).returncode == 0


@pytest.mark.parametrize("args,fragment", [
    (("inspect",), "the following arguments are required: file"),
    (("inspect", "x.gguf", "--bogus"), "unrecognized arguments: --bogus"),
    (("nosuchcommand",), "invalid choice"),
])
def test_usage_errors_are_one_line_exit_2(args, fragment):
    result = run_cli(*args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_files_are_one_line_exit_2(tmp_path, small_gguf):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(small_gguf.read_bytes()[:40])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x01" * 100)
    for path, fragment in [(tmp_path / "missing.gguf", "missing.gguf"), (truncated, "truncated.gguf: "),
                           (garbage, "garbage.bin: ")]:
        result = run_cli("inspect", path)
        assert result.returncode == 2, result.stderr
        assert fragment in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_every_subcommand_has_help():
    for name in cli.build_parser()._subparsers._group_actions[0].choices:
        result = run_cli(name, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, name
