"""Which CPU each of fast.py's threads runs on during a forward pass: `plan`, `pin`, `pinned`.

Why: Linear (fast.py) shares a product between the calling thread and its helper threads, which
sleep between products. After the process had been idle for a while, Linux woke the helper onto
the CPU of the thread that woke it, and the two then took turns on one core until the load
balancer parted them. Seed config, Q4_0, 255-token prompt, 2 threads, 10 runs each way in one
process: 42 ms a pass run back to back, 60 ms with a 0.3 s pause before each, its products as
slow as on one thread (41.8 ms of products against 38 one-threaded). With each thread held to a
CPU of its own, 41 ms either way. Holding only the helper was not enough (56 ms after a pause):
the calling thread was then woken onto the helper's CPU.

How: os.sched_setaffinity on the calling thread (Linux applies it to that thread alone). Helpers
are held to theirs for good; the calling thread only for the pass, its own CPU set restored
after. The CPUs are the first of those the process may run on, so `taskset -c 2,3 llama2-scratch
generate ...` chooses them. Where affinity cannot be set (macOS, Windows) or the process may run
on fewer CPUs than there are threads, nothing is pinned: results are the same either way, only
the speed differs.

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
