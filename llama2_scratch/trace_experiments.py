"""`trace --attribute TOKEN`, `--ablate L.H[,L.H...]` and `--patch CORRUPT_PROMPT`: the experiments
of reference/study.py on trace's prompt, as --json entries and printed tables.

Every request is checked before any forward pass runs (`parse_*`), so bad input costs one line
and writes nothing. The maths is reference/study.py's; here are only the reading of the flags and
the shaping of the results:

    attribution  logit_attribution at --position: the logit of TOKEN split into embed, every head
                 of every block and every block's mlp_out (they sum to the logit)
    ablation     ablate_heads (z set to 0, or with --ablate-with mean to each head's mean z over
                 the prompt's positions): the next-token distribution at --position before and
                 after, and KL(before ‖ after) in bits
    patching     patch_activations from the corrupted prompt into the clean one: at each point
                 (each position, for the residual stream) the share of the metric recovered
    gradients    --grads: the RMS of ∂loss/∂w for every weight (reference/training.py, NumPy) and,
                 where torch is installed, of ∂loss/∂x at every named point (torch autograd
                 through Transformer.run_with_hooks), the loss being the prompt's own next-token
                 cross-entropy; torch's weight gradients are compared with NumPy's
"""

import re

import numpy as np

from reference import study, training
from reference.attention import softmax

# Parts the attribution table prints, largest |value| first (--json and --html have all of them).
ATTRIBUTION_ROWS = 12
HEAD_SPEC = re.compile(r"(\d+)\.(\d+)")
# --ablate-with: ablate_heads's `how`, the first the default.
ABLATIONS = ("zero", "mean")


def parse_token(text, tokenizer):
    """The id --attribute names: a piece of the vocabulary ("▁the"), an id ("278"), or text that
    encodes to one token ("the"); ValueError naming the flag otherwise."""
    pieces = tokenizer.vocab.pieces
    if text in pieces:
        return pieces.index(text)
    if text.isdigit():
        if int(text) < len(pieces):
            return int(text)
        raise ValueError(f"--attribute {text}: the vocabulary has ids 0..{len(pieces) - 1}")
    ids = tokenizer.encode(text, bos=False)
    if len(ids) == 1:
        return ids[0]
    raise ValueError(f"--attribute {text!r}: not a piece of the vocabulary, an id, nor text of one token "
                     f"(it encodes to {len(ids)})")


def parse_heads(text, model_args):
    """[(block, head), ...] from --ablate "L.H[,L.H...]"; ValueError naming the flag on a
    malformed or missing head."""
    heads = []
    for item in text.split(","):
        match = HEAD_SPEC.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"--ablate {text!r}: {item!r} is not BLOCK.HEAD (e.g. 0.3)")
        block, head = int(match[1]), int(match[2])
        if block >= model_args.n_layers or head >= model_args.n_heads:
            raise ValueError(f"--ablate {item}: the model has {model_args.n_layers} blocks of "
                             f"{model_args.n_heads} heads")
        heads.append((block, head))
    return heads


def parse_corrupted(text, tokenizer, ids):
    """The ids of --patch's prompt; ValueError unless it has as many tokens as the prompt."""
    corrupted = tokenizer.encode(text) or [tokenizer.vocab.bos_id]
    if len(corrupted) != len(ids):
        raise ValueError(f"--patch: the corrupted prompt has {len(corrupted)} tokens and the prompt {len(ids)}: "
                         "patching needs one length (each value of one run must fit the other)")
    return corrupted


def token_entry(token, pieces):
    return {"id": int(token), "piece": pieces[token]}


def attribution(model, cache, position, token, pieces):
    """The `attribution` entry of trace --json."""
    parts = study.logit_attribution(model, cache, position, token)
    return {"position": position, "token": token_entry(token, pieces),
            "logit": float(cache["logits"][position, token]), "sum_of_parts": float(sum(parts.values())),
            "parts": parts}


