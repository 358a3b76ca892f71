"""Who runs the fast path's work: threads, pinning, BLAS threading and the row split.

FastLlama hands every product (`executor(x, w, out)`) and a prompt's attention and SwiGLU
(`executor.share`) to one `Executor`. With threads > 1 it splits large work into contiguous row
ranges (`ranges`), one per thread: the calling thread takes the first and `Worker` threads the
rest (NumPy releases the GIL inside its loops). During a pass each thread keeps to a CPU of its
own (affinity.py) and BLAS runs on one thread (blas.py), since OpenBLAS's spinning threads took
the cores ours needed. A hand-off to a thread costs ~20-45 us on this VM, so only large products
go to threads. A one-token pass (decode) hands its products to helper processes instead where
they can run (helpers.py: ~1 us a hand-off), so every product of SPLIT_HELPED weights or more is
shared; the thresholds' figures are in docs/benchmarks.md.

Runtime (reference/runtime/__init__.py): no maths here; the kernels are in blockwise.py.
"""

import contextlib
import threading

import numpy as np

from reference.runtime import affinity, blas, helpers
from reference.runtime.blockwise import product


class Executor:
    """Runs products x @ w.T and shared work on `threads` threads.

    split_prompts: whether a prompt's products (and its attention and SwiGLU, see
    `shares_prompt`) are split by us. Only compressed models do this; float32 prompts are left
    to BLAS's own threads, which were faster there.
    """
    SPLIT_ELEMENTS = 1 << 22        # one float32 token (memory-bound): the seed classifier and up
    SPLIT_QUANTIZED = 1 << 19       # one compressed token (compute-bound: the int8 cast)
    SPLIT_PROMPT = 1 << 22          # a prompt's multiply-adds, compressed models only
    SPLIT_HELPED = 1 << 14          # one token, helper processes: a ~1 us hand-off

    def __init__(self, threads=1, split_prompts=False, matrices=()):
        self.threads = max(1, int(threads))
        self.split_prompts = bool(split_prompts)
        # [calling thread's CPU, each worker's], or None when nothing is pinned (affinity.plan).
        self._cpus = affinity.plan(self.threads)
        self._workers = [Worker(self._cpu(i + 1)) for i in range(self.threads - 1)]
        # One-token products of these matrices go to helper processes (helpers.py), started at
        # the first one-token pass; None until then, [] where they cannot run.
        self._matrices = list(matrices)
        self._index = {id(m): i for i, m in enumerate(self._matrices)}
        self._helpers = None if self.threads > 1 and self._matrices and helpers.available() else []
        self._helping = False       # inside a one-token pass with helpers awake

    def _cpu(self, i):
        return None if self._cpus is None else self._cpus[i]

    def running(self, n_tokens):
        """The context for a pass over `n_tokens`: BLAS on one thread and the caller pinned where
        we split the work, else (a float32 prompt) nothing changed, for BLAS's own threads."""
        if n_tokens > 1 and not self.split_prompts:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(blas.single_threaded())
        stack.enter_context(self.pinned())
        if n_tokens == 1 and self._helpers != []:
            stack.enter_context(self._helpers_awake())
        return stack

    @contextlib.contextmanager
    def _helpers_awake(self):
        """The helper processes spinning for the block (started the first time)."""
        if self._helpers is None:
            self._helpers = self._start_helpers()
        try:
            for helper in self._helpers:
                helper.activate(True)
            self._helping = bool(self._helpers)     # none started: the threads split as before
            yield
        except helpers.HelperDied:
            # This pass fails; the next ones run on the threads.
            for helper in self._helpers:
                helper.close()
            self._helpers = []
            raise
        finally:
            self._helping = False
            for helper in self._helpers:
                helper.activate(False)

    def pinned(self):
        """The calling thread held to a CPU apart from the workers' for the block: after an idle
        spell Linux woke both onto one core."""
        return affinity.pinned(None if self._cpus is None else self._cpus[0])

    def ranges(self, n):
        """0..n in `threads` contiguous (start, stop) ranges, the first for the calling thread."""
        bounds = [n * i // self.threads for i in range(self.threads + 1)]
        return list(zip(bounds, bounds[1:]))

    def __call__(self, x, w, out=None):
        """(T, in) @ (out, in).T -> (T, out), written into `out` when given."""
        if out is None:
            out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        if self._helping and id(w) in self._index and w.shape[0] * w.shape[1] >= self.SPLIT_HELPED:
            return self._helped(x, w, out)
        if not self._workers or not self._worth_splitting(x.shape[0], w):
            return product(x, w, out)
        self.share(product, [(x, w, out, start, stop) for start, stop in self.ranges(w.shape[0])])
        return out

    def _start_helpers(self):
        """threads-1 helper processes, or [] (the threads do the work) where fork fails: under
        strict overcommit a large process may not be forked."""
        started = []
        try:
            for i in range(self.threads - 1):
                started.append(helpers.Helper(self._matrices, self._cpu(i + 1)))
        except OSError:
            for helper in started:
                helper.close()
            return []
        return started

    def _helped(self, x, w, out):
        """x @ w.T for one token, the first row range here and the others in the helpers."""
        first, *rest = self.ranges(w.shape[0])
        index = self._index[id(w)]
        for helper, (start, stop) in zip(self._helpers, rest):
            helper.run(index, x, start, stop)
        try:
            product(x, w, out, *first)
        finally:
            for helper, (start, stop) in zip(self._helpers, rest):
                helper.collect(out, start, stop)
        return out

    def share(self, function, calls):
        """function(*args) for each args in `calls` (at most `threads` of them), the first on the
        calling thread and the others on the workers, all done when this returns."""
        for worker, args in zip(self._workers, calls[1:]):
            worker.submit(function, *args)
        try:
            function(*calls[0])
        finally:
            for worker in self._workers[:len(calls) - 1]:
                worker.wait()

    def shares_prompt(self, n_tokens):
        """Whether a prompt's attention and SwiGLU are shared out too: only where its products
        are, else the workers would wake for these alone."""
        return n_tokens > 1 and self.split_prompts and self.threads > 1

    def _worth_splitting(self, n_tokens, w):
        n_weights = w.shape[0] * w.shape[1]
        if n_tokens > 1:
            return self.split_prompts and n_tokens * n_weights >= self.SPLIT_PROMPT
        return n_weights >= (self.SPLIT_QUANTIZED if getattr(w, "compressed", False) else self.SPLIT_ELEMENTS)


class Worker:
    """A daemon thread, pinned to `cpu` when given, that runs one call at a time: `submit` hands
    it over, `wait` returns when it is done and re-raises what it raised. Two locks and no queue:
    a ThreadPoolExecutor's per-call Future measured slower (docs/benchmarks.md)."""

    def __init__(self, cpu=None):
        self._cpu = cpu
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._call, self._error = None, None
        threading.Thread(target=self._serve, daemon=True, name="llama2-scratch-worker").start()

    def _serve(self):
        if self._cpu is not None:
            affinity.pin(self._cpu)
        while True:
            self._go.acquire()
            function, args = self._call
            try:
                function(*args)
            except BaseException as exc:      # handed to the caller by wait()
                self._error = exc
            self._done.release()

    def submit(self, function, *args):
        self._call = (function, args)
        self._go.release()

    def wait(self):
        self._done.acquire()
        error, self._error = self._error, None
        if error is not None:
            raise error
