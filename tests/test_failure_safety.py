"""Failure safety (issue 8): a full disk never costs the previous file, a checkpoint cannot run
code, bad files reach the user as one line, and training survives SIGKILL and SIGINT."""

import contextlib
import errno
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from formats import gguf, llama2c
from formats.errors import FormatError
from llama2_scratch import cli
from models import load_model
from tests.support.cli import REPO, run_cli
from tests.support.crafted import CKPT_CRAFTED, GGUF_CRAFTED, RAWS, tokenizer_bin
from tests.support.fuzz import build_valid_files, llama2c_checkpoint, llama_gguf, rich_gguf, small_ckpt
from tests.support.pipeline import TINY_MODEL, VOCAB_SIZE, build_dataset, tiny_config
from trainer import checkpoint
from trainer import train as train_module

# Every training child runs one thread: float32 sums then happen in one order, so runs in
# different processes agree bit for bit.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


class FullDisk:
    """A file object that takes `room` more bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        data = memoryview(data).cast("B")
        taken = self.f.write(data[:self.room])
        self.room -= taken
        if taken < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return taken

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# writer -> (write the previous file, write the new one over it)
WRITERS = {
    "gguf.write": (lambda p: gguf.write(rich_gguf(), p), lambda p: gguf.write(llama_gguf(), p)),
    "llama2c.write": (lambda p: llama2c.write(llama2c_checkpoint(True), p, 1),
                      lambda p: llama2c.write(llama2c_checkpoint(False), p, 2)),
    "checkpoint.save": (lambda p: checkpoint.save({"model": {}, "model_args": {}}, p),
                        lambda p: checkpoint.save(small_ckpt(), p)),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("failure", ["write", "fsync"])
def test_a_full_disk_leaves_the_previous_file_and_says_so(tmp_path, monkeypatch, writer, failure):
    write_previous, write_new = WRITERS[writer]
    path = tmp_path / "out.bin"
    write_previous(path)
    previous = path.read_bytes()
    if failure == "write":     # the disk fills 100 bytes into the new file
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode), 100))
    else:                      # ext4's delayed allocation, NFS: the error comes at fsync
        monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        write_new(path)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(path) and "out.bin was left as it was" in info.value.strerror
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["out.bin"], "no temp file left behind"


class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_checkpoint_that_runs_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {}, "model_args": {}, "config": Payload(marker)}, path)
    for load in (checkpoint.load, load_model):    # train/export, and generate
        with pytest.raises(FormatError, match="unsupported GLOBAL") as info:
            load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)           # the payload is live: weights_only is what stops it
    assert marker.exists()


# ---------------------------------------------------------------------------------------- CLI


def crafted(kind, cases, label, tmp_path):
    """The file of a crafted case (tests/support/crafted.py), written under tmp_path."""
    make = next(make for name, make, _ in cases if name == label)
    (name, data), = make(build_valid_files(tmp_path)[kind], tmp_path).items()
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def valid_llama2c(tmp_path):
    llama2c.write(llama2c_checkpoint(True), tmp_path / "m.bin", 1)
    return tmp_path / "m.bin"


def truncated_v2(tmp_path):
    llama2c.write(llama2c_checkpoint(False), tmp_path / "full.bin", 2)
    (tmp_path / "v2.bin").write_bytes((tmp_path / "full.bin").read_bytes()[:300])
    return tmp_path / "v2.bin"


def tokenizer(tmp_path, raws):
    (name, data), = tokenizer_bin(16, raws)({}, tmp_path).items()
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def hostile_ckpt(tmp_path):
    torch.save({"model": {}, "model_args": {}, "config": Payload(tmp_path / "ran")}, tmp_path / "ckpt.pt")
    return tmp_path / "ckpt.pt"


# label -> (argv after `llama2-scratch`, built under a tmp folder; a fragment of the one line)
CLI_CASES = {
    "inspect, llama2.c v2 cut short": (lambda d: ["inspect", truncated_v2(d)], "file size at byte 300"),
    "inspect, GGUF kv_count near 2**64": (
        lambda d: ["inspect", crafted("gguf-llama", GGUF_CRAFTED, "test_gguf: kv_count near 2**64", d)],
        "kv_count at byte 16"),
    "generate, GGUF block_count near 2**32": (
        lambda d: ["generate", crafted("gguf-llama", GGUF_CRAFTED, "block_count near 2**32", d)],
        "llama.block_count"),
    "generate, 7-piece tokenizer for 8 rows": (
        lambda d: ["generate", valid_llama2c(d), "--tokenizer", tokenizer(d, RAWS[:7])], "token[7].score"),
    "tokenize, non-UTF-8 tokenizer.bin": (
        lambda d: ["tokenize", tokenizer(d, RAWS[:7] + [b"\xff"]), "hi"], "invalid UTF-8"),
    "generate, deflated ckpt.pt": (
        lambda d: ["generate", crafted("ckpt", CKPT_CRAFTED, "deflated records (a zip bomb's shape)", d),
                   "--tokenizer", tokenizer(d, RAWS)], "is compressed"),
    "generate, ckpt.pt that runs code": (
        lambda d: ["generate", hostile_ckpt(d), "--tokenizer", tokenizer(d, RAWS)], "unsupported GLOBAL"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_files_through_the_cli_are_one_line_exit_2(tmp_path, case):
    make_args, fragment = CLI_CASES[case]
    result = run_cli(*make_args(tmp_path), with_torch=True, env=CHILD_ENV)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def data_dir(shared_data, tmp_path_factory):
    return build_dataset(shared_data, tmp_path_factory.mktemp("safety"))


def train_flags(data_dir, out_dir, **overrides):
    settings = dict(TINY_MODEL, dataset="text", vocab_size=VOCAB_SIZE, data_dir=data_dir, out_dir=out_dir,
                    warmup_iters=2, learning_rate=3e-3, eval_batches=4, log_interval=1000, device="cpu", seed=7,
                    **overrides)
    return [part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value))]


def log_records(out_dir):
    path = out_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def logged_steps(out_dir):
    """Lines in the log so far: counted, not parsed, as the trainer may be appending one right now."""
    path = out_dir / "log.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_full_disk_during_training_keeps_the_last_checkpoint(data_dir, tmp_path, monkeypatch, capsys):
    real_atomic_write = checkpoint.atomic_write
    saves = []

    @contextlib.contextmanager
    def second_save_fills_the_disk(path):
        saves.append(path)
        with real_atomic_write(path) as f:
            yield FullDisk(f, 100) if len(saves) == 2 else f

    monkeypatch.setattr(checkpoint, "atomic_write", second_save_fills_the_disk)
    status = cli.main(["train", *train_flags(data_dir, tmp_path, max_iters=4, eval_interval=2)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and f"{tmp_path / 'ckpt.pt'}: No space left on device; ckpt.pt was left as it was" in err[0]
    assert checkpoint.load(tmp_path / "ckpt.pt")["iter_num"] == 2
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def wait_until(condition, proc, timeout=300):
    """Poll until `condition()` holds or `proc` exits; True if the condition was met."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise TimeoutError("the training process made no progress")


