"""Reading an activation cache (reference/cache.py) and experimenting on a forward pass: statistics,
agreement, logit lens, heads; head ablation, activation patching, direct logit attribution.

NumPy only, like the rest of reference/; `llama2-scratch trace` prints and plots what these
return. Shapes: L blocks, T positions, H heads, V vocab, k top tokens.

    logits, cache = model.run_with_cache(tokens)
    point_stats(cache["blocks.0.attn.scores"])     # {"rms": ..., "max_abs": ...} over the finite values
    ids, probs = logit_lens(model, cache, top_k=5)  # (L, T, k) each
    head_summary(cache, model.args.n_layers)       # entropy and attention targets of every head
    ablate_heads(model, tokens, [(1, 0)])          # logits with block 1's head 0 silenced
    patch_activations(model, clean, corrupted)     # the metric with each clean value patched in
    logit_attribution(model, cache, -1, token)     # a logit split into embed, heads, MLPs
    compare_caches(cache, other_cache)             # where two prompts' passes first differ

Logit lens (nostalgebraist 2020): read each block's output residual stream as if it were the
last one, softmax(output · rmsnorm(resid_post) * norm), to see when the prediction forms. The
last block's reading is the model's own next-token distribution.

The examples below draw their model's weights as rng.normal(len(shape) == 1, 1/sqrt(fan_in)):
RMSNorm gains near 1, matrices scaled so that activations stay near 1.

The experiments run model.run_with_hooks (reference/model.py), so what they change is what the
rest of the forward pass computes with; TransformerLens's `ablation`, `patching` and
`logit_attrs` are the same experiments on torch models.
"""

import dataclasses

import numpy as np

from reference.attention import softmax
from reference.cache import check_point_names, point_names, position_axis

# The attention targets head_summary names, in the order they win a tie (at query 1 the
# previous token is also the first).
TARGETS = ("self", "previous", "first", "other")


def point_stats(array):
    """{"rms": sqrt(mean(x²)), "max_abs": max |x|} over the finite values of `array`, as floats.

    Only scores hold non-finite values (the -inf of the causal mask), and those are not data.
    >>> point_stats(np.array([[3.0, -np.inf], [-4.0, 0.0]]))
    {'rms': 2.886751345948129, 'max_abs': 4.0}
    """
    values = np.asarray(array, dtype=np.float64)
    values = values[np.isfinite(values)]
    return {"rms": float(np.sqrt(np.mean(values * values))), "max_abs": float(np.max(np.abs(values)))}


def agreement(candidate, reference):
    """{"max_abs_diff": max |candidate - reference|, "bit_identical": fraction of equal bit patterns}.

    Both arrays must have one shape and dtype. Equal infinities (the masked scores) count as
    identical and add no difference.
    >>> agreement(np.array([1.0, 2.0, -np.inf]), np.array([1.0, 2.5, -np.inf]))
    {'max_abs_diff': 0.5, 'bit_identical': 0.6666666666666666}
    """
    candidate, reference = np.asarray(candidate), np.asarray(reference)
    if candidate.shape != reference.shape or candidate.dtype != reference.dtype:
        raise ValueError(f"cannot compare {candidate.dtype} {candidate.shape} with {reference.dtype} {reference.shape}")
    bits = np.dtype(f"u{candidate.dtype.itemsize}")
    same = candidate.view(bits) == reference.view(bits)
    diff = np.abs(candidate[~same].astype(np.float64) - reference[~same])
    return {"max_abs_diff": float(diff.max(initial=0.0)), "bit_identical": float(np.mean(same))}


def top_tokens(probs, k):
    """(ids, probs) of the k most likely tokens along the last axis, most likely first (lowest id
    on ties). probs: (..., V) -> two (..., k).
    >>> top_tokens(np.array([0.1, 0.4, 0.1, 0.4]), 3)
    (array([1, 3, 0]), array([0.4, 0.4, 0.1]))
    """
    ids = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return ids, np.take_along_axis(probs, ids, axis=-1)


def logit_lens(model, cache, top_k):
    """(ids, probs), each (L, T, k): the top_k next tokens read from every block's resid_post.

    model: the reference.model.Llama that filled `cache`; its unembed (final norm and output) is
    the one its forward pass uses, so the last block's reading equals softmax(cache["logits"]).
    """
    readings = [top_tokens(softmax(model.unembed(cache[f"blocks.{i}.resid_post"])), top_k)
                for i in range(model.args.n_layers)]
    return np.stack([ids for ids, _ in readings]), np.stack([probs for _, probs in readings])


