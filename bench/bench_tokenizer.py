"""Encode speed: reference.runtime.fast_tokenizer against sentencepiece on the same text, in the same run.

    python bench/bench_tokenizer.py [--model tokenizer.model] [--text input.txt] [--runs 5]

Defaults: Llama 2's tokenizer.model and Tiny Shakespeare, found as bench/bench_data.py says. The text is encoded as one string. Our per-chunk cache is emptied
before every run, so each run pays for every distinct word; the warm line shows a second pass.
Prints the median of the runs and our time / sentencepiece's time (the target is <= 3).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_data import data_file  # noqa: E402
from reference.runtime.fast_tokenizer import FastTokenizer  # noqa: E402
from timing import median_seconds  # noqa: E402




def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="default: Llama 2's tokenizer.model")
    parser.add_argument("--text", type=Path, help="default: Tiny Shakespeare")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    args.model = args.model or data_file("llama2/tokenizer.model")
    args.text = args.text or data_file("tinyshakespeare/input.txt")

    import sentencepiece as spm

    text = args.text.read_text(encoding="utf-8")
    start = time.perf_counter()
    ours = FastTokenizer.from_spm(args.model)
    load = time.perf_counter() - start
    sp = spm.SentencePieceProcessor(model_file=str(args.model))
    if ours.encode(text, bos=False) != sp.encode(text):
        sys.exit("ids differ from sentencepiece: not benchmarking a wrong tokenizer")

    ref = median_seconds(lambda: sp.encode(text), args.runs)
    cold = median_seconds(lambda: ours.encode(text, bos=False), args.runs, before=ours._cache.clear)
    warm = median_seconds(lambda: ours.encode(text, bos=False), args.runs)
    print(f"text: {args.text.name}, {len(text):,} chars, {len(sp.encode(text)):,} tokens; "
          f"median of {args.runs} runs")
    print(f"sentencepiece      {ref:7.3f} s")
    print(f"ours (cold cache)  {cold:7.3f} s   ratio {cold / ref:.2f}")
    print(f"ours (warm cache)  {warm:7.3f} s   ratio {warm / ref:.2f}")
    print(f"ours, loading the .model: {load:.3f} s")


if __name__ == "__main__":
    main()
