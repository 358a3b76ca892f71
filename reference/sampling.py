"""Choosing the next token from the logits: greedy, temperature, top-k, top-p, min-p, repetition
penalty. NumPy only.

Every random choice is one uniform draw from the caller's `np.random.Generator`, so the same seed
and the same logits give the same tokens. Shapes: logits and probs are [V] float32, masks [V]
bool. `sample` applies the steps in llama2.c's and Hugging Face's order:

    repetition penalty (raw logits) -> temperature -> softmax -> top-k -> top-p -> min-p -> draw

each filter renormalizing what it keeps, so top-p measures mass after top-k. Temperature 0 means
greedy: argmax, lowest id on ties.

Maths, read 6th of reference/'s eight (reference/__init__.py gives the order).
"""

import numpy as np


def greedy(logits):
    """The id of the largest logit, the lowest such id on ties.

    >>> greedy(np.array([1.0, 3.0, 3.0], np.float32))
    1
    """
    return int(np.argmax(logits))  # argmax returns the first maximum


def apply_repetition_penalty(logits, recent_ids, penalty):
    """CTRL's repetition penalty (Keskar et al., 2019), as llama.cpp and Hugging Face apply it: for
    each distinct id in `recent_ids`,

        l' = l / penalty   if l > 0
        l' = l * penalty   otherwise

    so penalty > 1 always makes a recent token less likely. A new array is returned.

    >>> apply_repetition_penalty(np.array([2.0, -2.0, 1.0], np.float32), [0, 1, 0], 2.0)
    array([ 1., -4.,  1.], dtype=float32)
    """
    out = np.array(logits, dtype=np.float32)
    ids = np.unique(np.asarray(recent_ids, dtype=np.int64))
    if ids.size:
        hit = out[ids]
        out[ids] = np.where(hit > 0, hit / np.float32(penalty), hit * np.float32(penalty))
    return out


def softmax(logits, temperature=1.0):
    """p_i = exp((l_i - max l) / T) / sum_j exp((l_j - max l) / T), with T = temperature > 0.

    Subtracting the max first keeps exp from overflowing at any temperature.

    >>> softmax(np.array([0.0, np.log(3.0)], np.float32))
    array([0.25, 0.75], dtype=float32)
    """
    z = (np.asarray(logits, dtype=np.float32) - np.max(logits)) * np.float32(1.0 / temperature)
    e = np.exp(z)
    return e / e.sum(dtype=np.float32)


def _rank(values):
    """Ids from largest to smallest value; a stable sort puts the lower id first among equals."""
    return np.argsort(-values, kind="stable")


def top_k_mask(logits, k):
    """Keep the ids of the k largest logits (the lower ids among equals at the boundary);
    k <= 0 keeps all.

    Ranked by logit, not probability: two logits 1e-8 apart can round to the same float32
    probability, and top-k must still keep the larger.

    >>> top_k_mask(np.array([0.5, 2.0, 2.0, -1.0], np.float32), 2)
    array([False,  True,  True, False])
    """
    keep = np.zeros(len(logits), dtype=bool)
    keep[_rank(logits)[:k] if k > 0 else slice(None)] = True
    return keep


def top_p_mask(probs, p):
    """Nucleus sampling (Holtzman et al., 2019): walking ids from most to least probable, keep
    each id whose predecessors' cumulative probability is still below p:

        keep i  <=>  sum of p_j over the ids ranked before i  <  p

    That is the smallest set reaching mass p; the most probable id is always kept.

    >>> top_p_mask(np.array([0.2, 0.5, 0.3], np.float32), 0.7)    # 0.5, then 0.5 + 0.3 >= 0.7
    array([False,  True,  True])
    """
    order = _rank(probs)
    before = np.cumsum(probs[order], dtype=np.float64) - probs[order]
    keep = np.zeros(len(probs), dtype=bool)
    keep[order[before < p]] = True
    return keep


def min_p_mask(probs, min_p):
    """Min-p (Nguyen et al., 2024; llama.cpp's min_p): keep i <=> p_i >= min_p * max_j p_j.

    >>> min_p_mask(np.array([0.6, 0.3, 0.1], np.float32), 0.25)    # threshold 0.15
    array([ True,  True, False])
    """
    return probs >= np.float32(min_p) * probs.max()


def _renormalize(probs, keep):
    kept = np.where(keep, probs, np.float32(0))
    return kept / kept.sum(dtype=np.float32)


def draw(probs, rng):
    """One id drawn from `probs` by inverting the CDF with a single uniform u in [0, 1):
    the first i with cumsum(p)_i > u * sum(p).

    The CDF is summed in float64 so a 32000-entry vocabulary does not shift it by float32
    rounding; ids of probability 0 can never be drawn (their CDF step is empty).
    """
    cdf = np.cumsum(probs, dtype=np.float64)
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def sample(logits, rng, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
           repetition_penalty=1.0, recent_ids=()):
    """The next token id from `logits` [V]; the defaults sample from the plain softmax.

    temperature 0 is greedy; top_k 0, top_p 1, min_p 0 and repetition_penalty 1 turn those
    steps off. `recent_ids` are the ids the penalty applies to (e.g. the last 64 tokens).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if repetition_penalty != 1.0 and len(recent_ids):
        logits = apply_repetition_penalty(logits, recent_ids, repetition_penalty)
    if temperature == 0:
        return greedy(logits)
    probs = softmax(logits, temperature)
    if top_k > 0:
        probs = _renormalize(probs, top_k_mask(logits, top_k))
    if top_p < 1.0:
        probs = _renormalize(probs, top_p_mask(probs, top_p))
    if min_p > 0.0:
        probs = _renormalize(probs, min_p_mask(probs, min_p))
    return draw(probs, rng)
