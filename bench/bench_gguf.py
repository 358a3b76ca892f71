"""Open a GGUF holding the 32000-piece Llama 2 vocabulary and a 15M-parameter model, decode all
metadata: ours (formats.gguf.read) vs gguf-py (gguf.GGUFReader), timed side by side in one run.

    python bench/bench_gguf.py [--tokenizer tokenizer.model] [--repeat 7]

Target (issue 2): ours >= 20x faster. Prints the median of --repeat runs for each, and the ratio.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from formats import gguf, mapping  # noqa: E402
from formats.spec import ModelArgs, weight_shapes  # noqa: E402
from formats.vocab import TokenType, Vocab  # noqa: E402
from bench_data import data_file  # noqa: E402
from timing import median_seconds  # noqa: E402

SEED_CONFIG = ModelArgs(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000,
                        hidden_dim=768, max_seq_len=256, norm_eps=1e-5, rope_theta=10000.0)


def llama2_vocab(model_path):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    n = sp.vocab_size()
    types = [TokenType.BYTE if sp.is_byte(i) else TokenType.CONTROL if sp.is_control(i)
             else TokenType.UNKNOWN if sp.is_unknown(i) else TokenType.NORMAL for i in range(n)]
    return Vocab([sp.id_to_piece(i) for i in range(n)], [sp.get_score(i) for i in range(n)], types)



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, help="default: Llama 2's tokenizer.model (bench_data.py)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    import gguf as ggufpy

    rng = np.random.default_rng(0)
    weights = {name: (rng.standard_normal(shape) * 0.02).astype(np.float32)
               for name, shape in weight_shapes(SEED_CONFIG).items()}
    vocab = llama2_vocab(args.tokenizer or data_file("llama2/tokenizer.model"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.gguf"
        gguf.write(mapping.to_gguf(weights, SEED_CONFIG, vocab), path)
        size_mb = path.stat().st_size / 1e6

        def ours():
            gf = gguf.read(path)
            mapping.from_gguf(gf)

        def theirs():
            reader = ggufpy.GGUFReader(path)
            for field in reader.fields.values():
                field.contents()

        t_ours = median_seconds(ours, args.repeat)
        t_theirs = median_seconds(theirs, args.repeat)
    print(f"GGUF open + decode all metadata ({size_mb:.1f} MB, 32000-piece vocab, {len(weights)} tensors), "
          f"median of {args.repeat}:")
    print(f"  ours (formats.gguf.read + mapping.from_gguf): {t_ours * 1e3:8.1f} ms")
    print(f"  gguf-py GGUFReader + contents():               {t_theirs * 1e3:8.1f} ms")
    print(f"  ratio gguf-py / ours: {t_theirs / t_ours:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
