"""`train --engine numpy` against `--engine torch`: the same losses step by step from the same seed,
the same files (log.jsonl, a ckpt.pt that export, verify and trace read), exact resume, refusals."""

import json

import numpy as np
import pytest

from data.paths import DataError
from llama2_scratch.cli import main
from tests.support.pipeline import build_dataset, tiny_config
from trainer import checkpoint
from trainer.numpy_engine import refusal
from trainer.train import train

STEPS = 50
# float64: the engines compute the same maths in another order (NumPy's per-row loop and BLAS
# calls against torch's batched kernels), each op off by ~1e-16 relative; 50 AdamW steps grew it
# to a measured 8.9e-16 in the loss. 1e-9 is the bound: a wrong gradient anywhere, a
# missed clip or decay group moves the loss by 1e-4 or more within a few steps.
FLOAT64_LOSS_ATOL = 1e-9
# float32: the same, each op off by ~6e-8 relative; measured 7.2e-7 after 50 steps (losses ~5).
# 1e-4 leaves room for other BLAS builds and still fails a real difference (>= 1e-3 by step 10).
FLOAT32_LOSS_ATOL = 1e-4


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def data_dir(shared_data, tmp_path_factory):
    return build_dataset(shared_data, tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="module")
def float64_runs(data_dir, tmp_path_factory):
    """{engine: train's result} of STEPS float64 steps from the same seed and settings."""
    root = tmp_path_factory.mktemp("float64")
    return {engine: train(tiny_config(data_dir, root / engine, max_iters=STEPS, dtype="float64", engine=engine),
                          out=quiet)
            for engine in ("torch", "numpy")}


def largest_difference(a, b):
    assert len(a) == len(b) == STEPS
    return float(np.max(np.abs(np.array(a) - np.array(b))))


def test_engines_agree_in_float64(float64_runs):
    torch_run, numpy_run = float64_runs["torch"], float64_runs["numpy"]
    difference = largest_difference(torch_run["losses"], numpy_run["losses"])
    print(f"float64, {STEPS} steps: largest loss difference {difference:.3g}")
    assert difference <= FLOAT64_LOSS_ATOL
    assert torch_run["losses"][-1] < torch_run["losses"][0] - 0.5     # it trained
    assert abs(torch_run["val_loss"] - numpy_run["val_loss"]) <= FLOAT64_LOSS_ATOL
    ours, theirs = checkpoint.load(numpy_run["ckpt"])["model"], checkpoint.load(torch_run["ckpt"])["model"]
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_allclose(ours[name].numpy(), theirs[name].numpy(), rtol=0, atol=1e-9, err_msg=name)


def test_engines_agree_in_float32(data_dir, tmp_path):
    losses = {engine: train(tiny_config(data_dir, tmp_path / engine, max_iters=STEPS, dtype="float32",
                                        engine=engine), out=quiet)["losses"]
              for engine in ("torch", "numpy")}
    difference = largest_difference(losses["torch"], losses["numpy"])
    print(f"float32, {STEPS} steps: largest loss difference {difference:.3g}")
    assert difference <= FLOAT32_LOSS_ATOL


def test_gradient_accumulation_agrees(data_dir, tmp_path):
    """Two micro-batches per step: each one's gradients divided by 2, as the torch step divides its loss."""
    losses = {engine: train(tiny_config(data_dir, tmp_path / engine, max_iters=4, dtype="float64", grad_accum=2,
                                        engine=engine), out=quiet)["losses"]
              for engine in ("torch", "numpy")}
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=0, atol=FLOAT64_LOSS_ATOL)


def test_numpy_run_writes_the_torch_runs_files(float64_runs, tmp_path, capsys):
    out_dir = float64_runs["numpy"]["ckpt"].parent
    log = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    assert [record["iter"] for record in log] == list(range(1, STEPS + 1))
    assert [record["loss"] for record in log] == float64_runs["numpy"]["losses"]
    ckpt = checkpoint.load(float64_runs["numpy"]["ckpt"])
    assert ckpt["config"]["engine"] == "numpy" and ckpt["iter_num"] == STEPS
    gguf_path = tmp_path / "model.gguf"
    assert main(["export", str(out_dir / "ckpt.pt"), "--to", "gguf", "-o", str(gguf_path)]) == 0
    assert main(["verify", str(gguf_path), "--ckpt", str(out_dir / "ckpt.pt")]) == 0
    assert main(["trace", str(out_dir / "ckpt.pt"), "--prompt", "ROMEO:", "--json"]) == 0
    assert "verify: all" in capsys.readouterr().out


def test_resume_is_exact(data_dir, tmp_path):
    schedule = dict(max_iters=6, lr_decay_iters=6, engine="numpy")
    straight = train(tiny_config(data_dir, tmp_path / "straight", **schedule), out=quiet)
    train(tiny_config(data_dir, tmp_path / "split", **dict(schedule, max_iters=2)), out=quiet)
    resumed = train(tiny_config(data_dir, tmp_path / "split", resume=True, **schedule), out=quiet)
    assert resumed["losses"] == straight["losses"][2:]
    a, b = checkpoint.load(tmp_path / "straight/ckpt.pt"), checkpoint.load(tmp_path / "split/ckpt.pt")
    for name in a["model"]:
        assert np.array_equal(a["model"][name].numpy(), b["model"][name].numpy()), name
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_auto_dtype_is_float32_on_the_numpy_engine(data_dir, tmp_path):
    lines = []
    train(tiny_config(data_dir, tmp_path, max_iters=1, engine="numpy", dtype="auto"), out=lines.append)
    assert lines[0] == "dtype float32: the NumPy engine computes in float32 or float64 (no bf16)"


def test_resuming_across_engines_is_refused(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path, max_iters=1), out=quiet)
    with pytest.raises(DataError, match="trained with --engine torch: resume it with the same engine"):
        train(tiny_config(data_dir, tmp_path, max_iters=2, resume=True, engine="numpy"), out=quiet)


@pytest.mark.parametrize("flags, message", [
    (["--dropout", "0.1"], "--engine numpy has no dropout: use --dropout 0 (got 0.1)"),
    (["--compile"], "--engine numpy has nothing to compile: drop --compile"),
    (["--dtype", "bfloat16"], "--engine numpy computes in float32 or float64, not bfloat16"),
    (["--device", "cuda"], "--engine numpy runs on the cpu, not cuda"),
])
def test_what_the_numpy_engine_cannot_follow_is_one_line(data_dir, tmp_path, capsys, flags, message):
    status = main(["train", "--dataset", "text", "--vocab-size", "384", "--data-dir", str(data_dir),
                   "--out-dir", str(tmp_path), "--dim", "32", "--n-heads", "4", "--n-layers", "1",
                   "--max-seq-len", "32", "--engine", "numpy", "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert status == 2 and err == f"llama2-scratch train: {message}\n"


def test_ddp_is_refused():
    config = tiny_config("data", "out", engine="numpy")
    assert refusal(config, 1, "cpu") is None
    assert refusal(config, 2, "cpu") == "--engine numpy runs in one process: no torchrun/DDP"
