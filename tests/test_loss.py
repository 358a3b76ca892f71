"""trainer/loss.py: the chunked classifier + cross-entropy equals the plain one, value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from trainer import loss as loss_module
from trainer.loss import linear_cross_entropy

# float64 runs the same maths in another summation order: only rounding at 1e-16 can differ.
FLOAT64_RTOL = 1e-12
# bfloat16 autocast: both sides round the matmul operands to bf16 (8-bit mantissa), but the plain
# path rounds the whole weight gradient to bf16 once while ours sums per-chunk bf16 products in
# float32: relative differences of a few bf16 ulps (2**-8 = 0.4%) remain.
BF16_GRAD_RTOL = 2e-2


def plain(h, w, t):
    return F.cross_entropy(h @ w.T, t, ignore_index=-1)


def grads(fn, h, w, t):
    value = fn(h, w, t)
    return (value.detach(), *torch.autograd.grad(value * 3.0, (h, w)))


@pytest.mark.parametrize("n_rows", [1, loss_module.CHUNK_ROWS, 2 * loss_module.CHUNK_ROWS + 37])
def test_equals_plain_cross_entropy_in_float64(n_rows):
    gen = torch.Generator().manual_seed(n_rows)
    h = torch.randn(n_rows, 24, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(301, 24, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.randint(0, 301, (n_rows,), generator=gen)
    if n_rows > 1:
        t[::5] = -1
    for ours, ref in zip(grads(linear_cross_entropy, h, w, t), grads(plain, h, w, t)):
        # relative to the largest entry: single gradient entries near 0 carry no relative meaning
        assert (ours - ref).abs().max() <= FLOAT64_RTOL * ref.abs().max()


def test_bfloat16_autocast_matches_the_plain_autocast_path():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(700, 32, generator=gen, requires_grad=True)
    w = torch.randn(500, 32, generator=gen, requires_grad=True)
    t = torch.randint(0, 500, (700,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = grads(linear_cross_entropy, h, w, t), grads(plain, h, w, t)
    assert all(g.dtype == torch.float32 for g in ours[1:])
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=0)  # both: bf16 logits, float32 softmax
    for a, b in zip(ours[1:], ref[1:]):
        assert (a - b).abs().max() <= BF16_GRAD_RTOL * b.abs().max()


def test_all_ignored_gives_zero_loss_and_gradients():
    h = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(10, 8, requires_grad=True)
    t = torch.full((4,), -1)
    value = linear_cross_entropy(h, w, t)
    value.backward()
    assert value.item() == 0.0 and not h.grad.any() and not w.grad.any()


def test_no_grad_computes_only_the_loss():
    h, w = torch.randn(9, 8), torch.randn(10, 8)
    t = torch.randint(0, 10, (9,))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t), plain(h, w, t))
