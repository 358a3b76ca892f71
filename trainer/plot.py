"""The training curve as a PNG, drawn with matplotlib (the optional `plot` extra).

Two panels sharing the iteration axis: above, the train loss (a line) and the val loss (points)
in nats per token, with bits per byte on the right-hand axis where an evaluation has measured
the ratio; below, the learning rate. Without matplotlib, training runs all the same and says
once that it draws no curve.

bits/byte = loss (nats/token) * tokens/byte / ln 2: for a fixed val split the factor is one
number, val_bpb / val_loss of any evaluation record, so the right-hand axis is the left one
rescaled.
"""

import io

from formats.atomic import atomic_write

INSTALL_HINT = "pip install matplotlib (or the project's [plot] extra)"


def loss_figure(records):
    """A matplotlib Figure of the log records' `loss`, `val_loss`, `val_bpb` and `lr` fields."""
    from matplotlib.figure import Figure

    train = [(r["iter"], r["loss"]) for r in records if "loss" in r]
    val = [(r["iter"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    lrs = [(r["iter"], r["lr"]) for r in records if "lr" in r]
    figure = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    loss_axes, lr_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if train:
        loss_axes.plot(*zip(*train), color="black", linewidth=1, label="train loss")
    if val:
        loss_axes.plot(*zip(*val), "s", color="tab:red", label="val loss")
    loss_axes.set_ylabel("loss (nats/token)")
    loss_axes.set_title("training loss")
    loss_axes.grid(alpha=0.3)
    if train or val:
        loss_axes.legend(loc="upper right")
    ratio = next((r["val_bpb"] / r["val_loss"] for r in records
                  if r.get("val_bpb") is not None and r.get("val_loss")), None)
    if ratio is not None:
        bpb = loss_axes.twinx()
        bpb.set_ylim(*(limit * ratio for limit in loss_axes.get_ylim()))
        bpb.set_ylabel("bits/byte")
    if lrs:
        lr_axes.plot(*zip(*lrs), color="tab:blue", linewidth=1)
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_xlabel("iteration")
    lr_axes.grid(alpha=0.3)
    return figure


def write_loss_curve(records, path):
    """Draw the records' curve and write it to `path` atomically; returns None, or without
    matplotlib a one-line reason that nothing was drawn."""
    try:
        figure = loss_figure(records)
    except ImportError:
        return f"{path}: not drawn, matplotlib is not installed ({INSTALL_HINT})"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
    return None
