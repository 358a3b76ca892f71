"""`llama2-scratch train-vocab DATASET --vocab-size N`: SentencePiece BPE on the train split."""

from data.paths import DEFAULT_DATA_DIR, DataError, require_prepared, vocab_model_path
from data.prepare import DATASETS, read_documents
from llama2_scratch.cli import UsageError

HELP = "train a SentencePiece BPE vocabulary (byte fallback) on a prepared dataset"


def add_arguments(parser):
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="default: %(default)s")


def run(args):
    from trainer.vocab import measure, train_vocab

    try:
        train = read_documents(require_prepared(args.data_dir, args.dataset, "train"))
        val = read_documents(require_prepared(args.data_dir, args.dataset, "val"))
        path = train_vocab(train, vocab_model_path(args.data_dir, args.dataset, args.vocab_size),
                           args.vocab_size)
    except DataError as exc:
        raise UsageError(f"llama2-scratch train-vocab: {exc}") from None
    stats = measure(path, val)
    print(f"wrote {path} ({args.vocab_size} pieces)")
    print(f"val split: {stats['chars_per_token']:.3f} characters/token, byte fallback "
          f"{100 * stats['byte_fallback_rate']:.3f}% of tokens (newline <0x0A> not counted)")
    return 0
