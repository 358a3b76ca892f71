"""reference/runtime/helpers.py: the helper processes that share a one-token pass's products.

What they promise: the same logits, bit for bit, as one thread (each output row is the same dot
product wherever it runs); a helper that fails or dies is an error in the caller, never a hang or
a wrong row; between passes a helper sleeps; it ends with its model and with its parent.
"""

import gc
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from formats.spec import ModelArgs
from models import load_model
from reference.runtime import helpers
from reference.runtime.blockwise import BlockMatrix
from reference.runtime.executor import Executor
from tests.support.cli import REPO
from tests.support.files import byte_vocab, write_gguf
from tests.support.models import RowsPastFirstFail
from tests.support.weights import wide_logit_weights

pytestmark = pytest.mark.skipif(not helpers.available(), reason="helper processes run on Linux only")

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, hidden_dim=96, max_seq_len=32,
                 tie_embeddings=False)


@pytest.fixture(scope="module", params=["f32", "q8_0", "q4_1"])
def model_path(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("helpers") / f"m_{request.param}.gguf"
    return write_gguf(ARGS, wide_logit_weights(ARGS, seed=3), path, request.param)


def decode(model, tokens):
    """Prefill tokens[:4], then one token at a time: the logits of every decode step."""
    model.forward(tokens[:4])
    return np.stack([model.forward(tokens[p:p + 1], p) for p in range(4, len(tokens))])


def state(pid):
    """The process state letter of /proc/PID/stat: R running, S asleep, Z a zombie."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0]


def alive(pid):
    try:
        return state(pid) != "Z"
    except FileNotFoundError:           # no such process (reaped)
        return False


@pytest.mark.parametrize("threads", [2, 3])
def test_helped_decode_equals_one_thread_bit_for_bit(model_path, monkeypatch, threads):
    monkeypatch.setattr(Executor, "SPLIT_HELPED", 1)                 # every product shared
    tokens = np.random.default_rng(4).integers(0, ARGS.vocab_size, 14)
    expected = decode(load_model(model_path, fast=True, threads=1), tokens)
    model = load_model(model_path, fast=True, threads=threads)
    got = decode(model, tokens)
    assert len(model.executor._helpers) == threads - 1
    np.testing.assert_array_equal(got, expected)


def test_a_helper_sleeps_between_passes_and_wakes_for_the_next(model_path, monkeypatch):
    """Out of a pass the helper blocks on its pipe (state S) instead of spinning (R); the next pass
    wakes it and its rows are right. The deadline only bounds a failure: nothing is timed."""
    monkeypatch.setattr(Executor, "SPLIT_HELPED", 1)
    model, one_thread = load_model(model_path, fast=True, threads=2), load_model(model_path, fast=True, threads=1)
    model.forward([1]), one_thread.forward([1])
    pid = model.executor._helpers[0].pid
    deadline = time.monotonic() + 5
    while state(pid) != "S" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [state(pid) for _ in range(50)] == ["S"] * 50, "the helper kept spinning after the pass"
    np.testing.assert_array_equal(model.forward([2], 1), one_thread.forward([2], 1))


def test_the_helper_ends_with_its_model(model_path):
    model = load_model(model_path, fast=True, threads=2)
    model.forward([1])
    pid = model.executor._helpers[0].pid
    assert alive(pid)
    del model
    gc.collect()
    assert not alive(pid)


def test_the_helper_ends_with_its_parent(model_path):
    """A parent killed outright (no atexit, no finalizer) takes its helper with it."""
    code = (f"import os, sys, numpy as np; from models import load_model; "
            f"m = load_model({str(model_path)!r}, fast=True, threads=2); m.forward([1]); "
            "print(m.executor._helpers[0].pid, flush=True); sys.stdin.read()")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    pid = int(parent.stdout.readline())
    assert alive(pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_a_helper_that_died_is_an_error_not_a_hang(model_path, monkeypatch):
    monkeypatch.setattr(Executor, "SPLIT_HELPED", 1)
    model = load_model(model_path, fast=True, threads=2)
    model.forward([1])
    os.kill(model.executor._helpers[0].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"helper process \d+ died"):
        model.forward([2], 1)
    # The next passes run on the threads, from the position that failed.
    one_thread = load_model(model_path, fast=True, threads=1)
    one_thread.forward([1])
    np.testing.assert_array_equal(model.forward([2], 1), one_thread.forward([2], 1))
    assert model.executor._helpers == []


def test_a_failure_in_a_helper_reaches_the_caller_and_the_helper_lives_on():
    flaky, sound = RowsPastFirstFail(fail=True), RowsPastFirstFail(fail=False)
    executor = Executor(threads=2, matrices=[flaky, sound])
    executor.SPLIT_HELPED = 1
    x = np.ones((1, 4), np.float32)
    with executor.running(1):
        with pytest.raises(RuntimeError, match=r"helper process \d+: rows 4..7 failed"):
            executor(x, flaky)
        assert (executor(x, sound) == 1.0).all()
    assert alive(executor._helpers[0].pid)


def test_a_helper_dying_during_a_product_is_an_error_not_a_hang():
    class Fatal(BlockMatrix):
        def product(self, x, out, start, stop):
            if start > 0:           # the helper's rows: the helper process exits on them
                os._exit(1)
            out[:, start:stop] = 1.0

    fatal = Fatal((8, 4))
    executor = Executor(threads=2, matrices=[fatal])
    executor.SPLIT_HELPED = 1
    with executor.running(1):
        with pytest.raises(RuntimeError, match=r"helper process \d+ died during a product"):
            executor(np.ones((1, 4), np.float32), fatal)


def test_where_fork_fails_the_threads_do_the_work(model_path, monkeypatch):
    """Under strict overcommit fork may fail with ENOMEM: no helper, the same logits."""
    def no_fork():
        raise OSError(12, "Cannot allocate memory")

    tokens = np.random.default_rng(5).integers(0, ARGS.vocab_size, 8)
    expected = decode(load_model(model_path, fast=True, threads=1), tokens)
    monkeypatch.setattr(os, "fork", no_fork)
    model = load_model(model_path, fast=True, threads=2)
    np.testing.assert_array_equal(decode(model, tokens), expected)
    assert model.executor._helpers == []


def test_ctrl_c_in_generate_is_one_line_and_takes_the_helper_with_it(tmp_path):
    """SIGINT to the terminal's process group (what Ctrl-C sends) while generate decodes: exit
    130, one line, the text so far on stdout, no helper left (it ignores SIGINT and leaves with
    its parent). Before, Ctrl-C in generate printed a traceback."""
    args = ModelArgs(dim=128, n_layers=2, n_heads=4, vocab_size=262, hidden_dim=256, max_seq_len=4096)
    path = write_gguf(args, wide_logit_weights(args, seed=6), tmp_path / "long.gguf", "f32", vocab=byte_vocab(262))
    argv = ["generate", str(path), "--prompt", "a", "--max-new-tokens", "4000", "--temperature", "0", "--threads", "2"]
    child = subprocess.Popen([sys.executable, "-m", "llama2_scratch", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = child.stdout.read(1)                       # the prefill's token: decoding begins
    deadline = time.monotonic() + 10
    while True:                                        # until the first decode step has forked the helper
        group = [int(pid) for pid in subprocess.run(["ps", "-o", "pid=", "-g", str(child.pid)],
                                                    capture_output=True, text=True).stdout.split()]
        if len(group) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert first and child.returncode == 130, (child.returncode, err)
    assert err.decode() == "llama2-scratch generate: interrupted\n"
    assert len(group) == 2, group                      # generate and its helper
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in group)
