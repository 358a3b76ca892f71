"""The rows of the report, built from what the implementations returned.

Every function takes the outputs of one step as {name: result} for the implementations that ran
and {name: reason} for those that failed (parity/run.py); a pair with a failed side gets rows
whose value is None (a failure) and whose detail is the reason.
"""

import numpy as np

from parity import TORCH
from parity.metrics import argmax_disagreement, first_difference, identical_prefix, logit_metrics
from parity.report import Check
from parity.thresholds import for_pair

LOGIT_METRICS = ("max_abs_diff", "nmse", "kl", "top1")


def config_mismatches(stored, spec):
    """['llama.attention.head_count: file 2, checkpoint 4', ...]: the file's hyperparameters as
    stored (ModelFile.stored_hparams) against the checkpoint's `spec`; eps and theta compared as
    float32, the type the files store them in."""
    expected = dict(spec.to_dict(), head_dim=spec.head_dim)
    problems = []
    for where, (field, value) in stored.items():
        want = expected[field]
        if field in ("norm_eps", "rope_theta"):
            same = value is not None and np.float32(value) == np.float32(want)
        else:
            same = value is not None and value == want
        if not same:
            problems.append(f"{where}: file {value}, checkpoint {want}")
    return problems


def config_check(model_file, ckpt_spec, dtype):
    mismatches = config_mismatches(model_file.stored_hparams(), ckpt_spec)
    return Check("config", TORCH, "file", dtype, "mismatched_fields", len(mismatches), 0, "<=",
                 "; ".join(mismatches))


def load_check(name, dtype, error=None):
    """The `load` row of one implementation: passed, or failed with the loader's error."""
    if error is None:
        return Check("load", name, "file", dtype, "loads", 1, 1, ">=")
    return Check("load", name, "file", dtype, "loads", 0, 1, ">=", error)


def tokenizer_checks(texts, encoders, dtype):
    """Identical ids on every prompt; the first encoder (sentencepiece when there is one) is the
    reference for the others."""
    names = list(encoders)
    checks = []
    for prompt, text in texts.items():
        ref_ids = encoders[names[0]](text)
        for cand in names[1:]:
            cand_ids = encoders[cand](text)
            same = cand_ids == ref_ids
            checks.append(Check(f"tokenizer/{prompt}", names[0], cand, dtype, "ids_equal", float(same), 1.0, ">=",
                                "" if same else first_difference(ref_ids, cand_ids)))
    return checks


def _pairs(names):
    """Every (reference, candidate) pair, the earlier implementation the reference."""
    return [(ref, cand) for i, ref in enumerate(names) for cand in names[i + 1:]]


def logits_checks(prompt, names, logits, failed, dtype):
    """Every pair's logit metrics on one prompt; `logits` maps names to (T, V) arrays. A metric
    without a limit for the pair (top-1 of the coarsest types vs torch) has no row."""
    checks = []
    for ref, cand in _pairs(names):
        limits = for_pair(dtype, ref, cand)
        reason = failed.get(ref) or failed.get(cand)
        metrics = dict.fromkeys(LOGIT_METRICS) if reason else logit_metrics(logits[ref], logits[cand])
        for metric, value in metrics.items():
            if getattr(limits, metric) is None:
                continue
            detail = reason or (argmax_disagreement(logits[ref], logits[cand])
                                if metric == "top1" and value < 1 else "")
            checks.append(Check(f"logits/{prompt}", ref, cand, dtype, metric, value, getattr(limits, metric),
                                ">=" if metric == "top1" else "<=", detail))
    return checks


def greedy_checks(prompt, names, continuations, failed, dtype):
    """Every pair's identical prefix of their own greedy continuations of one prompt, where the
    pair's dtype gates it (float32: any divergence is a bug; a lossy dtype has no row)."""
    checks = []
    for ref, cand in _pairs(names):
        limit = for_pair(dtype, ref, cand).greedy
        if limit is None:
            continue
        reason = failed.get(ref) or failed.get(cand)
        if reason:
            checks.append(Check(f"greedy/{prompt}", ref, cand, dtype, "identical_prefix", None, limit, ">=",
                                reason))
            continue
        a, b = continuations[ref], continuations[cand]
        same = identical_prefix(a, b)
        detail = (f"{len(a)} tokens identical" if same == len(a) else
                  f"diverges at new token {same} of {len(a)}: {ref} {a[same]}, {cand} {b[same]}")
        checks.append(Check(f"greedy/{prompt}", ref, cand, dtype, "identical_prefix",
                            same / len(a) if a else 1.0, limit, ">=", detail))
    return checks