def entropy_bits(pattern):
    """-Σ p log2 p over the last axis (0 log 0 = 0): 0 bits attends to one key, log2(n) spreads evenly."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pattern > 0, pattern * np.log2(pattern), 0.0)
    return -np.sum(terms, axis=-1)


def attended_queries(n_tokens):
    """The queries head statistics average over: 1..T-1 (query 0 can only attend to itself), or
    query 0 alone in a one-token prompt."""
    return np.arange(min(1, n_tokens - 1), n_tokens)


def head_targets(pattern):
    """Per head, the share of attended_queries whose largest weight goes to each of TARGETS: the
    query's own position, the one before it, position 0, or any other. (H, T, T) -> (H, 4).
    >>> head_targets(np.array([[[1, 0, 0], [1, 0, 0], [0, 1, 0]]]))    # query 1 -> 0, query 2 -> 1
    array([[0., 1., 0., 0.]])
    """
    queries = attended_queries(pattern.shape[1])
    key = np.argmax(pattern[:, queries], axis=-1)                           # (H, queries)
    target = np.select([key == queries, key == queries - 1, key == 0], [0, 1, 2], default=3)
    return np.stack([np.mean(target == i, axis=-1) for i in range(len(TARGETS))], axis=-1)


def head_summary(cache, n_layers):
    """One dict per (layer, head), averaged over attended_queries: entropy_bits of its attention
    rows, the weight given to the previous token, the first token and itself, and `attends_most`
    (the TARGETS entry that wins most queries)."""
    heads = []
    for layer in range(n_layers):
        pattern = np.asarray(cache[f"blocks.{layer}.attn.pattern"], dtype=np.float64)   # (H, T, T)
        queries = attended_queries(pattern.shape[1])
        rows = pattern[:, queries]                                           # (H, queries, T)
        at = np.arange(len(queries))
        stats = {"entropy_bits": np.mean(entropy_bits(rows), axis=-1),
                 "to_previous": np.mean(rows[:, at, np.maximum(queries - 1, 0)], axis=-1),
                 "to_first": np.mean(rows[:, :, 0], axis=-1),
                 "to_self": np.mean(rows[:, at, queries], axis=-1)}
        most = np.argmax(head_targets(pattern), axis=-1)                     # (H,)
        heads += [{"layer": layer, "head": head, **{key: float(value[head]) for key, value in stats.items()},
                   "attends_most": TARGETS[most[head]]} for head in range(pattern.shape[0])]
    return heads


def residual_stream(cache, n_layers):
    """(names, rms (len(names), T)): the residual stream's per-position RMS at embed and after
    every attention and feed-forward sublayer, in order."""
    names = ["embed"] + [f"blocks.{i}.{point}" for i in range(n_layers) for point in ("resid_mid", "resid_post")]
    rms = [np.sqrt(np.mean(np.asarray(cache[name], dtype=np.float64) ** 2, axis=-1)) for name in names]
    return names, np.stack(rms)


def ablate_heads(model, tokens, heads, how="zero"):
    """The logits (T, V) of `tokens` with the outputs z of the chosen heads replaced before wo.

    heads: (block, head) pairs. how="zero" sets their z to 0 (the head writes nothing into the
    residual stream); how="mean" sets it, at every position, to that head's mean z over the
    prompt's positions (what it writes on average, without what it read at each position).
    >>> from formats.spec import ModelArgs, weight_shapes; from reference.model import Llama
    >>> args, rng = ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=20, max_seq_len=8), np.random.default_rng(0)
    >>> model = Llama(args, {name: rng.normal(len(s) == 1, s[-1] ** -0.5, s) for name, s in weight_shapes(args).items()})
    >>> logits = model.run_with_hooks([1, 5, 9], {})
    >>> ablated = ablate_heads(model, [1, 5, 9], [(1, 0), (1, 3)])
    >>> ablated.shape, int(np.argmax(logits[-1])), int(np.argmax(ablated[-1]))    # the prediction moves
    ((3, 20), 18, 16)
    >>> np.array_equal(ablate_heads(model, [1], [(0, 2)], how="mean"), model.run_with_hooks([1], {}))  # 1 position
    True
    >>> ablate_heads(model, [1, 5, 9], [(2, 0)])
    Traceback (most recent call last):
    ValueError: no head 2.0: the model has 2 blocks of 4 heads
    """
    if how not in ("zero", "mean"):
        raise ValueError(f"how must be 'zero' or 'mean', got {how!r}")
    n_layers, n_heads = model.args.n_layers, model.args.n_heads
    chosen = {}
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(f"no head {layer}.{head}: the model has {n_layers} blocks of {n_heads} heads")
        chosen.setdefault(layer, []).append(head)
    if not chosen:
        raise ValueError("no heads to ablate")

    def ablate(z, name):                                                     # z: (H, T, hd)
        out = np.array(z)
        picked = chosen[int(name.split(".")[1])]
        out[picked] = 0 if how == "zero" else np.mean(z[picked], axis=1, keepdims=True)
        return out

    return model.run_with_hooks(tokens, {f"blocks.{layer}.attn.z": ablate for layer in chosen})


def logit_difference(token, other, position=-1):
    """A patching metric: logits[position, token] - logits[position, other], as a float.
    >>> logit_difference(2, 0)(np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 3.5]]))
    2.5
    """
    def metric(logits):
        n_tokens, vocab = logits.shape
        for t in (token, other):
            if not 0 <= t < vocab:
                raise ValueError(f"token {t} is outside the vocabulary [0, {vocab})")
        if not -n_tokens <= position < n_tokens:
            raise ValueError(f"position {position} is outside the prompt's {n_tokens} positions")
        return float(logits[position, token] - logits[position, other])

    return metric


# Residual stream points: patched one position at a time (the stream at one position is all that
# the blocks above read of it there). Inside a block, a point is patched whole.
RESIDUAL_POINTS = ("embed", "resid_pre", "resid_mid", "resid_post")


@dataclasses.dataclass(frozen=True)
class Patching:
    """What patch_activations measured. `patched` maps each point to the metric of the corrupted
    run with that point's clean value patched in: a (T,) array for residual stream points (one
    position patched at a time), a float for the others."""
    clean: float
    corrupted: float
    patched: dict

    def recovered(self):
        """{point: (patched - corrupted) / (clean - corrupted)}: 0 where patching the point did
        nothing, 1 where it restored the clean run's metric."""
        return {name: (value - self.corrupted) / (self.clean - self.corrupted) for name, value in self.patched.items()}


