"""`llama2-scratch pretokenize DATASET (--vocab-size N | --tokenizer PATH)`: write token files."""

from data.paths import DEFAULT_DATA_DIR, DataError, resolve_tokenizer, token_dir
from data.prepare import DATASETS
from llama2_scratch.cli import UsageError

HELP = "encode a prepared dataset into train/val token files (+ meta.json)"


def add_arguments(parser):
    parser.add_argument("dataset", choices=DATASETS)
    tok = parser.add_mutually_exclusive_group(required=True)
    tok.add_argument("--vocab-size", type=int, help="a vocabulary made by train-vocab")
    tok.add_argument("--tokenizer", help="any SentencePiece .model (e.g. Llama 2's tokenizer.model)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="default: %(default)s")


def run(args):
    from trainer.pretokenize import pretokenize

    try:
        model, tag = resolve_tokenizer(args.data_dir, args.dataset, args.vocab_size, args.tokenizer)
        out = token_dir(args.data_dir, args.dataset, tag)
        meta = pretokenize(args.data_dir, args.dataset, model, out)
    except DataError as exc:
        raise UsageError(f"llama2-scratch pretokenize: {exc}") from None
    for split, counts in meta["splits"].items():
        print(f"{split:5} {counts['tokens']:12,} tokens ({counts['bytes'] / max(counts['tokens'], 1):.2f} "
              f"bytes/token) -> {out / (split + '.bin')}")
    print(f"dtype {meta['dtype']}, tokenizer {model} sha256 {meta['tokenizer_sha256'][:12]}...")
    return 0
