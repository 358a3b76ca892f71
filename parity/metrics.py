"""How far a candidate's outputs are from a reference's: (T, V) logits and id sequences in, numbers
(or one line saying where they part) out."""

import numpy as np


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logit_metrics(ref, cand):
    """{max_abs_diff, nmse, kl, top1} of candidate logits against reference logits, both (T, V).

        max_abs_diff  max over positions and vocabulary of |cand - ref|
        nmse          sum((cand - ref)^2) / sum(ref^2)
        kl            mean over positions of KL(softmax(ref) || softmax(cand)), nats
        top1          fraction of positions whose argmax agrees (lowest id on ties)

    Computed in float64 so the metric adds no rounding of its own. KL(p_ref || p_cand) is the
    extra nats per token a user pays for sampling from the candidate instead of the reference.
    >>> m = logit_metrics(np.array([[0.0, 1.0]], np.float32), np.array([[0.0, 1.5]], np.float32))
    >>> m["max_abs_diff"], m["top1"]
    (0.5, 1.0)
    """
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    diff = cand64 - ref64
    log_p, log_q = _log_softmax(ref64), _log_softmax(cand64)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)                 # (T,)
    return {
        "max_abs_diff": float(np.abs(diff).max()),
        "nmse": float((diff ** 2).sum() / max(float((ref64 ** 2).sum()), 1e-300)),
        "kl": float(kl.mean()),
        "top1": float((ref.argmax(axis=-1) == cand.argmax(axis=-1)).mean()),
    }


def identical_prefix(ref_ids, cand_ids):
    """How many leading ids two sequences share.
    >>> identical_prefix([1, 2, 3], [1, 2, 4])
    2
    """
    n = 0
    for a, b in zip(ref_ids, cand_ids):
        if a != b:
            break
        n += 1
    return n


def first_difference(a, b):
    """Where two id sequences part: 'first difference at index 2: [3] vs [4] (lengths 3, 3)'."""
    k = identical_prefix(a, b)
    return f"first difference at index {k}: {a[k:k + 4]} vs {b[k:k + 4]} (lengths {len(a)}, {len(b)})"


def argmax_disagreement(ref, cand):
    """Where two (T, V) logits' argmaxes differ, in one line (they must differ somewhere)."""
    disagree = np.flatnonzero(ref.argmax(axis=-1) != cand.argmax(axis=-1))
    return f"argmax differs at {len(disagree)} of {len(ref)} positions, first at position {disagree[0]}"
