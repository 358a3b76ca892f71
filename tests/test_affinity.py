"""reference/runtime/affinity.py: fast.py's threads each held to a CPU of their own during a pass."""

import os
import threading

import pytest

from reference.runtime import affinity, blas
from reference.runtime.executor import Executor

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                                reason="this platform has no CPU affinity control: nothing is pinned")


def test_plan_gives_distinct_allowed_cpus_or_none_when_there_are_too_few():
    allowed = os.sched_getaffinity(0)
    assert affinity.plan(1) is None
    for n in range(2, len(allowed) + 2):
        cpus = affinity.plan(n)
        if n > len(allowed):
            assert cpus is None
        else:
            assert len(cpus) == n == len(set(cpus)) and set(cpus) <= allowed


def test_pinned_holds_the_calling_thread_and_restores_its_cpus_even_on_errors():
    before = os.sched_getaffinity(0)
    cpu = max(before)
    with affinity.pinned(cpu):
        assert os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(KeyError):
        with affinity.pinned(cpu):
            raise KeyError("inside")
    assert os.sched_getaffinity(0) == before
    with affinity.pinned(None):
        assert os.sched_getaffinity(0) == before


def test_the_executor_pins_its_worker_and_the_caller_to_different_cpus():
    # The CI machine has 2 CPUs: there both threads are pinned, the caller only inside pinned().
    executor = Executor(threads=2)
    if len(os.sched_getaffinity(0)) < 2:
        assert executor._cpus is None
        pytest.skip("one CPU: nothing to pin apart (checked: the Executor pins nothing)")
    seen = {}

    def record(name):
        seen[name] = (os.sched_getaffinity(0), threading.current_thread().name)

    before = os.sched_getaffinity(0)
    worker = executor._workers[0]
    worker.submit(record, "worker")
    worker.wait()
    with executor.pinned():
        record("caller")
    assert os.sched_getaffinity(0) == before
    assert seen["worker"] == ({executor._cpus[1]}, "llama2-scratch-worker")
    assert seen["caller"][0] == {executor._cpus[0]} and executor._cpus[0] != executor._cpus[1]


@pytest.mark.skipif(not blas.controllable(), reason="NumPy is not built on OpenBLAS here: nothing to set")
def test_a_pass_is_pinned_with_blas_on_one_thread_except_a_float32_prompt():
    # One token and a compressed model's prompt run on our threads; a float32 prompt on BLAS's.
    plain, compressed = Executor(threads=2), Executor(threads=2, split_prompts=True)
    if plain._cpus is None:
        pytest.skip("one CPU: nothing to pin apart")
    before, blas_before = os.sched_getaffinity(0), blas.threads()
    blas._CONTROLS[1](2)                    # a count that single_threaded visibly changes
    try:
        for executor, n_tokens in ((plain, 1), (compressed, 1), (compressed, 5)):
            with executor.running(n_tokens):
                assert os.sched_getaffinity(0) == {executor._cpus[0]} and blas.threads() == 1
            assert os.sched_getaffinity(0) == before and blas.threads() == 2
        with plain.running(5):
            assert os.sched_getaffinity(0) == before and blas.threads() == 2
    finally:
        blas._CONTROLS[1](blas_before)
