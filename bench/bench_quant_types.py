"""Every quantized type, decode and prefill: ours (fast and plain) against our Q8_0 and llama.cpp.

    python bench/bench_quant_types.py [--shape seed seed256 tinyllama] [--types Q4_K_M ...]
                                      [--runs 3] [--threads 2] [--rss]

Shapes (random N(0, 1/fan_in) weights written by us with formats.mapping.to_gguf, Llama 2's
32000-piece vocabulary, context 512):
    seed       dim 288 / 6 layers / 6 heads, hidden 768: the seed config. Its rows (288) do not
               divide into the 256-element blocks of the k-quants and i-quants, so llama.cpp
               writes its fallback types there (the table says which types each file holds)
    seed256    dim 256 / 6 layers / 4 heads, hidden 768: the nearest shape where every type is
               what its ftype says
    tinyllama  TinyLlama-1.1B's shape: dim 2048 / 22 layers / 32 heads / 4 kv heads, hidden 5632,
               untied (a 4.4 GB f32 file; needs ~6.5 GB of disk and ~14 GB of memory)
Each f32 file is quantized by llama.cpp (llama_model_quantize, its mixes as a user gets them; an
importance matrix of ones for the ftypes that need one). Per file, three worker processes take
turns (bench_inference.compare): ours (FastLlama), the plain model (reference/model.py, matrices
dequantized at load; prefill only) and llama.cpp, their runs interleaved. Printed per file: decode
tok/s (after BOS), prefill tok/s (a prompt from position 0), each the median of --runs, and
    w/Q8_0, /Q8_0   our decode again, every quantized file's worker alive at once, each run
                    between two runs of Q8_0 (median of max(3, --runs)), and its ratio to the mean
                    of those two Q8_0 runs, the median over the rounds (target >= 0.9)
    fast / plain    our fast prefill against the plain model's (target >= 1)
    vs llama.cpp    ours / llama.cpp, decode and prefill
--rss adds the peak resident memory of `llama2-scratch generate` (ours) and of llama.cpp
decoding as many tokens (llama-cpp-python, the same file), ru_maxrss.
Default: seed and seed256 with every type; tinyllama with f32, Q8_0 and Q4_K_M.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import bench_inference  # noqa: E402
from bench_data import data_file  # noqa: E402
from formats.spec import ModelArgs  # noqa: E402
from tests.support.weights import fan_in_weights  # noqa: E402

SHAPES = {
    "seed": ModelArgs(dim=288, n_layers=6, n_heads=6, hidden_dim=768, vocab_size=32000, max_seq_len=512),
    "seed256": ModelArgs(dim=256, n_layers=6, n_heads=4, hidden_dim=768, vocab_size=32000, max_seq_len=512),
    "tinyllama": ModelArgs(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden_dim=5632, vocab_size=32000,
                           max_seq_len=512, tie_embeddings=False),
}
# llama_ftype names (LLAMA_FTYPE_MOSTLY_<name>) as users download them; F32 is the source file.
FTYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K",
          "IQ4_NL", "IQ4_XS", "IQ3_S", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_M", "IQ1_S", "IQ1_M",
          "TQ1_0", "TQ2_0", "MXFP4_MOE", "F16", "BF16"]
DEFAULT_TYPES = {"seed": ["F32"] + FTYPES, "seed256": ["F32"] + FTYPES, "tinyllama": ["F32", "Q8_0", "Q4_K_M"]}
# (decode tokens, prompt tokens) per shape: the 1.1B shape decodes at a few tokens a second here.
LENGTHS = {"seed": (128, 255), "seed256": (128, 255), "tinyllama": (16, 128)}

# Peak RSS of llama.cpp decoding n tokens greedily (run under bench_inference's launcher).
_LLAMA_CPP_DECODE = ("import sys, numpy as np, llama_cpp; "
                     "llm = llama_cpp.Llama(sys.argv[1], n_ctx=512, n_threads=int(sys.argv[3]), verbose=False); "
                     "llm.eval([1]); "
                     "[llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))]) for _ in range(int(sys.argv[2]))]")


def write_f32(args, path, tokenizer_model):
    """A GGUF of random weights in `args`'s shape (tests/support/weights.fan_in_weights), Llama 2's vocab."""
    from formats import gguf, mapping, spm

    weights = fan_in_weights(args, seed=args.dim)
    gguf.write(mapping.to_gguf(weights, args, spm.read(tokenizer_model).vocab, dtype="f32"), path)


def quantize(f32_path, name, out, threads):
    """llama.cpp's `name` file from f32_path (an importance matrix of ones where it asks for one).
    Its log (a line per tensor, on the C stderr) goes to a file, shown only when it fails."""
    from formats import gguf
    from tests.support.ggml_c import llama_cpp, quantize_model

    ftype = getattr(llama_cpp(), "LLAMA_FTYPE_MOSTLY_" + name)
    imatrix = [(t.name, t.shape[1]) for t in gguf.read(f32_path).tensors if len(t.shape) == 2]
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            status = quantize_model(f32_path, out, ftype, threads=threads)
            if status:
                status = quantize_model(f32_path, out, ftype, imatrix_tensors=imatrix, threads=threads)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if status:
            log.seek(0)
            raise RuntimeError(f"llama.cpp could not quantize to {name}: {log.read()[-800:].decode(errors='replace')}")


def held_types(path):
    from models import open_model

    return "+".join(open_model(path).dtypes)


def llama_cpp_peak_rss(path, n, threads):
    """Peak resident memory (bytes) of llama.cpp loading `path` and decoding n tokens."""
    cmd = [sys.executable, "-c", _LLAMA_CPP_DECODE, str(path), str(n), str(threads)]
    return bench_inference.peak_rss(cmd, bench_inference.thread_env(threads), "llama.cpp decode")


def measure(path, options, shape):
    """One file's row: our decode/prefill and llama.cpp's (interleaved), the plain model's prefill."""
    decode_tokens, prompt_tokens = LENGTHS[shape]
    prompt = np.random.default_rng(0).integers(3, 32000, prompt_tokens).tolist()
    row = bench_inference.compare(path, options.threads, options.runs, decode_tokens, prompt,
                                  ["numpy", "numpy-plain", "llama.cpp"], ops_of={"numpy-plain": ("prefill",)})
    row["plain"] = row.pop("numpy-plain")
    if options.rss:
        row["numpy"]["rss"] = bench_inference.generate_peak_rss(path, decode_tokens, options.threads)
        row["llama.cpp"]["rss"] = llama_cpp_peak_rss(path, decode_tokens, options.threads)
    return row


