"""How many threads NumPy's BLAS may use, set for a while: `with single_threaded(): ...`.

Why: OpenBLAS runs a large enough product on all its threads, which then spin for a while after
each call. A one-token step is a few hundred small products, and the executor's own threads
(executor.py) need those cores, so the executor runs its passes with BLAS on one thread
(docs/benchmarks.md).

How: OpenBLAS's `openblas_set_num_threads`, called through ctypes on the copy NumPy loaded (found
in /proc/self/maps on Linux, else beside NumPy); each known spelling of the symbol is tried.
Without an OpenBLAS (MKL, Accelerate) `single_threaded` changes nothing: only the speed differs.

Runtime (reference/runtime/__init__.py): no maths here.
"""

import contextlib
import ctypes
import glob
import os
import threading

import numpy as np

# (get, set) symbol pairs, as the OpenBLAS builds NumPy ships or links name them.
_SYMBOLS = [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
            ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
            ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
            ("openblas_get_num_threads", "openblas_set_num_threads")]


def _loaded_openblas():
    """Paths of the OpenBLAS libraries this process has loaded (NumPy's first), best guess."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            paths = [line.split(maxsplit=5)[5].strip() for line in maps
                     if "openblas" in line.lower() and len(line.split(maxsplit=5)) == 6]
    except OSError:
        pass
    numpy_dir = os.path.dirname(np.__file__)
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*"):
        paths += glob.glob(os.path.join(numpy_dir, pattern))
    return list(dict.fromkeys(paths))


def _find_controls():
    """(get, set) ctypes functions of NumPy's OpenBLAS, or None."""
    for path in _loaded_openblas():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _SYMBOLS:
            get, set_ = getattr(library, get_name, None), getattr(library, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None


_CONTROLS = _find_controls()
_LOCK = threading.Lock()
_depth = 0          # nested single_threaded() blocks now open (the setting is process-wide)
_saved = None       # the thread count to restore when the outermost one ends


def controllable():
    """True when BLAS's thread count can be set (an OpenBLAS was found)."""
    return _CONTROLS is not None


def threads():
    """BLAS's current thread count, or None when it cannot be read."""
    return None if _CONTROLS is None else _CONTROLS[0]()


@contextlib.contextmanager
def single_threaded():
    """BLAS on one thread inside the block, its previous setting restored after (blocks nest)."""
    global _depth, _saved
    if _CONTROLS is None:
        yield
        return
    get, set_ = _CONTROLS
    with _LOCK:
        if _depth == 0:
            _saved = get()
            if _saved != 1:
                set_(1)
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0 and _saved != 1:
                set_(_saved)
