"""Random llama2.c-named weights, one function per distribution, each named for it. The tests and
bench/ draw from these (bench/ already imports tests/support, for llama.cpp's quantizer). NumPy
only: children that block torch import this module too."""

import numpy as np

from formats.spec import ModelArgs, weight_shapes


def drawn(args: ModelArgs, seed, draw):
    """{name: draw(rng, name, shape)} over `args`'s weights in weight_shapes order, one generator
    seeded with `seed`: the order fixes which numbers each tensor gets."""
    rng = np.random.default_rng(seed)
    return {name: draw(rng, name, shape) for name, shape in weight_shapes(args).items()}


def wide_logit_weights(args: ModelArgs, seed):
    """Float32 weights whose logits are far from flat.

    Each matrix is N(0, 1/fan_in) so activations stay O(1) through the layers, and the
    embeddings (also the tied output) are N(0, (2/sqrt(D))²) so logits have a std near 2: the
    gap between the top two of V logits is then far above float32 noise, which makes "top-1
    identical" a real check instead of a tie-break lottery. Norm gains are 1 + N(0, 0.1²) so a
    dropped or misplaced gain shows.
    """
    def draw(rng, name, shape):
        if len(shape) == 1:
            std, mean = 0.1, 1.0
        elif name in ("tok_embeddings.weight", "output.weight"):
            std, mean = 2 / np.sqrt(args.dim), 0.0
        else:
            std, mean = 1 / np.sqrt(shape[1]), 0.0
        return mean + np.float32(std) * rng.standard_normal(shape, dtype=np.float32)
    return drawn(args, seed, draw)


def fan_in_weights(args: ModelArgs, seed):
    """Float32 matrices N(0, 1/fan_in), norm gains exactly 1: the benchmarks' models, whose values
    do not change the speed."""
    def draw(rng, name, shape):
        if len(shape) == 1:
            return np.ones(shape, dtype=np.float32)
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / np.sqrt(shape[1]))
    return drawn(args, seed, draw)


def fan_in_float64_weights(args: ModelArgs, seed):
    """Float64 matrices N(0, 1/fan_in), norm gains 1 + N(0, 0.1²): the backward-pass checks, which
    compare against torch in float64."""
    def draw(rng, name, shape):
        if len(shape) == 1:
            return 1 + 0.1 * rng.standard_normal(shape)
        return rng.standard_normal(shape) / np.sqrt(shape[1])
    return drawn(args, seed, draw)


def small_normal_weights(args: ModelArgs, seed=0):
    """Float32 matrices N(0, 0.2²), norm gains 1 + N(0, 0.1²): a small model whose logits are O(1)."""
    def draw(rng, name, shape):
        if len(shape) == 1:
            return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        return (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return drawn(args, seed, draw)


def normal_weights(args: ModelArgs, seed=0, scale=1.0):
    """Every weight scale * N(0, 1), drawn in float64 and rounded to float32: arbitrary values for
    the format, mapping and CLI tests, which check where the values go, not what the model computes
    with them (wide_logit_weights' logits are the informative ones)."""
    return drawn(args, seed, lambda rng, name, shape: (scale * rng.standard_normal(shape)).astype(np.float32))
