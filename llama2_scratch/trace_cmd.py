"""`llama2-scratch trace MODEL --prompt TEXT ...`: study mode, one forward pass opened up.

Runs the plain NumPy reference (reference/model.py, weights dequantized to float32) over the
prompt with `run_with_cache` and prints, block by block, every named activation's shape, RMS and
max |x|; the logit lens (reference/study.py) at one position; and what each attention head does.
With --ckpt the torch model (trainer/model.py) runs the same ids and every point gets its max |Δ|
against torch and the fraction of bit-identical values; with --vs-float64 the float64 reference
runs too and every point gets its float32 rounding. --json prints all of it, the logit lens at
every position; --plots DIR writes figures (llama2_scratch/trace_plots.py, matplotlib needed).
NumPy alone runs it all but --ckpt.
"""

import json
import os
import sys

import numpy as np

from llama2_scratch import trace_experiments, trace_html, trace_plots
from models import open_checkpoint, open_model
from models.tokenizers import dummy_prefix_warning, model_tokenizer
from reference import study
from reference.cache import points

HELP = "study mode: every named activation of one forward pass, logit lens, attention heads"

# Hyperparameters that change what the model computes: a --ckpt must agree on all of them (the
# float ones as float32, the precision GGUF stores them in).
SAME_MODEL_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "norm_eps", "rope_theta")
# ||MODEL's embeddings - the ckpt's|| / ||the ckpt's|| above which --ckpt is another model. An
# export rounds them: measured 0.0045 (q8_0) and 0.073 (q4_0, the coarsest type we write) on the
# demo model after 250 steps, 0.0053 and 0.086 on Gaussian random weights. Two independently
# drawn matrices of one scale differ by sqrt(2) ≈ 1.41.
SAME_MODEL_MAX_REL_DIFF = 0.5
# trace --json's version: 2 added schema_version, model, prompt, ids, attention, each point's
# block and description, `block` beside SPEC's `layer`, and the heads' kv_head, top_key, max_entropy_bits.
SCHEMA_VERSION = 2
# Decimals kept of --json's attention weights: 1e-4 is finer than any plot or the page shows, and
# a 128-token prompt through 6 blocks of 6 heads takes ~2 MB instead of ~5.
PATTERN_DECIMALS = 4


def add_arguments(parser):
    parser.add_argument("model", help="a GGUF (any type), a llama2.c .bin (v0/v1/v2) or a ckpt.pt")
    parser.add_argument("--prompt", required=True, help="the text to run (BOS added as the tokenizer says)")
    parser.add_argument("--tokenizer", help="tokenizer.bin or SentencePiece .model (needed unless MODEL is a GGUF)")
    parser.add_argument("--ckpt", help="the ckpt.pt MODEL was exported from: compare every point with torch")
    parser.add_argument("--top-k", type=int, default=5, help="tokens per logit-lens reading (default 5)")
    parser.add_argument("--position", type=int, default=-1,
                        help="the position whose logit lens is printed (default -1: the last; --json has all)")
    parser.add_argument("--vs-float64", action="store_true",
                        help="also run the float64 reference and show each point's float32 rounding")
    parser.add_argument("--plots", metavar="DIR", help="write PNG figures here (needs matplotlib)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    parser.add_argument("--attribute", metavar="TOKEN",
                        help="split TOKEN's logit at --position into embed, every head and every MLP "
                             "(a piece such as '▁the', an id, or text of one token)")
    parser.add_argument("--ablate", metavar="L.H[,L.H...]",
                        help="ablate these heads' outputs z (block.head; set to 0 unless --ablate-with says) "
                             "and show the next token at --position move")
    parser.add_argument("--ablate-with", choices=trace_experiments.ABLATIONS,
                        help="what --ablate puts in place of each head's z: zero (the default) or mean, its mean "
                             "over all of this prompt's positions (no reference batch), put at every position")
    parser.add_argument("--patch", metavar="CORRUPT_PROMPT",
                        help="activation patching: a prompt of as many tokens; the share of the logit difference "
                             "each point (each position of the residual stream) carries")
    parser.add_argument("--grads", action="store_true",
                        help="the gradient RMS of the prompt's next-token loss at every weight (NumPy) and, "
                             "with torch, at every named point")
    parser.add_argument("--html", metavar="FILE",
                        help="write one self-contained HTML page to study the pass in a browser (no network)")


