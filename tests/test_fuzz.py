"""Every reader under hostile input: truncations, byte flips and splices, crafted headers.

One contract for all of them (issue 8), checked on every case by `Fuzz.run`:
- the reader returns, or raises FormatError naming a file it was given; no other exception
  escapes (no IndexError, struct.error, UnicodeDecodeError, RecursionError, torch's RuntimeError);
- its Python allocations peak below MEMORY_FACTOR x the input size + MEMORY_SLACK, so a hostile
  count or length cannot make it allocate what the file does not hold. (tracemalloc sees Python
  and NumPy allocations, not torch's C++ storages: for ckpt.pt those are bounded by
  checkpoint.load refusing compressed records, and a storage must match its record's size.)
Time per case is measured and reported, never asserted (a loaded CI machine would make that
flaky); pytest's terminal summary ends with one line giving the case count, the slowest case and
the largest memory ratio.

The readers, and the small valid files the cases start from, are in tests/support/fuzz.py; the
crafted cases in tests/support/crafted.py.

The per-format message tests (tests/test_gguf.py, test_llama2c.py, test_spm.py) check what each
error says; here their crafted GGUF and .model inputs run again under the memory contract, next
to new ones for the model-level checks, token files and checkpoints.
"""

import collections
import contextlib
import dataclasses
import os
import re
import signal
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats import gguf, hf, safetensors
from formats.errors import FormatError
from formats.ggml import GGMLType
from tests.support.crafted import CRAFTED
from tests.support.files import gguf_header, gguf_string, tensor_info
from tests.support.fuzz import KINDS, READERS, build_valid_files

# A reader may build Python objects for what it reads (a str and a list slot per piece, a small
# object per tensor): tens of bytes per byte in the worst case. 64x plus 1 MiB of fixed overhead
# (module-level caches, numpy scalars) still catches any allocation sized by a hostile count.
MEMORY_FACTOR = 64
MEMORY_SLACK = 1 << 20
# Below this size the fixed overhead dominates peak/size; the report leaves such inputs out.
RATIO_MIN_SIZE = 512
# Hypothesis examples per kind of file (11 kinds) for the flip/splice test.
MUTATIONS_PER_KIND = 300

# ------------------------------------------------------------------------ the contract, counted


@dataclasses.dataclass
class Stats:
    cases: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    slowest: tuple = (0.0, "")
    largest_peak: tuple = (0, "")
    worst_ratio: tuple = (0.0, "")   # over inputs of RATIO_MIN_SIZE bytes or more
    started: float = dataclasses.field(default_factory=time.perf_counter)
    finished: float = 0.0      # when the last case ended (the summary prints at the session's end)

    def summary(self):
        return (f"fuzz: {sum(self.cases.values())} cases in {self.finished - self.started:.1f} s "
                f"({', '.join(f'{k} {n}' for k, n in sorted(self.cases.items()))}); slowest case "
                f"{1000 * self.slowest[0]:.1f} ms ({self.slowest[1]}); largest peak "
                f"{self.largest_peak[0] / 1024:.0f} KiB ({self.largest_peak[1]}); largest peak/size "
                f"{self.worst_ratio[0]:.1f} over inputs >= {RATIO_MIN_SIZE} bytes ({self.worst_ratio[1]})")


class Fuzz:
    def __init__(self, root):
        self.root = root
        self.valid = build_valid_files(root)
        self.stats = Stats()

    def run(self, kind, files, label):
        """Write `files` into the kind's folder, run its reader under the contract; returns the
        FormatError, or None when the input was read."""
        d = self.root / kind
        d.mkdir(exist_ok=True)
        for name, data in files.items():
            path = d / name
            # Whatever a previous case left there goes first (writing through a FIFO would block).
            if callable(data) or path.is_symlink() or path.exists() and not path.is_file():
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                elif path.is_symlink() or path.exists():
                    path.unlink()
            if callable(data):          # a FIFO, a symlink, a folder: placed by the case (Special)
                data(path)
            else:
                path.write_bytes(data)
        size = sum(len(data) for data in files.values() if not callable(data))
        error = None
        tracemalloc.start()
        start = time.perf_counter()
        try:
            READERS[kind](d)
        except FormatError as exc:
            error = exc
        finally:
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        where = f"{kind} {label}"
        self.stats.cases[kind] += 1
        self.stats.finished = time.perf_counter()
        self.stats.slowest = max(self.stats.slowest, (elapsed, where))
        self.stats.largest_peak = max(self.stats.largest_peak, (peak, where))
        if size >= RATIO_MIN_SIZE:
            self.stats.worst_ratio = max(self.stats.worst_ratio, (peak / size, where))
        assert peak <= MEMORY_FACTOR * size + MEMORY_SLACK, f"{where}: peak {peak} bytes for {size} bytes"
        if error is not None:
            assert error.path.startswith(str(d)) and error.field, f"{where}: {error}"
        return error


