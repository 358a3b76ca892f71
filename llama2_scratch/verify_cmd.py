"""`llama2-scratch verify MODEL [--ckpt CKPT] [--llama-cpp] [--json]`: the parity report.

Runs fixed prompts through every implementation the flags make available (torch from the ckpt,
NumPy from MODEL, llama.cpp from a GGUF, transformers from a Hugging Face folder) and compares logits, greedy continuations and token ids
pair by pair against per-dtype thresholds (the parity/ package). Exit status 0 when every check
passes, 1 when one fails (each failure named on stderr), 2 when the request cannot run.
"""

import json
import sys

HELP = "parity report: torch vs NumPy vs llama.cpp or transformers logits, greedy text and token ids"


def add_arguments(parser):
    parser.add_argument("model", help="the exported file: a GGUF, a llama2.c .bin (NumPy only) or a Hugging Face "
                                      "folder (NumPy and transformers)")
    parser.add_argument("--ckpt", help="the ckpt.pt MODEL was exported from: adds torch (the trained "
                                       "model) and sentencepiece (its stored tokenizer) as references")
    parser.add_argument("--llama-cpp", action="store_true",
                        help="also run MODEL in llama.cpp (pip install llama-cpp-python==0.3.36)")
    parser.add_argument("--tokenizer", help="a SentencePiece .model (or, for a llama2.c .bin, a "
                                            "tokenizer.bin) when the ckpt holds none")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: up to 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (schema in parity/report.py)")


def run(args):
    from parity.run import run_verify

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    report = run_verify(args.model, ckpt_path=args.ckpt, use_llama_cpp=args.llama_cpp,
                        tokenizer_path=args.tokenizer, threads=args.threads)
    print(json.dumps(report.to_json(), ensure_ascii=False) if args.json else report.table())
    for check in report.failures:
        print(f"verify: FAIL {check.describe()}", file=sys.stderr)
    if not report.ok:
        names = sorted({c.name for c in report.failures})
        print(f"verify: {len(report.failures)} of {len(report.checks)} checks failed: {', '.join(names)}",
              file=sys.stderr)
    return 0 if report.ok else 1
