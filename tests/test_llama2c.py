"""llama2.c checkpoints (v0, v1, v2) and tokenizer.bin.

Oracles: torch re-does export.py's arithmetic step by step (quantize_q80 for v2, model.py's
precompute_freqs_cis for the v0 RoPE tables); sentencepiece gives the pieces of the real Llama 2
tokenizer, whose llama2.c export is the corpora folder's llama2/tokenizer.bin. Sizes are checked
against formulas written out here, independently of the module's own `file_size`.
"""

import dataclasses
import math
import struct
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from formats import llama2c, spec
from formats.errors import FormatError
from formats.llama2c import Checkpoint
from formats.llama2c_quant import Int8Groups, default_group_size, quantize
from formats.spec import ModelArgs
from formats.vocab import TokenType, Vocab
from tests.support.files import small_vocab, written

# Deterministic whatever the profile: the same examples on every run.
ROUND_TRIPS = settings(max_examples=40, derandomize=True, deadline=None)

# Reconstruction error of an int8 group, in units of its scale: exact rounding is off by at most
# half a step; float32 rounding of w / scale and of q * scale (|q| <= 127) adds at most
# ~2 * 127 * 2^-24 ≈ 1.5e-5 of a step.
QUANT_SLACK = 1e-4

FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"]

# The llama2.c-style model every bad-input test corrupts: GQA (2 heads, 1 kv head), 2 layers.
TINY = ModelArgs(dim=8, hidden_dim=12, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=10, max_seq_len=4)
# stories15M, llama2.c's smallest released model.
STORIES15M = ModelArgs(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000,
                       max_seq_len=256)

LLAMA2_TOKENIZER_BIN_SIZE = 433_869


# ---------------------------------------------------------------------------------------------
# helpers


def make_checkpoint(config, shared=True, seed=0):
    config = dataclasses.replace(config, tie_embeddings=shared)
    rng = np.random.default_rng(seed)
    weights = {name: rng.standard_normal(shape, dtype=np.float32)
               for name, shape in spec.weight_shapes(config).items()}
    return Checkpoint(config, weights)


def with_special_values(checkpoint):
    """The same checkpoint with -0, ±inf, NaN, a subnormal and float32's max in its embedding:
    v0/v1 store float32 bits, so these must come back bit for bit."""
    specials = np.array([-0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4028235e38], dtype=np.float32)
    emb = checkpoint.weights["tok_embeddings.weight"].reshape(-1)
    n = min(len(specials), emb.size)
    emb[:n] = specials[:n]
    return checkpoint


def bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def assert_bits_equal(got, expected):
    assert got.shape == np.shape(expected)
    np.testing.assert_array_equal(bits(got), bits(expected))


def assert_format_error(fragment, read, *args):
    with pytest.raises(FormatError) as info:
        read(*args)
    assert type(info.value) is FormatError
    assert fragment in str(info.value)


def patch(data, offset, new_bytes):
    return data[:offset] + new_bytes + data[offset + len(new_bytes):]


def patched(tmp_path, data, offset, new_bytes):
    path = tmp_path / "bad.bin"
    path.write_bytes(patch(data, offset, new_bytes))
    return path


@st.composite
def configs(draw):
    """Tiny valid configs: GQA and MQA, odd hidden and vocab sizes, head_dim 2..8."""
    n_kv_heads = draw(st.integers(1, 3))
    n_heads = n_kv_heads * draw(st.integers(1, 3))
    head_dim = 2 * draw(st.integers(1, 4))
    return ModelArgs(dim=n_heads * head_dim, hidden_dim=draw(st.integers(1, 20)),
                     n_layers=draw(st.integers(1, 3)), n_heads=n_heads, n_kv_heads=n_kv_heads,
                     vocab_size=draw(st.integers(1, 40)), max_seq_len=draw(st.integers(1, 9)))


