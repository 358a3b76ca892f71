"""formats.quant against gguf-py (gguf.quants), the oracle: quantized bytes and dequantized floats
bit for bit, on arbitrary floats, every scale from subnormal to float32 max, and exact .5 ties;
known-answer blocks a person can check on paper; round-trip error bounds; bad input."""

import struct

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from formats.ggml import BLOCK, GGMLType
from formats.quant import dequantize, dequantize_rows, quantize
from tests.support.compare import assert_same_bits
from tests.support.quant import oracle_dequantize
from tests.support.quant import random_blocks

T = GGMLType
QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
DEQUANTIZABLE = QUANTIZABLE + [T.Q4_K, T.Q6_K]
BLOCK_TYPES = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
F32_MAX = float(np.finfo(np.float32).max)


def oracle_quantize(x, ggml_type):
    """gguf-py's bytes for x (its F32/F16 come back as floats, hence the uint8 view)."""
    with np.errstate(all="ignore"):                        # it warns on underflowing blocks
        out = gguf_quants.quantize(x, GGMLQuantizationType(ggml_type))
    return np.ascontiguousarray(out).view(np.uint8)


def assert_same_quant(x, ggml_type):
    ours = quantize(x, ggml_type)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, oracle_quantize(x, ggml_type))


def block_bytes(*hex_words):
    return bytes.fromhex("".join(hex_words))


# ---------------------------------------------------------------------------------------------
# Quantization: bit-identical to gguf-py

any_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("ggml_type", QUANTIZABLE, ids=lambda t: t.name)
@settings(max_examples=150)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([32, 64])),
                    elements=any_float32))
def test_quantize_matches_gguf_on_any_floats(ggml_type, x):
    # hypothesis's floats favour the edges: ±0, subnormals, float32 max, 1 ± ulp, equal values.
    assert_same_quant(x, ggml_type)


@st.composite
def multiscale_tensors(draw):
    """(rows, 32 * blocks) normals, each block scaled by its own 2**e from subnormal to huge,
    some blocks all +0.0, all -0.0 or a mix of both."""
    rows, n_blocks = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    exponents = draw(st.lists(st.integers(-155, 124), min_size=rows * n_blocks,
                              max_size=rows * n_blocks))
    x = rng.standard_normal((rows * n_blocks, 32)) * np.exp2(exponents)[:, None]
    zero_kind = rng.integers(0, 8, size=rows * n_blocks)   # 0: +0, 1: -0, 2: ±0, else normal
    x[zero_kind == 0] = 0.0
    x[zero_kind == 1] = -0.0
    x[zero_kind == 2] = np.where(rng.random(32) < 0.5, 0.0, -0.0)
    return np.clip(x, -F32_MAX, F32_MAX).astype(np.float32).reshape(rows, n_blocks * 32)


@pytest.mark.parametrize("ggml_type", QUANTIZABLE, ids=lambda t: t.name)
@settings(max_examples=100)
@given(x=multiscale_tensors())
def test_quantize_matches_gguf_across_scales(ggml_type, x):
    assert_same_quant(x, ggml_type)


TINY = np.float32(2.0**-149)                               # the smallest subnormal
SPECIAL_BLOCKS = {
    "zeros": np.zeros(32),
    "negative zeros": np.full(32, -0.0),
    "constant": np.full(32, -3.25),
    "float32 max": np.full(32, F32_MAX),
    "±float32 max": np.tile([F32_MAX, -F32_MAX], 16),      # Q4_1's max - min overflows to inf
    "smallest subnormal": np.where(np.arange(32) % 3 == 0, TINY, 0.0),
    "subnormals": np.arange(-16, 16) * TINY * 1000,
    # Q8_0's d = amax/127 falls below 2**-128 here, so 1/d overflows to inf.
    "just under Q8_0's 1/d overflow": np.linspace(-1, 1, 32) * 127 * 2.0**-128.5,
    "just over Q8_0's 1/d overflow": np.linspace(-1, 1, 32) * 127 * 2.0**-127.5,
    "first of ±max wins": np.array([0.0, 5.0, -5.0] + [1.0] * 29),
    "first of ∓max wins": np.array([0.0, -5.0, 5.0] + [1.0] * 29),
}


@pytest.mark.parametrize("ggml_type", QUANTIZABLE, ids=lambda t: t.name)
@pytest.mark.parametrize("name", SPECIAL_BLOCKS)
def test_quantize_matches_gguf_on_special_blocks(ggml_type, name):
    x = np.asarray(SPECIAL_BLOCKS[name], dtype=np.float32)
    assert_same_quant(x, ggml_type)
    assert_same_quant(np.stack([x, -x, x[::-1]]), ggml_type)


