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

The readers, and the small valid files the cases start from, are in tests/fuzz_targets.py.

The per-format message tests (tests/test_gguf.py, test_llama2c.py, test_spm.py) check what each
error says; here their crafted GGUF and .model inputs run again under the memory contract, next
to new ones for the model-level checks, token files and checkpoints.
"""

import collections
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import signal
import struct
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from formats import gguf, hf, llama2c, safetensors
from formats.errors import FormatError
from formats.ggml import GGMLType
from formats.gguf import Tensor, Value, ValueType
from tests.fuzz_targets import KINDS, PIECES, READERS, build_valid_files, llama_gguf, saved, small_ckpt
from tests.helpers import gguf_header, gguf_string, tensor_info, written
from tests.test_gguf import BAD_FILES as GGUF_BAD_FILES
from tests.test_hf import BAD_CONFIGS as HF_BAD_CONFIGS
from tests.test_safetensors import BAD as SAFETENSORS_BAD
from tests.test_spm import BAD as SPM_BAD

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


def gguf_with(edit):
    """The llama GGUF with `edit(gguf_file)` applied, as bytes."""
    def make(files, tmp):
        gf = llama_gguf()
        edit(gf)
        return {"m.gguf": written(gguf.write, gf, tmp / "crafted.gguf").read_bytes()}
    return make


def set_key(key, vtype, value):
    return gguf_with(lambda gf: gf.metadata.__setitem__(key, Value(vtype, value)))


def replace_tensor(name, tensor):
    def edit(gf):
        gf.tensors[[t.name for t in gf.tensors].index(name)] = tensor
    return gguf_with(edit)


def drop_last_token(gf):
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        items = gf.metadata[key].value.items
        gf.metadata[key].value.items = items[:-1]


def gguf_bytes(data):
    return lambda files, tmp: {"m.gguf": data}


U32, F32_ = ValueType.UINT32, ValueType.FLOAT32
GGUF_CRAFTED = [
    # model-level: hyperparameters that disagree with each other or with the tensors
    ("block_count near 2**32", set_key("llama.block_count", U32, 2**32 - 1), "llama.block_count"),
    ("block_count 0", set_key("llama.block_count", U32, 0), "n_layers must be a positive int"),
    ("embedding_length 0", set_key("llama.embedding_length", U32, 0), "dim must be a positive int"),
    ("head_count 0", set_key("llama.attention.head_count", U32, 0), "n_heads must be a positive int"),
    ("head_count_kv 3", set_key("llama.attention.head_count_kv", U32, 3), "not divisible by n_kv_heads"),
    ("context_length 0", set_key("llama.context_length", U32, 0), "max_seq_len must be a positive int"),
    ("rope dims 3", set_key("llama.rope.dimension_count", U32, 3), "llama.rope.dimension_count"),
    ("feed_forward_length as INT32", set_key("llama.feed_forward_length", ValueType.INT32, 8), "expected UINT32"),
    ("norm_eps -1", set_key("llama.attention.layer_norm_rms_epsilon", F32_, -1.0), "must be a positive finite number"),
    ("norm_eps NaN", set_key("llama.attention.layer_norm_rms_epsilon", F32_, math.nan), "must be a positive"),
    ("rope freq_base 0", set_key("llama.rope.freq_base", F32_, 0.0), "llama.rope.freq_base"),
    ("llama.vocab_size 9 vs 8 embedding rows", set_key("llama.vocab_size", U32, 9), "token_embd has 8 rows"),
    ("7 tokens vs 8 embedding rows", gguf_with(drop_last_token), "has 7 tokens but token_embd has 8 rows"),
    ("bos id past the vocabulary", set_key("tokenizer.ggml.bos_token_id", U32, 2**32 - 1), "outside the 8-token"),
    ("gpt2 tokenizer", set_key("tokenizer.ggml.model", ValueType.STRING, "gpt2"), "not supported"),
    ("mixture of experts", set_key("llama.expert_count", U32, 8), "mixture-of-experts models are not supported"),
    ("expert_count as a string", set_key("llama.expert_count", ValueType.STRING, "8"), "expected UINT32"),
    ("yarn RoPE", set_key("llama.rope.scaling.type", ValueType.STRING, "yarn"), "only unscaled RoPE"),
    ("token_embd 0-dim", replace_tensor("token_embd.weight", Tensor("token_embd.weight", GGMLType.F32, (),
                                                                    np.array(1, np.float32))), "must be 2-D"),
    ("token_embd 1-D", replace_tensor("token_embd.weight", Tensor.from_array("token_embd.weight",
                                                                             np.ones(32, np.float32))), "2-D"),
    ("foreign tensor name", replace_tensor("output_norm.weight", Tensor.from_array(
        "blk.0.attn_q.weight.x", np.ones(4, np.float32))), "not a tensor of the llama architecture"),
    # byte level, beyond tests/test_gguf.py's BAD_FILES
    ("n_dims 2**32-1", gguf_bytes(gguf_header(1, 0, gguf_string(b"t") + struct.pack("<I", 2**32 - 1) + bytes(64))),
     "n_dims"),
    ("ne[0] 2**63-1 of F32", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [2**63 - 1]))), "passes the end"),
    # A zero dim makes the tensor empty, but NumPy still refuses a view whose other dims overflow
    # the address space ("array is too big", found by atheris): the reader bounds them first.
    ("dims [0, 2**40, 2**40] of F32", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [0, 2**40, 2**40]))
                                                 + bytes(64)), "t).ne at byte"),
    ("dims [0, 2**62] of Q8_0", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [0, 2**62], 8)) + bytes(64)),
     "span"),
    # the k-quant and i-quant blocks: a row that is not a whole number of blocks, data cut short
    ("IQ2_XXS row of 300", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [300], 16)) + bytes(512)),
     "row length 300 is not a multiple of IQ2_XXS's block size 256"),
    ("MXFP4 row of 48", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [48, 2], 39)) + bytes(64)),
     "not a multiple of MXFP4's block size 32"),
    ("Q5_K rows past the end", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [256, 4], 13)) + bytes(600)),
     "passes the end"),
    ("IQ1_M block cut short", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [256], 29)) + bytes(40)),
     "data [64, 120) passes the end"),
    ("key length 2**64-1", gguf_bytes(gguf_header(0, 1, struct.pack("<Q", 2**64 - 1) + bytes(16))), "kv[0].key"),
    ("2**60 strings", gguf_bytes(gguf_header(0, 1, gguf_string(b"k") + struct.pack("<IIQ", 9, 8, 2**60)
                                             + bytes(64))), "cannot fit"),
    ("tensor count 1, no info", gguf_bytes(gguf_header(1, 0, bytes(24))), "tensor_info[0]"),
    ("alignment 2**31 and a tensor", gguf_bytes(gguf_header(1, 1, gguf_string(b"general.alignment")
                                                            + struct.pack("<II", 4, 2**31)
                                                            + tensor_info(b"t", [1]) + bytes(64))),
     "passes the end"),
    # A 0-dim F16 tensor is well formed (the file then fails as a model); to_float32 used to
    # refuse it with a bare ValueError.
    ("0-dim F16 tensor", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [], 1)) + bytes(64)), "general.architecture"),
]
GGUF_CRAFTED += [(f"test_gguf: {name}", gguf_bytes(data), fragment) for name, (data, fragment) in
                 sorted(GGUF_BAD_FILES.items())]

FIELDS = list(llama2c.CONFIG_FIELDS)


def llama2c_patch(offset, fmt, value):
    def make(files, tmp):
        data = bytearray(files["m.bin"])
        struct.pack_into(fmt, data, offset, value)
        return {"m.bin": bytes(data)}
    return make


def llama2c_crafted():
    """(kind, label, make, fragment): every config field at 0, -1 and INT32_MIN in every version,
    and the v1/v2 header flags."""
    cases = []
    for version in (0, 1, 2):
        base = 0 if version == 0 else 8
        for i, field in enumerate(FIELDS):
            for value in (0, -1, -2**31):
                # v0 stores an unshared classifier as a negative vocab_size: -1 is legal, then the
                # size is wrong (-2**31 has no positive int32 counterpart).
                fragment = "file size" if (version, field, value) == (0, "vocab_size", -1) else f"config.{field}"
                cases.append((f"llama2c-v{version}", f"{field}={value}",
                              llama2c_patch(base + 4 * i, "<i", value), fragment))
        cases += [(f"llama2c-v{version}", "vocab_size 9 vs 8 embedding rows",
                   llama2c_patch(base + 4 * FIELDS.index("vocab_size"), "<i", 9 if version else -9), "file size"),
                  (f"llama2c-v{version}", "n_layers 2**31-1",
                   llama2c_patch(base + 4 * FIELDS.index("n_layers"), "<i", 2**31 - 1), "file size")]
    cases += [("llama2c-v1", "version 3", llama2c_patch(4, "<i", 3), "version"),
              ("llama2c-v1", "shared flag 2", llama2c_patch(36, "<B", 2), "shared_classifier")]
    cases += [("llama2c-v2", f"group_size {g}", llama2c_patch(37, "<i", g), "group_size")
              for g in (0, -4, 3, 2**31 - 1)]
    return cases


def tokenizer_piece(score, raw):
    return struct.pack("<fI", score, len(raw)) + raw


def tokenizer_bin(max_length, raws):
    return lambda files, tmp: {"tok.bin": struct.pack("<I", max_length)
                                          + b"".join(tokenizer_piece(-i, r) for i, r in enumerate(raws))}


RAWS = [p.replace("\u2581", " ").encode() for p in PIECES]
TOKENIZER_CRAFTED = [
    ("max_token_length 0", tokenizer_bin(0, RAWS), "longer than max_token_length 0"),
    ("length 2**32-1 past EOF", lambda files, tmp: {"tok.bin": struct.pack("<IfI", 2**32 - 1, 0, 2**32 - 1) + b"x"},
     "token[0].bytes"),
    ("byte 0xff", tokenizer_bin(8, RAWS[:7] + [b"\xff"]), "invalid UTF-8"),
    ("UTF-8 surrogate", tokenizer_bin(8, RAWS[:7] + [b"\xed\xa0\x80"]), "invalid UTF-8"),
    ("overlong UTF-8", tokenizer_bin(8, RAWS[:7] + [b"\xc0\x80"]), "invalid UTF-8"),
    ("7 pieces for an 8-row embedding", tokenizer_bin(8, RAWS[:7]), "token[7].score"),
    ("9 pieces for an 8-row embedding", tokenizer_bin(8, RAWS + [b"z"]), "end of vocabulary"),
]


def spm_bytes(hex_text):
    return lambda files, tmp: {"m.model": bytes.fromhex(hex_text)}


# Pieces "a", "b", "c": enough for the default bos_id 1 and eos_id 2 to be piece ids.
THREE_PIECES = "0a 03 0a 01 61  0a 03 0a 01 62  0a 03 0a 01 63 "
SPM_CRAFTED = [
    ("pieces length 2**64-1", spm_bytes("0a ffffffffffffffffff01 00"), "needs 18446744073709551615 bytes"),
    ("pieces as fixed32", spm_bytes("0d 00000000"), "wire type 5"),
    ("wire type 6", spm_bytes("0e 00"), "unsupported wire type 6"),
    ("wire type 7", spm_bytes("0f 00"), "unsupported wire type 7"),
    ("11-byte varint", spm_bytes("08 8080808080808080808001"), "longer than 10 bytes"),
    ("unk_id -1", spm_bytes(THREE_PIECES + "12 0c c0 02 ffffffffffffffffff01"), "trainer_spec.unk_id"),
    ("pad_id 100", spm_bytes(THREE_PIECES + "12 03 d8 02 64"), "trainer_spec.pad_id"),
    ("piece type 0", spm_bytes("0a 05 0a 01 61 18 00"), "unknown piece type 0"),
] + [(f"test_spm: {message}", spm_bytes(data.hex()), message) for data, _, _, message in SPM_BAD]


def tokens_with(meta_edit=None, train=None):
    def make(files, tmp):
        meta = json.loads(files["meta.json"])
        if meta_edit:
            meta_edit(meta)
        return {"meta.json": json.dumps(meta).encode(), "train.bin": files["train.bin"] if train is None else train}
    return make


def raw_meta(data):
    return lambda files, tmp: {**files, "meta.json": data}


def set_meta(path, value):
    *parents, last = path.split(".")

    def edit(meta):
        for key in parents:
            meta = meta[key]
        meta[last] = value
    return tokens_with(edit)


def drop_meta(key):
    return tokens_with(lambda meta: meta.pop(key))


TOKENS_CRAFTED = [
    ("empty meta.json", raw_meta(b""), "Expecting value"),
    ("meta.json not UTF-8", raw_meta(b'{"dtype": "\xff"}'), "utf-8"),
    ("meta.json nested 100000 deep", raw_meta(b"[" * 100_000), "nested too deeply"),
    ("meta.json int of 5000 digits", raw_meta(b"1" * 5000), "meta.json"),
    ("meta.json an array", raw_meta(b"[]"), "must be a JSON object"),
    ("dtype <f4", set_meta("dtype", "<f4"), "dtype"),
    ("dtype object", set_meta("dtype", "|O"), "dtype"),
    ("dtype a list", set_meta("dtype", ["<u2"]), "dtype"),
    ("vocab_size 0", set_meta("vocab_size", 0), "vocab_size"),
    ("vocab_size -1", set_meta("vocab_size", -1), "vocab_size"),
    ("vocab_size true", set_meta("vocab_size", True), "vocab_size"),
    ("vocab_size '8'", set_meta("vocab_size", "8"), "vocab_size"),
    ("vocab_size 8.0", set_meta("vocab_size", 8.0), "vocab_size"),
    ("no splits", drop_meta("splits"), "splits.train"),
    ("no tokenizer hash", drop_meta("tokenizer_sha256"), "tokenizer_sha256"),
    ("tokens -1", set_meta("splits.train.tokens", -1), "splits.train.tokens"),
    ("tokens 201 for 200", set_meta("splits.train.tokens", 201), "holds 200 tokens"),
    ("bytes 0", set_meta("splits.train.bytes", 0), "splits.train.bytes"),
    ("odd byte count", tokens_with(train=bytes(401)), "not a whole number"),
    ("id 8 in an 8-piece vocabulary", tokens_with(train=np.full(200, 8, "<u2").tobytes()), "token[0]"),
    ("id 65535", tokens_with(train=np.r_[np.zeros(199), 65535].astype("<u2").tobytes()), "token[199] at byte 398"),
    ("vocab_size 2**70 and a uint32 file", tokens_with(lambda m: m.update(vocab_size=2**70, dtype="<u4"),
                                                       train=bytes(800)), None),
    ("empty split", tokens_with(lambda m: m["splits"]["train"].update(tokens=0, bytes=0), train=b""), None),
]


def rezipped(data, replace=None, compression=zipfile.ZIP_STORED):
    """A torch.save archive re-zipped with some records replaced (the pickle is 'archive/data.pkl')."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, (replace or {}).get(info.filename.split("/", 1)[1])
                             or source.read(info.filename))
    return out.getvalue()


