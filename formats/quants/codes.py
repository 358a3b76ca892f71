"""Every quantized ggml type as one form: small integer codes times a float32 scale per group of
elements, plus a float32 min per group for the types that have one.

    x[g, j] = scales[g] * codes[g, j]                 Q8_0 Q4_0 Q5_0 Q3_K Q6_K, IQ*, TQ*, MXFP4, NVFP4
    x[g, j] = scales[g] * codes[g, j] + mins[g]       Q4_1 Q5_1 (ggml's m, added)
    x[g, j] = scales[g] * codes[g, j] - mins[g]       Q2_K Q4_K Q5_K (ggml's dmin * mn, subtracted)

codes are int8, a group is the elements sharing one scale (32, 16 or 256 of them, as each type's
record declares: formats/quants/record.py), and each decoder in formats/quants builds a Codes and
lets `values` do the arithmetic: so the floats that `formats.quant.dequantize` returns are, by
construction, those of its Codes, bit for bit, and a consumer holding the Codes
(reference/runtime/blockwise.py) computes with exactly the decoded weights.

Why every type fits, bit for bit (each module's docstring has the type's formula):
- The scale is the float32 ggml computes before it touches a code: d (an fp16 widened), or a
  two-level d * sc (the k-quants, IQ4_XS), d * (0.5 + s) * 0.25 (the IQ2 and IQ3 types), a power
  of two (MXFP4), a UE4M3 value (NVFP4). Folding the two levels into one float32 per sub-block is
  exact because ggml itself rounds d * sc to float32 first and then multiplies by the code.
- A code is an integer of at most 8 bits once offsets are applied: q - 8, q - 16, q - 32, the
  ternary digit - 1, IQ4_NL's table values (-127 .. 113), twice the E2M1 values, a grid point
  times its signs (levels up to 62).
- IQ1_S and IQ1_M store grid + delta with delta = ±1/8: code 8 * grid ± 1 (-9 .. 9) and scale
  dl / 8. dl / 8 is exact (a power of two, and dl is at least an fp16 subnormal, far from float32's
  underflow) and so is the code / 8 that ggml multiplies by, so both round the one real product
  dl * code / 8: the same float32, infinities and NaNs included (no code is 0).
- The min is added or subtracted as ggml does, never negated into an add: x - NaN keeps the NaN's
  sign where x + (-NaN) would flip it, and the decoders match gguf-py in NaN bits too.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Codes:
    """Blocks as codes (n, G, group) int8, scales (n, G) float32 and mins (n, G) float32 or None;
    `subtract`: the mins are subtracted (k-quants) rather than added (Q4_1, Q5_1)."""
    codes: np.ndarray
    scales: np.ndarray
    mins: np.ndarray | None = None
    subtract: bool = False

    def values(self, out):
        """Write scales * codes (then + or - mins) into out (n, G * group) float32, ggml's order."""
        target = out.reshape(self.codes.shape)
        np.multiply(self.scales[:, :, None], self.codes, out=target)
        if self.mins is not None:
            (np.subtract if self.subtract else np.add)(target, self.mins[:, :, None], out=target)
        return out


def grouped(codes, scales, mins=None, subtract=False):
    """Codes from per-block arrays: codes (n, m) or (n, G, group), scales and mins (n, G) or (n, 1);
    codes of shape (n, m) are cut into as many groups as scales has columns."""
    codes = np.asarray(codes)
    n, groups = scales.shape
    codes = codes.reshape(n, groups, -1).view(np.int8)
    return Codes(codes, scales.astype(np.float32, copy=False),
                 None if mins is None else mins.astype(np.float32, copy=False), subtract)
