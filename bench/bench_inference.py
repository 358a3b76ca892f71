"""Inference speed and memory: our NumPy fast path against llama.cpp on the same GGUF, same threads.

    python bench/bench_inference.py [--quick] [--threads 2] [--sizes 288 512 768] [--runs 5]

For each size (dim 288/6 layers, 512/8, 768/12; vocab 32000 from Llama 2's tokenizer.model;
random weights, which do not change the speed) and each type (f32, q8_0), one GGUF is written
and two worker processes load it: ours (reference.runtime.fast.FastLlama, NumPy) and llama.cpp
(llama-cpp-python's Llama). The parent asks them in turn, A B A B ..., so drift in the machine's
load hits both alike:
- decode: after one BOS token, 256 greedy steps (forward one token, argmax), tok/s;
- prefill: a 255-token prompt from position 0 (last position's logits only, as llama.cpp),
  tok/s.
Each figure is the median of --runs; the ratio is ours / llama.cpp (> 1: we are faster).
Each request waits SETTLE_SECONDS first, so the last one's spinning threads are asleep.
Threads: each worker's BLAS/OpenMP pools are pinned by OPENBLAS/OMP/MKL_NUM_THREADS before it
imports NumPy, llama.cpp gets n_threads = n_threads_batch = --threads.
Peak memory: `llama2-scratch generate` (256 greedy tokens) run as a subprocess per GGUF from a
small launcher; its ru_maxrss (the launcher's RUSAGE_CHILDREN) against the file's size.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_data import data_file  # noqa: E402
from tests.support.weights import fan_in_weights  # noqa: E402

# (dim, n_layers): heads of 48 (288/6), 64 (512/8) and 64 (768/12) wide.
SIZES = {288: (6, 6), 512: (8, 8), 768: (12, 12)}
DTYPES = ("f32", "q8_0")
MAX_SEQ_LEN = 512           # room for 1 + 256 decoded tokens; llama.cpp's n_ctx is the same
DECODE_TOKENS = 256
PROMPT_TOKENS = 255
BOS = 1
SETTLE_SECONDS = 0.3


# ------------------------------------------------------------------------------ model files

def model_args(dim):
    n_layers, n_heads = SIZES[dim]
    return {"dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_heads,
            "vocab_size": 32000, "hidden_dim": None, "max_seq_len": MAX_SEQ_LEN}


def write_models(folder, dims, dtypes, tokenizer_model):
    """{(dim, dtype): path} of GGUFs with random N(0, 1/fan_in) weights and Llama 2's vocabulary."""
    from formats import gguf, mapping, spm
    from formats.spec import ModelArgs

    vocab = spm.read(tokenizer_model).vocab
    paths = {}
    for dim in dims:
        args = ModelArgs(**{k: v for k, v in model_args(dim).items() if v is not None})
        weights = fan_in_weights(args, seed=dim)
        for dtype in dtypes:
            path = Path(folder) / f"d{dim}_{dtype}.gguf"
            gguf.write(mapping.to_gguf(weights, args, vocab, dtype=dtype), path)
            paths[dim, dtype] = path
        del weights
    return paths


# ------------------------------------------------------------------------------ workers

def numpy_decode_seconds(model, n):
    """Seconds for n greedy one-token steps of a reference model after BOS (BOS not timed)."""
    logits = model.forward([BOS])
    start = time.perf_counter()
    for pos in range(1, n + 1):
        logits = model.forward([int(np.argmax(logits))], start_pos=pos)
    return time.perf_counter() - start


def numpy_prefill_seconds(model, tokens):
    """Seconds for one forward pass over a prompt from position 0."""
    start = time.perf_counter()
    model.forward(tokens)
    return time.perf_counter() - start


class NumpyRunner:
    fast = True

    def __init__(self, path, threads):
        from models import load_model
        self.model = load_model(path, fast=self.fast, threads=threads)

    def decode(self, n):
        return numpy_decode_seconds(self.model, n)

    def prefill(self, tokens):
        return numpy_prefill_seconds(self.model, tokens)


class LlamaCppRunner:
    def __init__(self, path, threads):
        import llama_cpp
        self.llm = llama_cpp.Llama(str(path), n_ctx=MAX_SEQ_LEN, n_batch=MAX_SEQ_LEN, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False)

    def decode(self, n):
        llm = self.llm
        llm.reset()
        llm.eval([BOS])
        start = time.perf_counter()
        for _ in range(n):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return time.perf_counter() - start

    def prefill(self, tokens):
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(list(tokens))
        return time.perf_counter() - start


class PlainRunner(NumpyRunner):
    """reference/model.py's Llama: matrices dequantized to float32 at load."""
    fast = False