def is_residual(name):
    return name.rsplit(".", 1)[-1] in RESIDUAL_POINTS


def patch_activations(model, clean_tokens, corrupted_tokens, metric=None, points=None):
    """Activation patching: which values carry what makes the clean prompt's prediction differ.

    Runs both prompts, then the corrupted prompt once per point (and per position for residual
    stream points) with the clean run's value there; `metric(logits (T, V)) -> float` measures
    each run. The default metric is logit_difference(clean's top next token, corrupted's) at the
    last position. points: names of reference/cache.py (default: all). The prompts must have one
    length, so that a value of one fits in the other's pass. Returns a Patching.
    >>> from formats.spec import ModelArgs, weight_shapes; from reference.model import Llama
    >>> args, rng = ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=20, max_seq_len=8), np.random.default_rng(0)
    >>> model = Llama(args, {name: rng.normal(len(s) == 1, s[-1] ** -0.5, s) for name, s in weight_shapes(args).items()})
    >>> result = patch_activations(model, [1, 5, 9], [1, 7, 9], points=["blocks.0.resid_pre", "logits"])
    >>> result.patched["blocks.0.resid_pre"].shape, result.patched["logits"] == result.clean
    ((3,), True)
    >>> bool(result.patched["blocks.0.resid_pre"][0] == result.corrupted)   # position 0 is the same token
    True
    >>> patch_activations(model, [1, 5, 9], [1, 7])
    Traceback (most recent call last):
    ValueError: patching needs prompts of one length: the clean one has 3 tokens, the corrupted one 2
    """
    clean_tokens, corrupted_tokens = np.asarray(clean_tokens), np.asarray(corrupted_tokens)
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"patching needs prompts of one length: the clean one has {clean_tokens.size} "
                         f"tokens, the corrupted one {corrupted_tokens.size}")
    points = point_names(model.args.n_layers) if points is None else list(points)
    check_point_names(points, model.args.n_layers)
    clean_logits, clean_cache = model.run_with_hooks(clean_tokens, {}, cache=True)
    corrupted_logits = model.run_with_hooks(corrupted_tokens, {})
    if metric is None:
        top, other = int(np.argmax(clean_logits[-1])), int(np.argmax(corrupted_logits[-1]))
        if top == other:
            raise ValueError(f"both prompts predict token {top} next: give a metric, e.g. "
                             f"logit_difference({top}, another_token)")
        metric = logit_difference(top, other)

    def patched_run(name, position=None):
        def patch(value, _):
            if position is None:
                return clean_cache[name]
            out = np.array(value)
            out[position] = clean_cache[name][position]
            return out
        return metric(model.run_with_hooks(corrupted_tokens, {name: patch}))

    patched = {name: (np.array([patched_run(name, t) for t in range(len(clean_tokens))]) if is_residual(name)
                      else patched_run(name)) for name in points}
    return Patching(metric(clean_logits), metric(corrupted_logits), patched)


