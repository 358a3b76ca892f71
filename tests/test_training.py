"""reference.training's optimizer pieces against torch, and its refusals of bad batches."""

import doctest

import numpy as np
import pytest
import torch

import reference.training

from formats.spec import ModelArgs, weight_shapes
from reference.model import Llama
from reference.training import adamw_step, clip_grad_norm, decay_groups, learning_rate, loss_and_grads, mean_loss
from tests.support.weights import fan_in_float64_weights

# adamw_step repeats torch's operations in torch's order; float64 rounding (1e-16) over 10 steps
# leaves far less than 1e-13, while a missing bias correction moves a weight by ~lr (1e-2).
ADAMW_TOL = 1e-13


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_equals_torch_over_ten_steps(fused):
    """10 steps with a new gradient and learning rate each, weight decay on, float64; fused=True
    is the kernel trainer/train.py uses on the CPU, fused=False torch's default there."""
    rng = np.random.default_rng(0)
    ours = rng.standard_normal((5, 7))
    theirs = torch.tensor(ours, requires_grad=True)
    settings = dict(beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    optimizer = torch.optim.AdamW([theirs], lr=1.0, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=fused)
    state = {}
    for step in range(10):
        lr = learning_rate(step, max_lr=1e-2, min_lr=1e-3, warmup_iters=3, decay_iters=10)
        grad = rng.standard_normal(ours.shape) * 10.0 ** rng.uniform(-4, 1)
        adamw_step(ours, grad, state, lr=lr, **settings)
        optimizer.param_groups[0]["lr"] = lr
        theirs.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        difference = np.max(np.abs(ours - theirs.detach().numpy()))
        assert difference <= ADAMW_TOL, (step, difference)
    assert state["step"] == 10


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_equals_torch(max_norm):
    """One case clips, one leaves the gradients alone; float64 norms agree to rounding (1e-14)."""
    rng = np.random.default_rng(1)
    grads = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    tensors = [torch.tensor(g) for g in grads.values()]
    for tensor in tensors:
        tensor.grad = tensor.clone()
    norm = clip_grad_norm(grads, max_norm)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm).item()
    assert abs(norm - torch_norm) <= 1e-14 * torch_norm
    for grad, tensor in zip(grads.values(), tensors):
        np.testing.assert_allclose(grad, tensor.grad.numpy(), rtol=1e-14, atol=0)
    # After: the smaller of the old norm and max_norm (the 1e-6 torch adds shifts it by ~1e-6).
    assert clip_grad_norm(grads, np.inf) == pytest.approx(min(torch_norm, max_norm), rel=1e-5)


def test_learning_rate_warms_up_then_follows_the_cosine_to_min_lr():
    lr = [learning_rate(s, max_lr=1.0, min_lr=0.1, warmup_iters=4, decay_iters=12) for s in range(20)]
    assert lr[:4] == [0.2, 0.4, 0.6, 0.8] and lr[4] == 1.0
    assert lr[8] == pytest.approx(0.55, abs=1e-15)     # half way: the cosine's middle, (max + min) / 2
    assert lr[12:] == [0.1] * 8


def test_decay_groups_leave_only_the_norm_gains_undecayed():
    shapes = weight_shapes(ModelArgs(dim=8, n_layers=2, n_heads=2, vocab_size=7, tie_embeddings=False))
    decayed, kept = decay_groups(shapes)
    assert kept == [name for name in shapes if name.endswith("norm.weight")] and len(kept) == 5
    assert decayed == [name for name in shapes if name not in kept]


@pytest.mark.parametrize("tokens, targets, message", [
    ([[0, 7]], [[1, 2]], r"token ids must be in \[0, 7\), got 0..7"),
    ([[0, 1]], [[1, 7]], r"target ids must be in \[0, 7\) or -1"),
    ([[0, 1]], [[1, -2]], r"target ids must be in \[0, 7\) or -1"),
    ([[0, 1]], [[1, 2, 3]], r"tokens \(1, 2\) and targets \(1, 3\) must have the same shape"),
    ([[0] * 7], [[1] * 7], r"sequences of 7 tokens exceed the context, max_seq_len 6"),
    ([[0, 1], [2, 3]], [[-1, -1], [-1, -1]], r"every target is -1 \(ignored\)"),
    ([0, 1], [1, 2], r"tokens must be a non-empty \(B, T\) integer array"),
    ([[0.0, 1.0]], [[1, 2]], r"tokens must be a non-empty \(B, T\) integer array"),
])
def test_bad_batches_raise_one_clear_error(tokens, targets, message):
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, vocab_size=7, hidden_dim=12, max_seq_len=6)
    model = Llama(args, fan_in_float64_weights(args, seed=0))
    with pytest.raises(ValueError, match=message):
        loss_and_grads(model, np.array(tokens), np.array(targets))
    with pytest.raises(ValueError, match=message):
        mean_loss(model, np.array(tokens), np.array(targets))


def test_mean_loss_is_the_loss_of_loss_and_grads():
    """The forward-only loss (the NumPy engine's eval) and the training loss are one number:
    the same forward pass and cross-entropy, so equal to float64 rounding (1e-15 here)."""
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, vocab_size=7, hidden_dim=12, max_seq_len=6)
    model = Llama(args, fan_in_float64_weights(args, seed=0))
    tokens, targets = np.array([[1, 2, 3, 4], [5, 6, 0, 1]]), np.array([[2, 3, -1, 5], [6, -1, 1, 2]])
    assert mean_loss(model, tokens, targets) == pytest.approx(loss_and_grads(model, tokens, targets)[0], rel=1e-15)


def test_docstring_examples():
    """The worked numbers in reference/training.py (the backward layers' own run in
    tests/test_reference_props.py)."""
    with np.printoptions(precision=8, suppress=False):     # NumPy's defaults, whatever a doc page set
        result = doctest.testmod(reference.training)
    assert result.attempted > 0 and result.failed == 0