RUNNERS = {"numpy": NumpyRunner, "numpy-plain": PlainRunner, "llama.cpp": LlamaCppRunner}


def worker(impl, path, threads):
    """Serve timing requests on stdin/stdout, one JSON object per line."""
    runner = RUNNERS[impl](path, threads)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "decode":
            seconds = runner.decode(request["n"])
        elif request["op"] == "prefill":
            seconds = runner.prefill(np.asarray(request["tokens"]))
        else:
            return
        print(json.dumps({"seconds": seconds}), flush=True)


def thread_env(threads):
    """The environment that pins a child's BLAS and OpenMP pools to `threads`."""
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


class Worker:
    def __init__(self, impl, path, threads):
        self.impl = impl
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", impl, "--model", str(path), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=thread_env(threads), cwd=ROOT)
        self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.impl} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, **request):
        # Both sides' idle threads spin for a while after a call (OpenBLAS's for up to ~0.1 s)
        # before they sleep: a pause first keeps them off the cores the next timing needs.
        time.sleep(SETTLE_SECONDS)
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def compare(path, threads, runs, decode_tokens, prompt, impls, ops=("decode", "prefill"), ops_of=None):
    """{impl: {op: tok/s}} for ops "decode" and "prefill", with the runs of all impls interleaved;
    `ops_of` may give some impls fewer ops ({impl: ops})."""
    workers = [Worker(impl, path, threads) for impl in impls]
    ops_of = {w.impl: (ops_of or {}).get(w.impl, ops) for w in workers}
    times = {w.impl: {op: [] for op in ops_of[w.impl]} for w in workers}
    requests = {"decode": ({"n": 8}, {"n": decode_tokens}, decode_tokens),
                "prefill": ({"tokens": prompt}, {"tokens": prompt}, len(prompt))}
    try:
        for w in workers:                                  # warm-up: caches, page faults, JIT-free
            for op in ops_of[w.impl]:
                w.ask(op=op, **requests[op][0])
        for _ in range(runs):
            for w in workers:
                for op in ops_of[w.impl]:
                    _, request, n_tokens = requests[op]
                    times[w.impl][op].append(n_tokens / w.ask(op=op, **request))
    finally:
        for w in workers:
            w.close()
    return {impl: {k: statistics.median(v) for k, v in t.items()} for impl, t in times.items()}


# ------------------------------------------------------------------------------ memory

# Runs a command and prints its peak RSS. ru_maxrss counts a process's whole life, including the
# moments after fork and before exec when it is still a copy of its parent: a child forked from
# this (large) process would report our size. Forked from this small launcher instead, it cannot.
_RSS_LAUNCHER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
                 "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss(cmd, env, what):
    """Peak resident memory (bytes) of the command `cmd` (a list), run from the launcher above;
    RuntimeError naming `what` if it fails."""
    result = subprocess.run([sys.executable, "-c", _RSS_LAUNCHER, *cmd], capture_output=True, text=True,
                            cwd=ROOT, env=env)
    returncode, max_rss_kb = map(int, result.stdout.split())
    if returncode:
        raise RuntimeError(f"{what} failed ({returncode}): {result.stderr[-500:]}")
    return max_rss_kb * 1024       # Linux reports kilobytes


def generate_peak_rss(path, max_new_tokens=DECODE_TOKENS, threads=None):
    """Peak resident memory (bytes) of `llama2-scratch generate PATH` run greedily."""
    cmd = [sys.executable, "-m", "llama2_scratch", "generate", str(path), "--temperature", "0",
           "--max-new-tokens", str(max_new_tokens), "--prompt", "Once upon a time"]
    return peak_rss(cmd, thread_env(threads) if threads else None, "generate")


# ------------------------------------------------------------------------------ main

def blas_description():
    """Which BLAS NumPy runs, from threadpoolctl when it is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS: threadpoolctl not installed (pip install threadpoolctl to see the kernel)"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture')} "
                     f"({i.get('threading_layer')}, {i.get('num_threads')} threads by default)"
                     for i in threadpool_info() if i.get("user_api") == "blas")


def have_llama_cpp():
    try:
        import llama_cpp
        return llama_cpp.__version__
    except ImportError:
        return None


def isa_description():
    """The vector instructions each side uses: NumPy's dispatched SIMD (NPY_DISABLE_CPU_FEATURES
    turns some off) and the CPU features llama.cpp was built for (its system info). An AVX2
    machine is mimicked on an AVX-512 one only where neither side says AVX512 (docs/benchmarks.md)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        ours = " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f)) or "baseline only"
    except ImportError:
        ours = "unknown"
    try:
        import llama_cpp
        theirs = " ".join(part.replace(" = 1", "").strip() for part in
                          llama_cpp.llama_print_system_info().decode().partition(":")[2].split("|")
                          if part.strip().endswith("= 1"))
    except ImportError:
        theirs = "not installed"
    return f"NumPy SIMD: {ours}; llama.cpp built for: {theirs}"


