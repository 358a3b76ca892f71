"""The torch training model's own contract: names, tying, init, loss, dropout, dtype."""

import math

import numpy as np
import pytest
import torch

from formats.spec import ModelArgs
from reference.model import Llama
from formats.spec import weight_shapes
from tests.support.models import torch_model
from tests.support.weights import wide_logit_weights
from trainer.model import INIT_STD, Transformer

# The float32 torch loss (mean cross-entropy over 55 positions x 300 classes, values ~8) vs the
# same computed in float64 from the NumPy logits: float32 rounding of log-sum-exp at that scale
# is ~1e-6 and the logits differ by <= 5e-5 (see test_model_parity), mostly averaging out.
# Measured <= 4.4e-7 over three weight seeds.
LOSS_ATOL = 1e-5

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=64)


@pytest.mark.parametrize("tie", [True, False])
def test_state_dict_has_exactly_the_llama2c_names(tie):
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, tie_embeddings=tie)
    model = Transformer(args)
    state = model.state_dict()
    # The RoPE tables are not weights; output.weight is listed even when tied (as in llama2.c).
    expected = {**weight_shapes(args), "output.weight": (args.vocab_size, args.dim)}
    assert {name: tuple(t.shape) for name, t in state.items()} == expected
    assert (model.output.weight is model.tok_embeddings.weight) == tie


def test_init_is_llama2c_s():
    torch.manual_seed(0)
    args = ModelArgs(n_layers=4)
    model = Transformer(args)
    residual_std = INIT_STD / math.sqrt(2 * args.n_layers)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(param, torch.ones_like(param)), name
            continue
        expected = residual_std if name.endswith(("wo.weight", "w3.weight")) else INIT_STD
        # Sample std of >= 82,944 normals: within 2% of the truth (~8 standard errors).
        assert abs(param.std().item() / expected - 1) < 0.02, (name, param.std().item(), expected)
        assert abs(param.mean().item()) < 0.05 * expected, name


def test_loss_is_the_mean_cross_entropy_of_the_logits_ignoring_minus_one():
    weights = wide_logit_weights(ARGS, seed=0)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, ARGS.vocab_size, (1, ARGS.max_seq_len))
    targets = rng.integers(0, ARGS.vocab_size, (1, ARGS.max_seq_len))
    targets[0, ::7] = -1                                                     # ignored positions
    _, loss = torch_model(ARGS, weights)(torch.from_numpy(tokens), torch.from_numpy(targets))
    logits = Llama(ARGS, weights, np.float64).forward(tokens[0], all_logits=True)   # (T, V)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    kept = targets[0] >= 0
    expected = np.mean(log_z[kept] - logits[kept, targets[0, kept]])
    assert abs(loss.item() - expected) <= LOSS_ATOL, (loss.item(), expected)


def test_gradients_reach_every_parameter_and_dropout_is_off_in_eval():
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, dropout=0.1)
    torch.manual_seed(0)
    model = Transformer(args)
    tokens = torch.randint(0, args.vocab_size, (2, 16))
    _, loss = model(tokens, tokens)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[0], model(tokens)[0], rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(tokens)[0], model(tokens)[0]), "dropout inactive in train mode"


def test_double_keeps_float64_rope_tables():
    model = Transformer(ARGS).double()
    assert model.rope_cos.dtype == model.tok_embeddings.weight.dtype == torch.float64
    # Built in float64, not float32 tables cast up: cos(1 rad) exact to float64 rounding.
    assert model.rope_cos[1, 0].item() == math.cos(1.0)
