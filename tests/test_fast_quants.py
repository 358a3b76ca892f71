"""The fast path on every quantized ggml type: each matrix is transcoded at load into int8 codes
and float32 block scales (+ block mins) (reference.runtime.blockwise.Int8BlockMatrix, from
formats.quant.codes_rows), which must stand for exactly the weights formats.quant.dequantize
gives, and whose products must be products by those weights.

Tolerances:
- the transcoded weights (`rows`, `take`): none. They are computed with dequantize's own float32
  operations in its order (formats/quants/codes.py), so every bit agrees, NaN payloads included.
- products: float32 summation order only. The one-token kernel sums each block's codes times x,
  then scales the block sums, then adds the mins times the block sums of x; a prompt's product
  sums x times the scaled codes and the block sums of x times the mins, in BLAS's order. Either is a float32 dot product whose error is
  bounded by ~n * 2**-24 times the sum of the magnitudes of its terms (n = 512 here); measured
  at most 1.6e-7 of that sum over every type, so the bound asked is 1e-5 of it: a wrong scale,
  a dropped min or a shifted block moves results by O(1) of it.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats import gguf, mapping, quant
from formats.ggml import BLOCK, GGMLType
from formats.quants.record import Mins
from formats.spec import ModelArgs
from reference.runtime.blockwise import Int8BlockMatrix
from models import load_model
from reference.runtime.packing import fused_codes
from tests.support.compare import FAST_LOGITS_ATOL
from tests.support.compare import assert_same_bits
from tests.support.quant import map_scales, random_blocks
from tests.support.weights import wide_logit_weights

TYPES = sorted(quant.CODES)
PRODUCT_RTOL = 1e-5


def transcoded(raw, ggml_type):
    n = raw.shape[1] // BLOCK[ggml_type][1] * BLOCK[ggml_type][0]
    return Int8BlockMatrix.from_codes(quant.codes_rows(raw, ggml_type, n))


def dequantized(raw, ggml_type):
    n = raw.shape[1] // BLOCK[ggml_type][1] * BLOCK[ggml_type][0]
    return quant.dequantize(raw, ggml_type, (raw.shape[0], n))


def test_every_quantized_type_is_transcoded():
    assert set(TYPES) == {t for t in GGMLType if BLOCK[t][0] > 1}


@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 9), n_blocks=st.integers(1, 3))
def test_transcoded_weights_are_the_dequantized_ones_bit_for_bit(ggml_type, seed, n_rows, n_blocks):
    raw = random_blocks(seed, ggml_type, n_rows, n_blocks)
    m, expected = transcoded(raw, ggml_type), dequantized(raw, ggml_type)
    assert m.codes.dtype == np.int8 and m.block == quant.CODES[ggml_type].group
    assert_same_bits(m.rows(0, n_rows, np.empty(expected.shape, np.float32)), expected)
    ids = np.random.default_rng(seed).integers(0, n_rows, 5)
    assert_same_bits(m.take(ids), expected[ids])


# fp16 inf, -inf and NaNs of either sign with payloads.
NONFINITE_F16 = np.array([0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0xFDFF], dtype=np.uint16)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("ggml_type", [t for t in TYPES if t not in (GGMLType.MXFP4, GGMLType.NVFP4)],
                         ids=lambda t: t.name)
def test_nan_and_inf_scales_transcode_to_the_same_bits(ggml_type):
    """Every fp16 scale field set to an infinity or a NaN (MXFP4/NVFP4 have none: their 8-bit
    scales are all finite), some blocks at a time, the rest kept."""
    raw = random_blocks(3, ggml_type, 6, 4).reshape(6, 4, -1)
    choice = np.random.default_rng(4)
    map_scales(raw, ggml_type, lambda bits: np.where(choice.random(bits.shape) < 0.5, bits,
                                                     choice.choice(NONFINITE_F16, bits.shape)).astype(np.uint16))
    raw = raw.reshape(6, -1)
    expected = dequantized(raw, ggml_type)
    assert not np.isfinite(expected).all()
    assert_same_bits(transcoded(raw, ggml_type).rows(0, 6, np.empty(expected.shape, np.float32)), expected)


def modest_blocks(seed, ggml_type, n_rows, n_blocks):
    """Random blocks whose scales are fp16 values between 2**-9 and 2**-2 (MXFP4: exponents
    near 2**0): weights of ordinary size, so products stay far from overflow."""
    raw = random_blocks(seed, ggml_type, n_rows, n_blocks).reshape(n_rows, n_blocks, -1)
    rng = np.random.default_rng(seed)
    map_scales(raw, ggml_type, lambda bits: rng.integers(0x1800, 0x3400, bits.shape, dtype=np.uint16))
    if ggml_type == GGMLType.MXFP4:
        raw[:, :, 0] = rng.integers(118, 130, raw.shape[:2])
    return raw.reshape(n_rows, -1)


@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens", [1, 4])
@pytest.mark.parametrize("part_cols", [None, 64], ids=["whole-rows", "column-parts"])
def test_products_are_products_by_the_dequantized_weights(ggml_type, n_tokens, part_cols, monkeypatch):
    # Chunks of 7 rows; a prompt's chunks of whole rows, or of parts of 64 columns (or of one
    # group, where a group sharing a scale is longer), the mins riding in the last part.
    width = 512 if part_cols is None else max(part_cols, quant.CODES[ggml_type].group)
    monkeypatch.setattr("reference.runtime.blockwise.CHUNK_ELEMENTS", width * 7)
    if part_cols is not None:
        monkeypatch.setattr("reference.runtime.blockwise.PROMPT_PART_COLS", part_cols)
    n_blocks = 512 // BLOCK[ggml_type][0]
    raw = modest_blocks(5, ggml_type, 45, n_blocks)
    m, w = transcoded(raw, ggml_type), dequantized(raw, ggml_type).astype(np.float64)
    assert m.chunk_rows == 7 and len(m.parts) == 512 // width
    x = np.random.default_rng(6).standard_normal((n_tokens, 512), dtype=np.float32)
    got = m.matmul(x)
    exact = x.astype(np.float64) @ w.T
    mins = 0 if m.mins is None else np.repeat(np.abs(m.mins.T), m.block, axis=1)
    magnitude = np.abs(x) @ (np.abs(w) + mins).T          # the terms either order sums
    assert np.all(np.abs(got - exact) <= PRODUCT_RTOL * magnitude)
    # A product over some of the rows only, as threads share one.
    out = np.zeros((n_tokens, 45), np.float32)
    m.product(x, out, 10, 30)
    assert np.all(np.abs(out[:, 10:30] - exact[:, 10:30]) <= PRODUCT_RTOL * magnitude[:, 10:30])
    assert not out[:, :10].any() and not out[:, 30:].any()


@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
def test_memory_is_one_byte_a_weight_and_four_a_group_for_the_scale_and_min(ggml_type):
    """The figures docs/formats.md tabulates per type (held B/w)."""
    group = quant.CODES[ggml_type].group
    n_rows, n_cols = 3, 768
    m = transcoded(random_blocks(7, ggml_type, n_rows, n_cols // BLOCK[ggml_type][0]), ggml_type)
    per_group = 4 if quant.CODES[ggml_type].mins == Mins.NONE else 8
    assert m.nbytes == n_rows * n_cols * (1 + per_group / group)


def test_mins_fuse_only_with_mins_of_the_same_sign():
    """wq | wk | wv stacked into one product only when they are one kind of matrix."""
    codes = np.zeros((2, 32, 6), np.int8)                  # stored (n_blocks, block, rows)
    scales = np.ones((2, 6), np.float32)

    def part(rows, mins, subtract=False):
        return Int8BlockMatrix(codes[:, :, rows], scales[:, rows], mins, subtract)

    half = np.ones((2, 3), np.float32)
    assert fused_codes([part(slice(0, 3), None), part(slice(3, 6), None)]) is not None
    assert fused_codes([part(slice(0, 2), None), part(slice(3, 6), None)]) is None
    fused = fused_codes([part(slice(0, 3), half, True), part(slice(3, 6), 2 * half, True)])
    np.testing.assert_array_equal(fused.mins[0], [1, 1, 1, 2, 2, 2])
    assert fused.shape == (6, 64) and fused.subtract and np.shares_memory(fused.codes, codes)
    assert fused_codes([part(slice(0, 3), half, True), part(slice(3, 6), half)]) is None
    assert fused_codes([part(slice(0, 3), half), part(slice(3, 6), None)]) is None


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_precision_matrices_are_upcast_in_the_fast_model(tmp_path, dtype):
    """F16/BF16 are no int8 codes: the fast model holds them as float32 (exact), like the plain one."""
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, max_seq_len=32)
    path = tmp_path / f"m.{dtype}.gguf"
    gguf.write(mapping.to_gguf(wide_logit_weights(args, seed=1), args, dtype=dtype), path)
    fast, plain = load_model(path, fast=True), load_model(path)
    assert isinstance(fast.layers[0].w2, np.ndarray) and fast.layers[0].w2.dtype == np.float32
    np.testing.assert_array_equal(fast.layers[1].w1, plain.layers[1].w1)
    tokens = np.arange(20) % args.vocab_size
    np.testing.assert_allclose(fast.forward(tokens, all_logits=True), plain.forward(tokens, all_logits=True),
                               rtol=0, atol=FAST_LOGITS_ATOL)
