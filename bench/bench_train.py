"""Training throughput and MFU at the seed config, against a plain llama2.c-style baseline.

    python bench/bench_train.py [--steps 5] [--device cpu] [--loss-steps N]
    python bench/bench_train.py --engines [--steps 5]

Seed config: dim 288, 6 layers, 6 heads, vocab 32000, seq 256, batch 16 (llama2.c's stories15M).
Rows, all measured in this one run on random tokens (throughput does not depend on the data):
- baseline: fp32, eager, full (B, T, V) logits then F.cross_entropy, AdamW without the fused
  kernel: what llama2.c's train.py does on a CPU;
- ours float32: the trainer's model (chunked classifier + loss, trainer/loss.py) and optimizer
  (fused AdamW), fp32;
- ours bfloat16: the same under bfloat16 autocast (uses AVX-512 BF16 / AMX where the CPU has them);
- ours bfloat16 + compile: the same model through torch.compile (`train --compile`), which fuses
  the elementwise work (RMSNorm, RoPE, SwiGLU, softmax) into generated kernels; its one-off
  compile time is reported separately, not in ms/step.
MFU divides model FLOPs (trainer/flops.py) by a matmul peak measured here in the row's dtype.

With --engines it instead compares the two training engines at the demo's shape (dim 128, 4 layers,
4 heads, vocab 1024, seq 128, batch 32; dropout 0, which the NumPy engine lacks), float32 on the CPU:
the torch engine eager (autograd, fused AdamW) against `train --engine numpy` (reference/training.py's
hand-written backward pass and AdamW in NumPy), steps alternating between them so that both see the
same load, the best step of each kept. It prints the ratio: the price of reading every gradient.

With --loss-steps N it also trains the baseline and the fastest row for N steps each from the same
initial weights on the same Tiny Shakespeare batches (Llama 2 tokenizer) and prints the mean loss
of the last 10 steps of each: the speed must not come from doing less work (target: within 2%).
"""

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_data import data_file  # noqa: E402
from formats.spec import ModelArgs  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.flops import flops_per_token, measure_matmul_peak  # noqa: E402
from trainer.model import Transformer  # noqa: E402
from trainer.numpy_engine import NumpyEngine  # noqa: E402
from trainer.train import make_optimizer  # noqa: E402

SEED_ARGS = ModelArgs(dim=288, n_layers=6, n_heads=6, vocab_size=32000, max_seq_len=256)
BATCH_SIZE = 16
WARMUP_STEPS = 2
# llama2_scratch/demo_cmd.py's DEMO_TRAINING shape, its dropout left out.
DEMO_ARGS = ModelArgs(dim=128, n_layers=4, n_heads=4, vocab_size=1024, max_seq_len=128)
DEMO_BATCH = 32


def baseline_loss(model, x, y):
    """llama2.c's way: every logit materialized in float32, then the library cross-entropy."""
    logits, _ = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1)


def ours_loss(model, x, y):
    return model(x, y)[1]


def run_steps(device, amp_dtype, fused, batches, compile_model=False):
    """Train the seed model from a fixed init on `batches` [(x, y), ...]; the same AdamW settings
    for every row (fused kernel or not). -> (loss per step, time.perf_counter() after each step)."""
    torch.manual_seed(0)
    model = Transformer(SEED_ARGS).to(device)
    config = TrainConfig()
    optimizer = make_optimizer(model, config, torch.device(device).type if fused else "none")
    autocast = (torch.autocast(torch.device(device).type, dtype=amp_dtype) if amp_dtype != torch.float32
                else contextlib.nullcontext())
    forward = torch.compile(model) if compile_model else model
    losses, stamps = [], [time.perf_counter()]
    for x, y in batches:
        with autocast:
            loss = (ours_loss if fused else baseline_loss)(forward, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())         # .item() waits for the device
        stamps.append(time.perf_counter())
    return losses, stamps


