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


def rmsnorm_backward(x, weight, eps, grad_out):
    """The gradients of rmsnorm(x, weight, eps) given grad_out = ∂loss/∂out: (dx, dweight).

    x, grad_out: (..., D), weight: (D,) -> dx (..., D), dweight (D,) summed over every position.
    Write r = 1/sqrt(mean(x²) + eps), n = x r (so out = n * weight) and g = grad_out * weight:

        dweight = Σ_positions grad_out * n
        dx_j    = Σ_i g_i ∂(x_i r)/∂x_j = g_j r + Σ_i g_i x_i ∂r/∂x_j
        ∂r/∂x_j = -½ (mean(x²) + eps)^(-3/2) · 2 x_j / D = -r³ x_j / D
        dx      = r g - r³ x mean(g x)

    The first term is the 1/rms scale every component is multiplied by; the second is the path
    through the rms itself, whose 1/D comes from the mean in mean(x²). With eps = 0, out does not
    change when x is scaled, so dx is orthogonal to x (below, dx · x = 0).
    >>> x, w = np.array([3.0, 4.0]), np.ones(2)
    >>> dx, dw = rmsnorm_backward(x, w, 0.0, np.array([1.0, 0.0]))
    >>> dx, dw, bool(abs(dx @ x) < 1e-15)   # r = 1/sqrt(12.5): dx = r [1, 0] - r³ [3, 4] · 1.5
    (array([ 0.18101934, -0.1357645 ]), array([0.84852814, 0.        ]), True)
    """
    r = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)          # (..., 1)
    g = grad_out * weight                                                    # (..., D)
    dweight = (grad_out * (x * r)).reshape(-1, x.shape[-1]).sum(axis=0)       # (D,)
    dx = r * g - r ** 3 * x * np.mean(g * x, axis=-1, keepdims=True)
    return dx, dweight
