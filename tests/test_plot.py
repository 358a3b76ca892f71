"""trainer/plot.py: a curve a reader can read (axes, units, legend, bits/byte, learning rate),
written whole, and training without matplotlib."""

import math

import numpy as np

from tests.support.cli import run_python
from trainer.plot import loss_figure, write_loss_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def log_records():
    """100 steps of a falling loss, a cosine lr, and two evaluations (1 nat/token = 1.6 bits/byte)."""
    records = [{"iter": i, "loss": 5.0 - 3.0 * i / 100, "lr": 1e-3 * (1 + math.cos(math.pi * i / 100)) / 2}
               for i in range(1, 101)]
    records[49].update(val_loss=3.7, val_bpb=3.7 * 1.6)
    records[99].update(val_loss=2.4, val_bpb=2.4 * 1.6)
    return records


def test_figure_has_labelled_axes_both_curves_and_the_lr():
    loss_axes, lr_axes = loss_figure(log_records()).axes[:2]
    assert loss_axes.get_ylabel() == "loss (nats/token)" and lr_axes.get_xlabel() == "iteration"
    assert lr_axes.get_ylabel() == "learning rate"
    lines = {line.get_label(): line for line in loss_axes.get_lines()}
    assert list(lines) == ["train loss", "val loss"]
    np.testing.assert_array_equal(lines["val loss"].get_xdata(), [50, 100])
    np.testing.assert_array_equal(lines["val loss"].get_ydata(), [3.7, 2.4])
    assert len(lines["train loss"].get_xdata()) == 100
    assert [t.get_text() for t in loss_axes.get_legend().get_texts()] == ["train loss", "val loss"]
    np.testing.assert_allclose(lr_axes.get_lines()[0].get_ydata()[[0, -1]], [9.998e-4, 0.0], atol=1e-7)


def test_bits_per_byte_axis_is_the_loss_axis_rescaled():
    loss_axes, _, bpb = loss_figure(log_records()).axes
    assert bpb.get_ylabel() == "bits/byte" and bpb.get_shared_x_axes().joined(bpb, loss_axes)
    np.testing.assert_allclose(np.array(bpb.get_ylim()), 1.6 * np.array(loss_axes.get_ylim()), rtol=1e-12)


def test_no_bits_per_byte_axis_before_an_evaluation():
    records = [r for r in log_records() if "val_loss" not in r]
    assert len(loss_figure(records).axes) == 2


def test_written_png_is_whole(tmp_path):
    path = tmp_path / "loss.png"
    assert write_loss_curve(log_records(), path) is None
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[-8:-4] == b"IEND"
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]      # no temp file left behind


def test_without_matplotlib_nothing_is_drawn_and_the_reason_is_one_line(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from trainer.plot import write_loss_curve\n"
            f"print(write_loss_curve([{{'iter': 1, 'loss': 2.0}}], {str(tmp_path / 'loss.png')!r}))")
    result = run_python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'loss.png'}: not drawn, matplotlib is not installed " \
                            "(pip install matplotlib (or the project's [plot] extra))\n"
    assert not (tmp_path / "loss.png").exists()
