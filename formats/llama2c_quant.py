"""llama2.c's int8 groups: how a v2 checkpoint stores a matrix (export.py's quantize_q80, runq.c's
dequantize; not GGUF's Q8_0, see formats/quant.py for that).

One tensor, flattened row-major to numel values, is cut into groups of group_size:

    int8 q[numel]                      then, right after it,
    f32  scales[numel / group_size]    w[k] ≈ q[k] * scales[k // group_size]

group_size is chosen once per file (formats/llama2c.py stores it in the v2 header): export.py
starts at 64 and halves it until it divides dim, which then divides every matrix's numel.
"""

import dataclasses
import math

import numpy as np

DEFAULT_GROUP_SIZE = 64  # export.py's starting group size; halved until it divides dim


def default_group_size(dim):
    """export.py's rule: start at 64 and halve while it does not divide dim (288 -> 32)."""
    group_size = DEFAULT_GROUP_SIZE
    while dim % group_size:
        group_size //= 2
    return group_size


@dataclasses.dataclass(eq=False)
class Int8Groups:
    """A v2 tensor: w[k] ≈ q[k] * scales[k // group_size] over the row-major flattened tensor.

    q: [numel] int8, scales: [numel / group_size] float32, shape: the tensor's shape.
    """
    q: np.ndarray
    scales: np.ndarray
    group_size: int
    shape: tuple

    def __post_init__(self):
        self.shape = tuple(int(n) for n in self.shape)
        numel = math.prod(self.shape)
        if (self.group_size <= 0 or numel % self.group_size or self.q.shape != (numel,)
                or self.scales.shape != (numel // self.group_size,)):
            raise ValueError(f"Int8Groups of shape {self.shape}, group size {self.group_size}: "
                             f"got q {self.q.shape} and scales {self.scales.shape}")

    def to_float32(self):
        """Dequantize as runq.c does: float(q) * scale, one float32 multiply per element."""
        groups = self.q.reshape(-1, self.group_size).astype(np.float32)  # [n_groups, gs]
        # A file's inf or NaN scale decodes to inf or NaN, as in runq.c: not worth a warning.
        with np.errstate(over="ignore", invalid="ignore"):
            return (groups * self.scales[:, None]).reshape(self.shape)


def quantize(w, group_size):
    """Symmetric int8 quantization of flattened `w` in groups of `group_size` (export.py's
    quantize_q80).

    Per group scale = max|w| / 127 and q = round_half_to_even(w / scale), each step in float32
    as torch computes it, so q and scales are bit-identical to export.py's. A group of zeros
    (or one so small that max|w| / 127 underflows) gets scale 0 and q 0: export.py divides by
    zero there and casts NaN or inf to int8.

    >>> g = quantize([127.0, 0.5, 1.5, -2.5], group_size=4)   # scale 1: halves round to even
    >>> g.q.tolist(), g.scales.tolist()
    ([127, 0, 2, -2], [1.0])
    """
    w = np.asarray(w, dtype=np.float32)
    if w.size == 0 or w.size % group_size:
        raise ValueError(f"a tensor of {w.size} elements does not split into groups of {group_size}")
    groups = w.reshape(-1, group_size)                               # [n_groups, gs]
    scales = np.abs(groups).max(axis=1) / np.float32(127.0)          # [n_groups]
    if not np.isfinite(scales).all():
        raise ValueError("cannot quantize a tensor holding inf or NaN")
    quant = np.zeros_like(groups)
    np.divide(groups, scales[:, None], out=quant, where=scales[:, None] != 0)
    return Int8Groups(np.rint(quant).astype(np.int8).reshape(-1), scales, group_size, w.shape)
