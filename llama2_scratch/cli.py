"""`llama2-scratch`: one console script, one subcommand per step of the pipeline.

This module must import without torch: `inspect`, `generate`, `tokenize` and `verify` (without
--ckpt) run on NumPy alone. Each subcommand imports what it needs when it runs.

Bad input never ends in a traceback: a `FormatError`, a missing file or a wrong flag is printed as
one line on stderr and the exit status is 2.
"""

import argparse
import importlib
import sys

PROG = "llama2-scratch"


class UsageError(Exception):
    """A flag or argument that cannot be honoured; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block; one line naming the problem is what we promise.
        raise UsageError(f"{self.prog}: {message} (see --help)")


# Subcommand -> the module that implements it. Each module defines HELP (one line),
# add_arguments(parser) and run(args) -> exit status, and imports torch (if at all) inside run().
COMMANDS = {
    "prepare": "llama2_scratch.prepare_cmd",
    "train-vocab": "llama2_scratch.train_vocab_cmd",
    "pretokenize": "llama2_scratch.pretokenize_cmd",
    "train": "llama2_scratch.train_cmd",
    "export": "llama2_scratch.export_cmd",
    "generate": "llama2_scratch.generate_cmd",
    "tokenize": "llama2_scratch.tokenize_cmd",
    "inspect": "llama2_scratch.inspect_cmd",
    "verify": "llama2_scratch.verify_cmd",
    "trace": "llama2_scratch.trace_cmd",
    "demo": "llama2_scratch.demo_cmd",
}


def build_parser(command=None):
    """The parser with every subcommand; given `command`, only that one's module is imported
    (the others are bare names): each import costs start-up time and memory (`prepare`'s
    alone ~4 MB), which `generate` should not pay for."""
    parser = _Parser(prog=PROG, description="Understand, train and ship tiny Llama 2 models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None):
    command = None
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        command = argv[0] if argv and argv[0] in COMMANDS else None
        args = build_parser(command).parse_args(argv)
        return args.run(args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ValueError as exc:
        # FormatError is a ValueError; so are the checks that name a bad flag value or a model
        # and tokenizer that do not fit together.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        # Ctrl-C: what was printed stays printed; one line says the command stopped there.
        print(f"{PROG}{f' {command}' if command else ''}: interrupted", file=sys.stderr)
        return 130     # 128 + SIGINT, as shells report it
    except MemoryError:
        # Readers bound what a file may ask for; what is left is a model larger than this machine.
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 2
    except OSError as exc:
        name = f" {exc.filename}:" if exc.filename else ""
        print(f"{PROG}: error:{name} {exc.strerror or exc}", file=sys.stderr)
        return 2