def run(args):
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.ablate_with is not None and args.ablate is None:
        raise ValueError(f"--ablate-with {args.ablate_with}: needs --ablate L.H[,L.H...], the heads to ablate")
    if args.plots is not None:
        trace_plots.require_matplotlib()
    if args.html is not None:
        trace_html.check_writable(args.html)
    source = open_model(args.model)
    model = source.model()
    tokenizer = model_tokenizer(source, args.tokenizer, model.args.vocab_size)
    warning = dummy_prefix_warning(source, args.tokenizer, tokenizer.vocab)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    ids = tokenizer.encode(args.prompt) or [tokenizer.vocab.bos_id]
    context = model.args.max_seq_len
    if len(ids) > context:
        raise ValueError(f"--prompt: {len(ids)} tokens do not fit the model's {context}-token context")
    if not -len(ids) <= args.position < len(ids):
        raise ValueError(f"--position {args.position} is outside the prompt's {len(ids)} tokens")
    position = args.position % len(ids)
    token = trace_experiments.parse_token(args.attribute, tokenizer) if args.attribute is not None else None
    heads = trace_experiments.parse_heads(args.ablate, model.args) if args.ablate is not None else None
    corrupted = trace_experiments.parse_corrupted(args.patch, tokenizer, ids) if args.patch is not None else None
    if args.grads:
        trace_experiments.check_gradients(ids)
    logits, cache = model.run_with_cache(ids)
    torch_cache = _torch_cache(args.ckpt, model, ids) if args.ckpt else None
    float64_cache = source.model(dtype=np.float64).run_with_cache(ids)[1] if args.vs_float64 else None
    report = build_report(model, tokenizer.vocab.pieces, ids, cache, args.top_k, torch_cache, float64_cache)
    report.update(schema_version=SCHEMA_VERSION, model=model_description(args.model, source, model),
                  prompt=args.prompt, ids=[int(i) for i in ids])
    pieces = tokenizer.vocab.pieces
    if token is not None:
        report["attribution"] = trace_experiments.attribution(model, cache, position, token, pieces)
    if heads is not None:
        report["ablation"] = trace_experiments.ablation(model, ids, heads, position, logits, args.top_k, pieces,
                                                         how=args.ablate_with or "zero")
    if corrupted is not None:
        report["patching"] = trace_experiments.patching(model, ids, corrupted, args.patch, pieces)
    if args.grads:
        report["grads"] = trace_experiments.gradients(model, source.weights(), ids)
    if args.html is not None:
        trace_html.write_page(args.html, report)
        print(f"trace: wrote {args.html}", file=sys.stderr)
    if args.plots is not None:
        paths = trace_plots.write_plots(args.plots, report, cache, model.args)
        print(f"trace: wrote {len(paths)} figures to {args.plots}: "
              + ", ".join(os.path.basename(p) for p in paths), file=sys.stderr)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_report(args.model, model, report, position)
    return 0


def model_description(path, source, model):
    """The `model` of trace --json: the file, its stored weight types, the computing dtype, its arguments."""
    return {"file": str(path), "kind": source.kind, "stored": list(source.dtypes),
            "dtype": str(model.dtype), "args": model.args.to_dict()}


def build_report(model, pieces, ids, cache, top_k, torch_cache=None, float64_cache=None):
    """The trace --json document (docs/interfaces.md) of `cache`, the NumPy model's cache of `ids`:
    SPEC's four keys first (`layer` kept beside `block`), then the attention patterns."""
    lens_ids, lens_probs = study.logit_lens(model, cache, top_k)
    n_blocks = model.args.n_layers
    return {
        "tokens": [{"id": int(i), "piece": pieces[i]} for i in ids],
        "points": point_rows(cache, n_blocks, torch_cache, float64_cache),
        "logit_lens": lens_rows(lens_ids, lens_probs, pieces),
        "heads": head_rows(cache, n_blocks, model.args, pieces, ids),
        "attention": [{"block": i, "pattern": pattern_rows(cache[f"blocks.{i}.attn.pattern"])}
                      for i in range(n_blocks)],
        "residual": residual_rows(cache, n_blocks),
    }


def residual_rows(cache, n_blocks):
    """The `residual` of trace --json: the residual stream's points (embed, then every block's
    resid_mid and resid_post) and each position's RMS at them, rms[position][point]."""
    names, rms = study.residual_stream(cache, n_blocks)
    return {"points": names, "rms": rms.T.tolist()}


