"""RMSNorm (Zhang & Sennrich 2019): rescale each vector to unit root-mean-square, then gain.

    rmsnorm(x) = x / sqrt(mean(x²) + eps) * weight

Unlike LayerNorm there is no mean subtraction and no bias. Llama 2 applies it before attention,
before the feed-forward network and once more before the output layer.

Maths, read 1st of reference/'s eight (reference/__init__.py gives the order).
"""

import numpy as np


def rmsnorm(x, weight, eps):
    """Normalize over the last axis.

    x: (..., D), weight: (D,), eps: a Python float (1e-5 in Llama 2) -> (..., D), x's dtype.
    Multiplies by 1/sqrt(...) rather than dividing, in the same order as the torch model
    (x * rsqrt(mean(x²) + eps)) * weight, so the two agree bit for bit whenever their sums of
    squares do.
    >>> rmsnorm(np.array([3, 4], dtype=np.float32), np.ones(2, dtype=np.float32), eps=0.0)  # rms 5/sqrt(2)
    array([0.84852815, 1.1313709 ], dtype=float32)
    """
    mean_square = np.mean(x * x, axis=-1, keepdims=True)    # (..., D) -> (..., 1)
    return x * (1 / np.sqrt(mean_square + eps)) * weight
