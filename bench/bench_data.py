"""Where the benchmarks find Tiny Shakespeare and Llama 2's tokenizer: `data.corpora`'s search
($LLAMA2_SCRATCH_DATA, the read-only copies beside the checkout, the checksummed user cache)."""

from pathlib import Path

from data import corpora

BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_file(name):
    """The path of `name` (e.g. "llama2/tokenizer.model") in the corpora folder."""
    return corpora.data_folder([BESIDE_CHECKOUT]) / name
