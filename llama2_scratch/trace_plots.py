"""`trace --plots DIR`: the figures of one traced forward pass, drawn with matplotlib.

matplotlib is an optional extra (`pip install -e '.[plot]'`); nothing else in the project needs
it, so it is imported only here, only when --plots is given. Files written to DIR:

    attention_block{i}.png   block i's attention patterns, one panel per head, query rows and key
                             columns labelled with the token pieces
    logit_lens.png           the logit lens: the top token read from each block (rows) at each
                             position (columns), coloured by its probability
    residual_norms.png       the residual stream's RMS after embed and every sublayer, one line per
                             position and their mean
    torch_agreement.png      with --ckpt: max |Δ| against torch and the bit-identical fraction of
                             every point, in forward order

Figures are built on matplotlib.figure.Figure, not pyplot: no global state, no GUI backend.
"""

import math
import os
import warnings

import numpy as np

from formats.atomic import atomic_write
from reference import study

INSTALL_HINT = "--plots needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')"
# Beyond this many tokens, axis tick labels would overlap into a black bar: the axes show indices.
MAX_LABELLED_TOKENS = 64


def require_matplotlib():
    """Raise a one-line ValueError saying what to install when matplotlib cannot be imported."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise ValueError(INSTALL_HINT) from None


def write_plots(out_dir, report, cache, n_layers):
    """Write every figure for `report` (trace's JSON document) and its `cache` into out_dir;
    returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    pieces = [label(t["piece"]) for t in report["tokens"]]
    figures = {f"attention_block{i}.png": attention_figure(cache[f"blocks.{i}.attn.pattern"], pieces, i)
               for i in range(n_layers)}
    figures["logit_lens.png"] = logit_lens_figure(report["logit_lens"], pieces, n_layers)
    figures["residual_norms.png"] = residual_figure(cache, n_layers)
    if report["points"][0]["vs_torch"] is not None:
        figures["torch_agreement.png"] = agreement_figure(report["points"])
    paths = []
    for name, figure in figures.items():
        paths.append(os.path.join(out_dir, name))
        with warnings.catch_warnings(), atomic_write(paths[-1]) as f:
            # A piece in a script the default font lacks (Thai, emoji) is drawn as a box, with a warning each.
            warnings.simplefilter("ignore", UserWarning)
            figure.savefig(f, format="png")
    return paths


def label(piece):
    """A token piece as axis text: '$' escaped (matplotlib would start mathtext), at most 12 chars."""
    piece = piece.replace("$", r"\$")
    return piece if len(piece) <= 12 else piece[:11] + "…"


def _token_axes(ax, pieces, rows=True):
    """Label the x (and with `rows` the y) ticks of `ax`, and of every axes sharing them, with
    the token pieces; indices when there are too many to read."""
    if len(pieces) > MAX_LABELLED_TOKENS:
        return
    ticks = np.arange(len(pieces))
    ax.set_xticks(ticks, pieces)
    ax.tick_params(axis="x", labelrotation=90)
    if rows:
        ax.set_yticks(ticks, pieces)
    ax.tick_params(labelsize=6)


def attention_figure(pattern, pieces, block):
    """Block `block`'s pattern (H, T, T) as a grid of heatmaps, weight 0 white to 1 dark. The
    panels share their axes and only the outer ones show the token pieces: labelling all of them
    tripled the drawing time."""
    from matplotlib.figure import Figure

    n_heads = pattern.shape[0]
    cols = math.ceil(math.sqrt(n_heads))
    rows = math.ceil(n_heads / cols)
    side = 2.0 + 0.06 * len(pieces) if len(pieces) <= MAX_LABELLED_TOKENS else 3.0
    figure = Figure(figsize=(cols * side + 0.8, rows * side + 1.0), layout="constrained")
    figure.suptitle(f"block {block} attention: query (rows) → key (columns)")
    axes = figure.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for head, ax in enumerate(axes):
        ax.set_visible(head < n_heads)
        if head < n_heads:
            ax.imshow(pattern[head], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"head {head}", fontsize=8)
            _token_axes(ax, pieces)
            ax.label_outer()
    return figure


def logit_lens_figure(lens, pieces, n_layers):
    """The top-1 logit-lens token of every (block, position), its piece written in the cell."""
    from matplotlib.figure import Figure

    n_tokens = len(pieces)
    prob = np.zeros((n_layers, n_tokens))
    top = [[""] * n_tokens for _ in range(n_layers)]
    for entry in lens:
        prob[entry["layer"], entry["position"]] = entry["top"][0]["prob"]
        top[entry["layer"]][entry["position"]] = label(entry["top"][0]["piece"])
    figure = Figure(figsize=(2.0 + 0.45 * min(n_tokens, 120), 1.5 + 0.4 * n_layers), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(prob, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=ax, label="probability of the top token")
    if n_tokens <= MAX_LABELLED_TOKENS * 2:
        for layer in range(n_layers):
            for position in range(n_tokens):
                ax.text(position, layer, top[layer][position], ha="center", va="center", fontsize=5,
                        rotation=90, color="white" if prob[layer, position] < 0.5 else "black")
    _token_axes(ax, pieces, rows=False)
    ax.set_yticks(range(n_layers), [f"block {i}" for i in range(n_layers)], fontsize=7)
    ax.set_xlabel("input token (the lens predicts the token after it)")
    ax.set_title("logit lens: top next token read from each block's residual stream")
    return figure


def residual_figure(cache, n_layers):
    """Per-position RMS of the residual stream at embed and after every sublayer."""
    from matplotlib.figure import Figure

    names, rms = study.residual_stream(cache, n_layers)                   # (points, T)
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.add_subplot()
    steps = np.arange(len(names))
    ax.plot(steps, rms, color="0.75", linewidth=0.7)
    ax.plot(steps, rms.mean(axis=1), color="black", linewidth=2, label="mean over positions")
    ax.set_xticks(steps, [n.removeprefix("blocks.") for n in names], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("RMS of the residual stream")
    ax.set_title("residual stream growth (grey: one line per position)")
    ax.legend()
    return figure


def agreement_figure(rows):
    """max |Δ| against torch (log scale; 0 drawn at the axis floor) and the bit-identical fraction."""
    from matplotlib.figure import Figure

    names = [row["name"] for row in rows]
    diff = np.array([row["vs_torch"]["max_abs_diff"] for row in rows])
    same = np.array([row["vs_torch"]["bit_identical"] for row in rows])
    floor = min(diff[diff > 0].min(initial=1e-8), 1e-8) / 10
    figure = Figure(figsize=(max(8.0, 0.12 * len(rows)), 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    steps = np.arange(len(rows))
    top.semilogy(steps, np.maximum(diff, floor), marker=".", color="tab:red")
    top.set_ylabel("max |Δ| vs torch")
    top.set_title("NumPy reference vs the torch model, every point of the forward pass")
    bottom.bar(steps, same, color="tab:blue")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("bit-identical fraction")
    bottom.set_xticks(steps, [n.removeprefix("blocks.") for n in names], rotation=90, fontsize=5)
    return figure
