"""run_with_hooks (SPEC "Interventions") on the NumPy and the torch model.

The oracle is `recompute`, a float64 forward pass written here with a value substituted at a
named point: vectorized NumPy shaped unlike reference/ (RoPE as a complex multiplication,
attention by einsum over an explicit head -> kv-head map, silu through tanh), calling nothing of
reference/ or trainer/. A hooked run must equal it at every point, the KV cache included.
"""

import numpy as np
import pytest
import torch

from formats.spec import ModelArgs
from reference.model import Llama
from tests.support.compare import relative_error
from tests.support.models import torch_model
from tests.support.study import SPEC_BLOCK_POINTS, spec_points
from tests.support.study import recompute
from tests.support.weights import wide_logit_weights

CONFIGS = {
    "mha-tied": ModelArgs(dim=32, n_layers=2, n_heads=4, vocab_size=48, hidden_dim=64, max_seq_len=12),
    "gqa-untied": ModelArgs(dim=48, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=40, hidden_dim=64,
                            max_seq_len=12, tie_embeddings=False),
    "mqa-untied": ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=40, hidden_dim=48,
                            max_seq_len=12, tie_embeddings=False),
}
TOKENS = [1, 9, 3, 17, 9, 30, 2]
NEXT = 5                        # the token of the decode step after a hooked prefill