def pattern_rows(pattern):
    """A block's (H, T, T) pattern as nested lists without the masked keys: head h, query q holds
    the weights on keys 0..q, rounded to PATTERN_DECIMALS."""
    return [[[round(float(w), PATTERN_DECIMALS) for w in head[q, :q + 1]] for q in range(head.shape[0])]
            for head in pattern]


def head_rows(cache, n_blocks, model_args, pieces, ids):
    """study.head_summary's rows with `block`, the kv head each query head reads, the largest
    entropy possible and the key position given the largest mean weight (`top_key`)."""
    group = model_args.n_heads // model_args.n_kv_heads
    queries = study.attended_queries(len(ids))
    # A query at position q spreads over q + 1 keys at most: log2(q + 1) bits, averaged like entropy_bits.
    max_bits = float(np.mean(np.log2(queries + 1)))
    rows = study.head_summary(cache, n_blocks)
    for row in rows:
        pattern = cache[f"blocks.{row['layer']}.attn.pattern"][row["head"]]
        weights = np.mean(np.asarray(pattern, dtype=np.float64)[queries], axis=0)        # (T,) per key
        key = int(np.argmax(weights))
        row.update(block=row["layer"], kv_head=row["head"] // group, max_entropy_bits=max_bits,
                   top_key={"position": key, "id": int(ids[key]), "piece": pieces[ids[key]],
                            "mean_weight": float(weights[key])})
    return rows


def _torch_cache(ckpt_path, model, ids):
    """trainer/model.py's cache of `ids` with the ckpt's weights, as NumPy arrays; a ValueError
    naming the first difference when the ckpt is not the model MODEL holds."""
    try:
        import torch
    except ImportError:
        raise ValueError("--ckpt: comparing with torch needs torch (pip install -e '.[train]')") from None
    from trainer.export import ExportError

    try:
        exportable = open_checkpoint(ckpt_path).exportable()
    except ExportError as exc:
        raise ValueError(str(exc)) from None
    ckpt_args = exportable.args
    for field in SAME_MODEL_FIELDS:
        if np.float32(getattr(ckpt_args, field)) != np.float32(getattr(model.args, field)):
            raise ValueError(f"--ckpt {ckpt_path}: not this model's checkpoint: {field} "
                             f"{getattr(ckpt_args, field)}, MODEL has {getattr(model.args, field)}")
    embeddings = exportable.weights["tok_embeddings.weight"]
    rel_diff = np.linalg.norm(model.tok_embeddings - embeddings) / np.linalg.norm(embeddings)
    if rel_diff > SAME_MODEL_MAX_REL_DIFF:
        raise ValueError(f"--ckpt {ckpt_path}: not this model's checkpoint: its tok_embeddings differ from "
                         f"MODEL's by {rel_diff:.2f} (relative; an export rounds them by < {SAME_MODEL_MAX_REL_DIFF})")
    torch_model = trace_experiments.torch_transformer(ckpt_args, exportable.weights)
    _, cache = torch_model.run_with_cache(ids)
    return {name: tensor.numpy() for name, tensor in cache.items()}


def point_rows(cache, n_blocks, torch_cache=None, float64_cache=None):
    """The `points` of trace --json: name, shape, rms, max_abs, vs_torch (and vs_float64), then the
    block (null outside the blocks) and what the point is. The comparisons leave out the causal
    mask (unmasked)."""
    what = {name: description for name, _, description in points(n_blocks)}
    rows = []
    for name, array in cache.items():
        ours = unmasked(name, array)
        row = {"name": name, "shape": list(array.shape), **study.point_stats(array),
               "vs_torch": study.agreement(ours, unmasked(name, torch_cache[name])) if torch_cache is not None else None}
        if float64_cache is not None:
            rounding = study.agreement(ours.astype(np.float64), unmasked(name, float64_cache[name]))
            row["vs_float64"] = {"max_abs_diff": rounding["max_abs_diff"]}
        row["block"] = int(name.split(".")[1]) if name.startswith("blocks.") else None
        row["description"] = what[name]
        rows.append(row)
    return rows


def unmasked(name, array):
    """The values of point `name` that the causal mask leaves: scores and pattern keep their lower
    triangle (above it every implementation holds the same -inf or 0, which would count as
    agreement), every other point stays whole."""
    if name.endswith(("attn.scores", "attn.pattern")):
        return array[(slice(None), *np.tril_indices(array.shape[-1]))]
    return array