def test_sigint_saves_a_checkpoint_and_exits_130(data_dir, tmp_path):
    # No eval within reach: the checkpoint can only come from the interrupt.
    flags = train_flags(data_dir, tmp_path, max_iters=100_000, eval_interval=100_000)
    proc = subprocess.Popen([sys.executable, "-m", "llama2_scratch", "train", *flags], cwd=REPO, env=CHILD_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: logged_steps(tmp_path) >= 3, proc), proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    saved = checkpoint.load(tmp_path / "ckpt.pt")
    assert saved["iter_num"] == log_records(tmp_path)[-1]["iter"] >= 3
    assert err.strip().splitlines() == [f"llama2-scratch train: interrupted after iter {saved['iter_num']}; saved "
                                        f"{tmp_path / 'ckpt.pt'} (continue with --resume)"]


def test_sigint_before_the_first_step_saves_nothing_and_exits_130(data_dir, tmp_path, monkeypatch, capsys):
    # Ctrl-C while the run is being set up (here: as its token files are read): no step runs.
    real_load_data = train_module.load_data

    def interrupted_while_loading(config):
        os.kill(os.getpid(), signal.SIGINT)
        return real_load_data(config)

    monkeypatch.setattr(train_module, "load_data", interrupted_while_loading)
    status = cli.main(["train", *train_flags(data_dir, tmp_path, max_iters=50, eval_interval=10)])
    assert status == 130
    assert capsys.readouterr().err.splitlines() == [
        "llama2-scratch train: interrupted before the first step; nothing new was saved"]
    assert not (tmp_path / "ckpt.pt").exists() and log_records(tmp_path) == []


