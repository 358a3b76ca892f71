"""How many threads NumPy's BLAS may use, set for a while: `with single_threaded(): ...`.

Why: OpenBLAS (what NumPy's wheels bundle) runs a product on all its threads once it is large
enough, and its threads spin for a while after each call, waiting for the next. A one-token step
is a few hundred small products (a compressed matrix is B batched matrix-vector products per chunk
of rows, blockwise.py), many of them just past that size, and fast.py's own threads (Linear) share
the largest products out by rows: OpenBLAS's spinning threads then take the cores those threads
need. Measured on the seed config with 2 cores (OPENBLAS_NUM_THREADS=2 against 1, in one
process, models alternating): Q8_0 decode 225 -> 261 tok/s, Q6_K 187 -> 259, Q2_K 174 -> 238.
So fast.py runs one-token steps with BLAS on one thread, and splits a prompt's compressed products
between its own threads, each calling a one-thread BLAS.

How: OpenBLAS's own `openblas_set_num_threads`, called through ctypes on the copy NumPy loaded
(found in /proc/self/maps on Linux, else beside NumPy in numpy.libs or numpy/.dylibs). Its symbol
names carry a prefix and suffix in some builds (scipy-openblas64: scipy_openblas_set_num_threads64_);
each known spelling is tried. Where there is no OpenBLAS (NumPy built on MKL, Accelerate or its
own fallback) `single_threaded` changes nothing: results are the same either way, only the speed
differs. A call costs ~0.2 us here.

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
