"""How two arrays are compared: bit for bit, in float32 ulps, relative error; and the fast path's
logits tolerance, shared by every fast-vs-plain test."""

import numpy as np

# Fast vs plain logits, float32. The two paths round differently: fused matmuls (one (T, D+2kv)
# BLAS call instead of three), a 1-row matmul against a chunked or strided weight, einsum's sum
# of squares in rmsnorm, RoPE as a complex multiply. Each op is off by a few ulps and the error
# grows through the layers; measured max 1.9e-5 at the seed config (6 layers, 128 tokens,
# logits std ~2), and 1.03e-4 where hypothesis found it: dim 2, one head, wide weights of seed
# 14900, a 16-token sequence cut into chunks (the same at 1c4e884, so rounding, not a change; the
# plain float32 model alone is 2.4e-5 off float64 there). 3e-4 is ~3x the worst seen, while a
# real bug (a wrong position, a missed scale, a transposed head) moves logits by O(1).
FAST_LOGITS_ATOL = 3e-4


def assert_same_bits(a, b):
    """Equal as float32 bit patterns: -0.0 differs from 0.0, a NaN equals the same NaN."""
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def ulp_distance(a, b):
    """Per element, how many float32 values lie between a and b (0 means bit-identical)."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)

    def ordered(x):
        # Map the float32 bit patterns onto integers that increase with the value (-0 == +0).
        bits = x.view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(ordered(a) - ordered(b))


def relative_error(candidate, reference):
    """max |candidate - reference| / max |reference| over the finite values; the masked -inf
    entries of scores must sit at the same places in both."""
    candidate, reference = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    finite = np.isfinite(reference)
    assert np.array_equal(finite, np.isfinite(candidate)), "the causal masks differ"
    assert np.all(reference[~finite] == candidate[~finite])
    return float(np.max(np.abs(candidate[finite] - reference[finite])) / np.max(np.abs(reference[finite])))
