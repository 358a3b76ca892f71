"""The models layer: one `detect` tells a path's Kind, one `load_model` opens any of them, and the
packages import downwards only (formats -> reference -> trainer -> models -> parity -> commands)."""

import ast
import struct
from pathlib import Path

import pytest

import llama2_scratch
import models
from formats import gguf, llama2c, mapping
from formats.errors import FormatError
from formats.spec import ModelArgs
from models import Kind, detect
from tests.support.weights import normal_weights

REPO = Path(__file__).resolve().parents[1]
# Lowest first: a package may import those before it, never those after. bench/ sits beside
# parity (it measures; nothing imports it), so it may import up to models but not the commands.
ORDER = ["formats", "reference", "trainer", "models", "parity", "llama2_scratch"]
LEVEL = {**{name: i for i, name in enumerate(ORDER)}, "bench": ORDER.index("parity")}


def imported_packages(path):
    """The top-level names a module imports anywhere in it (inside functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_packages_import_downwards_only():
    upward = []
    for package, level in LEVEL.items():
        for path in sorted((REPO / package).rglob("*.py")):
            upward += [f"{path.relative_to(REPO)} imports {name}" for name in sorted(set(imported_packages(path)))
                       if LEVEL.get(name, -1) > level]
    assert upward == []


def test_detect_tells_each_kind_and_names_what_it_tried_for_none(tmp_path):
    args = ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=32, max_seq_len=8)
    weights = normal_weights(args)
    gguf.write(mapping.to_gguf(weights, args, dtype="f32"), tmp_path / "m.gguf")
    for version in (0, 1):
        llama2c.write(llama2c.Checkpoint(args, weights), tmp_path / f"v{version}.bin", version)
    (tmp_path / "ckpt.pt").write_bytes(b"PK\x03\x04" + bytes(60))
    (tmp_path / "notes.txt").write_text("# a README, not a model\n" * 4, encoding="utf-8")
    kinds = {name: detect(tmp_path / name) for name in ("m.gguf", "v0.bin", "v1.bin", "ckpt.pt")}
    assert kinds == {"m.gguf": Kind.GGUF, "v0.bin": Kind.LLAMA2C, "v1.bin": Kind.LLAMA2C, "ckpt.pt": Kind.CKPT}
    assert detect(tmp_path) is Kind.HF and Kind.HF == "hf" and f"{Kind.GGUF}" == "gguf"
    with pytest.raises(FormatError, match="not a model file: no GGUF magic .* 7 of 7 fields outside"):
        detect(tmp_path / "notes.txt")
    # one damaged config field leaves a v0 file a v0 file: its reader names the field
    data = bytearray((tmp_path / "v0.bin").read_bytes())
    struct.pack_into("<i", data, 0, 0)
    (tmp_path / "damaged.bin").write_bytes(bytes(data))
    assert detect(tmp_path / "damaged.bin") is Kind.LLAMA2C


def test_the_python_entry_is_the_one_load_model():
    assert llama2_scratch.load_model is models.load_model