def ablation(model, ids, heads, position, logits, top_k, pieces, how="zero"):
    """The `ablation` entry: the next-token distribution at `position` with and without the heads,
    their z replaced as `how` says (study.ablate_heads: "zero", or "mean" over the prompt's positions)."""
    before = softmax(np.asarray(logits[position], dtype=np.float64))
    after = softmax(np.asarray(study.ablate_heads(model, ids, heads, how=how)[position], dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = float(np.sum(np.where(before > 0, before * np.log2(before / after), 0.0)))

    def top(probs):
        top_ids, top_probs = study.top_tokens(probs, top_k)
        return [{**token_entry(i, pieces), "prob": float(p)} for i, p in zip(top_ids, top_probs)]

    return {"heads": [list(h) for h in heads], "how": how, "position": position, "before": top(before),
            "after": top(after), "after_of_top_before": float(after[int(np.argmax(before))]), "kl_bits": kl}


def patching(model, ids, corrupted, prompt, pieces):
    """The `patching` entry: the metric of the clean, corrupted and each patched run, and the share
    recovered at each point (a list over positions for the residual stream's points)."""
    clean_logits = model.run_with_hooks(ids, {})
    corrupted_logits = model.run_with_hooks(corrupted, {})
    top, other = int(np.argmax(clean_logits[-1])), int(np.argmax(corrupted_logits[-1]))
    if top == other:
        raise ValueError(f"--patch: both prompts predict {pieces[top]!r} next, so their logit difference "
                         "measures nothing: choose a corrupted prompt that changes the prediction")
    result = study.patch_activations(model, ids, corrupted, study.logit_difference(top, other))
    recovered = {name: (value.tolist() if isinstance(value, np.ndarray) else float(value))
                 for name, value in result.recovered().items()}
    return {"corrupted_prompt": prompt, "corrupted_ids": [int(i) for i in corrupted],
            "metric": {"kind": "logit_difference", "position": len(ids) - 1, "token": token_entry(top, pieces),
                       "other": token_entry(other, pieces)},
            "clean": result.clean, "corrupted": result.corrupted, "recovered": recovered}


def print_attribution(entry, tokens, out):
    parts = entry["parts"]
    token, position = entry["token"], entry["position"]
    out.write(f"\nattribution of the logit of {token['piece']!r} (id {token['id']}) at position {position} "
              f"({tokens[position]['piece']!r}): {entry['logit']:.4f}; the {len(parts)} parts sum to "
              f"{entry['sum_of_parts']:.4f} (float64, the final norm's scale from the forward pass)\n")
    for name in sorted(parts, key=lambda n: -abs(parts[n]))[:ATTRIBUTION_ROWS]:
        out.write(f"  {name:<26} {parts[name]:>+9.4f}\n")
    if len(parts) > ATTRIBUTION_ROWS:
        out.write(f"  ({ATTRIBUTION_ROWS} largest of {len(parts)} by |part|; --json has every one)\n")


def print_ablation(entry, tokens, out):
    heads = ", ".join(f"{b}.{h}" for b, h in entry["heads"])
    position = entry["position"]
    how = ("their z set to 0" if entry["how"] == "zero"
           else f"each one's z set to its mean over the prompt's {len(tokens)} positions")
    out.write(f"\nablation of heads {heads} ({how}), next token at position {position} "
              f"({tokens[position]['piece']!r}): KL(before ‖ after) {entry['kl_bits']:.4f} bits\n")
    out.write(f"  {'before':<28}  after\n")
    for before, after in zip(entry["before"], entry["after"]):
        out.write(f"  {before['piece']!r:<20} {before['prob']:.4f}  {after['piece']!r:<20} {after['prob']:.4f}\n")
    out.write(f"  {entry['before'][0]['piece']!r}: {entry['before'][0]['prob']:.4f} -> "
              f"{entry['after_of_top_before']:.4f}\n")


def print_patching(entry, tokens, n_blocks, out):
    metric = entry["metric"]
    recovered = entry["recovered"]
    out.write(f"\npatching from {entry['corrupted_prompt']!r}: metric logit[{metric['token']['piece']!r}] - "
              f"logit[{metric['other']['piece']!r}] at position {metric['position']}: clean {entry['clean']:.4f}, "
              f"corrupted {entry['corrupted']:.4f}; each value is the share recovered, "
              "(patched - corrupted) / (clean - corrupted)\n")
    columns = ["embed"] + [f"blocks.{i}.{p}" for i in range(n_blocks) for p in ("resid_pre", "resid_mid", "resid_post")]
    labels = ["embed"] + [f"{i}.{p.removeprefix('resid_')}" for i in range(n_blocks) for p in ("resid_pre", "resid_mid",
                                                                                               "resid_post")]
    out.write("  residual stream, one position at a time:\n")
    out.write(f"  {'position':<20}" + "".join(f"{label:>8}" for label in labels) + "\n")
    for position, token in enumerate(tokens):
        out.write(f"  {str(position) + ' ' + repr(token['piece']):<20}"
                  + "".join(f"{recovered[name][position]:>8.3f}" for name in columns) + "\n")
    inside = [name for name in recovered if name not in columns]
    out.write("  every other point, whole:\n")
    for name in inside:
        out.write(f"  {name:<26} {recovered[name]:>8.3f}\n")


def check_gradients(ids):
    """ValueError naming --grads when the prompt has no next token to predict."""
    if len(ids) < 2:
        raise ValueError("--grads: a prompt of 1 token has no next token to predict, so no loss to differentiate")


def _rms(array):
    values = np.asarray(array, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values * values)))


