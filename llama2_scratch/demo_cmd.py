"""`llama2-scratch demo`: prepare -> train-vocab -> pretokenize -> train -> export -> verify -> generate.

CPU-sized defaults: a 1024-piece vocabulary and a ~0.9M-parameter model (dim 128, 4 layers,
sequences of 128 tokens) trained for 1500 steps, in the dtype `--dtype auto` picks (bf16 autocast
only where the CPU computes bf16 natively and faster; trainer/runtime.py); its wall time on CPUs
with and without native bf16: docs/benchmarks.md. The samples at the end come from
the pure-NumPy reference model reading the exported GGUF, so they also show the file works: a
few speeches, each from BOS to EOS as the model was trained (the context holds one speech).
The llama2.c exports are the layouts its programs read: model.bin is version 0 (run.c),
model_q80.bin version 2 (runq.c).

GPU preset aimed at nanoGPT's char model (1.47 nats/char = 2.12 bits/char): `llama2-scratch
train --dataset tinyshakespeare --vocab-size 1024 --dim 384 --n-layers 6 --n-heads 6
--max-seq-len 256 --batch-size 64 --max-iters 5000 --dropout 0.2 --learning-rate 1e-3
--dtype bfloat16 --compile` (dropout matters: Tiny Shakespeare is 1 MB, a 10M model overfits it).
"""

import sys
import time
from pathlib import Path

from data.paths import DataError, token_dir, vocab_model_path
from llama2_scratch.cli import UsageError

HELP = "the whole pipeline on Tiny Shakespeare with CPU-sized defaults"
DATASET = "tinyshakespeare"
VOCAB_SIZE = 1024
DEMO_TRAINING = dict(dim=128, n_layers=4, n_heads=4, max_seq_len=128, batch_size=32,
                     learning_rate=2e-3, min_lr=2e-4, warmup_iters=100, dropout=0.1,
                     eval_interval=250, log_interval=50)
PROMPT = "ROMEO:"


def add_arguments(parser):
    parser.add_argument("--input", help="Tiny Shakespeare input.txt (default: DATA_DIR/tinyshakespeare, "
                                        "else download)")
    parser.add_argument("--data-dir", default="data", help="default: %(default)s")
    parser.add_argument("--out-dir", default="out/demo", help="default: %(default)s")
    parser.add_argument("--max-iters", type=int, default=1500, help="training steps (default: %(default)s)")
    from trainer.config import DTYPES

    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="default: %(default)s (bf16 where this machine computes it fast, else float32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--max-new-tokens", type=int, default=120,
                        help="tokens per sampled speech, at most the context (default: %(default)s)")
    parser.add_argument("--speeches", type=int, default=4, help="speeches sampled at the end (default: %(default)s)")


def run(args):
    try:
        return _run(args)
    except DataError as exc:
        raise UsageError(f"llama2-scratch demo: {exc}") from None
    except KeyboardInterrupt as exc:
        # demo has no --resume (train's Interrupted suggests it): say what was kept, in one line.
        saved = f" after iter {exc.iter_num}; its checkpoint is {exc.ckpt}" if hasattr(exc, "ckpt") else ""
        print(f"llama2-scratch demo: interrupted{saved} (running demo again starts over)", file=sys.stderr)
        return 130     # 128 + SIGINT, as shells report it


