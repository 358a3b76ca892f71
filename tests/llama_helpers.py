"""Random Llama weights for every test (ones that make logits informative, and plain Gaussian ones),
torch <-> NumPy glue, and an ulp distance for the bit-level comparisons. Imports torch lazily so
that the property tests, and children that block torch, run without it."""

import numpy as np

from formats.spec import ModelArgs
from formats.spec import weight_shapes


def random_weights(args: ModelArgs, seed):
    """Random llama2.c-named float32 weights whose logits are far from flat.

    Each matrix is N(0, 1/fan_in) so activations stay O(1) through the layers, and the
    embeddings (also the tied output) are N(0, (2/sqrt(D))²) so logits have a std near 2: the
    gap between the top two of V logits is then far above float32 noise, which makes "top-1
    identical" a real check instead of a tie-break lottery. Norm gains are 1 + N(0, 0.1²) so a
    dropped or misplaced gain shows.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(args).items():
        if len(shape) == 1:
            std, mean = 0.1, 1.0
        elif name in ("tok_embeddings.weight", "output.weight"):
            std, mean = 2 / np.sqrt(args.dim), 0.0
        else:
            std, mean = 1 / np.sqrt(shape[1]), 0.0
        weights[name] = mean + np.float32(std) * rng.standard_normal(shape, dtype=np.float32)
    return weights


def normal_weights(args: ModelArgs, seed=0, scale=1.0):
    """Every llama2.c-named weight of `args` scale * N(0, 1), drawn in float64 and rounded to
    float32: arbitrary values for the format, mapping and CLI tests, which check where the values
    go, not what the model computes with them (random_weights' logits are the informative ones)."""
    rng = np.random.default_rng(seed)
    return {name: (scale * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in weight_shapes(args).items()}


def torch_model(args: ModelArgs, weights, dtype=None):
    """trainer.model.Transformer in eval mode holding `weights` (float64 with dtype='float64')."""
    import torch
    from trainer.model import Transformer

    model = Transformer(args).eval()
    state = {name: torch.from_numpy(array) for name, array in weights.items()}
    if args.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, strict=True)
    return model.double() if dtype == "float64" else model


def torch_logits(model, tokens):
    """All-position logits of one sequence as a NumPy array: (T,) ids -> (T, V)."""
    import torch

    with torch.no_grad():
        logits, _ = model(torch.as_tensor(np.asarray(tokens, dtype=np.int64))[None])
    return logits[0].numpy()


def ulp_distance(a, b):
    """Per element, how many float32 values lie between a and b (0 means bit-identical)."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)

    def ordered(x):
        # Map the float32 bit patterns onto integers that increase with the value (-0 == +0).
        bits = x.view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(ordered(a) - ordered(b))