# A hooked float64 run vs recompute: the same real numbers in other summation orders (BLAS, einsum,
# complex RoPE), each step rounding ~1e-16 relative; through 2 blocks the worst point over all
# points and configs measured 1.8e-15 (NumPy) and 2.5e-15 (torch) of the point's largest value, a
# decode step after a hooked prefill 1.1e-15 (`pytest tests/test_hooks.py -s` prints them). 1e-12,
# the bound asked for, leaves ~400x.
FLOAT64_RTOL = 1e-12
# NumPy vs torch under the same hooks: as tests/test_study.py's unhooked bounds (its comments give
# the reasons), float32 measured 1.3e-6 worst, float64 2.4e-15.
TORCH_RTOL = {np.float32: 1e-5, np.float64: 1e-13}
# Zeroing a point must move the logits by far more than rounding: the smallest change measured
# over all points and configs, in both models, was 0.20 of the largest logit (zeroing
# blocks.1.attn.q in mha, which makes its pattern uniform); 1e-3 is far above float64 rounding.
MIN_CHANGE = 1e-3
# Points where zeroing the whole value cannot change the logits. Every point feeds them, and
# zeroing never reproduces the value (a zero query still turns the pattern uniform, zero scores
# unmask the future), so there is none; the one invariance is per position, tested below.
CANNOT_CHANGE = ()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These passes are tiny: a second torch thread only waits for a busy core (39 hooked runs
    measured 19 s with 2 threads on the loaded 2-core development machine, 0.17 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbations(args, weights, seed):
    """{name: delta}: for every point a random array of its shape, scaled to the point's RMS in
    the plain run, so that adding it moves everything downstream by O(1)."""
    rng = np.random.default_rng(seed)
    plain = recompute(args, weights, TOKENS)
    deltas = {}
    for name, shape in spec_points(args, len(TOKENS)).items():
        finite = plain[name][np.isfinite(plain[name])]
        deltas[name] = np.sqrt(np.mean(finite ** 2)) * rng.standard_normal(shape)
    return deltas


def adding(delta):
    """A hook for either model: value + delta (a NumPy array; torch casts it back)."""
    return lambda value, name: np.asarray(value) + delta


def worst(ours, expected):
    """(name, relative_error) of the worst of ours' points against expected's."""
    errors = {name: relative_error(np.asarray(ours[name]), expected[name]) for name in expected}
    name = max(errors, key=errors.get)
    return name, errors[name]


@pytest.fixture(scope="module", params=list(CONFIGS))
def config(request):
    args = CONFIGS[request.param]
    weights = wide_logit_weights(args, seed=3)
    return args, weights, perturbations(args, weights, seed=4)


def hooked_runs(run, config):
    """For every point: the worst (name, error) of run(hooks) -> cache against recompute."""
    args, weights, deltas = config
    results = {}
    for point, delta in deltas.items():
        cache = run({point: adding(delta)})
        expected = recompute(args, weights, TOKENS, {point: lambda value, delta=delta: value + delta})
        assert not np.allclose(expected["logits"], recompute(args, weights, TOKENS)["logits"])  # it moved
        results[point] = worst(cache, expected)
    return results


def assert_within(results, bound, label):
    point = max(results, key=lambda p: results[p][1])
    name, error = results[point]
    print(f"{label}: worst {error:.2g} at {name} when hooking {point}")
    assert error <= bound, f"hook at {point}: {name} off by {error:.3g}"


def test_numpy_hooked_run_equals_the_recomputation_at_every_point(config):
    args, weights, _ = config
    model = Llama(args, weights, np.float64)
    results = hooked_runs(lambda hooks: model.run_with_hooks(TOKENS, hooks, cache=True)[1], config)
    assert_within(results, FLOAT64_RTOL, "numpy float64")


def test_torch_hooked_run_equals_the_recomputation_at_every_point(config):
    args, weights, _ = config
    model = torch_model(args, weights, "float64")
    results = hooked_runs(lambda hooks: model.run_with_hooks(TOKENS, hooks, cache=True)[1], config)
    assert_within(results, FLOAT64_RTOL, "torch float64")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_and_torch_agree_under_the_same_hooks(config, dtype):
    args, weights, deltas = config
    ours = Llama(args, weights, dtype)
    theirs = torch_model(args, weights, "float64" if dtype == np.float64 else None)
    results = {}
    for point, delta in deltas.items():
        logits, expected = ours.run_with_hooks(TOKENS, {point: adding(delta)}, cache=True)
        assert logits.dtype == dtype and expected[point].dtype == dtype
        _, cache = theirs.run_with_hooks(TOKENS, {point: adding(delta)}, cache=True)
        results[point] = worst({name: t.numpy() for name, t in cache.items()}, expected)
    assert_within(results, TORCH_RTOL[dtype], f"torch vs numpy {np.dtype(dtype)}")


def padded(delta, name, n_tokens):
    """delta zero-padded along its position axes (the T of the SPEC's shape) to n_tokens."""
    symbols = SPEC_BLOCK_POINTS.get(name.split(".", 2)[-1], "T D").split()
    pad = [(0, n_tokens - size if symbol == "T" else 0) for symbol, size in zip(symbols, delta.shape)]
    return np.pad(delta, pad)


def test_a_decode_step_after_a_hooked_prefill_reads_the_hooked_kv_cache(config):
    """A hook in the prompt's forward pass changes what the next token attends to: at k_rot and v
    directly (the cache holds the replacement), anywhere else through the blocks above."""
    args, weights, deltas = config
    model, n = Llama(args, weights, np.float64), len(TOKENS)
    errors = {}
    for point, delta in deltas.items():
        model.run_with_hooks(TOKENS, {point: adding(delta)})
        step = model.forward([NEXT], start_pos=n)
        # The prompt and the next token in one pass, the substitution on the prompt's positions.
        extended = padded(delta, point, n + 1)
        expected = recompute(args, weights, TOKENS + [NEXT], {point: lambda value, d=extended: value + d})
        errors[point] = relative_error(step, expected["logits"][n])
        for i in range(args.n_layers):
            for cached, name in ((model.key_cache, "k_rot"), (model.value_cache, "v")):
                assert relative_error(cached[i, :, :n], expected[f"blocks.{i}.attn.{name}"][:, :n]) <= FLOAT64_RTOL
    point = max(errors, key=errors.get)
    print(f"decode after a hooked prefill: worst {errors[point]:.2g} when hooking {point}")
    assert errors[point] <= FLOAT64_RTOL, f"hook at {point}: decode logits off by {errors[point]:.3g}"


def zeroing(value, name):
    return np.zeros(np.shape(value))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_zeroing_any_point_changes_the_logits(config, kind):
    args, weights, deltas = config
    model = Llama(args, weights, np.float64) if kind == "numpy" else torch_model(args, weights, "float64")
    plain = np.asarray(model.run_with_hooks(TOKENS, {}))
    changes = {point: np.max(np.abs(np.asarray(model.run_with_hooks(TOKENS, {point: zeroing})) - plain))
               / np.max(np.abs(plain)) for point in deltas}
    unchanged = tuple(point for point, change in changes.items() if change <= MIN_CHANGE)
    assert unchanged == CANNOT_CHANGE, {point: changes[point] for point in unchanged}


@pytest.mark.parametrize("point", ["attn.q", "attn.q_rot"])
def test_zeroing_the_first_query_changes_nothing(config, point):
    """Query 0 sees one key, so its pattern row is [1, 0, ...] whatever its score: zeroing it at
    position 0 cannot change anything (in exact arithmetic, and in NumPy bit for bit: exp(0) / 1)."""
    args, weights, _ = config
    model = Llama(args, weights, np.float64)

    def first_query_zeroed(value, name):
        value = np.array(value)
        value[:, 0] = 0
        return value

    plain = model.run_with_hooks(TOKENS, {})
    for i in range(args.n_layers):
        np.testing.assert_array_equal(model.run_with_hooks(TOKENS, {f"blocks.{i}.{point}": first_query_zeroed}),
                                      plain, strict=True)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_bad_hooks_raise_naming_the_point(kind):
    args = CONFIGS["gqa-untied"]
    weights = wide_logit_weights(args, seed=3)
    model = Llama(args, weights) if kind == "numpy" else torch_model(args, weights)
    with pytest.raises(ValueError, match=r"no point named 'blocks\.2\.attn\.z' in a 2-block model"):
        model.run_with_hooks(TOKENS, {"blocks.2.attn.z": zeroing})
    with pytest.raises(ValueError, match="no point named 'attn.z'"):
        model.run_with_hooks(TOKENS, {"attn.z": zeroing})
    with pytest.raises(ValueError, match=r"the hook at blocks\.1\.attn\.k returned shape \(2, 7\); "
                                         r"the point's shape is \(2, 7, 8\)"):
        model.run_with_hooks(TOKENS, {"blocks.1.attn.k": lambda value, name: np.zeros((2, 7))})
    with pytest.raises(ValueError, match=r"the hook at blocks\.0\.attn\.scores returned shape \(1, 7, 7\)"):
        model.run_with_hooks(TOKENS, {"blocks.0.attn.scores": lambda value, name: np.zeros((1, 7, 7))})
    with pytest.raises(ValueError, match="the hook at embed is of type int, not a function"):
        model.run_with_hooks(TOKENS, {"embed": 3})

    def in_place(value, name):
        value[0] = 0

    # NumPy hands a read-only view (its own error names the problem); torch counts the write.
    with pytest.raises(ValueError, match="read-only|blocks.0.mlp.up changed its argument in place"):
        model.run_with_hooks(TOKENS, {"blocks.0.mlp.up": in_place})


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_hook_gets_the_value_and_its_name_and_replacements_take_the_models_dtype(kind):
    args = CONFIGS["mqa-untied"]
    weights = wide_logit_weights(args, seed=3)
    model = Llama(args, weights) if kind == "numpy" else torch_model(args, weights)
    seen = []
    _, plain = model.run_with_cache(TOKENS)

    def double(value, name):
        seen.append((name, np.asarray(value).copy()))
        return np.asarray(value, np.float64) * 2                     # float64 into a float32 model

    logits, cache = model.run_with_hooks(TOKENS, {"blocks.1.mlp.act": double, "embed": double}, cache=True)
    assert [name for name, _ in seen] == ["embed", "blocks.1.mlp.act"]
    np.testing.assert_array_equal(seen[0][1], np.asarray(plain["embed"]), strict=True)
    assert np.asarray(cache["embed"]).dtype == np.float32 and np.asarray(logits).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(cache["embed"]), 2 * np.asarray(plain["embed"]), strict=True)
    np.testing.assert_array_equal(np.asarray(cache["blocks.1.mlp.act"]), 2 * seen[1][1], strict=True)
    # Without cache=True only the logits come back, those of the cache's run.
    np.testing.assert_array_equal(np.asarray(model.run_with_hooks(TOKENS, {"blocks.1.mlp.act": double, "embed": double})),
                                  np.asarray(logits), strict=True)


def test_torch_replacing_nothing_keeps_the_fused_kernel_and_its_bits(monkeypatch):
    """Hooks that return None leave a recording torch pass bit-identical to the plain one; only a
    replaced scores or pattern computes attention explicitly."""
    args = CONFIGS["gqa-untied"]
    model = torch_model(args, wide_logit_weights(args, seed=3))
    with torch.no_grad():
        plain = model(torch.tensor([TOKENS]))[0][0]
    watch = {name: (lambda value, name: None) for name in spec_points(args, len(TOKENS))}
    assert torch.equal(model.run_with_hooks(TOKENS, watch), plain)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: pytest.fail("the fused kernel ran where a pattern was replaced"))
    model.run_with_hooks(TOKENS, {f"blocks.{i}.attn.pattern": lambda value, name: value * 1 for i in range(2)})