def _run(args):
    from data.prepare import prepare, read_documents
    from parity.run import run_verify
    from trainer.config import from_settings
    from trainer.export import export_gguf, export_llama2c, load_exportable
    from trainer.pretokenize import pretokenize
    from trainer.train import train
    from trainer.vocab import measure, train_vocab

    started = time.perf_counter()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    print("== 1/7 prepare")
    splits = prepare(DATASET, args.input, args.data_dir)
    for split, (path, documents, chars) in splits.items():
        print(f"   {split}: {documents:,} documents, {chars:,} characters -> {path}")

    print("== 2/7 train-vocab")
    model_path = train_vocab(read_documents(splits["train"][0]),
                             vocab_model_path(args.data_dir, DATASET, VOCAB_SIZE), VOCAB_SIZE)
    stats = measure(model_path, read_documents(splits["val"][0]))
    print(f"   {model_path}: {stats['chars_per_token']:.2f} chars/token, byte fallback "
          f"{100 * stats['byte_fallback_rate']:.2f}%")

    print("== 3/7 pretokenize")
    tokens_dir = token_dir(args.data_dir, DATASET, f"tok{VOCAB_SIZE}")
    meta = pretokenize(args.data_dir, DATASET, model_path, tokens_dir)
    print(f"   {meta['splits']['train']['tokens']:,} train / {meta['splits']['val']['tokens']:,} val tokens -> {tokens_dir}")

    print("== 4/7 train")
    config = from_settings(dict(DEMO_TRAINING, dataset=DATASET, vocab_size=VOCAB_SIZE, data_dir=args.data_dir,
                                out_dir=str(out_dir), max_iters=args.max_iters, dtype=args.dtype,
                                device=args.device, seed=args.seed))
    result = train(config, out=lambda line: print("   " + line))

    print("== 5/7 export")
    model = load_exportable(result["ckpt"])
    gguf_path, tok_path = out_dir / "model.gguf", out_dir / "tokenizer.bin"
    bin_path, q80_path = out_dir / "model.bin", out_dir / "model_q80.bin"
    export_gguf(model, "f32", gguf_path)
    export_llama2c(model, 0, bin_path, tok_path)
    export_llama2c(model, 2, q80_path)
    print(f"   {gguf_path} (GGUF f32, tokenizer inside; read back bit-exact)")
    print(f"   {bin_path} (llama2.c v0, float32): ./run {bin_path} -z {tok_path}")
    print(f"   {q80_path} (llama2.c v2, int8 groups): ./runq {q80_path} -z {tok_path}")

    print("== 6/7 verify (torch on the checkpoint vs NumPy" + (" and llama.cpp" if _has_llama_cpp() else "")
          + " on the GGUF)")
    report = run_verify(str(gguf_path), ckpt_path=str(result["ckpt"]), use_llama_cpp=_has_llama_cpp())
    failed = sorted({c.name for c in report.failures})
    print(f"   {len(report.checks) - len(report.failures)} of {len(report.checks)} checks pass"
          + (f"; FAILED: {', '.join(failed)}" if failed else f" ({', '.join(report.implementations)})"))

    print("== 7/7 generate (NumPy reference model reading the GGUF)")
    print(sample_text(gguf_path, PROMPT, args.max_new_tokens, args.seed, args.speeches))

    minutes = (time.perf_counter() - started) / 60
    print(f"== done in {minutes:.1f} min: val loss {result['val_loss']:.4f} nats/token, "
          f"{result['val_bpb']:.4f} bits/byte; checkpoint {result['ckpt']}")
    return 0 if report.ok else 1


def _has_llama_cpp():
    """llama.cpp joins the check when llama-cpp-python is installed (it is in the [test] extra)."""
    import importlib.util
    return importlib.util.find_spec("llama_cpp") is not None


def sample_text(gguf_path, prompt, max_new_tokens, seed, speeches=1, temperature=0.8, top_k=40):
    """`speeches` sampled speeches, blank-line separated, the first continuing `prompt`: each starts
    at BOS, as every training document did, and ends at EOS or after max_new_tokens."""
    import numpy as np

    from formats import gguf
    from models import load_model
    from reference.generate import generate
    from reference.runtime.fast_tokenizer import FastTokenizer

    model = load_model(gguf_path)
    tokenizer = FastTokenizer.from_gguf(gguf.read(gguf_path))
    rng = np.random.default_rng(seed)
    texts = []
    for start in [prompt] + [""] * (speeches - 1):
        new_ids = generate(model, tokenizer.encode(start, bos=True), rng, max_new_tokens, {tokenizer.vocab.eos_id},
                           temperature=temperature, top_k=top_k)
        texts.append(start + tokenizer.decode(list(new_ids)))
    return "\n\n".join(texts)