class SummaryPlugin:
    """Prints the stats in pytest's terminal summary (output printed by a test is captured)."""

    def __init__(self, stats):
        self.stats = stats

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(self.stats.summary())


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory, request):
    fuzz = Fuzz(tmp_path_factory.mktemp("fuzz"))
    request.config.pluginmanager.register(SummaryPlugin(fuzz.stats))
    return fuzz


# --------------------------------------------------------------------------------- truncation


def protobuf_field_ends(data):
    """Byte offsets where a top-level protobuf field ends: the only places a cut .model is
    still a well-formed message (wire types 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32)."""
    def varint(pos):
        value, shift = 0, 0
        while True:
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                return value, pos

    ends, pos = set(), 0
    while pos < len(data):
        tag, pos = varint(pos)
        if tag & 7 == 0:
            _, pos = varint(pos)
        elif tag & 7 == 2:
            length, pos = varint(pos)
            pos += length
        else:
            pos += {1: 8, 5: 4}[tag & 7]
        ends.add(pos)
    return ends


def well_formed_cuts(kind, data):
    """The lengths n at which data[:n] is still a well-formed file of `kind`: a GGUF cut inside
    the padding after its last tensor, a SentencePiece model cut between top-level fields, a
    JSON file cut in its trailing whitespace."""
    if kind.startswith("gguf"):
        return set(range(gguf_data_end(data), len(data)))
    if kind == "spm":
        return protobuf_field_ends(data)
    if kind == "hf":    # config.json cut in the whitespace after its closing brace
        return set(range(len(data.rstrip()), len(data)))
    return set()