def ckpt_bytes(make_data):
    return lambda files, tmp: {"ckpt.pt": make_data(files["ckpt.pt"])}


def pickle_patched(data, old, new):
    """The archive `data` with bytes `old` of its pickle replaced (pickletools.dis shows them)."""
    pickled = zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    assert old in pickled
    return rezipped(data, {"data.pkl": pickled.replace(old, new, 1)})


# One (2, 3) float tensor: its storage is ('storage', FloatStorage, '0', 'cpu', 6) -> "K\x06t",
# its size (2, 3) -> "K\x02K\x03\x86".
ONE_TENSOR = {"model": {"w": torch.ones(2, 3)}, "model_args": {}}
INT32_MAX_OP = b"J\xff\xff\xff\x7f"  # BININT 2**31-1
CKPT_CRAFTED = [
    ("empty file", ckpt_bytes(lambda data: b""), "not a torch.save zip archive"),
    ("legacy (pre-zip) torch.save", ckpt_bytes(lambda data: saved(small_ckpt(), _use_new_zipfile_serialization=False)),
     "not a torch.save zip archive"),
    # torch.load takes both for its legacy format, whose reads the pickle sizes: it used to
    # allocate 64 MiB for the first and 256 MiB for the second (found by the flip/splice test).
    ("one junk byte before the zip", ckpt_bytes(lambda data: b"X" + data), "magic at byte 0"),
    ("legacy pickle with a 2**28-byte string", ckpt_bytes(lambda data: b"\x80\x02X" + struct.pack("<I", 2**28)),
     "magic at byte 0"),
    ("deflated records (a zip bomb's shape)", ckpt_bytes(lambda data: rezipped(data, compression=zipfile.ZIP_DEFLATED)),
     "is compressed"),
    ("a list", ckpt_bytes(lambda data: saved([1, 2])), "is a list"),
    ("no model", ckpt_bytes(lambda data: saved({"model_args": {}})), "model"),
    ("model holds an int", ckpt_bytes(lambda data: saved({"model": {"w": 1}, "model_args": {}})), "model"),
    ("model_args a list", ckpt_bytes(lambda data: saved({"model": {}, "model_args": [1]})), "model_args"),
    ("storage of 2**31-1 floats in a 24-byte record",
     ckpt_bytes(lambda data: pickle_patched(saved(ONE_TENSOR), b"K\x06t", INT32_MAX_OP + b"t")),
     "does not match expected size"),
    ("size (2**31-1, 2**31-1) over 6 floats",
     ckpt_bytes(lambda data: pickle_patched(saved(ONE_TENSOR), b"K\x02K\x03\x86", INT32_MAX_OP * 2 + b"\x86")),
     "pickle"),
    ("os.system as a global", ckpt_bytes(lambda data: pickle_patched(data, b"collections\nOrderedDict",
                                                                      b"os\nsystem")), "os.system"),
]


def safetensors_bytes(data):
    return lambda files, tmp: {"m.safetensors": data}


def hf_config(edit):
    return lambda files, tmp: {**files, "config.json": json.dumps(edit(json.loads(files["config.json"]))).encode()}


SAFETENSORS_CRAFTED = [(f"test_safetensors: {label}", safetensors_bytes(data), fragment)
                       for label, (data, fragment, _) in sorted(SAFETENSORS_BAD.items())]
HF_CRAFTED = [(f"test_hf: {label}", hf_config(edit), fragment) for label, (edit, fragment) in sorted(HF_BAD_CONFIGS.items())]


CRAFTED = ([("gguf-llama", label, make, fragment) for label, make, fragment in GGUF_CRAFTED]
           + llama2c_crafted()
           + [("tokenizer.bin", *case) for case in TOKENIZER_CRAFTED]
           + [("spm", *case) for case in SPM_CRAFTED]
           + [("tokens", *case) for case in TOKENS_CRAFTED]
           + [("ckpt", *case) for case in CKPT_CRAFTED]
           + [("safetensors", *case) for case in SAFETENSORS_CRAFTED]
           + [("hf", *case) for case in HF_CRAFTED])


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
    from llama2_scratch.model_files import open_model

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
