"""Timing shared by the bench/ scripts (run as `python bench/NAME.py`, so this folder is on sys.path)."""

import statistics
import time


def median_seconds(fn, runs, before=None):
    """Median wall time of `runs` calls of fn(); before(), if given, runs untimed ahead of each."""
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