def run(args, out=print):
    """Run the comparison and print the table; returns the rows as dicts."""
    dims = args.sizes
    llama_version = have_llama_cpp()
    impls = ["numpy", "llama.cpp"] if llama_version else ["numpy"]
    out(f"threads: {args.threads} for both (OPENBLAS/OMP/MKL_NUM_THREADS={args.threads}; llama.cpp "
        f"n_threads=n_threads_batch={args.threads}); numpy {np.__version__}; "
        f"llama-cpp-python {llama_version or 'NOT INSTALLED: NumPy only'}")
    out(f"numpy {blas_description()}")
    out(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}")
    out(isa_description())
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT_TOKENS).tolist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_models(tmp, dims, DTYPES, args.tokenizer or data_file("llama2/tokenizer.model"))
        out(f"decode: {args.decode_tokens} greedy tokens after BOS; prefill: {PROMPT_TOKENS}-token "
            f"prompt; median of {args.runs} runs, interleaved")
        header = (f"{'model':16} {'MB':>6} | {'decode ours':>11} {'llama.cpp':>9} {'ratio':>6} | "
                  f"{'prefill ours':>12} {'llama.cpp':>9} {'ratio':>6}")
        out(header)
        out("-" * len(header))
        for dim in dims:
            for dtype in DTYPES:
                path = paths[dim, dtype]
                r = compare(path, args.threads, args.runs, args.decode_tokens, prompt, impls)
                ours, theirs = r["numpy"], r.get("llama.cpp")
                row = {"dim": dim, "n_layers": SIZES[dim][0], "dtype": dtype,
                       "mb": path.stat().st_size / 1e6, "ours": ours, "llama.cpp": theirs}
                rows.append(row)

                def cells(key):
                    if theirs is None:
                        return f"{ours[key]:>11.1f} {'-':>9} {'-':>6}"
                    return f"{ours[key]:>11.1f} {theirs[key]:>9.1f} {ours[key] / theirs[key]:>5.2f}x"
                name = f"{dim}/{SIZES[dim][0]}L {dtype}"
                out(f"{name:16} {row['mb']:>6.1f} | {cells('decode')} | {cells('prefill')}")
        # Decode with one BLAS thread: whether the second core pays for matrix-vector work.
        out(f"ours, decode tok/s at 1 vs {args.threads} BLAS threads (f32; median of {args.runs}):")
        for dim in dims:
            one = compare(paths[dim, "f32"], 1, args.runs, args.decode_tokens, prompt, ["numpy"])["numpy"]
            many = next(r["ours"] for r in rows if r["dim"] == dim and r["dtype"] == "f32")
            out(f"  {dim}/{SIZES[dim][0]}L: 1 thread {one['decode']:.1f}, {args.threads} threads "
                f"{many['decode']:.1f} ({many['decode'] / one['decode']:.2f}x)")
        out(f"peak RSS of `llama2-scratch generate` ({args.decode_tokens} greedy tokens), "
            f"{args.threads} threads:")
        out(f"{'model':16} {'file MB':>8} {'RSS MB':>8} {'RSS/file':>9} {'q8_0/f32 RSS':>13}")
        for dim in dims:
            rss = {}
            for dtype in DTYPES:
                path = paths[dim, dtype]
                rss[dtype] = generate_peak_rss(path, args.decode_tokens, args.threads)
                size = path.stat().st_size
                extra = f"{rss[dtype] / rss['f32']:>12.2f}x" if dtype != "f32" else f"{'':>13}"
                out(f"{f'{dim}/{SIZES[dim][0]}L {dtype}':16} {size / 1e6:>8.1f} {rss[dtype] / 1e6:>8.1f} "
                    f"{rss[dtype] / size:>8.2f}x {extra}")
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs, 64 decode tokens, dim 288 only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=DECODE_TOKENS)
    parser.add_argument("--tokenizer", type=Path, help="default: Llama 2's tokenizer.model (bench_data.py)")
    parser.add_argument("--worker", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.decode_tokens = min(args.runs, 2), min(args.decode_tokens, 64)
        args.sizes = [288] if args.sizes == sorted(SIZES) else args.sizes
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args.model, args.threads)
    else:
        run(args)


if __name__ == "__main__":
    main()
