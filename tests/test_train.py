"""The trainer: loss falls, resume is exact, DDP (2 gloo processes) equals one process, config."""

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from data.paths import DataError
from formats.spec import FIELDS, ModelArgs
from tests.support.cli import run_python
from tests.support.pipeline import build_dataset, tiny_config
from trainer import checkpoint
from trainer.config import (NOT_MODEL_SETTINGS, SETTINGS, TrainConfig, add_arguments, from_args, from_settings,
                            load_toml)
from trainer.flops import measure_peak
from trainer.train import batch_starts, get_lr, train

# DDP sums gradients in another order than one process does; float32 rounding differs by a few
# ulps per step, which 8 Adam steps can grow to ~1e-6 relative. 1e-4 is far below any real bug
# (a wrong loss scale or a missed micro-batch moves weights by ~lr = 3e-3).
DDP_ATOL = 1e-4
# One step before the optimizer: the same micro-batches, their gradients summed in another order
# (2 ranks of 2, averaged, vs 4 in a row) and the loss likewise. float32: measured max |Δgrad|
# 3.7e-9 (gradients up to 0.044), loss bit-identical. A gradient scaled by 1/2 or a micro-batch
# counted twice is off by 50%.
DDP_STEP_RTOL = 1e-6
DDP_GRAD_ATOL = 2e-8


@pytest.fixture(scope="module")
def data_dir(shared_data, tmp_path_factory):
    return build_dataset(shared_data, tmp_path_factory.mktemp("train"))


@dataclasses.dataclass
class Llama2cModelArgs:
    """llama2.c's model.py ModelArgs, field for field, with its defaults (Llama 7B's shape)."""
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    vocab_size: int = 32000
    hidden_dim: int | None = None
    multiple_of: int = 256
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    dropout: float = 0.0


def quiet(*args, **kwargs):
    pass


def test_loss_falls_on_a_fixed_seed(data_dir, tmp_path):
    result = train(tiny_config(data_dir, tmp_path, max_iters=30), out=quiet)
    first, last = sum(result["losses"][:5]) / 5, sum(result["losses"][-5:]) / 5
    assert last < first - 0.5
    assert result["val_bpb"] is not None and result["val_bpb"] > 0
    ckpt = checkpoint.load(tmp_path / "ckpt.pt")
    # llama2.c's scripts build ModelArgs(**ckpt["model_args"]): exactly its fields there, ours beside.
    assert dataclasses.asdict(Llama2cModelArgs(**ckpt["model_args"])) == ckpt["model_args"]
    assert ckpt["model_args"]["dim"] == 32 and ckpt["model_args"]["vocab_size"] == 384
    ours = ModelArgs.from_dict({**ckpt["model_args"], **ckpt["extra_model_args"]})
    assert set(ckpt["extra_model_args"]) == set(FIELDS) - set(ckpt["model_args"])
    assert ours.rope_theta == 10000.0 and ours.tie_embeddings and ours.n_kv_heads == 2
    assert "layers.1.feed_forward.w3.weight" in ckpt["model"]
    assert ckpt["tokenizer"]["model"] == (data_dir / "text" / "tok384.model").read_bytes()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(1, 31))
    assert {"loss", "lr", "ms", "tok_s", "mfu"} <= set(log[0]) and "val_bpb" in log[-1]
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_is_deterministic_per_seed(data_dir, tmp_path):
    a = train(tiny_config(data_dir, tmp_path / "a", max_iters=3), out=quiet)
    b = train(tiny_config(data_dir, tmp_path / "b", max_iters=3), out=quiet)
    assert a["losses"] == b["losses"]


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_float16_on_the_cpu_is_refused_with_a_reason(data_dir, tmp_path):
    with pytest.raises(DataError, match="float16 is for GPUs.*use --dtype bfloat16 or float32"):
        train(tiny_config(data_dir, tmp_path, dtype="float16"), out=quiet)


def test_resume_is_bitwise_exact(data_dir, tmp_path):
    schedule = dict(max_iters=6, lr_decay_iters=6, dropout=0.1)    # dropout: the RNG is resumed too
    straight = train(tiny_config(data_dir, tmp_path / "straight", **schedule), out=quiet)
    train(tiny_config(data_dir, tmp_path / "split", **dict(schedule, max_iters=2)), out=quiet)
    resumed = train(tiny_config(data_dir, tmp_path / "split", resume=True, **schedule), out=quiet)
    assert resumed["losses"] == straight["losses"][2:]
    a, b = checkpoint.load(tmp_path / "straight/ckpt.pt"), checkpoint.load(tmp_path / "split/ckpt.pt")
    _assert_same_state(a["model"], b["model"])
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        _assert_same_state(state_a, state_b)
    assert a["iter_num"] == b["iter_num"] == 6


