"""Helper processes for one-token products: the hand-off that Python threads cannot make cheap.

Why: decode streams every weight once a token, and two cores stream more than one, but a
one-token product at 288/6 takes 7-70 us while waking a Python thread and hearing back from it
costs 42-47 us on this VM (docs/benchmarks.md), so threads could only share the classifier. A
process has an interpreter of its own: it can spin on a flag in shared memory while a pass runs
and answer in about a microsecond.

How: `Helper` forks once the model's matrices exist, so the child holds the same matrices at the
same addresses (copy-on-write pages that nobody writes). For each product the caller writes x and
a command (the matrix's number in `matrices`, a row range) into a MAP_SHARED block, multiplies
its own rows, then waits for the helper's rows, which the helper writes into the same block. Out
of a pass (`active` False) the helper spins for IDLE_SPIN_SECONDS more, then sleeps on a pipe
until the next pass wakes it. It dies with its parent (PR_SET_PDEATHSIG) and when closed.
Linux only (`available`): fork elsewhere is unsafe with the system's BLAS.

Runtime (reference/runtime/__init__.py): no maths here; the products are blockwise.product.
"""

import ctypes
import mmap
import os
import signal
import sys
import time
import warnings
import weakref

import numpy as np

from reference.runtime import affinity, blas
from reference.runtime.blockwise import product

# How long a helper keeps spinning after a pass: longer than the gap between two decode steps
# (sampling and Python, ~50 us), far shorter than a human's pause.
IDLE_SPIN_SECONDS = 0.002
# The control block: int64 fields, then x (float32, the widest row) and out (the most rows).
GO, DONE, MATRIX, START, STOP, COLS, STATE, FAILED = range(8)
IDLE, ACTIVE, EXIT = 0, 1, 2
_HEADER_BYTES = 8 * 8
_PR_SET_PDEATHSIG = 1


class HelperDied(RuntimeError):
    """A helper process is gone (killed, out of memory): its rows were not computed."""


def available():
    """Whether helpers can run here: Linux, where fork is safe beside OpenBLAS's threads."""
    return sys.platform == "linux" and hasattr(os, "fork")


class Helper:
    """One helper process multiplying rows of `matrices` for one-token products, pinned to `cpu`
    (None: not pinned). `run` hands it rows, `collect` waits for them; `close` ends it."""

    def __init__(self, matrices, cpu=None):
        self.matrices = list(matrices)
        max_cols = max(m.shape[1] for m in self.matrices)
        max_rows = max(m.shape[0] for m in self.matrices)
        self._block = mmap.mmap(-1, _HEADER_BYTES + 4 * (max_cols + max_rows),
                                flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self._ctl = np.frombuffer(self._block, dtype=np.int64, count=8)
        self._x = np.frombuffer(self._block, dtype=np.float32, count=max_cols, offset=_HEADER_BYTES)
        self._out = np.frombuffer(self._block, dtype=np.float32, count=max_rows,
                                  offset=_HEADER_BYTES + 4 * max_cols).reshape(1, max_rows)
        self._seq = 0
        wake_read, self._wake = os.pipe()
        parent = os.getpid()
        with warnings.catch_warnings():
            # Python 3.12+ warns of fork beside threads (ours, OpenBLAS's): the child runs only
            # NumPy products, and OpenBLAS and glibc's malloc reset their locks at fork.
            warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
            self.pid = os.fork()
        if self.pid == 0:                                                     # the helper
            os.close(self._wake)
            _serve(self, wake_read, cpu, parent)
        os.close(wake_read)
        os.set_blocking(self._wake, False)
        self._finalizer = weakref.finalize(self, _stop, self._ctl, self._wake, self.pid)

    def activate(self, active):
        """A pass begins (True: spin, ready for products) or ends (False: sleep after a while)."""
        self._ctl[STATE] = ACTIVE if active else IDLE
        if active:
            try:
                os.write(self._wake, b"w")
            except BlockingIOError:     # the pipe is full of wake-ups the helper has yet to read
                pass
            except BrokenPipeError:
                raise self._gone("between passes") from None

    def run(self, index, x, start, stop):
        """Start rows start..stop-1 of matrices[index] times x (1, cols) in the helper."""
        cols = x.shape[1]
        self._x[:cols] = x[0]
        ctl = self._ctl
        ctl[MATRIX], ctl[START], ctl[STOP], ctl[COLS] = index, start, stop, cols
        self._seq += 1
        ctl[GO] = self._seq                 # written last: the helper reads the rest after it

    def collect(self, out, start, stop):
        """Wait for the rows started by `run` and copy them into out[:, start:stop]."""
        ctl, seq, spins = self._ctl, self._seq, 0
        while ctl[DONE] != seq:
            spins += 1
            if spins & 0xFFFF == 0 and os.waitpid(self.pid, os.WNOHANG) != (0, 0):
                raise self._gone("during a product", reaped=True)
        if ctl[FAILED]:
            ctl[FAILED] = 0
            raise RuntimeError(f"helper process {self.pid}: rows {start}..{stop - 1} failed there "
                               "(with one thread, e.g. --threads 1, the error shows here)")
        out[:, start:stop] = self._out[:, start:stop]

    def close(self):
        self._finalizer()

    def _gone(self, when, reaped=False):
        """The HelperDied to raise for a helper found dead, reaped and its pipe closed."""
        self._finalizer.detach()
        os.close(self._wake)
        if not reaped:
            os.waitpid(self.pid, 0)
        return HelperDied(f"helper process {self.pid} died {when}")


def _stop(ctl, wake, pid):
    """Tell the helper to exit, wake it and reap it."""
    ctl[STATE] = EXIT
    try:
        os.write(wake, b"x")
    except OSError:
        pass
    os.close(wake)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _serve(helper, wake_read, cpu, parent):
    """The helper's loop: run each command, spin while a pass is on, else sleep on the pipe."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:          # the parent died before prctl took effect
            os._exit(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the parent's to handle
        # No copy of the parent's files or pipes: a reader waiting for the end of one would
        # otherwise wait for this process too.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, wake_read)
        os.closerange(wake_read + 1, os.sysconf("SC_OPEN_MAX"))
        if cpu is not None:
            affinity.pin(cpu)
        ctl, matrices, x, out = helper._ctl, helper.matrices, helper._x, helper._out
        last, idle_since = 0, None
        with blas.single_threaded():
            while True:
                seq = ctl[GO]
                if seq != last:
                    last = seq
                    try:
                        product(x[None, :ctl[COLS]], matrices[ctl[MATRIX]], out, int(ctl[START]), int(ctl[STOP]))
                    except BaseException:
                        ctl[FAILED] = 1
                    ctl[DONE] = seq
                    idle_since = None
                elif ctl[STATE] == ACTIVE:
                    idle_since = None
                elif ctl[STATE] == EXIT:
                    break
                else:
                    now = time.monotonic()
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since > IDLE_SPIN_SECONDS:
                        if not os.read(wake_read, 4096):    # every wake-up so far; b"": no parent
                            break
                        idle_since = None
    finally:
        os._exit(0)
