"""`trace --plots DIR`: the figures of one traced forward pass, drawn with matplotlib.

matplotlib is an optional extra (`pip install -e '.[plot]'`); nothing else in the project needs
it, so it is imported only here, only when --plots is given. Files written to DIR:

    attention_block{i}.png   block i's attention patterns, one panel per head, the query heads
                             that share a kv head side by side in one row; query rows labelled
                             with the token pieces, key columns with positions; one colorbar
    logit_lens.png           the logit lens: the top token read from each block (columns) at each
                             position (rows), written in its cell and coloured by its probability
    residual_norms.png       the residual stream's RMS after embed and every sublayer, one line per
                             position (coloured by position, the first ones labelled) and their mean
    patching.png             with --patch: the share of the logit difference recovered by patching
                             each residual stream point at each position (rows), red to blue
    torch_agreement.png      with --ckpt: max |Δ| against torch and the bit-identical fraction of
                             every point, in forward order, one row per point

Every text is 8 pt or larger and none is rotated: a figure grows with the prompt instead, and
past MAX_LABELLED_TOKENS positions it shows indices rather than pieces.

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
# The smallest text on any figure, in points: smaller is not readable on a printed page.
SMALL = 8
# Inches per token on an axis labelled with pieces: one 8-pt line (0.11 in) and some air.
TOKEN_INCHES = 0.16
# Lines named at each end of the residual figure's spread (all of them when there are few).
END_LABELS = 4


def require_matplotlib():
    """Raise a one-line ValueError saying what to install when matplotlib cannot be imported."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise ValueError(INSTALL_HINT) from None