def test_ddp_two_gloo_processes_match_one(data_dir, tmp_path):
    flags = ["--dataset", "text", "--vocab-size", "384", "--data-dir", str(data_dir), "--dim", "32",
             "--n-layers", "2", "--n-heads", "4", "--max-seq-len", "32", "--batch-size", "4",
             "--grad-accum", "4", "--max-iters", "4", "--warmup-iters", "1", "--learning-rate", "0.003", "--device", "cpu", "--seed", "3",
             "--dtype", "float32"]
    # grad_accum 4 over 2 ranks: each rank runs 2 micro-steps, and DDP must sync only on the last.
    single = train(tiny_config(data_dir, tmp_path / "one", grad_accum=4, max_iters=4, warmup_iters=1,
                               n_kv_heads=None, seed=3), out=quiet)
    done = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "-m", "llama2_scratch", "train", *flags, "--out-dir", tmp_path / "two",
                      env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    one = checkpoint.load(single["ckpt"])["model"]
    two = checkpoint.load(tmp_path / "two/ckpt.pt")["model"]
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=DDP_ATOL, rtol=0)


def test_ddp_gradients_and_loss_of_a_step_equal_one_process(data_dir, tmp_path):
    """AdamW and clipping hide a constant gradient scale from the weights (a rank dividing its
    loss by the global grad_accum instead of its own micro-steps would train the same): compare
    the step's gradients and loss before the optimizer sees them."""
    flags = ["--dataset", "text", "--vocab-size", "384", "--data-dir", str(data_dir), "--dim", "32",
             "--n-layers", "2", "--n-heads", "4", "--max-seq-len", "32", "--batch-size", "4",
             "--grad-accum", "4", "--device", "cpu", "--seed", "3", "--dtype", "float32"]
    script = str(Path(__file__).with_name("ddp_step.py"))
    env = {"OMP_NUM_THREADS": "1"}
    one = run_python(script, tmp_path / "one.pt", *flags, "--out-dir", tmp_path / "one", env=env)
    two = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     script, tmp_path / "two.pt", *flags, "--out-dir", tmp_path / "two", env=env)
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-2000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert two["loss"] == pytest.approx(one["loss"], rel=DDP_STEP_RTOL, abs=0)
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, rtol=DDP_STEP_RTOL, atol=DDP_GRAD_ATOL)


def test_batches_are_a_function_of_seed_step_and_micro_step():
    a = batch_starts(1, 5, 0, 1000, 16, 8)
    assert (a == batch_starts(1, 5, 0, 1000, 16, 8)).all()
    assert not (a == batch_starts(1, 5, 1, 1000, 16, 8)).all()
    assert a.max() <= 1000 - 16 - 1


def test_lr_schedule_warms_up_then_decays_to_min():
    config = TrainConfig(max_iters=100, warmup_iters=10, learning_rate=1.0, min_lr=0.1)
    lrs = [get_lr(i, config) for i in range(120)]
    assert lrs[:10] == sorted(lrs[:10]) and lrs[9] < 1.0
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[10:101] == sorted(lrs[10:101], reverse=True)
    assert lrs[100] == lrs[119] == 0.1


