"""formats.quant's decoders of the k-quants, i-quants, ternary and FP4 types (formats/quants/)
against two oracles: gguf-py's dequantize, bit for bit (NaN payloads included), and llama.cpp's
own dequantize_row_* C functions (tests/support/ggml_c.py). Random blocks with finite scales, then with
NaN and infinite scales; known-answer blocks a person can check on paper; tensors spanning
several of formats.quant's chunks; bad shapes.

Blocks whose scale is NaN or infinite decode to a defined result, the one gguf-py gives (the
choice formats/quant.py documents), with no NumPy warning. llama.cpp's C agrees with both except
in the sign bit of NaNs for the types that flip signs (measured: its compiled sign flip negates a
NaN, where gguf-py's and our float products keep it); all real values agree bit for bit.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.ggml import BLOCK, GGMLType
from formats.quant import dequantize, dequantize_rows
from formats.quants.tables import IQ4_NL_VALUES
from tests.support.compare import assert_same_bits
from tests.support.ggml_c import c_dequantize
from tests.support.quant import F16_FIELDS, map_scales, random_blocks
from tests.support.quant import oracle_dequantize

T = GGMLType
LEGACY = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}           # tests/test_quant.py's
TYPES = [t for t in F16_FIELDS if t not in LEGACY]
# Types whose grid values get their signs from bits: llama.cpp's C gives NaNs of the other sign.
SIGN_FLIPPING = {T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S}


def test_every_block_type_is_covered():
    assert set(TYPES) == {t for t in GGMLType if BLOCK[t][0] > 1} - LEGACY


def same_as_gguf(raw, ggml_type):
    n_rows = raw.shape[0]
    n = raw.shape[1] // BLOCK[ggml_type][1] * BLOCK[ggml_type][0]
    ours = dequantize(raw, ggml_type, (n_rows, n))
    assert_same_bits(ours, oracle_dequantize(raw, ggml_type))
    return ours


blocks_of_any_type = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 3))
# fp16 inf, -inf, quiet and signalling NaNs of either sign with payloads; and plain values.
nonfinite_f16 = st.sampled_from([0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0xFDFF, 0x7FFF, 0xFFFF])
any_f16 = nonfinite_f16 | st.integers(0, 0xFFFF)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
@settings(max_examples=60)
@given(shape=blocks_of_any_type)
def test_random_blocks_match_gguf_and_llama_cpp(ggml_type, shape):
    seed, n_rows, n_blocks = shape
    raw = random_blocks(seed, ggml_type, n_rows, n_blocks)
    ours = same_as_gguf(raw, ggml_type)
    c = c_dequantize(raw, ggml_type)
    np.testing.assert_array_equal(ours.reshape(-1).view(np.uint32), c.view(np.uint32))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("ggml_type", [t for t in TYPES if t not in (T.MXFP4, T.NVFP4)], ids=lambda t: t.name)
@settings(max_examples=60)
@given(shape=blocks_of_any_type, data=st.data())
def test_nan_and_inf_scales_match_gguf(ggml_type, shape, data):
    """Scales drawn from inf, -inf and NaNs (and some ordinary values), every scale field."""
    seed, n_rows, n_blocks = shape
    raw = random_blocks(seed, ggml_type, n_rows, n_blocks).reshape(n_rows, n_blocks, -1)
    n_fields = max(1, len(F16_FIELDS[ggml_type])) * n_rows * n_blocks
    draws = iter(data.draw(st.lists(any_f16, min_size=n_fields, max_size=n_fields)))
    map_scales(raw, ggml_type, lambda bits: np.array([next(draws) for _ in range(bits.size)],
                                                     dtype=np.uint16).reshape(bits.shape))
    raw = raw.reshape(n_rows, -1)
    ours = same_as_gguf(raw, ggml_type).reshape(-1)
    c = c_dequantize(raw, ggml_type)
    ours_bits, c_bits = ours.view(np.uint32), c.view(np.uint32)
    if ggml_type in SIGN_FLIPPING:                         # compare NaNs without their sign
        ours_bits = np.where(np.isnan(ours), ours_bits & 0x7FFFFFFF, ours_bits)
        c_bits = np.where(np.isnan(c), c_bits & 0x7FFFFFFF, c_bits)
    np.testing.assert_array_equal(ours_bits, c_bits)


@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
def test_a_tensor_of_several_chunks(ggml_type):
    # formats.quant decodes 2**19 elements at a time: 4 rows of 2**18 + 2 blocks make 3 chunks,
    # the last one partial, and rows that straddle them.
    block_size = BLOCK[ggml_type][0]
    raw = random_blocks(11, ggml_type, 4, 2**18 // block_size + 2)
    same_as_gguf(raw, ggml_type)


@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
def test_rows_of_a_memmap(ggml_type, tmp_path):
    raw = random_blocks(5, ggml_type, 6, 512 // BLOCK[ggml_type][0])
    path = tmp_path / "tensor.bin"
    path.write_bytes(b"x" + raw.tobytes())                 # an odd offset: unaligned fields
    rows = np.memmap(path, dtype=np.uint8, mode="r", offset=1).reshape(6, -1)
    expected = oracle_dequantize(raw, ggml_type)
    assert_same_bits(dequantize_rows(rows[2:5], ggml_type, 512), expected[2:5])
    assert_same_bits(dequantize(raw.tobytes(), ggml_type, (3, 2, 512)), expected.reshape(3, 2, 512))


@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
def test_a_row_not_a_multiple_of_the_block_is_refused(ggml_type):
    block_size, type_size = BLOCK[ggml_type]
    with pytest.raises(ValueError, match="multiple"):
        dequantize(np.zeros(type_size, np.uint8), ggml_type, (block_size + 16,))
    with pytest.raises(ValueError, match=f"takes {type_size} bytes, got {type_size - 1}"):
        dequantize(np.zeros(type_size - 1, np.uint8), ggml_type, (block_size,))


# ---------------------------------------------------------------------------------------------
# Known answers, checkable on paper from the layouts in formats/quants/

ONE = "003c"          # fp16 1.0
HALF = "0038"         # fp16 0.5
TWO = "0040"          # fp16 2.0
CODES_3210 = "1b"     # 0b00_01_10_11: 2-bit codes 3, 2, 1, 0 at shifts 0, 2, 4, 6


def block(*hex_parts):
    return np.frombuffer(bytes.fromhex("".join(hex_parts)), dtype=np.uint8)


def decoded(ggml_type, raw):
    out = dequantize(raw, ggml_type, (BLOCK[ggml_type][0],))
    assert_same_bits(out, oracle_dequantize(raw[None], ggml_type)[0])
    return out.tolist()


def runs(*values, length=32):
    return [v for v in values for _ in range(length)]


def test_q2_k_known_block():
    # scales 0x21: sc 1, mn 2; d 2, dmin 1; codes 3, 2, 1, 0 by k: x = 2 * 1 * q - 1 * 2.
    raw = block("21" * 16, CODES_3210 * 64, TWO, ONE)
    assert decoded(T.Q2_K, raw) == runs(4, 2, 0, -2) * 2


def test_q3_k_known_block():
    # Every scale is 33 - 32 = 1: low nibbles 1 (bytes 0x11), high crumbs 2 (bytes 0xaa). hmask
    # 0x0f sets bits 0..3, i.e. the first half's: x = q there and q - 4 in the second half.
    raw = block("0f" * 32, CODES_3210 * 64, "11" * 8, "aa" * 4, ONE)
    assert decoded(T.Q3_K, raw) == runs(3, 2, 1, 0) + runs(-1, -2, -3, -4)


def test_q5_k_known_block():
    # d 1, dmin 0, every sc 1 (s = 01 01 01 01 | 00 x4 | 01 x4), low bits 0; qh[l] = 1 << (l % 8)
    # sets bit 4 of element 32i + l exactly when i == l % 8: x = 16 there, else 0.
    qh = "".join(f"{1 << (l % 8):02x}" for l in range(32))
    raw = block(ONE, "0000", "01" * 4, "00" * 4, "01" * 4, qh, "00" * 128)
    assert decoded(T.Q5_K, raw) == [16.0 if i == l % 8 else 0.0 for i in range(8) for l in range(32)]


def test_iq4_nl_known_block():
    # d 1; byte j = j | (15 - j) << 4: element j is value j, element 16 + j is value 15 - j.
    raw = block(ONE, "".join(f"{j | (15 - j) << 4:02x}" for j in range(16)))
    assert decoded(T.IQ4_NL, raw) == list(IQ4_NL_VALUES) + list(IQ4_NL_VALUES[::-1])


def test_mxfp4_known_block():
    # e = 127: scale 2**-1 times the doubled E2M1 values gives E2M1 itself, the OCP table
    # 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives (code 8, "-0", decodes as +0).
    raw = block("7f", "".join(f"{j | j << 4:02x}" for j in range(16)))
    e2m1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6]
    assert decoded(T.MXFP4, raw) == e2m1 * 2


def test_tq2_0_known_block():
    # d 0.5, every byte 0x1b: element 128h + 32k + l has q = 3 - k, x = 0.5 * (q - 1).
    raw = block(CODES_3210 * 64, HALF)
    assert decoded(T.TQ2_0, raw) == runs(1, 0.5, 0, -0.5) * 2


def test_tq1_0_known_block():
    # Digits (2, 1, 0, 2, 1), most significant first, are v = 2*81 + 27 + 0 + 2*3 + 1 = 196,
    # stored as ceil(196 * 256 / 243) = 207 (0xcf); qh's four digits (2, 1, 0, 2) as
    # v = 2*81 + 27 + 0 + 2*3 = 195 -> ceil(195 * 256 / 243) = 206 (0xce). x = d * (digit - 1).
    raw = block("cf" * 48, "ce" * 4, ONE)
    assert decoded(T.TQ1_0, raw) == runs(1, 0, -1, 1, 0) + runs(1, 0, -1, 1, 0, length=16) \
        + runs(1, 0, -1, 1, length=4)


def test_iq2_xxs_known_block():
    # Grid point 0 is the smallest candidate, all 8 coordinates at level 8. d 1, s 3:
    # db = 1 * (0.5 + 3) * 0.25 = 0.875, x = 7 * sign. Sub-block 0's word b = 0x30000001: sign
    # index 1 for group 0, whose pattern 0x81 (1 | parity 1 << 7) negates elements 0 and 7.
    sub_block_0 = "00000000" + "01000030"
    other = "00000000" + "00000030"
    raw = block(ONE, sub_block_0, other * 7)
    assert decoded(T.IQ2_XXS, raw) == [-7, 7, 7, 7, 7, 7, 7, -7] + [7] * 248


def test_iq1_s_known_block():
    # d 1, every h 0: dl = 1 * (2 * 0 + 1), delta +1/8; grid point 0 is all -1: x = -0.875.
    raw = block(ONE, "00" * 32, "0000" * 8)
    assert decoded(T.IQ1_S, raw) == [-0.875] * 256