def decode_together(paths, options, shape):
    """{name: (our decode tok/s, its ratio to Q8_0's)} with one worker process per file alive at
    once. Each round runs Q8_0 between every two other files (Q8_0 A Q8_0 B Q8_0 ...), and a
    file's ratio is its speed over the mean of the two Q8_0 runs around it, the median of those
    over the rounds: drift slower than a few seconds cancels. Files measured one after another
    moved 10-15% from one minute to the next here, more than the 0.9x target leaves, and medians
    over interleaved rounds (A B C ... A B C ...) still moved a type +-8% between runs."""
    decode_tokens = LENGTHS[shape][0]
    workers = {name: bench_inference.Worker("numpy", path, options.threads) for name, path in paths.items()}
    speeds = {name: [] for name in workers}
    ratios = {name: [] for name in workers}

    def decode(name):
        speeds[name].append(decode_tokens / workers[name].ask(op="decode", n=decode_tokens))
        return speeds[name][-1]

    try:
        for worker in workers.values():
            worker.ask(op="decode", n=8)                                          # warm-up
        for _ in range(max(3, options.runs)):
            before = decode("Q8_0")
            for name in workers:
                if name != "Q8_0":
                    speed = decode(name)
                    after = decode("Q8_0")
                    ratios[name].append(speed / ((before + after) / 2))
                    before = after
    finally:
        for worker in workers.values():
            worker.close()
    ratios["Q8_0"] = [1.0]
    return {name: (statistics.median(speeds[name]), statistics.median(ratios[name])) for name in workers}


