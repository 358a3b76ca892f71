"""reference.sampling: known answers, the properties each filter promises, and a chi-square test
that plain sampling follows the softmax."""

import doctest

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from reference import sampling
from reference.sampling import sample

LOGITS = arrays(np.float32, st.integers(1, 40), elements=st.floats(-8, 8, width=32))
SEEDS = st.integers(0, 2**32 - 1)


def test_docstring_examples():
    result = doctest.testmod(sampling)
    assert result.attempted > 0 and result.failed == 0


def test_known_answers():
    logits = np.array([1.0, 3.0, 3.0, -1.0], np.float32)
    assert sampling.greedy(logits) == 1  # lowest id among the tied maxima
    assert sample(logits, np.random.default_rng(0), temperature=0) == 1
    p = sampling.softmax(np.array([0.0, 0.0, np.log(2.0)], np.float32))
    np.testing.assert_allclose(p, [0.25, 0.25, 0.5], rtol=1e-6)
    # Temperature 2 halves the logit gaps: p ∝ [1, 1, sqrt 2].
    p = sampling.softmax(np.array([0.0, 0.0, np.log(2.0)], np.float32), temperature=2.0)
    np.testing.assert_allclose(p, np.array([1, 1, np.sqrt(2)]) / (2 + np.sqrt(2)), rtol=1e-6)
    # The penalty makes a recent token less likely whatever the sign of its logit.
    penalized = sampling.apply_repetition_penalty(logits, [1, 3], 1.5)
    np.testing.assert_array_equal(penalized, np.array([1.0, 2.0, 3.0, -1.5], np.float32))
    assert sample(logits, np.random.default_rng(0), temperature=0, repetition_penalty=1.5,
                  recent_ids=[1]) == 2


def test_float32_in_float32_out():
    logits = np.linspace(-3, 3, 7, dtype=np.float32)
    assert sampling.softmax(logits, 0.7).dtype == np.float32
    assert sampling.apply_repetition_penalty(logits, [2], 1.3).dtype == np.float32


@given(logits=LOGITS, seed=SEEDS, k=st.integers(1, 40))
def test_top_k_never_picks_outside_the_k_best(logits, seed, k):
    token = sample(logits, np.random.default_rng(seed), top_k=k)
    # Fewer than k ids have a strictly larger logit (ties at the boundary may go either way).
    assert np.sum(logits > logits[token]) < k


@given(logits=LOGITS, seed=SEEDS, p=st.floats(0.01, 1.0))
def test_top_p_never_picks_outside_the_nucleus(logits, seed, p):
    token = sample(logits, np.random.default_rng(seed), top_p=p)
    probs = sampling.softmax(logits).astype(np.float64)
    # The mass strictly more probable than the pick is below p (with float32 rounding slack).
    assert probs[probs > probs[token]].sum() < p + 1e-5


@given(logits=LOGITS, seed=SEEDS, min_p=st.floats(0.0, 1.0))
def test_min_p_never_picks_below_the_threshold(logits, seed, min_p):
    token = sample(logits, np.random.default_rng(seed), min_p=min_p)
    probs = sampling.softmax(logits)
    assert probs[token] >= np.float32(min_p) * probs.max()


@given(logits=LOGITS, seed=SEEDS, k=st.integers(1, 5), p=st.floats(0.05, 1.0), min_p=st.floats(0, 0.5))
def test_filters_combined_stay_inside_every_set(logits, seed, k, p, min_p):
    token = sample(logits, np.random.default_rng(seed), top_k=k, top_p=p, min_p=min_p)
    assert np.sum(logits > logits[token]) < k
    assert sampling.softmax(logits)[token] >= np.float32(min_p) * sampling.softmax(logits).max() * (1 - 1e-6)


@given(values=st.lists(st.integers(-20, 20), min_size=1, max_size=40), seed=SEEDS,
       temperature=st.sampled_from([1e-2, 1e-3, 1e-4]))
def test_temperature_to_zero_is_greedy(values, seed, temperature):
    logits = np.array(values, np.float32)
    assume(np.sum(logits == logits.max()) == 1)
    # Integer logits: the runner-up is >= 1 below the max, so exp(-1/T) underflows to 0.
    assert sample(logits, np.random.default_rng(seed), temperature=temperature) == sampling.greedy(logits)


@given(values=st.lists(st.integers(-3, 3), min_size=1, max_size=40))
def test_temperature_zero_is_greedy_with_ties(values):
    logits = np.array(values, np.float32)
    first_max = int(np.flatnonzero(logits == logits.max())[0])
    assert sample(logits, np.random.default_rng(0), temperature=0) == first_max


@settings(max_examples=30)
@given(seed=SEEDS, logits=arrays(np.float32, 50, elements=st.floats(-4, 4, width=32)))
def test_same_seed_same_tokens(seed, logits):
    def run(rng):
        out = []
        for step in range(40):
            shifted = np.roll(logits, step)  # stands in for a model: logits change with the context
            out.append(sample(shifted, rng, temperature=0.9, top_k=20, top_p=0.95, min_p=0.01,
                              repetition_penalty=1.2, recent_ids=out[-8:]))
        return out
    assert run(np.random.default_rng(seed)) == run(np.random.default_rng(seed))


# chi-square goodness of fit, 6 categories (5 degrees of freedom), significance level 0.001:
# the critical value chi2.ppf(0.999, df=5) = 20.515. With a fixed seed the test is deterministic;
# the level says how unlucky a correct sampler would have to be to fail it with a new seed.
CHI2_CRITICAL_DF5_P001 = 20.515
CHI2_LOGITS = np.array([1.0, 0.5, 0.0, -0.5, 2.0, -1.0], np.float32)
CHI2_DRAWS = 20_000
CHI2_SEED = 1234


def chi_square(counts, probs):
    expected = CHI2_DRAWS * probs.astype(np.float64)
    return float(np.sum((counts - expected) ** 2 / expected))


def draw_counts(temperature):
    rng = np.random.default_rng(CHI2_SEED)
    tokens = [sample(CHI2_LOGITS, rng, temperature=temperature) for _ in range(CHI2_DRAWS)]
    return np.bincount(tokens, minlength=len(CHI2_LOGITS))


def test_temperature_one_follows_softmax_chi_square():
    counts = draw_counts(temperature=1.0)
    softmax = np.exp(CHI2_LOGITS - CHI2_LOGITS.max()) / np.exp(CHI2_LOGITS - CHI2_LOGITS.max()).sum()
    assert chi_square(counts, softmax) < CHI2_CRITICAL_DF5_P001
    # The same test has the power to see a wrong distribution: samples at temperature 1.3.
    assert chi_square(draw_counts(temperature=1.3), softmax) > CHI2_CRITICAL_DF5_P001


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        sample(np.zeros(3, np.float32), np.random.default_rng(0), temperature=-1)
