"""What each of reference/runtime/fast.py's speed choices is worth: the fast path with and without it.

    python bench/bench_fast_variants.py [--sizes 288 768] [--runs 7]

For each size (bench_inference.py's random-weight GGUFs), two variants of the same model run in
one process, alternating (A B A B ...) so that drift in the machine's memory bandwidth hits both
alike; each figure is the median of --runs:
- weights: f32 decode with the weights read into huge-page memory (reference/runtime/memory.py, what
  `load_model(fast=True)` does) vs used where they lie in the file's map (`mmap=True`);
- threads: decode with FastLlama(threads=2) vs threads=1, for f32 and q8_0 (the Executor's split);
- query blocks: f32 prefill of a 255-token prompt with QUERY_BLOCK = 64 vs one block.
Decode is 128 greedy tokens after BOS. Threads are whatever OPENBLAS_NUM_THREADS says.
"""

import argparse
import functools
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_inference  # noqa: E402
from bench_data import data_file  # noqa: E402
import reference.runtime.fast  # noqa: E402
from models import load_model  # noqa: E402

DECODE_TOKENS = 128
PROMPT_TOKENS = 255


def decode_tok_s(model):
    return DECODE_TOKENS / bench_inference.numpy_decode_seconds(model, DECODE_TOKENS)


def prefill_tok_s(model, prompt, query_block):
    saved, reference.runtime.fast.QUERY_BLOCK = reference.runtime.fast.QUERY_BLOCK, query_block
    try:
        return len(prompt) / bench_inference.numpy_prefill_seconds(model, prompt)
    finally:
        reference.runtime.fast.QUERY_BLOCK = saved


def compare(runs, measure, a, b):
    """Medians of measure(a) and measure(b), called in turn `runs` times after one warm-up each."""
    measure(a), measure(b)
    times = [(measure(a), measure(b)) for _ in range(runs)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", choices=sorted(bench_inference.SIZES), default=[288, 768])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokenizer", type=Path, help="default: Llama 2's tokenizer.model (bench_data.py)")
    args = parser.parse_args(argv)
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT_TOKENS)
    print(f"median of {args.runs} alternating runs; decode {DECODE_TOKENS} tokens, prefill {PROMPT_TOKENS}")
    print(f"{'model':<14}{'variant':<40}{'with':>9}{'without':>9}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as folder:
        paths = bench_inference.write_models(folder, args.sizes, ("f32", "q8_0"),
                                             args.tokenizer or data_file("llama2/tokenizer.model"))
        for dim in args.sizes:
            name = f"{dim}/{bench_inference.SIZES[dim][0]}L"
            f32, q8_0 = paths[dim, "f32"], paths[dim, "q8_0"]
            rows = [
                ("f32 decode: huge-page copy vs file map",
                 *compare(args.runs, decode_tok_s, load_model(f32, fast=True, threads=2),
                          load_model(f32, fast=True, threads=2, mmap=True))),
                ("f32 decode: threads 2 vs 1",
                 *compare(args.runs, decode_tok_s, load_model(f32, fast=True, threads=2),
                          load_model(f32, fast=True, threads=1))),
                ("f32 prefill: query blocks of 64 vs one",
                 *compare(args.runs, functools.partial(prefill_tok_s, load_model(f32, fast=True, threads=2), prompt),
                          64, PROMPT_TOKENS)),
                ("q8_0 decode: threads 2 vs 1",
                 *compare(args.runs, decode_tok_s, load_model(q8_0, fast=True, threads=2),
                          load_model(q8_0, fast=True, threads=1))),
            ]
            for variant, with_it, without in rows:
                print(f"{name:<14}{variant:<40}{with_it:>9.1f}{without:>9.1f}{with_it / without:>7.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