# How each block type maps x to k + 0.5 exactly: anchors that make 1/d = 2**-e exact, and the
# range of k the other elements may take without becoming the block's max or min.
TIE_ANCHORS = {                                            # type: (anchors, lowest k, highest k)
    T.Q8_0: ([127], -127, 126),                            # d = 127 * 2**e / 127
    T.Q4_0: ([-8], -8, 7),                                 # d = -8 * 2**e / -8
    T.Q5_0: ([-16], -16, 15),
    T.Q4_1: ([-4, 11], -4, 10),                            # d = (11 + 4) * 2**e / 15
    T.Q5_1: ([-7, 24], -7, 23),
}


@pytest.mark.parametrize("ggml_type", list(TIE_ANCHORS), ids=lambda t: t.name)
@settings(max_examples=80)
@given(data=st.data(), e=st.integers(-10, 10))
def test_quantize_matches_gguf_on_exact_ties(ggml_type, data, e):
    anchors, low, high = TIE_ANCHORS[ggml_type]
    ks = data.draw(st.lists(st.integers(low, high), min_size=32 - len(anchors), max_size=32 - len(anchors)))
    x = (np.array(anchors + [k + 0.5 for k in ks]) * 2.0**e).astype(np.float32)
    assert_same_quant(x, ggml_type)


def test_q8_0_ties_round_half_away_from_zero():
    # amax 127 gives d = 1: each code is roundf(x). np.round would give 0, -0, 2, -2 for ±0.5, ±2.5;
    # 0.49999997 (just below 0.5) must give 0, which trunc(x + 0.5) gets wrong.
    x = np.zeros(32, dtype=np.float32)
    x[:11] = [127, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.49999997, -0.49999997]
    codes = [127, 1, -1, 2, -2, 3, -3, 127, -127, 0, 0] + [0] * 21
    expected = block_bytes("003c") + np.array(codes, dtype=np.int8).tobytes()
    assert quantize(x, T.Q8_0).tobytes() == expected


@pytest.mark.parametrize("ggml_type", QUANTIZABLE, ids=lambda t: t.name)
def test_quantize_matches_gguf_on_a_large_tensor(ggml_type):
    # Several of formats.quant's internal chunks (2**19 values), the last one partial.
    x = np.random.default_rng(7).standard_normal((40, 32 * 1000), dtype=np.float32)
    assert_same_quant(x, ggml_type)


# ---------------------------------------------------------------------------------------------
# Known answers, checkable on paper

def test_q8_0_known_block():
    # x = 0..31: amax 31, d = 31/127 = 0.24409..., stored as fp16 0.244140625 = 0x33d0; the codes
    # are roundf(j * 127/31) = roundf(j * 4.0968), from the float32 d, not the fp16 one.
    codes = [0, 4, 8, 12, 16, 20, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61,
             66, 70, 74, 78, 82, 86, 90, 94, 98, 102, 107, 111, 115, 119, 123, 127]
    expected = block_bytes("d033") + bytes(codes)
    raw = quantize(np.arange(32, dtype=np.float32), T.Q8_0)
    assert raw.tobytes() == expected
    np.testing.assert_array_equal(dequantize(raw, T.Q8_0, (32,)),
                                  np.float32(0.244140625) * np.array(codes, dtype=np.float32))


NIBBLES_0_TO_F = "00112233445566778899aabbccddeeff"   # byte j = j | j << 4


def test_q4_0_known_block():
    # x = -8..7 twice: m = -8 (first largest magnitude), d = -8 / -8 = 1.0 = fp16 0x3c00, and
    # q = trunc(x + 8.5) = x + 8 = j % 16; byte j packs q[j] and q[j+16], both equal to j.
    x = (np.arange(32) % 16 - 8).astype(np.float32)
    raw = quantize(x, T.Q4_0)
    assert raw.tobytes() == block_bytes("003c", NIBBLES_0_TO_F)
    np.testing.assert_array_equal(dequantize(raw, T.Q4_0, (32,)), x)


def test_q4_0_zero_block_stores_negative_zero_d():
    # d = 0 / -8 = -0.0 (fp16 0x8000, as in ggml); 1/d is taken as 0, so every q = trunc(8.5) = 8.
    raw = quantize(np.zeros(32, dtype=np.float32), T.Q4_0)
    assert raw.tobytes() == block_bytes("0080", "88" * 16)


