"""reference.training.loss_and_grads against torch autograd and against finite differences.

The oracle is trainer.model.Transformer in float64 (`.double()`), its loss from forward(tokens,
targets), its gradients from loss.backward(). Both models get the same weights, drawn here with
each matrix scaled by 1/sqrt(its input width) and the norm gains 1 + noise (the trainer's init,
std 0.02, leaves the logits nearly uniform and the norm gains all 1, which would hide errors).
"Relative difference" of a tensor is max|ours - torch| / max|torch| over its elements.
"""

import numpy as np
import pytest
import torch

from formats.spec import ModelArgs, weight_shapes
from reference.attention import attention, attention_backward
from reference.model import Llama
from reference.training import loss_and_grads
from trainer.model import Transformer
from tests.support.compare import relative_error
from tests.support.weights import fan_in_float64_weights

CONFIGS = {
    "mha-tied": ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=13, hidden_dim=24,
                          max_seq_len=8, tie_embeddings=True),
    "gqa-untied": ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=13, hidden_dim=24,
                            max_seq_len=8, tie_embeddings=False),
    # hidden_dim 37: not a multiple of 32 (nor of anything), one kv head for three query heads.
    "mqa-untied": ModelArgs(dim=24, n_layers=2, n_heads=3, n_kv_heads=1, vocab_size=11, hidden_dim=37,
                            max_seq_len=8, tie_embeddings=False),
}
# float64 gradients: every operation rounds at ~1e-16 relative; the two sides sum in different
# orders through ~20 operations, so 1e-10 leaves a wide margin while any wrong term (a missing
# mean, a sign, a lost head) is off by 1e-3 or more.
FLOAT64_TOL = 1e-10
# float32 reference model against the float64 oracle: float32 rounding (6e-8) grown through the
# forward and backward passes; measured worst 1.8e-6 over the three configs (float64: 4e-15).
FLOAT32_TOL = 2e-5


def draw_batch(args, seed, batch=3, length=7):
    """tokens with repeats (a 13-token vocabulary over 21 positions), and some targets -1."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, args.vocab_size, (batch, length))
    targets = rng.integers(0, args.vocab_size, (batch, length))
    targets[0, 2] = targets[-1, :3] = -1
    return tokens, targets


def torch_loss_and_grads(args, weights, tokens, targets):
    model = Transformer(args).double()
    state = {name: torch.from_numpy(w) for name, w in weights.items()}
    if args.tie_embeddings:     # the torch state dict lists the tied matrix under both names
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state)
    _, loss = model(torch.from_numpy(tokens), torch.from_numpy(targets))
    loss.backward()
    return loss.item(), {name: p.grad.numpy() for name, p in model.named_parameters()}


def worst_difference(name, dtype):
    args = CONFIGS[name]
    weights = fan_in_float64_weights(args, seed=0)
    tokens, targets = draw_batch(args, seed=1)
    loss, grads = loss_and_grads(Llama(args, weights, dtype=dtype), tokens, targets)
    torch_loss, torch_grads = torch_loss_and_grads(args, weights, tokens, targets)
    # named_parameters lists a tied matrix once, as tok_embeddings.weight: the same names as ours.
    assert sorted(grads) == sorted(torch_grads) == sorted(weight_shapes(args))
    for weight_name, grad in grads.items():
        assert grad.dtype == dtype and grad.shape == torch_grads[weight_name].shape, weight_name
    per_tensor = {weight_name: relative_error(grads[weight_name], torch_grads[weight_name]) for weight_name in grads}
    return abs(loss - torch_loss) / torch_loss, per_tensor


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, FLOAT64_TOL), (np.float32, FLOAT32_TOL)])
@pytest.mark.parametrize("name", CONFIGS)
def test_gradients_equal_torch_float64_autograd(name, dtype, tolerance):
    loss_difference, per_tensor = worst_difference(name, dtype)
    assert loss_difference <= tolerance
    worst = max(per_tensor, key=per_tensor.get)
    assert per_tensor[worst] <= tolerance, f"{worst}: relative difference {per_tensor[worst]:.3g}"


def test_gradients_equal_central_differences():
    """A third oracle, independent of torch: (loss(w + h) - loss(w - h)) / 2h for three elements
    of every tensor of a tiny tied GQA model, in float64.

    h = 1e-5: the error of the central difference is ~h² |loss'''| ≈ 1e-10, plus the rounding of
    the two losses, ~1e-16 / h ≈ 1e-11; 1e-8 absolute is far above both and far below the size
    of the gradients checked (0.01 to 1).
    """
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=7, hidden_dim=12, max_seq_len=6)
    weights = fan_in_float64_weights(args, seed=2)
    tokens, targets = draw_batch(args, seed=3, batch=2, length=5)
    _, grads = loss_and_grads(Llama(args, weights, dtype=np.float64), tokens, targets)
    rng, step = np.random.default_rng(4), 1e-5
    for name, weight in weights.items():
        for flat in rng.choice(weight.size, size=3, replace=False):
            index = np.unravel_index(flat, weight.shape)
            losses = []
            for sign in (1, -1):
                moved = {**weights, name: weight.copy()}
                moved[name][index] += sign * step
                losses.append(loss_and_grads(Llama(args, moved, dtype=np.float64), tokens, targets)[0])
            numeric = (losses[0] - losses[1]) / (2 * step)
            assert abs(numeric - grads[name][index]) <= 1e-8, (name, index, numeric, grads[name][index])


def test_attention_backward_with_cached_keys_equals_central_differences():
    """attention_backward where the queries are the last T=3 of S=5 positions (a decode-style call,
    which loss_and_grads never makes), GQA with 2 query heads per kv head, against central
    differences of loss = Σ attention(q, k, v) ⊙ R. Same bound and reasoning as above."""
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((4, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 4))
    weight = rng.standard_normal((4, 3, 4))
    recorded = {}
    out = attention(q, k, v, lambda name, array: recorded.setdefault(name, array))
    grads = attention_backward(q, k, v, recorded["pattern"], weight)
    step = 1e-5
    for array, grad in zip((q, k, v), grads):
        assert grad.shape == array.shape
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + step
            up = np.sum(attention(q, k, v) * weight)
            array[index] = saved - step
            down = np.sum(attention(q, k, v) * weight)
            array[index] = saved
            assert abs((up - down) / (2 * step) - grad[index]) <= 1e-8, index
    assert np.array_equal(out, attention(q, k, v))