def write_plots(out_dir, report, cache, model_args):
    """Write every figure for `report` (trace's JSON document) and its `cache` into out_dir;
    returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    pieces = [label(t["piece"]) for t in report["tokens"]]
    figures = {f"attention_block{i}.png": attention_figure(cache[f"blocks.{i}.attn.pattern"], pieces, i,
                                                           model_args.n_kv_heads)
               for i in range(model_args.n_layers)}
    figures["logit_lens.png"] = logit_lens_figure(report["logit_lens"], pieces, model_args.n_layers)
    figures["residual_norms.png"] = residual_figure(cache, model_args.n_layers, pieces)
    if report["points"][0]["vs_torch"] is not None:
        figures["torch_agreement.png"] = agreement_figure(report["points"])
    if "patching" in report:
        figures["patching.png"] = patching_figure(report["patching"], pieces, model_args.n_layers)
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


def _position_ticks(ax, n_tokens, axis, max_ticks=16):
    """Position ticks on `axis` ("x" or "y") every 1, 2, 5, 10, 20, 50, ... positions, at most
    max_ticks of them, so that their numbers never touch."""
    step = next(s for s in (m * 10 ** e for e in range(6) for m in (1, 2, 5)) if n_tokens / s <= max_ticks)
    ticks = np.arange(0, n_tokens, step)
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, [str(t) for t in ticks], fontsize=SMALL)


def attention_figure(pattern, pieces, block, n_kv_heads):
    """Block `block`'s pattern (H, T, T) as a grid of heatmaps, weight 0 white to 1 dark, one
    colorbar. Under grouped-query attention each row holds the query heads that read one kv head;
    otherwise the heads fill a square. Rows of the left panels name the query tokens, columns the
    key positions (pieces side by side would need rotating)."""
    import matplotlib
    from matplotlib.figure import Figure

    n_heads, n_tokens = pattern.shape[0], len(pieces)
    group = n_heads // n_kv_heads
    cols = group if group > 1 else math.ceil(math.sqrt(n_heads))
    rows = math.ceil(n_heads / cols)
    labelled = n_tokens <= MAX_LABELLED_TOKENS
    side = max(2.2, TOKEN_INCHES * n_tokens) if labelled else 3.0
    figure = Figure(figsize=(cols * side + 2.6, rows * side + 1.2), layout="constrained")
    figure.suptitle(f"block {block} attention: query (rows) → key (columns); grey: masked future keys")
    axes = figure.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    # The keys after a query are masked, not weighted 0: grey, so a white cell means a real 0.
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="0.85")
    future = np.triu(np.ones((n_tokens, n_tokens), dtype=bool), k=1)
    for head, ax in enumerate(axes.ravel()):
        ax.set_visible(head < n_heads)
        if head >= n_heads:
            continue
        masked = np.ma.masked_array(pattern[head], mask=future)
        image = ax.imshow(masked, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"head {head} (kv {head // group})" if group > 1 else f"head {head}", fontsize=SMALL + 1)
        # Three-digit numbers at 8 pt take ~0.3 in: about two per inch of panel.
        _position_ticks(ax, n_tokens, "x", max_ticks=int(2 * side))
        if labelled:
            ax.set_yticks(np.arange(n_tokens), [f"{p} {t}" for t, p in enumerate(pieces)], fontsize=SMALL)
        else:
            _position_ticks(ax, n_tokens, "y")
    for ax in axes[-1]:
        ax.set_xlabel("key position", fontsize=SMALL)
    figure.colorbar(image, ax=axes, label="attention weight", shrink=min(1.0, 4 / rows))
    return figure


def logit_lens_figure(lens, pieces, n_layers):
    """The top-1 logit-lens token of every (position, block), its piece written in the cell: rows
    are the input tokens, so their pieces read left to right."""
    from matplotlib.figure import Figure

    n_tokens = len(pieces)
    prob = np.zeros((n_tokens, n_layers))
    top = [[""] * n_layers for _ in range(n_tokens)]
    for entry in lens:
        prob[entry["position"], entry["block"]] = entry["top"][0]["prob"]
        top[entry["position"]][entry["block"]] = label(entry["top"][0]["piece"])
    labelled = n_tokens <= MAX_LABELLED_TOKENS
    height = 1.8 + (0.22 * n_tokens if labelled else 6.0)
    figure = Figure(figsize=(3.0 + 1.0 * n_layers, height), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(prob, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=ax, label="probability of the top token")
    if labelled:
        for position in range(n_tokens):
            for block in range(n_layers):
                ax.text(block, position, top[position][block], ha="center", va="center", fontsize=SMALL,
                        color="white" if prob[position, block] < 0.5 else "black")
        ax.set_yticks(np.arange(n_tokens), [f"{p} {t}" for t, p in enumerate(pieces)], fontsize=SMALL)
    else:
        _position_ticks(ax, n_tokens, "y")
    ax.set_xticks(range(n_layers), [str(i) for i in range(n_layers)], fontsize=SMALL)
    ax.set_xlabel("block whose output is read")
    ax.set_ylabel(f"{'input token and position' if labelled else 'position'} (the lens predicts the token after it)")
    ax.set_title("logit lens: top next token" + ("" if labelled else " (too many positions to write them)"))
    return figure


def residual_figure(cache, n_layers, pieces):
    """Per-position RMS of the residual stream at embed and after every sublayer: one line per
    position coloured by it (colorbar), the first few labelled at their end, and the mean."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    names, rms = study.residual_stream(cache, n_layers)                   # (points, T)
    n_tokens = rms.shape[1]
    figure = Figure(figsize=(max(8.0, 0.7 * len(names)), 4.8), layout="constrained")
    ax = figure.add_subplot()
    steps = np.arange(len(names))
    colours = ScalarMappable(Normalize(0, max(1, n_tokens - 1)), "viridis")
    for position in range(n_tokens):
        ax.plot(steps, rms[:, position], color=colours.to_rgba(position), linewidth=0.8)
    ax.set_xlim(-0.3, steps[-1] + 1.6)
    _end_labels(ax, rms[-1], pieces, colours)
    ax.plot(steps, rms.mean(axis=1), color="black", linewidth=2, label="mean over positions")
    ax.set_xticks(steps, [_sublayer(name) for name in names], fontsize=SMALL)
    ax.set_xlabel("after: embed, then each block's attention (a) and MLP (m)")
    ax.set_ylabel("RMS of the residual stream")
    named = "every line named" if n_tokens <= 2 * END_LABELS else f"the {END_LABELS} highest and lowest named"
    ax.set_title(f"residual stream RMS, one line per position ({named})")
    ax.legend(fontsize=SMALL, loc="upper left")
    bar = figure.colorbar(colours, ax=ax, label="position")
    bar.ax.yaxis.get_major_locator().set_params(integer=True)
    return figure