def expected_size(c, version, shared=True, group_size=None):
    """The file size written out from the layout in docs/formats.md, counting float32s."""
    kv_dim = c.n_kv_heads * (c.dim // c.n_heads)
    norms = c.n_layers * 2 * c.dim + c.dim
    per_layer = c.dim * c.dim * 2 + kv_dim * c.dim * 2 + c.hidden_dim * c.dim * 3
    matrices = c.vocab_size * c.dim * (1 if shared else 2) + c.n_layers * per_layer
    if version == 0:
        rope = 2 * c.max_seq_len * (c.dim // c.n_heads // 2)
        return 7 * 4 + 4 * (norms + matrices + rope)
    if version == 1:
        return 256 + 4 * (norms + matrices)
    return 256 + 4 * norms + matrices + 4 * matrices // group_size


# ---------------------------------------------------------------------------------------------
# round trips


@ROUND_TRIPS
@given(config=configs(), shared=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_v0_v1_round_trip_bit_exact(tmp_path_factory, config, shared, seed):
    tmp = tmp_path_factory.mktemp("v01")
    config = dataclasses.replace(config, tie_embeddings=shared)
    ckpt = with_special_values(make_checkpoint(config, shared, seed))
    for version in (0, 1):
        path = written(llama2c.write, ckpt, tmp / f"v{version}.bin", version)
        assert path.stat().st_size == expected_size(config, version, shared)
        back = llama2c.read(path)
        header = (back.args, back.version, back.shared_classifier, back.group_size)
        assert header == (config, version, shared, None)
        assert back.weights.keys() == ckpt.weights.keys()
        for name, w in ckpt.weights.items():
            assert_bits_equal(back.weights[name], w)
            # Zero-copy: a read-only view into the mapped file, not a copy.
            assert isinstance(back.weights[name], np.memmap)
            assert not back.weights[name].flags.writeable
        again = written(llama2c.write, back, tmp / "again.bin", version)
        assert again.read_bytes() == path.read_bytes()


@ROUND_TRIPS
@given(config=configs(), shared=st.booleans(), seed=st.integers(0, 2**32 - 1),
       group_size=st.sampled_from([None, 1, 2]), zero_row=st.booleans())
def test_v2_round_trip_is_the_expected_quantization(tmp_path_factory, config, shared, seed,
                                                    group_size, zero_row):
    tmp = tmp_path_factory.mktemp("v2")
    config = dataclasses.replace(config, tie_embeddings=shared)
    ckpt = make_checkpoint(config, shared, seed)
    if zero_row:  # a row of dim zeros holds whole groups of zeros: the 0/0 case
        ckpt.weights["tok_embeddings.weight"][0] = 0
    path = written(llama2c.write, ckpt, tmp / "v2.bin", 2, group_size=group_size)
    gs = group_size or default_group_size(config.dim)
    assert path.stat().st_size == expected_size(config, 2, shared, gs)
    back = llama2c.read(path)
    header = (back.args, back.version, back.shared_classifier, back.group_size)
    assert header == (config, 2, shared, gs)
    for name, w in ckpt.weights.items():
        got = back.weights[name]
        if name.endswith("norm.weight"):
            assert_bits_equal(got, w)
            continue
        expected = quantize(w, gs)
        assert isinstance(got, Int8Groups) and got.shape == w.shape and got.group_size == gs
        np.testing.assert_array_equal(got.q, expected.q)
        assert_bits_equal(got.scales, expected.scales)
        err = np.abs(got.to_float32() - w).reshape(-1, gs).max(axis=1)
        assert np.all(err <= got.scales * (0.5 + QUANT_SLACK))
    # Int8Groups are written as they are, with the file's own group size.
    again = written(llama2c.write, back, tmp / "again.bin", 2)
    assert again.read_bytes() == path.read_bytes()


def test_v2_to_v1_writes_the_dequantized_values(tmp_path):
    back = llama2c.read(written(llama2c.write, make_checkpoint(TINY, shared=False), tmp_path / "v2.bin", 2))
    v1 = llama2c.read(written(llama2c.write, back, tmp_path / "v1.bin", 1))
    for name, w in back.weights.items():
        assert_bits_equal(v1.weights[name], w.to_float32() if isinstance(w, Int8Groups) else w)


def test_write_accepts_anything_asarray_takes(tmp_path):
    ckpt = make_checkpoint(TINY)
    # float64 torch tensors holding float32 values: converting back to float32 is exact.
    as_torch = Checkpoint(TINY, {name: torch.from_numpy(w.astype(np.float64))
                                 for name, w in ckpt.weights.items()})
    from_torch = written(llama2c.write, as_torch, tmp_path / "torch.bin", 1)
    assert from_torch.read_bytes() == written(llama2c.write, ckpt, tmp_path / "numpy.bin", 1).read_bytes()


def test_shared_classifier_is_derived_from_the_weights():
    unshared = make_checkpoint(TINY, shared=False)
    args, weights = unshared.args, unshared.weights
    assert Checkpoint(args, weights).shared_classifier is False
    assert Checkpoint(args, weights, shared_classifier=False).shared_classifier is False
    with pytest.raises(ValueError, match="shared_classifier=True but output.weight is present"):
        Checkpoint(args, weights, shared_classifier=True)


def test_args_tie_embeddings_must_agree_with_the_weights():
    tied = make_checkpoint(TINY, shared=True).weights
    with pytest.raises(ValueError, match="args.tie_embeddings=False but output.weight is absent"):
        Checkpoint(dataclasses.replace(TINY, tie_embeddings=False), tied)


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("shared", [True, False])
def test_tensor_table_tiles_the_file(tmp_path, version, shared):
    path = written(llama2c.write, make_checkpoint(TINY, shared), tmp_path / f"v{version}.bin", version)
    table = llama2c.tensor_table(llama2c.read(path))
    offset = 28 if version == 0 else 256
    for t in table:
        assert t["offset"] == offset
        offset += int(np.prod(t["shape"])) * (1 if t["dtype"] == "i8" else 4)
    assert offset == path.stat().st_size
    names = [t["name"] for t in table]
    assert ("freq_cis_real" in names) == (version == 0)
    assert ("output.weight" in names) == (not shared)


# ---------------------------------------------------------------------------------------------
# known bytes: every version assembled by hand from the layouts in docs/formats.md

KNOWN = ModelArgs(dim=2, hidden_dim=2, n_layers=2, n_heads=1, n_kv_heads=1, vocab_size=2, max_seq_len=2)


def per_layer(kind):
    return [f"layers.0.{kind}.weight", f"layers.1.{kind}.weight"]


NORMS = [*per_layer("attention_norm"), *per_layer("ffn_norm"), "norm.weight"]
MATRICES = ["tok_embeddings.weight", *per_layer("attention.wq"), *per_layer("attention.wk"),
            *per_layer("attention.wv"), *per_layer("attention.wo"), *per_layer("feed_forward.w1"),
            *per_layer("feed_forward.w2"), *per_layer("feed_forward.w3")]
V0_ORDER = ["tok_embeddings.weight", *per_layer("attention_norm"), *per_layer("attention.wq"),
            *per_layer("attention.wk"), *per_layer("attention.wv"), *per_layer("attention.wo"),
            *per_layer("ffn_norm"), *per_layer("feed_forward.w1"), *per_layer("feed_forward.w2"),
            *per_layer("feed_forward.w3"), "norm.weight"]


def labelled_checkpoint(shared):
    """Every tensor holds pairs (127, label), its label unique: a tensor in the wrong place shows
    in the bytes, and with group size 2 each pair quantizes exactly (scale 1, q = the values)."""
    names = sorted(NORMS + MATRICES + ([] if shared else ["output.weight"]))
    weights = {}
    for label, name in enumerate(names, start=1):
        shape = (2,) if name.endswith("norm.weight") else (2, 2)  # every size here is 2
        weights[name] = np.tile(np.float32([127, label]), math.prod(shape) // 2).reshape(shape)
    return Checkpoint(dataclasses.replace(KNOWN, tie_embeddings=shared), weights)


def known_bytes(ckpt, version):
    w = ckpt.weights
    out = ["output.weight"] if "output.weight" in w else []
    shared = not out
    config = [2, 2, 2, 1, 1, 2, 2]

    def f32(names):
        return b"".join(np.asarray(w[n], "<f4").tobytes() for n in names)

    if version == 0:
        config[5] = 2 if shared else -2
        # RoPE for head_dim 2: one frequency, 1/10000^0 = 1; rows t = 0, 1.
        cos = np.float32([1.0, math.cos(1.0)]).tobytes()
        sin = np.float32([0.0, math.sin(1.0)]).tobytes()
        return struct.pack("<7i", *config) + f32(V0_ORDER) + cos + sin + f32(out)
    if version == 1:
        header = struct.pack("<Ii7iB", 0x616B3432, 1, *config, shared)
        return header.ljust(256, b"\0") + f32(NORMS + MATRICES + out)
    header = struct.pack("<Ii7iBi", 0x616B3432, 2, *config, shared, 2).ljust(256, b"\0")
    body = f32(NORMS)
    for name in MATRICES + out:
        body += np.asarray(w[name], "i1").tobytes() + np.ones(2, "<f4").tobytes()  # q, then 2 scales
    return header + body


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("shared", [True, False])
def test_known_bytes(tmp_path, version, shared):
    ckpt = labelled_checkpoint(shared)
    data = written(llama2c.write, ckpt, tmp_path / f"v{version}.bin", version).read_bytes()
    assert data == known_bytes(ckpt, version)
    assert data[:4] == (b"24ka" if version else b"\x02\0\0\0")


# ---------------------------------------------------------------------------------------------
# sizes


def test_stories15m_sizes(tmp_path):
    # 15,204,000 float32s in v0: embedding 9,216,000; per layer 2·288 norms, 2·288² (wq, wo),
    # 2·288² (wk, wv with 6 kv heads), 3·288·768 (w1, w2, w3) = 995,904, ×6 = 5,975,424;
    # final norm 288; RoPE tables 2 × 256 × 24 = 12,288. Plus the 28-byte config.
    assert expected_size(STORIES15M, 0) == 28 + 4 * 15_204_000 == 60_816_028
    for version, group_size in [(0, None), (1, None), (2, 32)]:
        for shared in (True, False):
            expected = expected_size(STORIES15M, version, shared, group_size)
            args = dataclasses.replace(STORIES15M, tie_embeddings=shared)
            assert llama2c.file_size(args, version, group_size) == expected
    zeros = {name: np.zeros(shape, np.float32)
             for name, shape in spec.weight_shapes(STORIES15M).items()}
    path = written(llama2c.write, Checkpoint(STORIES15M, zeros), tmp_path / "v0.bin", 0)
    assert path.stat().st_size == 60_816_028
    assert llama2c.read(path).args == STORIES15M


# ---------------------------------------------------------------------------------------------
# v2 quantization against export.py (torch)


def torch_quantize_q80(w, group_size):
    """export.py's quantize_q80 (llama2.c): returns the rounded quotients before the int8 cast,
    so that the 0/0 groups are visible as NaN, and the scales."""
    w = torch.from_numpy(w).float().reshape(-1, group_size)
    wmax = torch.abs(w).max(dim=1).values
    scale = wmax / 127.0
    quant = w / scale[:, None]
    return torch.round(quant), scale


def near_halves(rng, rows, cols):
    """Values whose quotient w / scale lands within an ulp or two of k + 0.5: the ties and
    near-ties where any deviation from export.py's float32 division (a reciprocal multiply, a
    float64 quotient, rounding half away from zero) changes q. Row r has max|w| = m_r exactly."""
    m = (10.0 ** rng.uniform(-4, 4, size=(rows, 1))).astype(np.float32)
    scale = m / np.float32(127.0)
    k = rng.integers(-127, 127, size=(rows, cols)).astype(np.float32)
    w = (k + np.float32(0.5)) * scale
    ulps = rng.integers(-2, 3, size=(rows, cols))  # move each value by -2..2 ulps
    for _ in range(2):
        toward = np.where(ulps > 0, np.inf, -np.inf).astype(np.float32)
        w = np.where(ulps != 0, np.nextafter(w, toward), w)
        ulps -= np.sign(ulps)
    w[:, 0] = m[:, 0]  # each group's max|w| is m (the group size divides cols)
    return w


@pytest.mark.parametrize("group_size", [32, 64])
def test_quantize_matches_export_py_bit_for_bit(group_size):
    rng = np.random.default_rng(7)
    # Groups of very different magnitudes, so the scales span many binades.
    w = rng.standard_normal((96, 2 * group_size), dtype=np.float32)
    w *= (10.0 ** rng.uniform(-6, 6, size=(96, 1))).astype(np.float32)
    # Known answers: scale exactly 1, so these quotients are exact halves: round half to even.
    w[0, :8] = [127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]
    w[0, 8:group_size] = 0
    w[1, :group_size] = 0  # an all-zero group
    w[2:] = near_halves(rng, 94, 2 * group_size)
    ours = quantize(w, group_size)
    rounded, scale = torch_quantize_q80(w, group_size)

    assert ours.q[:8].tolist() == [127, 0, 2, 2, 0, -2, -2, 126]
    zero = 2 * 1  # row 1 starts group 2 (each row holds two groups)
    # llama2.c divides 0 by 0 there and casts NaN to int8; we store scale 0 and q 0, which
    # dequantize to exactly 0.
    assert scale[zero] == 0 and torch.isnan(rounded[zero]).all()
    assert ours.scales[zero] == 0 and not ours.q.reshape(-1, group_size)[zero].any()
    assert not ours.to_float32()[1, :group_size].any()

    valid = np.ones(len(scale), bool)
    valid[zero] = False
    np.testing.assert_array_equal(ours.q.reshape(-1, group_size)[valid],
                                  rounded.to(torch.int8).numpy()[valid])
    assert_bits_equal(ours.scales[valid], scale.numpy()[valid])


def test_quantize_keeps_tiny_groups_finite():
    # max|w| / 127 underflows to 0 for the smallest subnormal: llama2.c would divide by zero.
    groups = quantize(np.array([1e-45, -1e-45, 0, 0], np.float32), 4)
    assert groups.scales.tolist() == [0.0] and groups.q.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("dim, group_size", [(288, 32), (256, 64), (96, 32), (100, 4), (2, 2)])
def test_default_group_size(dim, group_size):
    assert default_group_size(dim) == group_size


def test_int8_groups_dequantize_known_answer():
    groups = Int8Groups(np.array([1, -2, 3, 127], np.int8), np.array([0.5, 2.0], np.float32), 2, (2, 2))
    assert groups.to_float32().tolist() == [[0.5, -1.0], [6.0, 254.0]]


# ---------------------------------------------------------------------------------------------
# v0 RoPE tables against llama2.c's model.py (torch)


def torch_rope_tables(head_dim, max_seq_len):
    """model.py's precompute_freqs_cis, as legacy_export writes freqs_cos/freqs_sin[:max_seq_len]."""
    freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    t = torch.arange(max_seq_len)
    freqs = torch.outer(t, freqs).float()
    return torch.cos(freqs).numpy(), torch.sin(freqs).numpy()


@pytest.mark.parametrize("head_dim", [8, 48, 64])  # 48: stories15M; 64: stories42M/110M
def test_v0_rope_tables_match_llama2c(tmp_path, head_dim):
    seq = 256
    config = ModelArgs(dim=head_dim, hidden_dim=4, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=3,
                       max_seq_len=seq)
    path = written(llama2c.write, make_checkpoint(config), tmp_path / "v0.bin", 0)
    # The tables follow the 28-byte config and these float32s (docs/formats.md): embedding (3, D),
    # one layer's two norms (D each), wq wk wv wo (D, D each), w1 w2 w3 (4·D each), final norm.
    D = head_dim
    before = 3 * D + 2 * D + 4 * D * D + 3 * 4 * D + D
    tables = np.fromfile(path, dtype="<f4", offset=28 + 4 * before, count=2 * seq * D // 2)
    cos, sin = tables.reshape(2, seq, head_dim // 2)
    ref_cos, ref_sin = torch_rope_tables(head_dim, seq)
    # Ours are float64 cos/sin of the float32 angle, rounded once; torch's vectorized float32
    # cos/sin are not correctly rounded and drift for large angles. The angle itself (up to
    # seq - 1) is only known to its float32 spacing, so that spacing is the tolerance; measured
    # worst case 3.8e-6 against 1.5e-5 here.
    tolerance = np.spacing(np.float32(seq - 1))
    np.testing.assert_allclose(cos, ref_cos, rtol=0, atol=tolerance)
    np.testing.assert_allclose(sin, ref_sin, rtol=0, atol=tolerance)
    # Position 0 is the identity rotation, exactly.
    assert (cos[0] == 1).all() and (sin[0] == 0).all()


# ---------------------------------------------------------------------------------------------
# tokenizer.bin


@pytest.fixture(scope="module")
def llama2_vocab(shared_data):
    """The Llama 2 vocabulary as sentencepiece reports it."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(shared_data / "llama2" / "tokenizer.model"))
    ids = range(sp.vocab_size())

    def token_type(i):
        if sp.is_byte(i):
            return TokenType.BYTE
        if sp.is_control(i):
            return TokenType.CONTROL
        if sp.is_unknown(i):
            return TokenType.UNKNOWN
        return TokenType.NORMAL

    return Vocab([sp.id_to_piece(i) for i in ids], [sp.get_score(i) for i in ids],
                 [token_type(i) for i in ids], unk_id=sp.unk_id(), bos_id=sp.bos_id(), eos_id=sp.eos_id())


def test_tokenizer_bin_byte_identical_to_llama2c(shared_data, llama2_vocab, tmp_path):
    shipped = (shared_data / "llama2" / "tokenizer.bin").read_bytes()
    assert len(shipped) == LLAMA2_TOKENIZER_BIN_SIZE
    llama2c.write_tokenizer(llama2_vocab, tmp_path / "tokenizer.bin")
    assert (tmp_path / "tokenizer.bin").read_bytes() == shipped


def test_read_llama2_tokenizer_bin(shared_data, llama2_vocab):
    vocab = llama2c.read_tokenizer(shared_data / "llama2" / "tokenizer.bin", len(llama2_vocab))
    assert vocab == llama2_vocab  # pieces, score bits, types, special ids


SMALL_PIECES = ["<unk>", "<s>", "</s>", "<0x0A>", "\u2581a", "\u2581\u2581", "é", "👋"]
SMALL_SCORES = [0.0, 0.0, 0.0, 0.0, -1.5, -2.0, -3.25, -1e9]


def small_tokenizer_bytes():
    """The small vocabulary's tokenizer.bin, assembled by hand from the layout."""
    texts = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b"<0x0A>", b" a", b"  ", "é".encode(), "👋".encode()]
    out = struct.pack("<I", 6)  # the longest pieces: "\n</s>\n" and "<0x0A>"
    for text, score in zip(texts, SMALL_SCORES):
        out += struct.pack("<fI", score, len(text)) + text
    return out


def test_tokenizer_known_bytes_and_round_trip(tmp_path):
    llama2c.write_tokenizer(small_vocab(SMALL_PIECES, SMALL_SCORES), tmp_path / "tok.bin")
    assert (tmp_path / "tok.bin").read_bytes() == small_tokenizer_bytes()
    assert llama2c.read_tokenizer(tmp_path / "tok.bin", len(SMALL_PIECES)) == small_vocab(SMALL_PIECES, SMALL_SCORES)


# ---------------------------------------------------------------------------------------------
# bad checkpoints


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """version -> bytes of a valid TINY file."""
    tmp = tmp_path_factory.mktemp("tiny")
    return {v: written(llama2c.write, make_checkpoint(TINY), tmp / f"v{v}.bin", v).read_bytes() for v in (0, 1, 2)}


def cut(tmp_path, data, n):
    path = tmp_path / "cut.bin"
    path.write_bytes(data[:n])
    return path


@pytest.mark.parametrize("version, n, fragment", [
    (0, 0, "magic or config.dim at byte 0"),
    (0, 2, "magic or config.dim at byte 0: needs 4 bytes"),
    (0, 13, "config.n_heads at byte 12: needs 4 bytes"),
    (0, 27, "config.max_seq_len at byte 24"),
    (0, 28, "file size at byte 28"),
    (0, 500, "file size at byte 500"),
    (1, 6, "version at byte 4"),
    (1, 36, "shared_classifier at byte 36"),
    (1, 100, "header padding at byte 37"),
    (1, 256, "file size at byte 256"),
    (2, 40, "group_size at byte 37"),
    (2, 300, "file size at byte 300"),
])
def test_truncated_checkpoint(tmp_path, tiny_files, version, n, fragment):
    assert_format_error(fragment, llama2c.read, cut(tmp_path, tiny_files[version], n))


@pytest.mark.parametrize("version", [0, 1, 2])
def test_checkpoint_one_byte_short_or_long(tmp_path, tiny_files, version):
    data = tiny_files[version]
    assert_format_error(f"file size at byte {len(data) - 1}", llama2c.read,
                        cut(tmp_path, data, len(data) - 1))
    (tmp_path / "long.bin").write_bytes(data + b"\0")
    assert_format_error(f"file size at byte {len(data)}: the header describes a {len(data)}-byte file",
                        llama2c.read, tmp_path / "long.bin")


def test_v0_unshared_flag_without_output_is_a_size_error(tmp_path, tiny_files):
    path = patched(tmp_path, tiny_files[0], 20, struct.pack("<i", -TINY.vocab_size))
    assert_format_error("file size at byte", llama2c.read, path)


@pytest.mark.parametrize("version, field, value", [
    (0, "dim", 0), (0, "n_layers", -1), (0, "vocab_size", 0), (0, "max_seq_len", -256),
    (1, "hidden_dim", -5), (1, "n_kv_heads", 0), (1, "vocab_size", -10),  # negative: v0 only
    (2, "n_heads", 0), (2, "max_seq_len", 0),
])
def test_nonpositive_config_field(tmp_path, tiny_files, version, field, value):
    offset = (0 if version == 0 else 8) + 4 * FIELDS.index(field)
    path = patched(tmp_path, tiny_files[version], offset, struct.pack("<i", value))
    assert_format_error(f"config.{field} at byte {offset}: must be a positive int32, got {value}",
                        llama2c.read, path)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("field, value, fragment", [
    ("n_heads", 3, "config.n_heads at byte {}: 3 does not divide dim 8"),
    ("n_kv_heads", 3, "config.n_kv_heads at byte {}: 3 does not divide n_heads 2"),
    ("n_heads", 8, "config.n_heads at byte {}: head_dim = dim / n_heads = 1 is odd"),
])
def test_inconsistent_heads(tmp_path, tiny_files, version, field, value, fragment):
    offset = (0 if version == 0 else 8) + 4 * FIELDS.index(field)
    path = patched(tmp_path, tiny_files[version], offset, struct.pack("<i", value))
    assert_format_error(fragment.format(offset), llama2c.read, path)


@pytest.mark.parametrize("version", [0, 3, -1])
def test_unknown_version(tmp_path, tiny_files, version):
    path = patched(tmp_path, tiny_files[1], 4, struct.pack("<i", version))
    assert_format_error(f"version at byte 4: unsupported version {version}", llama2c.read, path)


def test_bad_header_flags(tmp_path, tiny_files):
    assert_format_error("shared_classifier at byte 36: must be 0 or 1, got 2", llama2c.read,
                        patched(tmp_path, tiny_files[1], 36, b"\x02"))
    assert_format_error("header padding at byte 100", llama2c.read,
                        patched(tmp_path, tiny_files[1], 100, b"\x07"))
    for group_size in (0, -8, 3, 16):
        assert_format_error(f"group_size at byte 37: {group_size} does not divide dim 8", llama2c.read,
                            patched(tmp_path, tiny_files[2], 37, struct.pack("<i", group_size)))


def test_huge_config_fails_on_size_without_allocating(tmp_path, tiny_files):
    # 2^31-1 layers of dim 2^30: a reader that allocated or laid out tensors first would die here.
    header = struct.pack("<7i", 2**30, 2**31 - 1, 2**31 - 1, 2**20, 2**20, 2**31 - 1, 2**31 - 1)
    path = patched(tmp_path, tiny_files[0], 0, header)
    assert_format_error(f"file size at byte {len(tiny_files[0])}", llama2c.read, path)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.bin"
    assert_format_error(f"{path}: file: No such file or directory", llama2c.read, path)


# ---------------------------------------------------------------------------------------------
# bad tokenizer.bin


@pytest.fixture()
def small_tokenizer(tmp_path):
    path = tmp_path / "tok.bin"
    path.write_bytes(small_tokenizer_bytes())
    return path


@pytest.mark.parametrize("n, fragment", [
    (0, "max_token_length at byte 0"),
    (3, "max_token_length at byte 0: needs 4 bytes"),
    (4, "token[0].score at byte 4"),
    (9, "token[0].length at byte 8"),
    (14, "token[0].bytes at byte 12: needs 5 bytes but the file (14 bytes) has 2 left"),
    (-1, "token[7].bytes at byte"),
])
def test_truncated_tokenizer(tmp_path, n, fragment):
    (tmp_path / "cut.bin").write_bytes(small_tokenizer_bytes()[:n])
    assert_format_error(fragment, llama2c.read_tokenizer, tmp_path / "cut.bin", len(SMALL_PIECES))


def test_tokenizer_lengths_past_eof_or_max(tmp_path):
    data = small_tokenizer_bytes()
    last_length_at = len(data) - 4 - 4  # "👋" is 4 bytes, after its uint32 length
    assert_format_error(f"token[7].bytes at byte {len(data) - 4}: needs 6 bytes", llama2c.read_tokenizer,
                        patched(tmp_path, data, last_length_at, struct.pack("<I", 6)), len(SMALL_PIECES))
    assert_format_error(f"token[7].length at byte {last_length_at}: 4294967295 bytes is longer than "
                        "max_token_length 6", llama2c.read_tokenizer,
                        patched(tmp_path, data, last_length_at, struct.pack("<I", 2**32 - 1)),
                        len(SMALL_PIECES))
    # With a max_token_length that allows it, the length runs past the end of the file.
    huge = patched(tmp_path, patch(data, 0, struct.pack("<I", 2**32 - 1)), last_length_at,
                   struct.pack("<I", 2**32 - 1))
    assert_format_error("token[7].bytes at byte", llama2c.read_tokenizer, huge, len(SMALL_PIECES))


def test_tokenizer_non_utf8(tmp_path):
    data = small_tokenizer_bytes()
    at = data.index("é".encode())
    assert_format_error(f"token[6].bytes at byte {at}: invalid UTF-8 at byte {at}", llama2c.read_tokenizer,
                        patched(tmp_path, data, at, b"\xff"), len(SMALL_PIECES))


def test_tokenizer_wrong_vocab_size(small_tokenizer):
    size = len(small_tokenizer_bytes())
    last = 4 + 4 + len("👋".encode())  # score, length, 4 bytes of UTF-8
    assert_format_error(f"end of vocabulary at byte {size - last}: {last} bytes follow the 7 pieces",
                        llama2c.read_tokenizer, small_tokenizer, len(SMALL_PIECES) - 1)
    assert_format_error(f"token[8].score at byte {size}", llama2c.read_tokenizer, small_tokenizer,
                        len(SMALL_PIECES) + 1)


# ---------------------------------------------------------------------------------------------
# what write refuses (the caller's objects, not a file: ValueError)


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("norm.weight"), "missing ['norm.weight']"),
    (lambda w: w.update({"layers.9.ffn_norm.weight": np.ones(8)}), "unexpected ['layers.9.ffn_norm.weight']"),
    (lambda w: w.update({"layers.0.attention.wk.weight": np.ones((8, 8))}), "needs (4, 8)"),
])
def test_write_rejects_weights_that_do_not_fit(tmp_path, change, message):
    ckpt = make_checkpoint(TINY)
    change(ckpt.weights)
    with pytest.raises(ValueError) as info:
        llama2c.write(ckpt, tmp_path / "x.bin", 1)
    assert message in str(info.value)
    assert not (tmp_path / "x.bin").exists()


@pytest.mark.parametrize("version, group_size, message", [
    (3, None, "unknown llama2.c version 3"),
    (1, 8, "group_size applies to version 2 only"),
    (2, 3, "group_size 3 does not divide dim 8"),
])
def test_write_rejects_bad_version_or_group_size(tmp_path, version, group_size, message):
    with pytest.raises(ValueError, match=message):
        llama2c.write(make_checkpoint(TINY), tmp_path / "x.bin", version, group_size=group_size)


def test_write_rejects_bad_config_and_nan(tmp_path):
    # A bad config cannot make a Checkpoint any more: args_from_config (what read uses) refuses it.
    def bad():
        return Checkpoint(llama2c.args_from_config(dict(zip(llama2c.CONFIG_FIELDS, (8, 12, 2, 3, 1, 10, 4)))), {})
    with pytest.raises(ValueError, match="config.n_heads 3 does not divide dim 8"):
        llama2c.write(bad(), tmp_path / "x.bin", 0)
    ckpt = make_checkpoint(TINY)
    ckpt.weights["layers.1.feed_forward.w2.weight"][3, 3] = np.nan
    with pytest.raises(ValueError, match="inf or NaN"):
        llama2c.write(ckpt, tmp_path / "x.bin", 2)


def test_write_refuses_a_config_an_int32_cannot_hold(tmp_path):
    ckpt = make_checkpoint(dataclasses.replace(TINY, max_seq_len=2**31))
    with pytest.raises(ValueError, match="config.max_seq_len 2147483648 does not fit in an int32"):
        llama2c.write(ckpt, tmp_path / "x.bin", 1)
    assert not (tmp_path / "x.bin").exists()


def test_formats_module_does_not_import_torch():
    code = "import sys, formats.llama2c; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