def test_a_second_sigint_stops_at_once_and_says_nothing_was_saved(data_dir, tmp_path, monkeypatch, capsys):
    # The first Ctrl-C asks to stop after the step; a second one, during that step, stops at once.
    real_step = train_module._forward_backward

    def two_interrupts_in_step_3(run, micro):
        if run.iter_num == 2 and micro == 0:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(run, micro)

    monkeypatch.setattr(train_module, "_forward_backward", two_interrupts_in_step_3)
    status = cli.main(["train", *train_flags(data_dir, tmp_path, max_iters=50, eval_interval=10)])
    assert status == 130
    assert capsys.readouterr().err.splitlines() == ["llama2-scratch train: interrupted; nothing new was saved"]
    assert [r["iter"] for r in log_records(tmp_path)] == [1, 2]
    assert not (tmp_path / "ckpt.pt").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler    # the handler is restored


# Trains in a fresh process. DIE_IN_SAVE="mid-write:N" SIGKILLs it halfway through writing its
# Nth checkpoint, "before-rename:N" once that checkpoint is whole in its temp file but not yet
# renamed over ckpt.pt: the two moments at which a crash could corrupt the checkpoint.
CHILD = """
import contextlib, json, os, signal, sys
from trainer import checkpoint
from trainer.config import from_settings
from trainer.train import train

when, nth = os.environ.get("DIE_IN_SAVE", "never:0").split(":")
saves = 0
real_atomic_write = checkpoint.atomic_write


def die(f):
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


class HalfThenDie:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        data = memoryview(data).cast("B")
        self.f.write(data[:len(data) // 2])
        die(self.f)


@contextlib.contextmanager
def atomic_write(path):
    global saves
    saves += 1
    dying = saves == int(nth)
    with real_atomic_write(path) as f:
        yield HalfThenDie(f) if dying and when == "mid-write" else f
        if dying and when == "before-rename":
            die(f)


checkpoint.atomic_write = atomic_write
train(from_settings(json.loads(sys.argv[1])), out=lambda *args: None)
"""


def start_training(config, die_in_save=None):
    env = dict(CHILD_ENV, **({"DIE_IN_SAVE": die_in_save} if die_in_save else {}))
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(config.settings())], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc):
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_reproduces_the_uninterrupted_run(data_dir, tmp_path):
    # Dropout on, so that resuming must restore the RNG as well as the weights and the optimizer.
    settings = dict(max_iters=12, eval_interval=3, lr_decay_iters=12, dropout=0.1)
    finish(start_training(tiny_config(data_dir, tmp_path / "straight", **settings)))
    losses = {r["iter"]: (r["loss"], r.get("val_loss")) for r in log_records(tmp_path / "straight")}

    out = tmp_path / "killed"
    rng = random.Random(8)
    # Halfway through writing the 1st checkpoint; after writing the 2nd, before its rename; then
    # three SIGKILLs at random moments (after a random number of steps, plus up to 30 ms).
    plan = [("mid-write:1", None), ("before-rename:2", None)] + [(None, rng.randint(1, 4)) for _ in range(3)]
    last_saved = 0
    for die_in_save, steps in plan:
        resume = (out / "ckpt.pt").exists()
        proc = start_training(tiny_config(data_dir, out, resume=resume, **settings), die_in_save)
        if steps:
            target = logged_steps(out) + steps
            if wait_until(lambda: logged_steps(out) >= target, proc):
                time.sleep(rng.uniform(0, 0.03))
                proc.kill()
        _, err = proc.communicate(timeout=300)
        # A random kill may come too late, after the run ended by itself.
        assert proc.returncode in ((-signal.SIGKILL,) if die_in_save else (-signal.SIGKILL, 0)), err
        if (out / "ckpt.pt").exists():
            saved = checkpoint.load(out / "ckpt.pt")     # the last checkpoint always loads
            assert saved["iter_num"] % 3 == 0 and saved["iter_num"] >= last_saved
            last_saved = saved["iter_num"]
    finish(start_training(tiny_config(data_dir, out, resume=True, **settings)))

    records = log_records(out)
    assert {r["iter"] for r in records} >= set(range(last_saved + 1, 13))
    for r in records:      # every step any run logged, including repeats after a resume
        assert (r["loss"], r.get("val_loss")) == losses[r["iter"]], r["iter"]
    a, b = checkpoint.load(tmp_path / "straight/ckpt.pt"), checkpoint.load(out / "ckpt.pt")
    assert a["iter_num"] == b["iter_num"] == 12
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_written_files_get_the_usual_permissions(tmp_path):
    """atomic_write's temp file starts 0600; the result must be what open() would make."""
    umask = os.umask(0o022)
    try:
        path = tmp_path / "p.gguf"
        gguf.write(gguf.GGUFFile({}), path)
        assert (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(umask)
