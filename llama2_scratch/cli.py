"""`llama2-scratch`: one console script, one subcommand per step of the pipeline.

This module must import without torch: `inspect`, `generate`, `tokenize` and `verify` (without
--ckpt) run on NumPy alone. Each subcommand imports what it needs when it runs.

Bad input never ends in a traceback: a `FormatError`, a missing file or a wrong flag is printed as
one line on stderr and the exit status is 2.
"""

import argparse
import sys

from formats.errors import FormatError

PROG = "llama2-scratch"


class UsageError(Exception):
    """A flag or argument that cannot be honoured; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block; one line naming the problem is what we promise.
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _not_built(what, issue):
    def run(args):
        print(f"{PROG} {what}: not built yet (tracked in issue {issue}).", file=sys.stderr)
        return 2
    return run


def _cmd_inspect(args):
    from llama2_scratch import inspect_cmd
    return inspect_cmd.run(args.file, as_json=args.json)


def _cmd_demo(args):
    print(
        f"{PROG} demo: the training pipeline is not built yet (issue 5).\n"
        "What works today: the formats layer — GGUF v3 and llama2.c readers/writers and ggml\n"
        f"quantization — and `{PROG} inspect FILE [--json]` for GGUF and llama2.c files."
    )
    return 0


def build_parser():
    parser = _Parser(prog=PROG, description="Understand, train and ship tiny Llama 2 models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inspect", help="header, metadata and tensor table of a GGUF or llama2.c file")
    p.add_argument("file", help="a .gguf file or a llama2.c .bin checkpoint (v0, v1 or v2)")
    p.add_argument("--json", action="store_true", help="print the full description as one JSON document")
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser("demo", help="the whole pipeline on Tiny Shakespeare with CPU-sized defaults")
    p.set_defaults(run=_cmd_demo)

    for name, issue, text in [
        ("prepare", 5, "fetch or locate raw text"),
        ("train-vocab", 5, "train a SentencePiece BPE vocabulary"),
        ("pretokenize", 5, "write train/val token files"),
        ("train", 5, "train a model"),
        ("export", 5, "export a checkpoint to GGUF or llama2.c"),
        ("generate", 4, "pure-NumPy text generation"),
        ("tokenize", 4, "print token ids and pieces"),
        ("verify", 6, "the parity report"),
    ]:
        p = sub.add_parser(name, help=f"{text} (not built yet)")
        p.set_defaults(run=_not_built(name, issue))
    return parser


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (UsageError, FormatError) as exc:
        print(f"{PROG}: error: {exc}" if isinstance(exc, FormatError) else str(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:
        name = f" {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error:{name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
