"""reference/runtime/affinity.py: fast.py's threads each held to a CPU of their own during a pass."""

import os
import threading

import pytest

from reference.runtime import affinity
from reference.runtime.fast import Linear

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


def test_linear_pins_its_helper_and_the_caller_to_different_cpus():
    # The CI machine has 2 CPUs: there both threads are pinned, the caller only inside pinned().
    linear = Linear(threads=2)
    if len(os.sched_getaffinity(0)) < 2:
        assert linear._cpus is None
        pytest.skip("one CPU: nothing to pin apart (checked: Linear pins nothing)")
    seen = {}

    def record(name):
        seen[name] = (os.sched_getaffinity(0), threading.current_thread().name)

    before = os.sched_getaffinity(0)
    helper = linear._helpers[0]
    helper.submit(record, "helper")
    helper.wait()
    with linear.pinned():
        record("caller")
    assert os.sched_getaffinity(0) == before
    assert seen["helper"] == ({linear._cpus[1]}, "llama2-scratch-linear")
    assert seen["caller"][0] == {linear._cpus[0]} and linear._cpus[0] != linear._cpus[1]