def _end_labels(ax, last, pieces, colours):
    """Name the lines at their right end, "position piece": all of them for a short prompt, else
    the END_LABELS highest and lowest; labels closer than a text line are pushed apart."""
    order = np.argsort(last)
    chosen = order if len(order) <= 2 * END_LABELS else np.concatenate([order[:END_LABELS], order[-END_LABELS:]])
    y_min, y_max = ax.get_ylim()
    gap = 0.045 * (y_max - y_min)
    placed = -np.inf
    for position in chosen:
        placed = max(last[position], placed + gap)
        ax.annotate(f"{position} {pieces[position]}", (ax.get_xlim()[1], placed), xytext=(-4, 0),
                    textcoords="offset points", fontsize=SMALL, va="center", ha="right",
                    color=colours.to_rgba(position))


def _sublayer(name):
    """A residual point's tick: "embed", "2a" after block 2's attention, "2m" after its MLP."""
    if name == "embed":
        return name
    _, block, point = name.split(".")
    return f"{block}{'a' if point == 'resid_mid' else 'm'}"


def agreement_figure(rows):
    """max |Δ| against torch (log scale; exact zeros drawn at the axis floor as hollow markers and
    said so) and the bit-identical fraction, one row per point in forward order."""
    from matplotlib.figure import Figure

    names = [row["name"].removeprefix("blocks.") for row in rows]
    diff = np.array([row["vs_torch"]["max_abs_diff"] for row in rows])
    same = np.array([row["vs_torch"]["bit_identical"] for row in rows])
    floor = min(diff[diff > 0].min(initial=1e-8), 1e-8) / 10
    steps = np.arange(len(rows))
    figure = Figure(figsize=(10, 1.6 + TOKEN_INCHES * len(rows)), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    zero = diff == 0
    left.semilogx(np.where(zero, np.nan, diff), steps, marker="o", markersize=3, color="tab:red", linewidth=0.8)
    left.plot(np.full(zero.sum(), floor), steps[zero], "o", markerfacecolor="none", color="tab:red",
              label=f"exactly 0 (drawn at {floor:.0e})")
    left.set_xlabel("max |Δ| vs torch (log scale)")
    left.set_yticks(steps, names, fontsize=SMALL)
    left.invert_yaxis()
    if zero.any():
        left.legend(fontsize=SMALL, loc="lower right")
    right.barh(steps, same, color="tab:blue")
    right.set_xlim(0, 1)
    right.set_xlabel("bit-identical fraction (the mask left out)")
    figure.suptitle("NumPy reference vs the torch model, every point of the forward pass")
    return figure


def patching_figure(patching, pieces, n_layers):
    """--patch's residual stream table as a heatmap: the share recovered at each position (rows)
    and point (columns: embed, then each block's pre / mid / post), -1 red to 1 blue."""
    from matplotlib.figure import Figure

    names = ["embed"] + [f"blocks.{i}.{p}" for i in range(n_layers) for p in ("resid_pre", "resid_mid", "resid_post")]
    ticks = ["embed"] + [f"{i} {p}" for i in range(n_layers) for p in ("pre", "mid", "post")]
    recovered = np.array([patching["recovered"][name] for name in names]).T          # (T, points)
    n_tokens = len(pieces)
    labelled = n_tokens <= MAX_LABELLED_TOKENS
    figure = Figure(figsize=(2.5 + 0.62 * len(names), 1.8 + (TOKEN_INCHES * n_tokens if labelled else 6.0)),
                    layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(recovered, cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=ax, label="share of the logit difference recovered")
    # Three columns per block: tick each block's "pre" with its number, the others by letter.
    ax.set_xticks(range(len(names)), [t if t.endswith("pre") or t == "embed" else t.split()[1][0] for t in ticks],
                  fontsize=SMALL)
    if labelled:
        ax.set_yticks(np.arange(n_tokens), [f"{p} {t}" for t, p in enumerate(pieces)], fontsize=SMALL)
    else:
        _position_ticks(ax, n_tokens, "y")
    metric = patching["metric"]
    ax.set_title(f"patching from the corrupted prompt: logit {label(metric['token']['piece'])} − "
                 f"{label(metric['other']['piece'])} recovered", fontsize=SMALL + 2)
    ax.set_xlabel("residual stream point patched (m: after attention, p: after the MLP)")
    return figure