def test_toml_config_and_unknown_key(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('dim = 64\nlearning-rate = 0.01\ndtype = "bfloat16"\n')
    assert load_toml(good) == {"dim": 64, "learning_rate": 0.01, "dtype": "bfloat16"}
    bad = tmp_path / "bad.toml"
    bad.write_text("dimm = 64\n")
    with pytest.raises(DataError, match="dimm"):
        load_toml(bad)


def test_model_settings_are_the_model_args_fields():
    """Every ModelArgs field but the fixed ones is a flag and a key; the flags build config.model."""
    assert set(FIELDS) - set(NOT_MODEL_SETTINGS) <= set(SETTINGS)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = from_args(parser.parse_args(["--dim", "64", "--n-heads", "4", "--n-kv-heads", "2",
                                          "--max-seq-len", "32", "--dropout", "0.1", "--batch-size", "2"]))
    assert config.model == ModelArgs(dim=64, n_heads=4, n_kv_heads=2, max_seq_len=32, dropout=0.1)
    assert config.batch_size == 2
    assert from_settings(config.settings()) == config


def test_an_impossible_model_is_one_line_data_error():
    with pytest.raises(DataError, match="^bad setting: dim 100 is not divisible by n_heads 6$"):
        from_settings({"dim": 100})


def test_bfloat16_autocast_trains_on_cpu(data_dir, tmp_path):
    result = train(tiny_config(data_dir, tmp_path, dtype="bfloat16", max_iters=3), out=quiet)
    assert all(loss == loss for loss in result["losses"])       # no NaN


# torch.compile generates fused kernels whose float32 sums run in another order than eager's:
# per-step losses agree to rounding, not bitwise. 1e-4 relative after a few steps of AdamW.
COMPILE_LOSS_RTOL = 1e-4


@pytest.mark.slow
def test_compiled_training_matches_eager(data_dir, tmp_path):
    """`train --compile` (what bench_train.py measures as the fastest row) trains the same model."""
    eager = train(tiny_config(data_dir, tmp_path / "eager", max_iters=4), out=quiet)
    compiled = train(tiny_config(data_dir, tmp_path / "compiled", max_iters=4, compile=True), out=quiet)
    torch.testing.assert_close(torch.tensor(compiled["losses"]), torch.tensor(eager["losses"]),
                               rtol=COMPILE_LOSS_RTOL, atol=0)
    saved = checkpoint.load(tmp_path / "compiled" / "ckpt.pt")["model"]
    assert not any(name.startswith("_orig_mod.") for name in saved), "compiled names leaked into ckpt.pt"


def fake_matmul(rates):
    """matmul_seconds for measure_peak from FLOP/s per size: each size's calls run 5x (the
    warm-up), then 2x, 1x, 1.5x the rate's time (other work slowing some trials). -> (it, sizes run)."""
    calls = []

    def matmul_seconds(n):
        calls.append(n)
        slowdown = (5.0, 2.0, 1.0, 1.5)[calls.count(n) - 1]
        return 2 * n ** 3 / rates[n] * slowdown

    return matmul_seconds, calls


def test_matmul_peak_is_the_best_trial_at_the_size_where_it_plateaus():
    rates = {256: 1e11, 512: 5e11, 1024: 2e12, 2048: 2.05e12, 4096: 1e13}
    matmul_seconds, calls = fake_matmul(rates)
    assert measure_peak(matmul_seconds, sizes=tuple(rates), trials=3) == pytest.approx(2.05e12, rel=1e-12)
    assert sorted(set(calls)) == [256, 512, 1024, 2048]    # 2048 gained 2.5% < 5%: plateau, 4096 not run


def test_matmul_peak_stops_growing_once_a_product_is_long():
    rates = {256: 1e9, 512: 2e9, 1024: 4e9}     # a 512 product takes 0.13 s here
    matmul_seconds, calls = fake_matmul(rates)
    assert measure_peak(matmul_seconds, sizes=tuple(rates), trials=3) == pytest.approx(2e9, rel=1e-12)
    assert sorted(set(calls)) == [256, 512]


def test_mfu_never_reads_above_100_percent(data_dir, tmp_path, monkeypatch):
    """A peak measured low (forced to 1 FLOP/s here) is raised to what a step achieved, once said."""
    monkeypatch.setattr("trainer.train.measure_matmul_peak", lambda *args, **kwargs: 1.0)
    lines = []
    train(tiny_config(data_dir, tmp_path, max_iters=5), out=lines.append)
    mfus = [json.loads(line)["mfu"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert mfus[0] == 1.0 and all(0 < m <= 1.0 for m in mfus), mfus
    assert sum("matmul peak raised from 0.0 to" in line for line in lines) == 1, lines


def log_iters(out_dir):
    return [json.loads(line)["iter"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_a_fresh_run_starts_the_log_anew(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path, max_iters=3), out=quiet)
    train(tiny_config(data_dir, tmp_path, max_iters=2), out=quiet)
    assert log_iters(tmp_path) == [1, 2]


def test_a_resumed_run_keeps_the_log_up_to_its_checkpoint(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path, max_iters=2), out=quiet)
    with open(tmp_path / "log.jsonl", "a") as log:    # a step logged, then killed before it was saved
        log.write(json.dumps({"iter": 3, "loss": 9.0}) + "\n")
    train(tiny_config(data_dir, tmp_path, max_iters=4, resume=True), out=quiet)
    assert log_iters(tmp_path) == [1, 2, 3, 4]
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[2])["loss"] != 9.0