def test_q4_0_sign_of_d_follows_the_first_largest_magnitude():
    # ±5 both have the largest magnitude; the first one is m, d = m / -8 = ∓0.625 (fp16 0xb900/0x3900).
    x = np.zeros(32, dtype=np.float32)
    x[3], x[7] = 5, -5
    assert quantize(x, T.Q4_0)[:2].tobytes() == block_bytes("00b9")
    assert quantize(-x, T.Q4_0)[:2].tobytes() == block_bytes("0039")


def test_q4_1_known_block():
    # x = 0..15 twice: min 0, max 15, d = 15/15 = 1.0 (0x3c00), m = 0 (0x0000), q = trunc(x + 0.5) = x.
    x = (np.arange(32) % 16).astype(np.float32)
    raw = quantize(x, T.Q4_1)
    assert raw.tobytes() == block_bytes("003c", "0000", NIBBLES_0_TO_F)
    np.testing.assert_array_equal(dequantize(raw, T.Q4_1, (32,)), x)


def test_q5_0_known_block():
    # x = -16..15: m = -16, d = 1.0, q = trunc(x + 16.5) = j. The low nibbles of q[j], q[j+16] are
    # both j; bit 4 is set exactly for j >= 16, so qh = 0xffff0000 (bytes 00 00 ff ff).
    x = np.arange(-16, 16, dtype=np.float32)
    raw = quantize(x, T.Q5_0)
    assert raw.tobytes() == block_bytes("003c", "0000ffff", NIBBLES_0_TO_F)
    np.testing.assert_array_equal(dequantize(raw, T.Q5_0, (32,)), x)


def test_q5_1_known_block():
    # x = 0..31: min 0, max 31, d = 31/31 = 1.0, m = 0, q = j: qh and qs as in Q5_0.
    x = np.arange(32, dtype=np.float32)
    raw = quantize(x, T.Q5_1)
    assert raw.tobytes() == block_bytes("003c", "0000", "0000ffff", NIBBLES_0_TO_F)
    np.testing.assert_array_equal(dequantize(raw, T.Q5_1, (32,)), x)


def test_f16_and_bf16_known_values():
    x = np.array([1.0, -2.0, 65504.0, 0.0], dtype=np.float32)
    assert quantize(x, T.F16).tobytes() == block_bytes("003c", "00c0", "ff7b", "0000")
    # bf16 keeps the top 16 bits of the float32 rounded to nearest even: 1 + 2**-8 (0x3f808000)
    # is a tie and goes down to 0x3f80, 1 + 3 * 2**-8 (0x3f818000) goes up to 0x3f82; float32 max
    # rounds up to inf (0x7f80); a signalling NaN 0x7f800001 becomes the quiet 0x7fc0.
    bits = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x7F800001], dtype="<u4")
    assert quantize(bits.view("<f4"), T.BF16).view("<u2").tolist() == [0x3F80, 0x3F80, 0x3F82,
                                                                        0x7F80, 0x7FC0]