def time_steps(device, amp_dtype, fused, steps, compile_model=False):
    """(mean seconds per training step (forward, backward, clip, AdamW) after warm-up steps,
    seconds spent in the warm-up steps, which include any compilation)."""
    tokens = torch.randint(0, SEED_ARGS.vocab_size, (BATCH_SIZE, SEED_ARGS.max_seq_len + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    _, stamps = run_steps(device, amp_dtype, fused, [(x, y)] * (WARMUP_STEPS + steps), compile_model)
    return (stamps[-1] - stamps[WARMUP_STEPS]) / steps, stamps[WARMUP_STEPS] - stamps[0]


def shakespeare_batches(n_steps, device):
    """n_steps (x, y) batches of random windows of Tiny Shakespeare in Llama 2 tokens (seed 0)."""
    import numpy as np

    from reference.runtime.fast_tokenizer import FastTokenizer
    tokenizer = FastTokenizer.from_spm(data_file("llama2/tokenizer.model"))
    ids = np.array(tokenizer.encode(data_file("tinyshakespeare/input.txt").read_text(encoding="utf-8")))
    rng = np.random.default_rng(0)
    span = SEED_ARGS.max_seq_len + 1
    batches = []
    for _ in range(n_steps):
        starts = rng.integers(0, len(ids) - span, BATCH_SIZE)
        window = torch.from_numpy(np.stack([ids[s:s + span] for s in starts])).to(device)
        batches.append((window[:, :-1], window[:, 1:]))
    return batches


def engine_steps(engine):
    """A function running one float32 training step (forward, backward, clip, AdamW) of `engine`
    at the demo's shape from a fixed init on fixed random tokens; -> the step's loss."""
    torch.manual_seed(0)
    model, config = Transformer(DEMO_ARGS), TrainConfig()
    tokens = np.random.default_rng(0).integers(0, DEMO_ARGS.vocab_size, (DEMO_BATCH, DEMO_ARGS.max_seq_len + 1))
    if engine == "numpy":
        numpy_engine = NumpyEngine(model, config)

        def step():
            loss, grads = numpy_engine.forward_backward(tokens[:, :-1], tokens[:, 1:], 1)
            numpy_engine.update(grads, config.learning_rate)
            return loss
        return step
    optimizer = make_optimizer(model, config, "cpu")
    x, y = torch.from_numpy(tokens[:, :-1]), torch.from_numpy(tokens[:, 1:])

    def step():
        loss = ours_loss(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
    return step


def compare_engines(steps):
    """Print each engine's best ms/step and tok/s over `steps` alternating steps, and the ratio."""
    runs = {engine: engine_steps(engine) for engine in ("torch", "numpy")}
    best = {}
    for round_ in range(WARMUP_STEPS + steps):
        for engine, step in runs.items():
            start = time.perf_counter()
            step()
            if round_ >= WARMUP_STEPS:
                best[engine] = min(best.get(engine, float("inf")), time.perf_counter() - start)
    tokens = DEMO_BATCH * DEMO_ARGS.max_seq_len
    print(f"demo shape, float32, cpu, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{tokens} tokens/step, best of {steps} steps each")
    for engine, seconds in best.items():
        print(f"{engine:6} engine {1000 * seconds:9.1f} ms/step {tokens / seconds:9,.0f} tok/s")
    print(f"numpy / torch tok/s: {best['torch'] / best['numpy']:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loss-steps", type=int, default=0,
                        help="also compare the loss after this many real-data steps (0: skip)")
    parser.add_argument("--engines", action="store_true",
                        help="compare --engine numpy with --engine torch at the demo's shape instead")
    args = parser.parse_args()
    if args.engines:
        compare_engines(args.steps)
        return
    n_params = sum(p.numel() for p in Transformer(SEED_ARGS).parameters())
    per_token = flops_per_token(n_params, SEED_ARGS.n_layers, SEED_ARGS.dim, SEED_ARGS.max_seq_len)
    tokens_per_step = BATCH_SIZE * SEED_ARGS.max_seq_len
    peaks = {dtype: measure_matmul_peak(args.device, dtype)
             for dtype in (torch.float32, torch.bfloat16)}
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{n_params / 1e6:.2f}M parameters, {tokens_per_step} tokens/step")
    for dtype, peak in peaks.items():
        print(f"matmul peak {str(dtype).removeprefix('torch.'):9} {peak / 1e9:8.1f} GFLOP/s")
    rows = [("baseline fp32 eager", torch.float32, False, False), ("ours float32", torch.float32, True, False),
            ("ours bfloat16", torch.bfloat16, True, False), ("ours bfloat16 + compile", torch.bfloat16, True, True)]
    baseline = None
    print(f"{'run':24} {'ms/step':>9} {'tok/s':>9} {'vs base':>8} {'MFU':>6}  warm-up s")
    for name, dtype, fused, compile_model in rows:
        seconds, warmup = time_steps(args.device, dtype, fused, args.steps, compile_model)
        tok_s = tokens_per_step / seconds
        baseline = baseline or tok_s
        mfu = per_token * tok_s / peaks[dtype]
        print(f"{name:24} {1000 * seconds:9.1f} {tok_s:9,.0f} {tok_s / baseline:7.2f}x {100 * mfu:5.1f}%  {warmup:8.1f}")
    if args.loss_steps:
        batches = shakespeare_batches(args.loss_steps, args.device)
        tail = min(10, args.loss_steps)
        means = {}
        for name, dtype, fused, compile_model in (rows[0], rows[-1]):
            losses, _ = run_steps(args.device, dtype, fused, batches, compile_model)
            means[name] = sum(losses[-tail:]) / tail
            print(f"{name:24} mean loss of steps {args.loss_steps - tail + 1}-{args.loss_steps}: {means[name]:.4f}")
        base, fast = means[rows[0][0]], means[rows[-1][0]]
        print(f"loss difference: {100 * (fast - base) / base:+.2f}% (target within 2%)")


if __name__ == "__main__":
    main()
