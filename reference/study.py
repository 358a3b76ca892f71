"""Reading an activation cache (reference/cache.py): statistics, agreement, logit lens, heads.

NumPy only, like the rest of reference/; `llama2-scratch trace` prints and plots what these
return. Shapes: L blocks, T positions, H heads, V vocab, k top tokens.

    logits, cache = model.run_with_cache(tokens)
    point_stats(cache["blocks.0.attn.scores"])     # {"rms": ..., "max_abs": ...} over the finite values
    ids, probs = logit_lens(model, cache, top_k=5)  # (L, T, k) each
    head_summary(cache, model.args.n_layers)       # entropy and attention targets of every head

Logit lens (nostalgebraist 2020): read each block's output residual stream as if it were the
last one, softmax(output · rmsnorm(resid_post) * norm), to see when the prediction forms. The
last block's reading is the model's own next-token distribution.
"""

import numpy as np

from reference.attention import softmax

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
