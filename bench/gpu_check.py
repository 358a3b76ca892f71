"""The GPU check: one script for a machine with one GPU, no network, torch preinstalled and this
project not installed. From a copy of the working tree, with the corpora in a folder beside it:

    PYTHONPATH=. python bench/gpu_check.py --data ../data [--out /tmp/gpu_check]

--data holds data/corpora.py's layout: tinyshakespeare/input.txt, and llama2/tokenizer.model for
when sentencepiece cannot be imported (then neither can a vocabulary be trained: the check trains
on Llama 2's 32000 pieces instead of the preset's 1024 and says so). It prints one table and exits
0 when every row passes, 1 otherwise. Planned to take 3-5 minutes on one H100 (unmeasured: no GPU
has run it yet); the table's last row is the wall time.

  parity   the trainer's model (trainer/model.py) on the GPU against the same weights on the CPU in
           float64: logits, the training loss and every weight's gradient, in float32 (TF32 off)
           and under bfloat16 autocast, each against its own limit (LIMITS);
  train    the GPU preset (GPU_PRESET, from llama2_scratch/demo_cmd.py's docstring) on Tiny
           Shakespeare for --steps steps, bfloat16 autocast and --compile: tok/s and MFU after the
           compile (against the matmul peak measured here in bfloat16, trainer/flops.py), the loss at
           fixed steps, val bits/byte;
  export   that checkpoint to an f32 GGUF, then `verify` on it with the CPU implementations
           (torch on the checkpoint vs the NumPy reference on the GGUF, parity/run.py);
  resume   the preset shape for 2k steps straight, and k steps, stop, resume to 2k: the losses of
           steps k+1..2k and the final weights must be equal bit for bit (deterministic
           algorithms on, CUBLAS_WORKSPACE_CONFIG set, as CUDA needs for repeatable runs).

`--device cpu --tiny` runs the same steps on the CPU with tiny sizes in seconds (no compile):
tests/test_gpu_check.py runs it in CI.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
import types
from pathlib import Path

# cuBLAS picks its reduction order by workspace; a fixed workspace makes repeated runs equal
# (the resume row). Set before torch initializes CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from formats.spec import ModelArgs  # noqa: E402
from trainer.flops import flops_per_token, measure_matmul_peak  # noqa: E402
from trainer.model import Transformer  # noqa: E402

# `llama2-scratch train --dataset tinyshakespeare --vocab-size 1024 --dim 384 --n-layers 6
# --n-heads 6 --max-seq-len 256 --batch-size 64 --max-iters 5000 --dropout 0.2 --learning-rate 1e-3
# --dtype bfloat16 --compile`; the check runs its first --steps steps (lr schedule over 5000).
GPU_PRESET = dict(dim=384, n_layers=6, n_heads=6, max_seq_len=256, batch_size=64, dropout=0.2,
                  learning_rate=1e-3, lr_decay_iters=5000, dtype="bfloat16", compile=True)
VOCAB_SIZE = 1024
# float32: bfloat16 autocast is up to 7x slower than float32 on a CPU without native bf16 (the
# parity rows still run it).
TINY = dict(dim=32, n_layers=2, n_heads=4, max_seq_len=32, batch_size=8, dropout=0.2,
            learning_rate=1e-3, lr_decay_iters=5000, dtype="float32", compile=False)
TINY_VOCAB_SIZE = 384
TINY_CHARS = 100_000        # of Tiny Shakespeare: a 384-piece vocabulary trains on it in about a second

# Largest error allowed against the CPU float64 model: (logits max |Δ| / max |logit|, |Δ loss|,
# the largest over weights of ‖Δ grad‖ / ‖grad‖). Measured on the preset's shape on a CPU (two
# seeds, batch 4 x 256): float32 <= 5.4e-7, 1.6e-7, 1.6e-6; bfloat16 autocast <= 5.0e-3, 1.7e-4,
# 1.8e-2 (8-bit mantissas: 2^-9 ≈ 2e-3 per rounding of a matmul input). The limits leave 6x or more
# for the GPU's other summation orders; TF32 would round float32 matmul inputs to 10 bits (~1e-3), so
# the float32 rows run with it off.
LIMITS = {"float32": (1e-5, 1e-5, 1e-5), "bfloat16": (3e-2, 2e-3, 1e-1)}
PARITY_BATCH = 4


@dataclasses.dataclass
class Row:
    step: str
    check: str
    value: object
    limit: str = ""
    ok: bool | None = None          # None: a measurement, nothing to pass

    def cells(self):
        value = f"{self.value:.3g}" if isinstance(self.value, float) else str(self.value)
        verdict = "" if self.ok is None else ("ok" if self.ok else "FAIL")
        return [self.step, self.check, value, self.limit, verdict]


def table(rows, header):
    """The rows as one aligned text table under `header`."""
    cells = [["step", "check", "value", "limit", ""]] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = [header] + ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ parity


def forward_backward(model, tokens, autocast_dtype):
    """(logits (B, T, V) as float64, loss, {name: grad as float64}) of one training pass."""
    model.zero_grad(set_to_none=True)
    x, y = tokens[:, :-1], tokens[:, 1:]
    device_type = tokens.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        with torch.no_grad():
            logits, _ = model(x)
        _, loss = model(x, y)
    loss.backward()
    grads = {name: p.grad.double().cpu() for name, p in model.named_parameters() if p.grad is not None}
    return logits.double().cpu(), loss.item(), grads


def parity_errors(reference, candidate):
    """(logits max |Δ| / max |logit|, |Δ loss|, the largest ‖Δ grad‖ / ‖grad‖) of two
    forward_backward results, the first the reference."""
    (logits, loss, grads), (logits_c, loss_c, grads_c) = reference, candidate
    logits_error = ((logits_c - logits).abs().max() / logits.abs().max()).item()
    grad_error = max(((grads_c[n] - g).norm() / g.norm()).item() for n, g in grads.items())
    return logits_error, abs(loss_c - loss), grad_error


@contextlib.contextmanager
def tf32(enabled):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def parity_rows(sizes, vocab_size, device, seed=0):
    """The parity step's rows: one model's weights on `device` (float32, then bfloat16 autocast)
    against the same weights in float64 on the CPU, on one random batch."""
    args = ModelArgs(dim=sizes["dim"], n_layers=sizes["n_layers"], n_heads=sizes["n_heads"],
                     vocab_size=vocab_size, max_seq_len=sizes["max_seq_len"], dropout=0.0)
    torch.manual_seed(seed)
    model = Transformer(args)
    tokens = torch.randint(0, vocab_size, (PARITY_BATCH, args.max_seq_len + 1),
                           generator=torch.Generator().manual_seed(seed))
    float64 = Transformer(args).double()
    float64.load_state_dict(model.state_dict())        # copies cast the float32 values up exactly
    reference = forward_backward(float64, tokens, None)
    model = model.to(device)
    rows = []
    for dtype, autocast_dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        with tf32(False):
            errors = parity_errors(reference, forward_backward(model, tokens.to(device), autocast_dtype))
        for name, error, limit in zip(("logits", "loss", "grads"), errors, LIMITS[dtype]):
            rows.append(Row("parity", f"{dtype} {name} vs cpu float64", error, f"<= {limit:g}", error <= limit))
    return rows


# ------------------------------------------------------------------------------------ data


class _StandIn:
    """sentencepiece.SentencePieceProcessor's few methods trainer/pretokenize.py calls, from our
    tokenizer (reference/runtime/fast_tokenizer.py, which gives sentencepiece's ids)."""

    def __init__(self, model_file):
        from reference.runtime.fast_tokenizer import FastTokenizer
        self.tokenizer = FastTokenizer.from_spm(model_file)

    def get_piece_size(self):
        return len(self.tokenizer.vocab)

    def bos_id(self):
        return self.tokenizer.vocab.bos_id

    def eos_id(self):
        return self.tokenizer.vocab.eos_id

    def encode(self, texts):
        return [self.tokenizer.encode(text, bos=False, eos=False) for text in texts]


@contextlib.contextmanager
def sentencepiece_for_pretokenize():
    """`import sentencepiece` inside the block: the package if installed, else a module holding
    _StandIn, removed again afterwards (so that `verify` does not mistake it for the package)."""
    import importlib.util
    if importlib.util.find_spec("sentencepiece") is not None:
        yield "sentencepiece"
        return
    saved = sys.modules.get("sentencepiece")
    sys.modules["sentencepiece"] = types.SimpleNamespace(SentencePieceProcessor=_StandIn)
    try:
        yield "our tokenizer (sentencepiece is not installed)"
    finally:
        if saved is None:
            del sys.modules["sentencepiece"]
        else:
            sys.modules["sentencepiece"] = saved


def prepare_data(data, work, vocab_size, chars):
    """Tiny Shakespeare prepared (its first `chars` characters; None: all), a vocabulary (trained,
    else Llama 2's) and its token files under `work`; -> (the settings naming them, the vocabulary
    size, rows saying what was used)."""
    import importlib.util

    from data.paths import token_dir, vocab_model_path
    from data.prepare import prepare, read_documents
    from trainer.pretokenize import pretokenize

    source = Path(data) / "tinyshakespeare" / "input.txt"
    text = source.read_text(encoding="utf-8")
    if chars:
        text = text[:chars]
    (work / "input.txt").write_text(text, encoding="utf-8")
    data_dir = work / "data"
    splits = prepare("tinyshakespeare", work / "input.txt", data_dir)
    if importlib.util.find_spec("sentencepiece") is not None:
        from trainer.vocab import train_vocab
        model_path = train_vocab(read_documents(splits["train"][0]),
                                 vocab_model_path(data_dir, "tinyshakespeare", vocab_size), vocab_size)
        settings, tag, vocab = {"vocab_size": vocab_size}, f"tok{vocab_size}", f"trained, {vocab_size} pieces"
    else:
        model_path = Path(data) / "llama2" / "tokenizer.model"
        settings, tag = {"tokenizer": str(model_path)}, None
        vocab = "Llama 2's 32000 pieces (sentencepiece is not installed: no vocabulary training)"
    if tag is None:
        from data.paths import resolve_tokenizer
        _, tag = resolve_tokenizer(data_dir, "tinyshakespeare", tokenizer=model_path)
    with sentencepiece_for_pretokenize() as encoder:
        meta = pretokenize(data_dir, "tinyshakespeare", model_path, token_dir(data_dir, "tinyshakespeare", tag))
    rows = [Row("data", "vocabulary", vocab), Row("data", "pretokenized by", encoder),
            Row("data", "train / val tokens", f"{meta['splits']['train']['tokens']:,} / "
                                              f"{meta['splits']['val']['tokens']:,}")]
    return dict(settings, dataset="tinyshakespeare", data_dir=str(data_dir)), meta["vocab_size"], rows


# ------------------------------------------------------------------------------------ train


def train_run(settings, quiet=True):
    """trainer.train.train on `settings` (flat, as `train` flags); -> its result dict."""
    from trainer.config import from_settings
    from trainer.train import train

    lines = []
    result = train(from_settings(settings), out=lines.append if quiet else print)
    result["printed"] = lines
    return result


def log_records(out_dir):
    from trainer.train import LOG_NAME
    with open(Path(out_dir) / LOG_NAME, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train_rows(base, sizes, steps, device, work):
    """Train the preset; -> (rows, the checkpoint's path)."""
    out_dir = work / "train"
    settings = dict(base, **sizes, device=device, max_iters=steps, eval_interval=steps, log_interval=1,
                    out_dir=str(out_dir), warmup_iters=min(100, steps // 3))
    result = train_run(settings)
    # Steps in the first fifth include the compile (and the allocator's warm-up): left out.
    records = [r for r in log_records(out_dir) if r["iter"] > steps // 5]
    tok_s = sorted(r["tok_s"] for r in records)[len(records) // 2]
    args = result["model_args"]
    peak = measure_matmul_peak(device, getattr(torch, settings["dtype"]))
    achieved = flops_per_token(result["n_params"], args["n_layers"], args["dim"], sizes["max_seq_len"]) * tok_s
    losses = result["losses"]
    marks = sorted({1, *(steps * k // 3 for k in (1, 2, 3))})
    rows = [Row("train", "model", f"{result['n_params'] / 1e6:.2f}M params, dim {args['dim']}, "
                                  f"{args['n_layers']} layers, vocab {args['vocab_size']}, "
                                  f"{settings['dtype']}{' + compile' if settings['compile'] else ''}"),
            Row("train", f"tok/s (median, steps {steps // 5 + 1}-{steps})", f"{tok_s:,.0f}"),
            Row("train", f"{settings['dtype']} matmul peak measured", f"{peak / 1e9:,.0f} GFLOP/s"),
            Row("train", "MFU", f"{100 * achieved / peak:.1f}%", "<= 100%", achieved <= peak)]
    rows += [Row("train", f"loss at step {s}", losses[s - 1]) for s in marks]
    rows += [Row("train", "loss falls", f"{losses[0]:.3f} -> {losses[-1]:.3f}", "falls", losses[-1] < losses[0]),
             Row("train", "val bits/byte", result["val_bpb"])]
    return rows, result["ckpt"]


# ------------------------------------------------------------------------------------ export


def export_rows(ckpt, work):
    """The checkpoint as an f32 GGUF, then `verify` on it (CPU implementations)."""
    from parity.run import run_verify
    from trainer.export import export_gguf, load_exportable

    gguf_path = work / "model.gguf"
    written = export_gguf(load_exportable(ckpt), "f32", gguf_path)
    report = run_verify(str(gguf_path), ckpt_path=str(ckpt))
    failed = sorted({c.name for c in report.failures})
    return [Row("export", "f32 GGUF read back", f"{written['tensors']} tensors, max |Δ| {written['max_abs_error']:g}",
                "== 0", written["max_abs_error"] == 0),
            Row("export", f"verify ({', '.join(report.implementations)})",
                f"{len(report.checks) - len(report.failures)} of {len(report.checks)} pass"
                + (f" (FAILED: {', '.join(failed)})" if failed else ""), "all", report.ok)]


# ------------------------------------------------------------------------------------ resume


def resume_rows(base, sizes, k, device, work):
    """2k steps straight against k steps, stop, resume to 2k: bitwise equal losses and weights."""
    from trainer import checkpoint

    common = dict(base, **dict(sizes, compile=False), device=device, eval_interval=k, eval_batches=2,
                  log_interval=k)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        straight = train_run(dict(common, max_iters=2 * k, out_dir=str(work / "straight")))
        train_run(dict(common, max_iters=k, out_dir=str(work / "resumed")))
        resumed = train_run(dict(common, max_iters=2 * k, out_dir=str(work / "resumed"), resume=True))
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = (checkpoint.load(r["ckpt"])["model"] for r in (straight, resumed))
    unequal = [name for name in a if not torch.equal(a[name], b[name])]
    same_losses = straight["losses"][k:] == resumed["losses"]
    return [Row("resume", f"losses of steps {k + 1}-{2 * k}", "equal" if same_losses else
                f"differ: {straight['losses'][k:]} vs {resumed['losses']}", "bitwise", same_losses),
            Row("resume", "final weights", "equal" if not unequal else f"{len(unequal)} tensors differ "
                f"({unequal[0]}, ...)", "bitwise", not unequal)]


# ------------------------------------------------------------------------------------ main


def header(device):
    if torch.device(device).type == "cuda":
        where = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"gpu_check: {where}, torch {torch.__version__}, python {platform.python_version()}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with tinyshakespeare/input.txt (and "
                                                      "llama2/tokenizer.model), data/corpora.py's layout")
    parser.add_argument("--out", default="out/gpu_check", help="work folder (default: %(default)s)")
    parser.add_argument("--device", default="cuda", help="default: %(default)s")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default: %(default)s)")
    parser.add_argument("--resume-steps", type=int, default=10, help="k of the resume check (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, the first 100,000 characters, no "
                                                            "compile: the CPU path CI runs")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device}, but torch {torch.__version__} sees no CUDA GPU", file=sys.stderr)
        return 2
    if not (Path(args.data) / "tinyshakespeare" / "input.txt").is_file():
        print(f"gpu_check: {Path(args.data) / 'tinyshakespeare' / 'input.txt'}: not found (--data)", file=sys.stderr)
        return 2
    sizes, vocab_size, chars = (TINY, TINY_VOCAB_SIZE, TINY_CHARS) if args.tiny else (GPU_PRESET, VOCAB_SIZE, None)
    if args.tiny:
        # Tiny products gain nothing from threads, and spinning ones crawl on a busy CPU (one
        # 32-wide linear measured 16 ms with 2 threads on 2 shared cores).
        torch.set_num_threads(1)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    walls = []

    def timed(name, step, failed, *call):
        """step(*call), timed; an exception becomes a failed row (then `failed` is the result), so
        that one broken step still leaves the others' rows on a GPU machine lent for minutes."""
        begun = time.perf_counter()
        try:
            return step(*call)
        except Exception as exc:        # any failure: reported in the table and the exit status
            traceback.print_exc()
            rows.append(Row(name, "error", f"{type(exc).__name__}: {str(exc)[:300]}", "none", False))
            return failed
        finally:
            walls.append(f"{name} {time.perf_counter() - begun:.0f}")

    rows = []
    prepared = timed("prepare", prepare_data, None, args.data, work, vocab_size, chars)
    if prepared is not None:
        base, vocab_size, data_rows = prepared
        rows += data_rows
        rows += timed("parity", parity_rows, [], sizes, vocab_size, args.device)
        train, ckpt = timed("train", train_rows, ([], None), base, sizes, args.steps, args.device, work)
        rows += train
        if ckpt is not None:
            rows += timed("export", export_rows, [], ckpt, work)
        rows += timed("resume", resume_rows, [], base, sizes, args.resume_steps, args.device, work)
    rows.append(Row("all", "wall", f"{time.perf_counter() - started:.0f} s ({', '.join(walls)} s)"))
    print(table(rows, header(args.device)))
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
