"""Every benchmark in one command: each figure a ratio against a peer measured in the same run.

    python bench/run.py [--quick] [--threads 2] [--skip train ...] [--tinyllama]

1. inference (bench_inference.py): NumPy fast path vs llama.cpp on the same GGUF and thread count,
   decode and prefill tok/s at f32 and q8_0 for dim 288/6 layers, 512/8, 768/12; decode at 1 vs N
   BLAS threads; peak RSS of `llama2-scratch generate` vs the model file's size;
2. the other benchmarks, each run as its own script (their output is printed as they print it):
   bench_gguf.py (GGUF open: ours vs gguf-py), bench_quant.py (Q8_0 quantize: ours vs gguf-py),
   bench_tokenizer.py (encode: ours vs sentencepiece), bench_train.py (training tok/s and MFU vs a
   llama2.c-style baseline), bench_fast_variants.py (each fast-path choice vs the same model
   without it), bench_quant_types.py (every type llama.cpp quantizes to: decode vs our Q8_0,
   fast vs plain prefill, vs llama.cpp; seed config and the nearest shape every type fits);
3. with --tinyllama, bench_quant_types.py at TinyLlama-1.1B's shape (f32, Q8_0, Q4_K_M; peak RSS).
--quick shortens every part (fewer runs, dim 288 only, 64 decode tokens); numbers are then rougher.
Exits 1 if any part failed (after running the others).
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_inference  # noqa: E402

# script -> (arguments for a full run, arguments for --quick)
SCRIPTS = {
    "gguf": ("bench_gguf.py", [], ["--repeat", "3"]),
    "quant": ("bench_quant.py", [], ["--repeats", "3"]),
    "tokenizer": ("bench_tokenizer.py", [], ["--runs", "2"]),
    "train": ("bench_train.py", [], ["--steps", "2"]),
    "variants": ("bench_fast_variants.py", ["--runs", "5"], ["--runs", "2", "--sizes", "288"]),
    "quant-types": ("bench_quant_types.py", [], ["--runs", "1", "--shape", "seed", "--types", "F32", "Q8_0",
                                                 "Q4_K_M", "Q6_K"]),
}
# The 1.1B shape: only with --tinyllama (a 4.4 GB f32 file and ~10 GB of memory).
TINYLLAMA = ("bench_quant_types.py", ["--shape", "tinyllama", "--rss"], ["--shape", "tinyllama", "--runs", "1"])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def section(title):
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)), flush=True)


def run_script(name, quick, threads):
    """Run one bench script in its own process with the thread pools pinned; True if it passed."""
    script, full_args, quick_args = TINYLLAMA if name == "tinyllama" else SCRIPTS[name]
    cmd = [sys.executable, str(HERE / script), *(quick_args if quick else full_args)]
    section(f"{script} {' '.join(quick_args if quick else full_args)}".strip())
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=HERE.parent, env=bench_inference.thread_env(threads))
    print(f"[{script}: {time.perf_counter() - start:.0f} s, exit {result.returncode}]", flush=True)
    return result.returncode == 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, dim 288 only")
    parser.add_argument("--threads", type=int, default=2, help="threads for every part (default 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["inference", *SCRIPTS],
                        help="parts to leave out")
    parser.add_argument("--tinyllama", action="store_true",
                        help="also the TinyLlama-1.1B shape: f32, Q8_0, Q4_K_M vs llama.cpp, peak RSS "
                             "(bench_quant_types.py; ~6.5 GB of disk, ~10 GB of memory, ~15 minutes)")
    args = parser.parse_args(argv)

    print(f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"threads pinned to {args.threads} (OPENBLAS/OMP/MKL_NUM_THREADS in every child)")
    failed = []
    if "inference" not in args.skip:
        section("inference: NumPy fast path vs llama.cpp (bench_inference.py)")
        inference_args = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        try:
            bench_inference.run(bench_inference.parse_args(inference_args))
        except Exception as exc:       # report and go on with the other parts
            print(f"inference benchmark failed: {type(exc).__name__}: {exc}")
            failed.append("inference")
    for name in [*SCRIPTS, *(["tinyllama"] if args.tinyllama else [])]:
        if name not in args.skip and not run_script(name, args.quick, args.threads):
            failed.append(name)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
