"""`llama2-scratch train --dataset D (--vocab-size N | --tokenizer PATH) --out-dir DIR [...]`.

Every setting is a flag and a key of `--config FILE.toml`; flags win over the file. Multi-GPU:
`torchrun --nproc_per_node=G -m llama2_scratch train ...` (the same command under torchrun).
"""

import sys

from data.paths import DataError
from llama2_scratch.cli import UsageError

HELP = "train a Llama 2 model on pretokenized data; writes OUT_DIR/ckpt.pt"


def add_arguments(parser):
    from trainer.config import add_arguments as add_config_arguments

    add_config_arguments(parser)


def run(args):
    from trainer.config import from_args

    try:
        config = from_args(args)
        from trainer.train import train

        result = train(config)
    except DataError as exc:
        raise UsageError(f"llama2-scratch train: {exc}") from None
    except KeyboardInterrupt as exc:
        # trainer.runtime.Interrupted says where it saved; a bare KeyboardInterrupt (a second
        # Ctrl-C, or one before training started) saved nothing. 130 = 128 + SIGINT, as shells do.
        print(f"llama2-scratch train: {str(exc) or 'interrupted; nothing new was saved'}", file=sys.stderr)
        return 130
    if result["val_bpb"] is not None:
        print(f"done: {result['iter_num']} steps, val loss {result['val_loss']:.4f}, "
              f"{result['val_bpb']:.4f} bits/byte -> {result['ckpt']}")
    return 0
