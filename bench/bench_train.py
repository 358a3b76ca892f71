"""Training throughput and MFU at the seed config, against a plain llama2.c-style baseline.

    python bench/bench_train.py [--steps 5] [--device cpu]

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
"""

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from reference.config import ModelArgs
from trainer.config import TrainConfig
from trainer.flops import flops_per_token, measure_matmul_peak
from trainer.model import Transformer
from trainer.train import make_optimizer

SEED_ARGS = ModelArgs(dim=288, n_layers=6, n_heads=6, vocab_size=32000, max_seq_len=256)
BATCH_SIZE = 16
WARMUP_STEPS = 2


def baseline_loss(model, x, y):
    """llama2.c's way: every logit materialized in float32, then the library cross-entropy."""
    logits, _ = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1)


def ours_loss(model, x, y):
    return model(x, y)[1]


def time_steps(device, amp_dtype, fused, steps, compile_model=False):
    """(mean seconds per training step (forward, backward, clip, AdamW) after warm-up steps,
    seconds spent in the warm-up steps, which include any compilation)."""
    torch.manual_seed(0)
    model = Transformer(SEED_ARGS).to(device)
    if fused:
        optimizer = make_optimizer(model, TrainConfig(), torch.device(device).type)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, foreach=False)
    tokens = torch.randint(0, SEED_ARGS.vocab_size, (BATCH_SIZE, SEED_ARGS.max_seq_len + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    autocast = (torch.autocast(torch.device(device).type, dtype=amp_dtype) if amp_dtype != torch.float32
                else contextlib.nullcontext())
    forward = torch.compile(model) if compile_model else model
    warmup_start = time.perf_counter()
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            start = time.perf_counter()
        with autocast:
            loss = (ours_loss if fused else baseline_loss)(forward, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()         # waits for the device
    return (time.perf_counter() - start) / steps, start - warmup_start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    n_params = sum(p.numel() for p in Transformer(SEED_ARGS).parameters())
    per_token = flops_per_token(n_params, SEED_ARGS.n_layers, SEED_ARGS.dim, SEED_ARGS.max_seq_len)
    tokens_per_step = BATCH_SIZE * SEED_ARGS.max_seq_len
    peaks = {dtype: measure_matmul_peak(args.device, dtype, size=2048, seconds=2.0)
             for dtype in (torch.float32, torch.bfloat16)}
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{n_params / 1e6:.2f}M parameters, {tokens_per_step} tokens/step")
    for dtype, peak in peaks.items():
        print(f"matmul peak {str(dtype).removeprefix('torch.'):9} {peak / 1e9:8.1f} GFLOP/s (2048^3)")
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


if __name__ == "__main__":
    main()
