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
import sys

import numpy as np

from llama2_scratch import trace_plots
from llama2_scratch.model_files import model_tokenizer, open_checkpoint, open_model
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


def run(args):
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.plots is not None:
        trace_plots.require_matplotlib()
    source = open_model(args.model)
    model = source.model()
    tokenizer = model_tokenizer(source, args.tokenizer, model.args.vocab_size)
    ids = tokenizer.encode(args.prompt) or [tokenizer.vocab.bos_id]
    context = model.args.max_seq_len
    if len(ids) > context:
        raise ValueError(f"--prompt: {len(ids)} tokens do not fit the model's {context}-token context")
    if not -len(ids) <= args.position < len(ids):
        raise ValueError(f"--position {args.position} is outside the prompt's {len(ids)} tokens")
    _, cache = model.run_with_cache(ids)
    torch_cache = _torch_cache(args.ckpt, model, ids) if args.ckpt else None
    float64_cache = source.model(dtype=np.float64).run_with_cache(ids)[1] if args.vs_float64 else None
    report = build_report(model, tokenizer.vocab.pieces, ids, cache, args.top_k, torch_cache, float64_cache)
    if args.plots is not None:
        trace_plots.write_plots(args.plots, report, cache, model.args.n_layers)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_report(args.model, model, report, args.position % len(ids))
    return 0


def build_report(model, pieces, ids, cache, top_k, torch_cache=None, float64_cache=None):
    """The trace --json document (docs/interfaces.md) of `cache`, the NumPy model's cache of `ids`."""
    lens_ids, lens_probs = study.logit_lens(model, cache, top_k)
    return {
        "tokens": [{"id": int(i), "piece": pieces[i]} for i in ids],
        "points": point_rows(cache, torch_cache, float64_cache),
        "logit_lens": lens_rows(lens_ids, lens_probs, pieces),
        "heads": study.head_summary(cache, model.args.n_layers),
    }


def _torch_cache(ckpt_path, model, ids):
    """trainer/model.py's cache of `ids` with the ckpt's weights, as NumPy arrays; a ValueError
    naming the first difference when the ckpt is not the model MODEL holds."""
    try:
        import torch
    except ImportError:
        raise ValueError("--ckpt: comparing with torch needs torch (pip install -e '.[train]')") from None
    from trainer.export import ExportError
    from trainer.model import Transformer

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
    torch_model = Transformer(ckpt_args).eval()
    state = {name: torch.from_numpy(np.ascontiguousarray(w)) for name, w in exportable.weights.items()}
    if ckpt_args.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    torch_model.load_state_dict(state, strict=True)
    _, cache = torch_model.run_with_cache(ids)
    return {name: tensor.numpy() for name, tensor in cache.items()}


def point_rows(cache, torch_cache=None, float64_cache=None):
    """The `points` of trace --json: name, shape, rms, max_abs, vs_torch (and vs_float64)."""
    rows = []
    for name, array in cache.items():
        row = {"name": name, "shape": list(array.shape), **study.point_stats(array),
               "vs_torch": study.agreement(array, torch_cache[name]) if torch_cache is not None else None}
        if float64_cache is not None:
            rounding = study.agreement(array.astype(np.float64), float64_cache[name])
            row["vs_float64"] = {"max_abs_diff": rounding["max_abs_diff"]}
        rows.append(row)
    return rows


def lens_rows(ids, probs, pieces):
    """The `logit_lens` of trace --json from logit_lens's (L, T, k) ids and probs."""
    return [{"layer": layer, "position": position,
             "top": [{"id": int(i), "piece": pieces[i], "prob": float(p)} for i, p in zip(ids[layer, position],
                                                                                   probs[layer, position])]}
            for layer in range(ids.shape[0]) for position in range(ids.shape[1])]


def print_report(model_path, model, report, position):
    """The three tables: points block by block, the logit lens at `position`, the heads."""
    a, out = model.args, sys.stdout
    tokens = report["tokens"]
    out.write(f"{model_path}: {a.n_layers} blocks, dim {a.dim}, {a.n_heads} heads ({a.n_kv_heads} kv), "
              f"hidden {a.hidden_dim}, vocab {a.vocab_size}; NumPy float32\n")
    out.write(f"tokens ({len(tokens)}): " + " ".join(t["piece"] for t in tokens) + "\n\n")
    print_points(report["points"], a.n_layers, out)
    out.write(f"\nlogit lens at position {position} ({tokens[position]['piece']!r}): top tokens read from each "
              "block's output\n")
    for entry in report["logit_lens"]:
        if entry["position"] == position:
            top = "  ".join(f"{t['piece']!r} {t['prob']:.3f}" for t in entry["top"])
            out.write(f"  block {entry['layer']:<3} {top}\n")
    out.write("\nheads: entropy (bits) and mean weight on the previous token, the first, itself "
              "(queries 1..T-1); the target that wins most queries\n")
    out.write(f"{'block':>5} {'head':>4} {'entropy':>8} {'previous':>8} {'first':>6} {'self':>6}  attends most\n")
    for h in report["heads"]:
        out.write(f"{h['layer']:>5} {h['head']:>4} {h['entropy_bits']:>8.2f} {h['to_previous']:>8.3f} "
                  f"{h['to_first']:>6.3f} {h['to_self']:>6.3f}  {h['attends_most']}\n")


def print_points(rows, n_layers, out):
    """One line per point: name, shape, RMS, max |x| (and the comparisons), a blank line per block."""
    what = {name: description for name, _, description in points(n_layers)}
    has_torch = rows[0]["vs_torch"] is not None
    has_f64 = "vs_float64" in rows[0]
    header = f"{'point':<24} {'shape':>14} {'rms':>10} {'max |x|':>10}"
    header += f" {'max |Δ| torch':>14} {'bit-identical':>13}" if has_torch else ""
    header += f" {'max |Δ| f64':>12}" if has_f64 else ""
    out.write(header + "  what\n")
    block = None
    for row in rows:
        name = row["name"]
        this_block = name.split(".")[1] if name.startswith("blocks.") else None
        if this_block != block:
            out.write("\n")
            block = this_block
        line = f"{name:<24} {'×'.join(map(str, row['shape'])):>14} {row['rms']:>10.4g} {row['max_abs']:>10.4g}"
        if has_torch:
            line += f" {row['vs_torch']['max_abs_diff']:>14.3g} {row['vs_torch']['bit_identical']:>13.1%}"
        if has_f64:
            line += f" {row['vs_float64']['max_abs_diff']:>12.3g}"
        # Each name's meaning once: on block 0's lines and on those outside the blocks.
        out.write(f"{line}  {what[name] if block in (None, '0') else ''}".rstrip() + "\n")