def gradients(model, weights, ids):
    """The `grads` entry: the loss (mean cross-entropy of each prompt token after the first, given
    the ones before), the RMS of every weight's gradient (NumPy), and with torch the RMS of the
    gradient at every named point and torch's weight gradients against NumPy's (max |Δ| relative
    to the largest |gradient| of that weight)."""
    tokens, targets = np.asarray([ids]), np.asarray([list(ids[1:]) + [training.IGNORE_INDEX]])
    loss, grads = training.loss_and_grads(model, tokens, targets)
    entry = {"loss": float(loss), "n_targets": len(ids) - 1,
             "weights": {name: _rms(grad) for name, grad in grads.items()}, "points": None, "vs_torch": None}
    try:
        import torch
    except ImportError:
        return entry
    torch_model, point_grads = _torch_point_gradients(model.args, weights, ids, torch)
    entry["points"] = {name: _rms(grad) for name, grad in point_grads.items()}
    params = dict(torch_model.named_parameters())
    entry["vs_torch"] = {name: float(np.max(np.abs(params[name].grad.numpy() - grad)) / max(np.max(np.abs(grad)), 1e-30))
                         for name, grad in grads.items()}
    return entry


def _torch_point_gradients(args, weights, ids, torch):
    """(the torch model, {point: ∂loss/∂point as NumPy}) by autograd. The forward pass is given a
    recorder (reference/cache.py) that goes on with a copy of each value keeping its gradient
    (run_with_hooks runs without autograd); a new value at every point also routes the loss
    through scores and pattern, which the fused attention kernel would skip."""
    torch_model = torch_transformer(args, weights)
    kept = {}

    def keep(name, value):
        kept[name] = value.clone()
        kept[name].retain_grad()
        return kept[name]

    logits, _ = torch_model(torch.as_tensor(ids)[None], record=keep)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], torch.as_tensor(ids[1:]))
    loss.backward()
    return torch_model, {name: value.grad[0].numpy() for name, value in kept.items()}


def torch_transformer(args, weights):
    """trainer.model.Transformer in eval mode holding `weights` (llama2.c names, NumPy float32)."""
    import torch
    from trainer.model import Transformer

    torch_model = Transformer(args).eval()
    # A copy: the weights may be a read-only memory map of the file, which torch will not wrap.
    state = {name: torch.tensor(w) for name, w in weights.items()}
    if args.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    torch_model.load_state_dict(state, strict=True)
    return torch_model


def print_gradients(entry, out):
    out.write(f"\ngradients of the loss {entry['loss']:.4f} (mean cross-entropy of the prompt's {entry['n_targets']} "
              "next tokens): RMS of ∂loss/∂w per weight")
    out.write(", torch's max |Δ| relative to the largest |gradient|\n" if entry["vs_torch"] else "\n")
    for name, rms in entry["weights"].items():
        line = f"  {name:<34} {rms:>11.4g}"
        out.write(line + (f" {entry['vs_torch'][name]:>10.2g}" if entry["vs_torch"] else "") + "\n")
    if entry["points"] is None:
        out.write("  (gradients at the named points need torch: pip install -e '.[train]')\n")
        return
    out.write("RMS of ∂loss/∂x at every named point (torch autograd)\n")
    for name, rms in entry["points"].items():
        out.write(f"  {name:<34} {rms:>11.4g}\n")