def print_table(rows, sizes, held, rss, together):
    print(f"{'file':10} {'holds':22} {'MB':>7} | {'decode':>7} {'llama':>7} {'ratio':>6} | {'w/Q8_0':>7} {'/Q8_0':>6} | "
          f"{'prefill':>7} {'plain':>7} {'f/p':>5} {'llama':>7} {'ratio':>6}"
          + (f" | {'RSS MB':>7} {'llama':>7}" if rss else ""))
    for name, row in rows.items():
        ours, theirs, plain = row["numpy"], row["llama.cpp"], row["plain"]
        beside, ratio = together.get(name, (None, None))
        vs_q8 = f"{beside:>7.1f} {ratio:>5.2f}x" if beside else f"{'-':>7} {'-':>6}"
        line = (f"{name:10} {held[name]:22} {sizes[name] / 1e6:>7.1f} | {ours['decode']:>7.1f} "
                f"{theirs['decode']:>7.1f} {ours['decode'] / theirs['decode']:>5.2f}x | {vs_q8} | {ours['prefill']:>7.0f} "
                f"{plain['prefill']:>7.0f} {ours['prefill'] / plain['prefill']:>4.2f}x {theirs['prefill']:>7.0f} "
                f"{ours['prefill'] / theirs['prefill']:>5.2f}x")
        if rss:
            line += f" | {ours['rss'] / 1e6:>7.0f} {theirs['rss'] / 1e6:>7.0f}"
        print(line, flush=True)


def run(options):
    print(bench_inference.isa_description())
    for shape in options.shape:
        args, types = SHAPES[shape], options.types or DEFAULT_TYPES[shape]
        decode_tokens, prompt_tokens = LENGTHS[shape]
        with tempfile.TemporaryDirectory(dir=options.tmp) as tmp:
            f32 = Path(tmp) / "F32.gguf"
            write_f32(args, f32, options.tokenizer or data_file("llama2/tokenizer.model"))
            free = shutil.disk_usage(tmp).free
            print(f"\n== {shape}: dim {args.dim}, {args.n_layers} layers, {args.n_heads} heads / {args.n_kv_heads} kv, "
                f"hidden {args.hidden_dim}, vocab {args.vocab_size}; decode {decode_tokens} tokens after BOS, "
                f"prefill {prompt_tokens}; median of {options.runs}; {options.threads} threads; "
                f"{free / 1e9:.0f} GB free in {tmp}", flush=True)
            rows, sizes, held, paths = {}, {}, {}, {}
            for name in types:
                path = paths[name] = Path(tmp) / f"{name}.gguf"
                if name != "F32":
                    quantize(f32, name, path, options.threads)
                rows[name] = measure(path, options, shape)
                sizes[name], held[name] = path.stat().st_size, held_types(path)
                print(f"  {name}: {held[name]}, ours decode {rows[name]['numpy']['decode']:.1f} tok/s", flush=True)
            quantized = {name: path for name, path in paths.items() if name != "F32"}
            together = decode_together(quantized, options, shape) if "Q8_0" in quantized else {}
            print_table(rows, sizes, held, options.rss, together)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=["seed", "seed256"])
    parser.add_argument("--types", nargs="+", choices=["F32"] + FTYPES,
                        help="ftypes to quantize to (default: per shape, see above)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rss", action="store_true", help="peak RSS of ours and llama.cpp")
    parser.add_argument("--tmp", help="folder for the model files (default: the system's temp folder)")
    parser.add_argument("--tokenizer", type=Path, help="default: Llama 2's tokenizer.model (bench_data.py)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