def logit_attribution(model, cache, position, token):
    """Direct logit attribution: cache["logits"][position, token] split into what each part of the
    residual stream writes along the token's output direction, a dict of floats.

    The last residual stream r is embed + Σ_i (attn_out_i + mlp_out_i), and attn_out_i is
    Σ_h z_i[h] · wo_i[:, h·hd:(h+1)·hd]ᵀ, head h through its slice of wo. The logit is
    output[token] · (r * s * norm), s = 1/sqrt(mean(r²) + eps) the final RMSNorm's scale: taken as
    the forward pass computed it from the whole stream, the logit is linear in the parts, so they
    sum to it (up to rounding; computed in float64). Keys: `embed`, `blocks.{i}.attn.head.{h}`
    and `blocks.{i}.mlp_out`. cache: model.run_with_cache's (hooks that break r's sum break it).
    position may count from the end (-1: the last).
    >>> from formats.spec import ModelArgs, weight_shapes; from reference.model import Llama
    >>> args, rng = ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=20, max_seq_len=8), np.random.default_rng(0)
    >>> model = Llama(args, {name: rng.normal(len(s) == 1, s[-1] ** -0.5, s) for name, s in weight_shapes(args).items()}, np.float64)
    >>> logits, cache = model.run_with_cache([1, 5, 9])
    >>> parts = logit_attribution(model, cache, -1, 4)
    >>> len(parts), list(parts)[:3]
    (11, ['embed', 'blocks.0.attn.head.0', 'blocks.0.attn.head.1'])
    >>> bool(abs(sum(parts.values()) - logits[-1, 4]) < 1e-12)
    True
    """
    n_tokens, vocab = cache["logits"].shape
    if not -n_tokens <= position < n_tokens:
        raise ValueError(f"position {position} is outside the prompt's {n_tokens} positions")
    if not 0 <= token < vocab:
        raise ValueError(f"token {token} is outside the vocabulary [0, {vocab})")
    args = model.args
    as64 = lambda array: np.asarray(array, dtype=np.float64)  # noqa: E731
    resid = as64(cache[f"blocks.{args.n_layers - 1}.resid_post"][position])             # (D,)
    scale = 1 / np.sqrt(np.mean(resid * resid) + args.norm_eps)
    direction = as64(model.output[token]) * as64(model.norm) * scale                     # (D,)
    parts = {"embed": float(as64(cache["embed"][position]) @ direction)}
    for i, layer in enumerate(model.layers):
        # attn_out · d = concat_h(z[h]) · (woᵀ d): head h reads its hd-wide slice of woᵀ d.
        per_head = (direction @ as64(layer.wo)).reshape(args.n_heads, args.head_dim)   # (H, hd)
        z = as64(cache[f"blocks.{i}.attn.z"][:, position])                              # (H, hd)
        parts.update({f"blocks.{i}.attn.head.{h}": float(z[h] @ per_head[h]) for h in range(args.n_heads)})
        parts[f"blocks.{i}.mlp_out"] = float(as64(cache[f"blocks.{i}.mlp_out"][position]) @ direction)
    return parts


def compare_caches(cache_a, cache_b):
    """{point: agreement(a, b) plus "first_position", the first position where the two differ
    (None where nowhere)}, for two caches of one model and one prompt length.

    A causal model's values at a position depend only on the tokens up to it: prompts that first
    differ at token p have bit-identical caches before p.
    >>> a = {"embed": np.array([[1.0, 2.0], [3.0, 4.0]]), "blocks.0.attn.z": np.zeros((1, 2, 2))}
    >>> b = {"embed": np.array([[1.0, 2.0], [3.0, 4.5]]), "blocks.0.attn.z": np.zeros((1, 2, 2))}
    >>> compare_caches(a, b)["embed"]
    {'max_abs_diff': 0.5, 'bit_identical': 0.75, 'first_position': 1}
    >>> compare_caches(a, b)["blocks.0.attn.z"]["first_position"] is None
    True
    """
    if list(cache_a) != list(cache_b):
        raise ValueError(f"the caches hold other points: {sorted(set(cache_a) ^ set(cache_b))[:5]}")
    compared = {}
    for name in cache_a:
        a, b = np.asarray(cache_a[name]), np.asarray(cache_b[name])
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes {a.shape} and {b.shape} differ (prompts of other lengths?)")
        axis = position_axis(name)
        bits = np.dtype(f"u{a.dtype.itemsize}")
        differs = np.any(np.moveaxis(a.view(bits) != b.view(bits), axis, 0).reshape(a.shape[axis], -1), axis=1)
        first = int(np.argmax(differs)) if differs.any() else None
        compared[name] = {**agreement(a, b), "first_position": first}
    return compared
