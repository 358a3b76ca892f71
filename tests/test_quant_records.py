"""The one record per ggml type (formats/quants/record.py, each family module's TYPES): ids and
names unique, what a record declares is what its decoder does, and docs/formats.md's type table
is the records' (a type added to a family module must be added to the doc). Exact comparisons:
these are facts, not measurements."""

import pathlib

import numpy as np
import pytest

from formats.ggml import GGMLType
from formats.quants import FAMILIES, TYPES
from formats.quants.record import Mins, PlainType, QuantType

DOC = pathlib.Path(__file__).parent.parent / "docs" / "formats.md"
HEADER = ("| type | id | module | block | bytes | group | mins | file B/w | held B/w | held/file "
          "| written by us |")


def test_names_and_ids_are_unique():
    # GGMLType is built from the records: a repeated id would silently alias two names.
    assert len({r.name for r in TYPES}) == len({r.ggml_type for r in TYPES}) == len(TYPES) == len(GGMLType)


@pytest.mark.parametrize("record", [r for r in TYPES if isinstance(r, QuantType)], ids=lambda r: r.name)
def test_a_quantized_record_declares_what_its_decoder_does(record):
    assert record.block % record.group == 0
    n_blocks = 3
    raw = np.random.default_rng(0).integers(0, 256, (n_blocks, record.type_size), dtype=np.uint8)
    codes = record.decode(raw)
    assert codes.codes.shape == (n_blocks, record.block // record.group, record.group)
    assert (codes.mins is not None) == (record.mins != Mins.NONE)
    assert codes.subtract == (record.mins == Mins.SUBTRACT)


def held_bytes_per_weight(record):
    """What the fast path holds per weight (reference.runtime.blockwise.Int8BlockMatrix): an int8
    code, a float32 scale per group and a float32 min per group where the type has mins; float
    types are held as float32; integer tensors are not weights."""
    if isinstance(record, PlainType):
        return 4.0 if record.decode else None
    return 1 + 4 * (1 + (record.mins != Mins.NONE)) / record.group


def doc_row(record):
    module = next(family for family in FAMILIES if record in family.TYPES).__name__.rpartition(".")[2]
    file = record.type_size / record.block
    held = held_bytes_per_weight(record)
    quantized = isinstance(record, QuantType)
    cells = [record.name, record.ggml_type, f"{module}.py", record.block, record.type_size,
             record.group if quantized else "", record.mins.value if quantized else "",
             f"{file:.4f}", "" if held is None else f"{held:.3f}",
             "" if held is None else f"{held / file:.2f}x",
             "yes" if record.encode or not record.decode else "read only"]
    return "| " + " | ".join(map(str, cells)) + " |"


def test_docs_type_table_is_the_records():
    lines = DOC.read_text().splitlines()
    start = lines.index(HEADER) + 2
    rows = lines[start:start + len(TYPES)]
    expected = [doc_row(record) for record in TYPES]
    assert rows == expected, "docs/formats.md's type table should read:\n" + "\n".join([HEADER, *expected])
    assert not lines[start + len(TYPES)].startswith("|")