def lens_rows(ids, probs, pieces):
    """The `logit_lens` of trace --json from logit_lens's (L, T, k) ids and probs."""
    return [{"layer": block, "position": position,
             "top": [{"id": int(i), "piece": pieces[i], "prob": float(p)} for i, p in zip(ids[block, position],
                                                                                   probs[block, position])],
             "block": block}
            for block in range(ids.shape[0]) for position in range(ids.shape[1])]


def print_report(model_path, model, report, position):
    """The three tables: points block by block, the logit lens at `position`, the heads."""
    a, out = model.args, sys.stdout
    tokens = report["tokens"]
    out.write(f"{model_path}: {a.n_layers} blocks, dim {a.dim}, {a.n_heads} heads ({a.n_kv_heads} kv), "
              f"hidden {a.hidden_dim}, vocab {a.vocab_size}; NumPy {report['model']['dtype']}\n")
    out.write(f"tokens ({len(tokens)}): " + " ".join(t["piece"] for t in tokens) + "\n\n")
    print_points(report["points"], out)
    out.write(f"\nlogit lens at position {position} ({tokens[position]['piece']!r}): top tokens read from each "
              "block's output\n")
    for entry in report["logit_lens"]:
        if entry["position"] == position:
            top = "  ".join(f"{t['piece']!r} {t['prob']:.3f}" for t in entry["top"])
            out.write(f"  block {entry['block']:<3} {top}\n")
    print_heads(report["heads"], out)
    if "attribution" in report:
        trace_experiments.print_attribution(report["attribution"], tokens, out)
    if "ablation" in report:
        trace_experiments.print_ablation(report["ablation"], tokens, out)
    if "patching" in report:
        trace_experiments.print_patching(report["patching"], tokens, a.n_layers, out)
    if "grads" in report:
        trace_experiments.print_gradients(report["grads"], out)


def print_heads(heads, out):
    """One line per head: entropy, the weight on the previous, first and own token, the target that
    wins most queries, and the one key given most weight."""
    queries = "query 0" if heads[0]["max_entropy_bits"] == 0 else "queries 1..T-1"
    out.write(f"\nheads, averaged over {queries}: entropy in bits (largest possible: "
              f"{heads[0]['max_entropy_bits']:.2f}, the mean of log2(n) over queries that see n keys), mean "
              "weight on the previous token, the first, itself; the target that wins most queries; "
              "the token given the most weight\n")
    out.write(f"{'block':>5} {'head':>4} {'kv':>3} {'entropy':>8} {'previous':>8} {'first':>6} {'self':>6}  "
              f"{'attends most':<12}  top token\n")
    for h in heads:
        top = h["top_key"]
        out.write(f"{h['block']:>5} {h['head']:>4} {h['kv_head']:>3} {h['entropy_bits']:>8.2f} "
                  f"{h['to_previous']:>8.3f} {h['to_first']:>6.3f} {h['to_self']:>6.3f}  {h['attends_most']:<12}  "
                  f"{top['piece']!r} at position {top['position']} ({top['mean_weight']:.2f})\n")


def print_points(rows, out):
    """One line per point: name, shape, RMS, max |x| (and the comparisons), a blank line per block."""
    has_torch = rows[0]["vs_torch"] is not None
    has_f64 = "vs_float64" in rows[0]
    header = f"{'point':<24} {'shape':>14} {'rms':>10} {'max |x|':>10}"
    header += f" {'max |Δ| torch':>14} {'bit-identical':>13}" if has_torch else ""
    header += f" {'max |Δ| f64':>12}" if has_f64 else ""
    out.write(header + "  what\n")
    block = "none yet"
    for row in rows:
        if row["block"] != block:
            out.write("\n")
            block = row["block"]
        line = f"{row['name']:<24} {'×'.join(map(str, row['shape'])):>14} {row['rms']:>10.4g} {row['max_abs']:>10.4g}"
        if has_torch:
            line += f" {row['vs_torch']['max_abs_diff']:>14.3g} {row['vs_torch']['bit_identical']:>13.1%}"
        if has_f64:
            line += f" {row['vs_float64']['max_abs_diff']:>12.3g}"
        # Each name's meaning once: on block 0's lines and on those outside the blocks.
        out.write(f"{line}  {row['description'] if block in (None, 0) else ''}".rstrip() + "\n")
