"""`llama2-scratch generate MODEL ...`: pure-NumPy text generation, streamed as tokens arrive.

The prompt runs through the model at once (prefill), then one token at a time (decode) against the
KV cache. Text is printed as soon as its UTF-8 characters are complete. Generation stops at EOS,
at --max-new-tokens, at the context length (said once on stderr), or (with --stop-at-bos) at BOS,
as llama2.c's run.c does for models trained with BOS between documents; --json's "stopped" says
which.
"""

import json
import os
import sys
import time

import numpy as np

from formats.errors import FormatError
from formats.files import read_capped
from models.tokenizers import load_model_and_tokenizer
from reference.generate import generate

HELP = "generate text with the NumPy model (no torch needed)"
# A prompt must fit the context: 16 MiB is millions of tokens, more than any model takes.
MAX_PROMPT_BYTES = 16 << 20


def add_arguments(parser):
    parser.add_argument("model", help="a GGUF, a llama2.c .bin (v0/v1/v2), a ckpt.pt or a Hugging Face folder")
    parser.add_argument("--tokenizer", help="tokenizer.bin or SentencePiece .model (needed unless MODEL carries "
                                            "one: a GGUF, a ckpt.pt holding its .model, a folder with "
                                            "tokenizer.model or tokenizer.json)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="the prompt text (default: empty)")
    prompt.add_argument("--prompt-file", help="read the prompt from this UTF-8 file")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (argmax, lowest id on ties)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (1: off)")
    parser.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p * p_max (0: off)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="1: off")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling (default: fresh entropy)")
    parser.add_argument("--stop-at-bos", action="store_true",
                        help="also stop when the model emits BOS (models trained with BOS between documents)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPUs that share a step's products: this process and N-1 helper processes on Linux, "
                             "threads elsewhere (default: the CPUs this process may use; float32 prompts use BLAS's "
                             "own threads, set by OPENBLAS_NUM_THREADS)")
    parser.add_argument("--mmap", action="store_true",
                        help="use float32 weights where they lie in the file's memory map instead of reading them "
                             "into huge-page memory: no copy at load, pages shared with other processes, decode up "
                             "to ~15%% slower where the page cache holds the file in 4 KiB pages")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of streaming the text")


def usable_cpus():
    """How many CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check(args):
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.top_k < 0 or not 0 < args.top_p <= 1 or not 0 <= args.min_p < 1:
        raise ValueError("--top-k must be >= 0, --top-p in (0, 1], --min-p in [0, 1)")


def read_prompt(path):
    """The UTF-8 text of --prompt-file (a regular file of at most MAX_PROMPT_BYTES)."""
    data = read_capped(path, MAX_PROMPT_BYTES, "--prompt-file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, "--prompt-file", exc.start, "invalid UTF-8") from None


def stop_reason(n_new, max_new_tokens, room):
    """Why generation ended after `n_new` tokens (reference.generate.generate yields
    min(max_new_tokens, room) unless a stop token comes first; `room`: the context left after the
    prompt): "max_new_tokens", "context" (the context filled before --max-new-tokens was reached) or
    "stop_token" (EOS, or BOS with --stop-at-bos)."""
    if n_new == max_new_tokens:
        return "max_new_tokens"
    return "context" if n_new == room else "stop_token"


def run(args):
    _check(args)
    if args.prompt_file:
        prompt = read_prompt(args.prompt_file)
    else:
        prompt = args.prompt
    threads = args.threads or usable_cpus()
    model, tokenizer, warning = load_model_and_tokenizer(args.model, args.tokenizer, threads=threads, mmap=args.mmap)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    vocab = tokenizer.vocab
    prompt_ids = tokenizer.encode(prompt)
    if not prompt_ids:
        prompt_ids = [vocab.bos_id]  # a model needs one token to start from
    context = model.args.max_seq_len
    if len(prompt_ids) >= context:
        raise ValueError(f"--prompt: {len(prompt_ids)} tokens leave no room in the {context}-token context")
    rng = np.random.default_rng(args.seed)
    stops = {vocab.eos_id} | ({vocab.bos_id} if args.stop_at_bos else set())

    decoder = tokenizer.stream_decoder()
    for token_id in prompt_ids:  # prime it, so the leading-space rule sees the prompt
        decoder.feed(token_id)

    # The first token costs the prefill; each later one a single-token decode step.
    ids, texts, stamps = [], [], [time.perf_counter()]
    for token_id in generate(model, prompt_ids, rng, args.max_new_tokens, stops, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                             repetition_penalty=args.repetition_penalty):
        stamps.append(time.perf_counter())
        ids.append(token_id)
        texts.append(decoder.feed(token_id))
        if not args.json and texts[-1]:
            sys.stdout.write(texts[-1])
            sys.stdout.flush()
    tail = decoder.flush()
    texts.append(tail)

    stopped = stop_reason(len(ids), args.max_new_tokens, context - len(prompt_ids))
    if stopped == "context":
        print(f"generate: stopped at the model's {context}-token context after {len(ids)} new tokens "
              f"(--max-new-tokens {args.max_new_tokens})", file=sys.stderr)

    prefill_s = (stamps[1] if ids else time.perf_counter()) - stamps[0]
    prefill_tok_s = len(prompt_ids) / prefill_s
    n_decoded = max(len(ids) - 1, 0)
    decode_tok_s = n_decoded / (stamps[-1] - stamps[1]) if n_decoded else None
    if args.json:
        print(json.dumps({"prompt_ids": prompt_ids, "ids": ids, "text": "".join(texts), "prefill_tok_s": prefill_tok_s,
                          "decode_tok_s": decode_tok_s, "threads": threads, "stopped": stopped}, ensure_ascii=False))
    else:
        sys.stdout.write(tail + "\n")
        sys.stdout.flush()
        rate = lambda r: "n/a" if r is None else f"{r:.1f} tok/s"  # noqa: E731
        print(f"prefill: {len(prompt_ids)} tokens, {rate(prefill_tok_s)}; "
              f"decode: {n_decoded} tokens, {rate(decode_tok_s)}", file=sys.stderr)
    return 0
