"""Time Q8_0 quantization of 15M float32 values: formats.quant against gguf-py, same run.

    python bench/bench_quant.py [--repeats N]

The input is a (3750, 4000) matrix of standard normals (seed 0), the shape of a weight a GGUF
writer quantizes; gguf-py works through such a matrix 16 rows at a time, its fastest case. Both
outputs are checked byte for byte before timing, so a wrong fast path cannot win. Prints the
median of N runs for each and the ratio (target: ours at least 1.5x faster).
"""

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from formats.ggml import GGMLType  # noqa: E402
from formats.quant import quantize  # noqa: E402
from timing import median_seconds  # noqa: E402

SHAPE = (3750, 4000)                                       # 15,000,000 values



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    ours = functools.partial(quantize, x, GGMLType.Q8_0)
    theirs = functools.partial(gguf_quants.quantize, x, GGMLQuantizationType.Q8_0)
    if not np.array_equal(ours(), theirs()):
        raise SystemExit("Q8_0 bytes differ from gguf-py: fix formats/quant.py before timing it")

    t_ours = median_seconds(ours, args.repeats)
    t_theirs = median_seconds(theirs, args.repeats)
    print(f"Q8_0 quantize, {x.size:,} float32 values {SHAPE}, median of {args.repeats} runs")
    print(f"  formats.quant  {t_ours * 1e3:8.1f} ms")
    print(f"  gguf-py        {t_theirs * 1e3:8.1f} ms")
    print(f"  ratio          {t_theirs / t_ours:8.2f}x  (gguf-py time / ours; target >= 1.5)")


if __name__ == "__main__":
    main()
