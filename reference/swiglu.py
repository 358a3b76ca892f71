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


def linear_backward(x, w, grad_out):
    """The gradients of out = x @ w.T given grad_out = ∂loss/∂out: (dx, dw).

    x: (..., n_in), w: (n_out, n_in), grad_out: (..., n_out) -> dx (..., n_in), dw (n_out, n_in)
    summed over every position: out_o = Σ_i w_oi x_i, so dx_i = Σ_o grad_o w_oi and
    dw_oi = Σ_positions grad_o x_i.
    >>> linear_backward(np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]]), np.array([[10.0]]))
    (array([[30., 40.]]), array([[10., 20.]]))
    """
    dw = grad_out.reshape(-1, w.shape[0]).T @ x.reshape(-1, w.shape[1])
    return grad_out @ w, dw


def swiglu_backward(x, w1, w2, w3, grad_out, gate=None, up=None):
    """The gradients of swiglu(x, w1, w2, w3) given grad_out = ∂loss/∂out: (dx, dw1, dw2, dw3).

    Shapes as in swiglu, each gradient the shape of what it is the gradient of. With a = w1 x,
    u = w3 x, s = sigmoid(a), act = silu(a) u:

        silu'(a) = d(a s)/da = s + a s (1 - s) = s (1 + a (1 - s))     (as s' = s (1 - s))
        d_act = grad_out w2,   du = d_act silu(a),   da = d_act u silu'(a)
        dx = da w1 + du w3     (x feeds both projections: their gradients add)

    gate and up: the forward pass's w1 x and w3 x where the caller kept them (recomputed if not).

    >>> float(silu_derivative(np.array(0.0)))        # s(0) = 1/2: the slope of silu at 0
    0.5
    """
    gate = x @ w1.T if gate is None else gate                              # (..., F)
    up = x @ w3.T if up is None else up                                    # (..., F)
    act = silu(gate) * up
    d_act, dw2 = linear_backward(act, w2, grad_out)                        # (..., F), (D, F)
    d_up = d_act * silu(gate)
    d_gate = d_act * up * silu_derivative(gate)
    dx_gate, dw1 = linear_backward(x, w1, d_gate)
    dx_up, dw3 = linear_backward(x, w3, d_up)
    return dx_gate + dx_up, dw1, dw2, dw3


def silu_derivative(a):
    """d silu(a) / da = s (1 + a (1 - s)), s = sigmoid(a) = 1 / (1 + exp(-a)); any shape.

    >>> silu_derivative(np.array([0.0, 1.0, -1000.0]))        # s(1) = 0.7311: 0.7311 (1 + 0.2689)
    array([ 0.5       ,  0.92767051, -0.        ])
    """
    with np.errstate(over="ignore"):    # exp(-a) -> inf for very negative a: s -> 0, the limit
        s = 1 / (1 + np.exp(-a))
    return s * (1 + a * (1 - s))