def gguf_data_end(data):
    """Where a GGUF's last tensor's data ends (only padding follows)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.gguf"
        path.write_bytes(data)
        gf = gguf.read(path)
        return max(gf.data_offset + t.offset + t.nbytes for t in gf.tensors)


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_at_every_byte(fuzz, kind):
    """Every prefix of a valid file is refused, except the few that are still well formed."""
    valid = fuzz.valid[kind]
    for name, data in valid.items():
        read = {n for n in range(len(data)) if fuzz.run(kind, {**valid, name: data[:n]}, f"{name}[:{n}]") is None}
        assert read <= well_formed_cuts(kind, data), \
            f"{kind}: cuts of {name} read as if whole: {sorted(read - well_formed_cuts(kind, data))[:10]}"


# ------------------------------------------------------------------------- flips and splices

POSITION = st.integers(0, 1 << 16)  # wrapped to the current length by mutate()
# Integers that sit on the edges of every width a header field can have.
EDGES = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
         2**63 - 1, 2**63, 2**64 - 1]
MUTATION = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(1, 255), st.none()),
    st.tuples(st.just("int"), POSITION, st.sampled_from([1, 2, 4, 8]),
              st.sampled_from(EDGES) | st.integers(0, 2**64 - 1)),
    st.tuples(st.just("delete"), POSITION, st.integers(1, 64), st.none()),
    st.tuples(st.just("copy"), POSITION, st.integers(1, 64), POSITION),
    st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=16), st.none()),
)


def mutate(data, ops):
    """Apply ops in order; positions wrap around the current length, so any op fits any file.

    >>> mutate(b"abcd", [("flip", 0, 3, None), ("delete", 1, 2, None), ("copy", 1, 1, 0)])
    b'bbd'
    """
    out = bytearray(data)
    for op, pos, arg, extra in ops:
        at = pos % (len(out) + 1)
        if op == "flip" and at < len(out):
            out[at] ^= arg
        elif op == "int":  # overwrite a little-endian field of `arg` bytes with an edge value
            out[at:at + arg] = (extra % 256**arg).to_bytes(arg, "little")
        elif op == "delete":
            del out[at:at + arg]
        elif op == "copy":  # splice: a slice of the file itself, pasted in at `at`
            src = extra % (len(out) + 1)
            out[at:at] = out[src:src + arg]
        elif op == "insert":
            out[at:at] = arg
    return bytes(out)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=MUTATIONS_PER_KIND)
@given(which=st.integers(0, 1), ops=st.lists(MUTATION, min_size=1, max_size=4))
def test_flips_and_splices(fuzz, kind, which, ops):
    valid = fuzz.valid[kind]
    name = sorted(valid)[which % len(valid)]
    fuzz.run(kind, {**valid, name: mutate(valid[name], ops)}, f"{name} {ops}")


# Dims on the edges of int64 and of the address space, zeros among them: the products that
# overflow NumPy's shapes, not only the file's size.
DIM = st.sampled_from([0, 1, 2, 32, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1])


@settings(max_examples=MUTATIONS_PER_KIND)
@given(ne=st.lists(DIM, min_size=1, max_size=4), ggml_type=st.sampled_from(list(GGMLType)),
       n_data=st.integers(0, 256))
def test_tensor_dims_near_the_limits(fuzz, ne, ggml_type, n_data):
    data = gguf_header(1, 0, tensor_info(b"t", ne, int(ggml_type))) + bytes(n_data)
    fuzz.run("gguf-rich", {"m.gguf": data}, f"dims {ne} of {ggml_type.name}")


# ---------------------------------------------------------------------------- crafted headers


@pytest.mark.parametrize("kind, label, make, fragment", CRAFTED, ids=[f"{c[0]}: {c[1]}" for c in CRAFTED])
def test_crafted_input(fuzz, tmp_path, kind, label, make, fragment):
    """Each crafted input raises FormatError saying `fragment`, or (fragment None) reads fine."""
    error = fuzz.run(kind, make(fuzz.valid[kind], tmp_path), label)
    if fragment is None:
        assert error is None, str(error)
    else:
        assert error is not None, f"{label}: read without complaint"
        assert fragment in str(error), str(error)


def test_valid_files_read(fuzz):
    """The fuzz starts from files that really are valid."""
    for kind in KINDS:
        assert fuzz.run(kind, fuzz.valid[kind], "valid") is None, kind


# ------------------------------------------- issue 23: symlinks, non-regular files, huge counts


# What a case may put where a reader's file was: kind of entry -> a function placing it at `path`.
def _fifo(path):
    os.mkfifo(path)


def _folder(path):
    path.mkdir()


def _symlink_to(target):
    return lambda path: path.symlink_to(target)


NOT_REGULAR = {"FIFO": _fifo, "folder": _folder, "/dev/zero": _symlink_to("/dev/zero"),
               "/dev/urandom": _symlink_to("/dev/urandom")}
# The readers in formats/ (tokens and ckpt.pt are read by trainer/; the CLI refuses a non-regular
# MODEL before either opens it: tests/test_hostile.py).
FORMAT_KINDS = [kind for kind in KINDS if kind not in ("tokens", "ckpt")]


@contextlib.contextmanager
def no_hang(seconds=20):
    """Fail, rather than block the suite forever, when a reader opens a FIFO and waits."""
    def alarm(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", FORMAT_KINDS)
@pytest.mark.parametrize("entry", sorted(NOT_REGULAR))
def test_non_regular_files_are_refused_before_a_byte_is_read(fuzz, kind, entry):
    files = dict(fuzz.valid[kind])
    first = sorted(files)[0]
    files[first] = NOT_REGULAR[entry]
    with no_hang():
        error = fuzz.run(kind, files, f"{first} as {entry}")
    # A Hugging Face folder's symlink out of it is refused as such before its target is opened.
    expected = "outside the folder" if kind == "hf" and entry.startswith("/dev") else "not a regular file"
    assert error is not None and expected in str(error), error


HF_NAMES = ("config.json", "model.safetensors")


@settings(max_examples=60)
@given(name=st.sampled_from(HF_NAMES), where=st.sampled_from(["outside", "inside", "cache blobs", "other blobs"]))
def test_hf_symlinks_resolve_inside_the_folder_or_its_cache_blobs(fuzz, name, where):
    """The rule of docs/failures.md: a file's real path lies in the folder, or in the blobs/ of the
    cache repository whose snapshot the folder is; anything else is refused before it is read."""
    valid = fuzz.valid["hf"]
    root = fuzz.root / "symlinks"
    repo = root / "models--a--b"
    snapshot, blobs, other = repo / "snapshots" / "rev", repo / "blobs", root / "models--c--d" / "blobs"
    for folder in (snapshot, blobs, other, root / "elsewhere"):
        folder.mkdir(parents=True, exist_ok=True)
    places = {"outside": root / "elsewhere", "inside": snapshot / "sub", "cache blobs": blobs, "other blobs": other}
    places["inside"].mkdir(exist_ok=True)
    for file_name, data in valid.items():
        target = places[where] / file_name if file_name == name else snapshot / f".{file_name}"
        target.write_bytes(data)
        link = snapshot / file_name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    fuzz.stats.cases["hf symlinks"] += 1
    try:
        hf.from_hf(snapshot)
        refused = None
    except FormatError as exc:
        refused = exc
    if where in ("inside", "cache blobs"):
        assert refused is None, refused
    else:
        assert refused is not None and refused.path == str(snapshot / name) and "outside the folder" in str(refused)


# (kind, label, files, fragment): one past each count limit, with every item present, so that only
# the limit can refuse them; each file is at most a few MB.
COUNT_CASES = [
    ("gguf-rich", "2^16 + 1 arrays in an array",
     {"m.gguf": gguf_header(0, 1, gguf_string("k") + struct.pack("<IIQ", 9, 9, gguf.MAX_HEADER_ITEMS["ARRAY"] + 1)
                            + struct.pack("<IQ", 4, 0) * (gguf.MAX_HEADER_ITEMS["ARRAY"] + 1))},
     "pass the limit of 65536 ARRAY items"),
    ("gguf-rich", "2^16 + 1 empty tensors",
     {"m.gguf": gguf_header(gguf.MAX_TENSORS + 1, 0, b"".join(tensor_info(f"t{i}", [0])
                                                               for i in range(gguf.MAX_TENSORS + 1)))},
     "65537 tensors, over the limit of 65536"),
    ("safetensors", "2^16 + 1 empty tensors",
     {"m.safetensors": (lambda text: struct.pack("<Q", len(text)) + text)(
         ("{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
                         for i in range(safetensors.MAX_TENSORS + 1)) + "}").encode())},
     "more than 65536 tensors"),
    ("tokenizer.bin", "a million empty pieces", {"tok.bin": struct.pack("<I", 0) + bytes(8 << 20)}, "empty piece"),
]


@pytest.mark.parametrize("kind, label, files, fragment", COUNT_CASES, ids=[f"{c[0]}: {c[1]}" for c in COUNT_CASES])
def test_counts_beyond_anything_real_are_refused_with_the_limit(fuzz, kind, label, files, fragment):
    error = fuzz.run(kind, files, label)
    assert error is not None and fragment in str(error), error


def test_the_string_budget_spans_every_key_of_a_header(fuzz, monkeypatch):
    """2^21 strings cost ~20 s under tracemalloc: the budget is lowered to 1,000 here, and the
    1,001st string, in a second key, is refused."""
    monkeypatch.setitem(gguf.MAX_HEADER_ITEMS, "STRING", 1000)
    body = b"".join(gguf_string(k) + struct.pack("<IIQ", 9, 8, n) + struct.pack("<Q", 0) * n
                    for k, n in (("a", 600), ("b", 401)))
    error = fuzz.run("gguf-rich", {"m.gguf": gguf_header(0, 2, body)}, "1,001 empty strings over two keys")
    assert error is not None and "kv[1].value (b).count" in str(error) and "limit of 1000 STRING" in str(error)


NON_FINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["llama2c-v1", "gguf-llama", "hf"]), which=st.integers(0, 1 << 16),
       at=st.integers(0, 1 << 16), value=NON_FINITE, fast=st.booleans())
def test_non_finite_weights_are_named(fuzz, tmp_path_factory, kind, which, at, value, fast):
    """Any float of any weight (float32 in these files) set to NaN or +-inf in the file: the model
    is refused naming that tensor as the file names it (the readers keep values as stored; the
    refusal is the loader's, reference.runtime.load.check_finite)."""
    from models import open_model

    d = tmp_path_factory.mktemp("nonfinite")
    for name, data in fuzz.valid[kind].items():
        (d / name).write_bytes(data)
    path = d if kind == "hf" else d / sorted(fuzz.valid[kind])[0]
    target = d / hf.WEIGHTS if kind == "hf" else path
    source = open_model(path)
    names = sorted(source.weights())
    name = names[which % len(names)]
    stored_name = source.stored_name(name)
    data = (source.source.tensors[stored_name].data if kind == "hf" else
            source.source.tensor(stored_name).data if kind == "gguf-llama" else source.source.weights[name])
    assert data.dtype == np.float32
    byte = _file_offset(data) + 4 * (at % data.size)
    del source, data
    raw = bytearray(target.read_bytes())
    raw[byte:byte + 4] = np.float32(value).tobytes()
    target.write_bytes(raw)
    fuzz.stats.cases["non-finite"] += 1
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: tensor {re.escape(stored_name)}: holds NaN"):
        open_model(path).model(fast=fast)


def _file_offset(array):
    """Where a view into a file's memory map starts in the file."""
    base = array
    while isinstance(base.base, np.ndarray):    # up to the map itself (its base is the mmap)
        base = base.base
    assert isinstance(base, np.memmap)
    return array.__array_interface__["data"][0] - base.__array_interface__["data"][0] + base.offset