def pack_q4_k(d, dmin, sc, mn, q):
    """One Q4_K block written field by field from the layout in formats/quants/kquants.py."""
    s = bytearray(12)
    for i in range(4):
        s[i] = sc[i] | (sc[i + 4] >> 4) << 6
        s[i + 4] = mn[i] | (mn[i + 4] >> 4) << 6
        s[i + 8] = (sc[i + 4] & 15) | (mn[i + 4] & 15) << 4
    qs = bytearray(128)
    for j in range(256):
        sub, l = divmod(j, 32)
        qs[32 * (sub // 2) + l] |= q[j] << 4 * (sub % 2)
    return struct.pack("<ee", d, dmin) + bytes(s) + bytes(qs)


def test_q4_k_known_block():
    # Scales and mins above 15 for sub-blocks 4..7 exercise the 6-bit packing; all products are
    # exact, so x = d * sc[j // 32] * q[j] - dmin * mn[j // 32] whatever the order of operations.
    d, dmin = 0.5, 0.25
    sc = [1, 2, 3, 4, 17, 33, 49, 63]
    mn = [0, 1, 2, 3, 16, 32, 48, 63]
    q = [(5 * j) % 16 for j in range(256)]
    expected = np.array([d * sc[j // 32] * q[j] - dmin * mn[j // 32] for j in range(256)],
                        dtype=np.float32)
    raw = np.frombuffer(pack_q4_k(d, dmin, sc, mn, q), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(raw, T.Q4_K, (256,)), expected)
    assert_same_bits(dequantize(raw, T.Q4_K, (256,)), oracle_dequantize(raw[None], T.Q4_K)[0])


def pack_q6_k(d, sc, q):
    """One Q6_K block written field by field from the layout in formats/quants/kquants.py."""
    ql, qh = bytearray(128), bytearray(64)
    for j in range(256):
        h, r = divmod(j, 128)
        k, l = divmod(r, 32)
        ql[64 * h + 32 * (k % 2) + l] |= (q[j] & 15) << 4 * (k // 2)
        qh[32 * h + l] |= (q[j] >> 4) << 2 * k
    return bytes(ql) + bytes(qh) + struct.pack("<16b", *sc) + struct.pack("<e", d)


def test_q6_k_known_block():
    # Negative scales and all 64 codes; x = d * sc[j // 16] * (q[j] - 32), exact.
    d = 0.25
    sc = list(range(-8, 8))
    q = [(7 * j) % 64 for j in range(256)]
    expected = np.array([d * sc[j // 16] * (q[j] - 32) for j in range(256)], dtype=np.float32)
    raw = np.frombuffer(pack_q6_k(d, sc, q), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(raw, T.Q6_K, (256,)), expected)
    assert_same_bits(dequantize(raw, T.Q6_K, (256,)), oracle_dequantize(raw[None], T.Q6_K)[0])


# ---------------------------------------------------------------------------------------------
# Dequantization: bit-identical to gguf-py

@pytest.mark.parametrize("ggml_type", DEQUANTIZABLE, ids=lambda t: t.name)
@settings(max_examples=50)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 3), n_blocks=st.integers(1, 3))
def test_dequantize_matches_gguf(ggml_type, seed, n_rows, n_blocks):
    raw = random_blocks(seed, ggml_type, n_rows, n_blocks)
    n = n_blocks * BLOCK[ggml_type][0]
    assert_same_bits(dequantize(raw, ggml_type, (n_rows, n)), oracle_dequantize(raw, ggml_type))


@pytest.mark.parametrize("ggml_type", DEQUANTIZABLE, ids=lambda t: t.name)
def test_dequantize_a_memmap_slice_and_rows(ggml_type, tmp_path):
    # A (2, 3, n) tensor stored as a file, read back through a memmap shaped (..., row_bytes).
    block_size, type_size = BLOCK[ggml_type]
    raw = random_blocks(1, ggml_type, 6, 512 // block_size)
    path = tmp_path / "tensor.bin"
    path.write_bytes(b"header" + raw.tobytes())
    rows = np.memmap(path, dtype=np.uint8, mode="r", offset=6).reshape(2, 3, -1)
    expected = oracle_dequantize(raw, ggml_type).reshape(2, 3, 512)
    assert_same_bits(dequantize(rows, ggml_type, (2, 3, 512)), expected)
    assert_same_bits(dequantize(raw.tobytes(), ggml_type, (6, 512)), expected.reshape(6, 512))
    assert_same_bits(dequantize_rows(rows[1, 1:], ggml_type, 512), expected[1, 1:])


def test_dequantize_takes_arrays_of_any_dtype():
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    assert_same_bits(dequantize(x.astype(np.float16), T.F16, (64,)),
                     x.astype(np.float16).astype(np.float32))
    assert_same_bits(dequantize(x, T.F32, (2, 32)), x.reshape(2, 32))


# ---------------------------------------------------------------------------------------------
# Round trips, shapes and dtypes

# |x - dequantize(quantize(x))| per block, for block scales where d is a normal fp16 (the test
# draws 2**-4 .. 2**10 times normals, plus an offset for the min/max types).
FP16_REL = 2.0**-11        # fp16 keeps 11 significant bits: d (or m) moves by half an ulp at most
BF16_REL = 2.0**-8         # bf16 keeps 8
FP16_SUBNORMAL_ABS = 2.0**-25   # half the spacing of fp16 subnormals, for tiny F16 elements
F32_SLACK = 1 + 2.0**-10   # x * (1/d) is a few float32 ulps off, which can move a code across a
                           # rounding boundary by a hair: a tiny fraction of the bound
# Step fraction of the block scale (amax for Q8_0/Q4_0/Q5_0, max - min for Q4_1/Q5_1), plus
# |q| * FP16_REL * d from d's fp16 rounding (|q| <= 127, 8, 16, 15, 31 codes of size d).
ROUND_TRIP_STEP = {
    T.Q8_0: 1 / 254 + FP16_REL,    # half a step of amax/127
    T.Q4_0: 1 / 8 + FP16_REL,      # a whole step of amax/8: the element opposite m needs code 16,
    T.Q5_0: 1 / 16 + FP16_REL,     # which is clipped to 15 (Q5_0: 32 to 31)
    T.Q4_1: 1 / 30 + FP16_REL,     # half a step of (max - min)/15; m adds |min| * FP16_REL
    T.Q5_1: 1 / 62 + FP16_REL,
}


@st.composite
def normal_tensors(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, n_blocks = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    scale = np.exp2(rng.integers(-4, 11, size=(rows * n_blocks, 1)))
    offset = rng.uniform(-4, 4, size=(rows * n_blocks, 1))
    x = (rng.standard_normal((rows * n_blocks, 32)) + offset) * scale
    return x.astype(np.float32).reshape(rows, n_blocks * 32)


@pytest.mark.parametrize("ggml_type", QUANTIZABLE, ids=lambda t: t.name)
@settings(max_examples=60)
@given(x=normal_tensors())
def test_round_trip_error_is_bounded(ggml_type, x):
    y = dequantize(quantize(x, ggml_type), ggml_type, x.shape)
    err = np.abs(x - y)
    if ggml_type == T.F32:
        bound = np.zeros_like(x)
    elif ggml_type == T.F16:
        bound = np.abs(x) * FP16_REL + FP16_SUBNORMAL_ABS
    elif ggml_type == T.BF16:
        bound = np.abs(x) * BF16_REL
    else:
        blocks = x.reshape(-1, 32)
        lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
        if ggml_type in (T.Q4_1, T.Q5_1):
            bound = (hi - lo) * ROUND_TRIP_STEP[ggml_type] + np.abs(lo) * FP16_REL
        else:
            bound = np.maximum(hi, -lo) * ROUND_TRIP_STEP[ggml_type]
        bound = np.broadcast_to(bound, blocks.shape).reshape(x.shape)
    assert np.all(err <= bound * F32_SLACK)


@pytest.mark.parametrize("ggml_type", QUANTIZABLE, ids=lambda t: t.name)
def test_shapes_dtypes_and_input_casting(ggml_type):
    block_size, type_size = BLOCK[ggml_type]
    x64 = np.random.default_rng(3).standard_normal((2, 3, 64))
    raw = quantize(x64, ggml_type)
    assert raw.dtype == np.uint8 and raw.shape == (2, 3, 64 // block_size * type_size)
    # float64 (or float16) input is cast to float32 first; a non-contiguous view is fine.
    np.testing.assert_array_equal(raw, quantize(x64.astype(np.float32), ggml_type))
    x = x64.astype(np.float32)
    np.testing.assert_array_equal(quantize(x.transpose(1, 0, 2), ggml_type),
                                  quantize(np.ascontiguousarray(x.transpose(1, 0, 2)), ggml_type))
    y = dequantize(raw, ggml_type, x.shape)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert quantize(np.zeros((4, 0), np.float32), ggml_type).shape == (4, 0)


# ---------------------------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("ggml_type", BLOCK_TYPES, ids=lambda t: t.name)
def test_quantize_rejects_a_row_not_a_multiple_of_the_block(ggml_type):
    with pytest.raises(ValueError, match="multiple"):
        quantize(np.zeros((2, 48), np.float32), ggml_type)


@pytest.mark.parametrize("ggml_type", [T.Q4_K, T.Q6_K, T.I8])
def test_quantize_rejects_types_it_cannot_make(ggml_type):
    with pytest.raises(ValueError, match="cannot quantize"):
        quantize(np.zeros(256, np.float32), ggml_type)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="0-d"):
        quantize(np.float32(1), T.F32)
    with pytest.raises(ValueError):
        quantize(np.zeros(32, np.float32), 99)             # not a ggml type id
    with pytest.raises(ValueError, match="multiple"):
        dequantize(np.zeros(144, np.uint8), T.Q4_K, (288,))   # dim 288 cannot be K-quantized
    with pytest.raises(ValueError, match="takes 68 bytes, got 67"):
        dequantize(np.zeros(67, np.uint8), T.Q8_0, (2, 32))
    with pytest.raises(ValueError, match="cannot dequantize"):
        dequantize(np.zeros(4, np.uint8), T.I32, (1,))
    with pytest.raises(ValueError, match="axis"):
        dequantize(np.zeros(4, np.uint8), T.F32, ())
