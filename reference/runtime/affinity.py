"""Which CPU each of the executor's threads runs on during a forward pass: `plan`, `pin`, `pinned`.

Why: after an idle spell Linux woke a worker onto the CPU of the thread that woke it, and the two
took turns on one core; pinning only the worker was not enough (docs/benchmarks.md). How:
os.sched_setaffinity on the calling thread (Linux applies it to that thread alone). Workers are
held for good, the calling thread only for the pass. The CPUs are the first the process may run
on, so `taskset -c 2,3 llama2-scratch generate ...` chooses them. Where affinity cannot be set
or there are fewer CPUs than threads, nothing is pinned: only the speed differs.

Runtime (reference/runtime/__init__.py): no maths here.
"""

import contextlib
import os


def plan(n_threads):
    """n_threads distinct CPUs of those this thread may run on, the first for the calling thread;
    None where there is nothing to pin (one thread, no affinity control, too few CPUs)."""
    if n_threads < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[:n_threads] if len(allowed) >= n_threads else None


def pin(cpu):
    """Hold the calling thread to `cpu` from now on; True if that took (it fails only where the
    CPU has been taken from the process since `plan`)."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    return True


@contextlib.contextmanager
def pinned(cpu):
    """The calling thread held to `cpu` for the block, and its own CPU set restored after;
    cpu None changes nothing."""
    saved = None if cpu is None else os.sched_getaffinity(0)
    if saved is not None and not pin(cpu):
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.sched_setaffinity(0, saved)
