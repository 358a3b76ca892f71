"""The SwiGLU feed-forward network (Shazeer 2020) of Llama 2.

    swiglu(x) = w2 (silu(w1 x) ⊙ w3 x),   silu(a) = a * sigmoid(a) = a / (1 + exp(-a))

w1 (the gate) and w3 (the up projection) map D -> F, w2 maps F -> D. Weights are stored as torch
`nn.Linear.weight`, (out, in), so `x @ w.T` is the torch `w(x)`.

Maths, read 4th of reference/'s eight (reference/__init__.py gives the order).
"""

import numpy as np

from reference.cache import no_record


def silu(a):
    """a / (1 + exp(-a)), the SiLU ("swish") activation; any shape, dtype kept.

    exp(-a) overflows to inf for a < -88 in float32, and a / inf = -0 is the right limit, so the
    overflow warning is silenced rather than the formula changed.
    >>> silu(np.array([0.0, -1000.0], dtype=np.float32))
    array([ 0., -0.], dtype=float32)
    """
    with np.errstate(over="ignore"):
        return a / (1 + np.exp(-a))


def swiglu(x, w1, w2, w3, record=no_record):
    """x: (..., D), w1 and w3: (F, D), w2: (D, F) -> (..., D).

    record: given `gate` (w1 x), `up` (w3 x) and `act` (silu(gate) * up) (reference/cache.py).
    """
    gate = record("gate", x @ w1.T)         # (..., D) -> (..., F)
    up = record("up", x @ w3.T)             # (..., D) -> (..., F)
    act = record("act", silu(gate) * up)    # (..., F)
    return act @ w2.T                       # (..., F) -> (..., D)
