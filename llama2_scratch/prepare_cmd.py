"""`llama2-scratch prepare DATASET [--input PATH] [--data-dir DIR]`: corpus -> train/val JSONL."""

from data.paths import DEFAULT_DATA_DIR, DataError
from data.prepare import DATASETS, DEFAULT_VAL_FRACTION, prepare
from llama2_scratch.cli import UsageError

HELP = "fetch or locate a corpus and split it into train/val documents"


def add_arguments(parser):
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--input", help="local file or folder (tinyshakespeare: instead of the download)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="default: %(default)s")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of documents in val, chosen by content hash (default: %(default)s)")


def run(args):
    try:
        report = prepare(args.dataset, args.input, args.data_dir, args.val_fraction)
    except DataError as exc:
        raise UsageError(f"llama2-scratch prepare: {exc}") from None
    for split, (path, documents, chars) in report.items():
        print(f"{split:5} {documents:8,} documents {chars:12,} characters -> {path}")
    return 0
