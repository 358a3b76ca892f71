"""The training loop: seekable batches, AdamW with warmup + cosine, eval in bits/byte, exact resume.

Exact resume rests on one rule: nothing the loop does depends on history it does not save. The
batch of step s, micro-step m is drawn from a fresh `np.random.default_rng((seed, s, m))`, so the
data cursor is just the step number; model, optimizer, grad scaler and torch's generators are
saved with it. Training N steps therefore equals training k, stopping, resuming and training
N - k, bit for bit on a CPU in float32 (tests/test_train.py checks it).

Under torchrun (DDP), rank r runs micro-steps r*A/W ... (r+1)*A/W - 1 of each step (A =
grad_accum, W = world size), scales its loss by W/A and lets DDP average the gradients: the same
global batch and the same mean loss as one process running all A micro-steps. Only rank 0
evaluates, prints and writes.
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from data.paths import DataError, file_sha256, resolve_tokenizer, token_dir
from formats.spec import ModelArgs
from trainer import checkpoint
from trainer.flops import flops_per_token, measure_matmul_peak
from trainer.model import Transformer
from trainer.plot import write_loss_curve
from trainer.pretokenize import load_tokens

CKPT_NAME = "ckpt.pt"
LOG_NAME = "log.jsonl"
CURVE_NAME = "loss.png"
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def get_lr(it, config):
    """Linear warmup to learning_rate, cosine decay to min_lr at decay_iters, then min_lr."""
    if it < config.warmup_iters:
        return config.learning_rate * (it + 1) / (config.warmup_iters + 1)
    if it >= config.decay_iters:
        return config.min_lr
    progress = (it - config.warmup_iters) / max(config.decay_iters - config.warmup_iters, 1)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.learning_rate - config.min_lr)


def batch_starts(seed, step, micro, n_tokens, seq_len, batch_size):
    """Window starts of one micro-batch: a pure function of (seed, step, micro)."""
    rng = np.random.default_rng((seed, step, micro))
    return rng.integers(0, n_tokens - seq_len - 1, size=batch_size, endpoint=True)


def make_batch(tokens, starts, seq_len, device):
    """(inputs, targets), each (B, T) int64: targets are the inputs shifted by one."""
    windows = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)  # (B, T+1)
    batch = torch.from_numpy(windows).to(device)
    return batch[:, :-1], batch[:, 1:]


def eval_starts(n_tokens, seq_len, max_windows):
    """Non-overlapping val windows, evenly spread, at most max_windows (all of them if fewer)."""
    n_windows = (n_tokens - 1) // seq_len
    if n_windows < 1:
        raise DataError(f"the val split has {n_tokens} tokens, fewer than max_seq_len + 1 = {seq_len + 1}")
    picked = np.unique(np.linspace(0, n_windows - 1, num=min(n_windows, max_windows)).round().astype(np.int64))
    return picked * seq_len


@torch.no_grad()
def evaluate(model, tokens, meta_split, config, device, autocast):
    """(val loss in nats/token, bits per byte) over the chosen val windows.

    bits/byte = loss * (tokens / bytes of the split) / ln 2: nats per token times tokens per
    byte, so models with different tokenizers compare on the same text.
    """
    model.eval()
    starts = eval_starts(len(tokens), config.max_seq_len, config.eval_batches * config.batch_size)
    total, count = 0.0, 0
    for i in range(0, len(starts), config.batch_size):
        x, y = make_batch(tokens, starts[i:i + config.batch_size], config.max_seq_len, device)
        with autocast():
            _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train()
    loss = total / count
    return loss, loss * meta_split["tokens"] / meta_split["bytes"] / math.log(2)


def pick_device(name):
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def make_optimizer(model, config, device_type):
    """AdamW; matrices and embeddings decay, norm gains do not (decaying a gain toward 0 only hurts)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # The fused kernel is one launch per step instead of several per tensor (CUDA and CPU).
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2),
                             fused=device_type in ("cuda", "cpu"))


class Interrupted(KeyboardInterrupt):
    """SIGINT stopped training between two steps; the state after `iter_num` steps is in `ckpt`."""

    def __init__(self, iter_num, ckpt):
        super().__init__(f"interrupted after iter {iter_num}; saved {ckpt} (continue with --resume)")
        self.iter_num, self.ckpt = iter_num, ckpt


@contextlib.contextmanager
def sigint_between_steps():
    """Yield an Event that the first SIGINT sets instead of raising KeyboardInterrupt.

    The loop checks it between steps, so the checkpoint it then saves holds whole steps: an
    interrupt inside optimizer.step() would leave some weights updated and others not. A second
    SIGINT interrupts at once, as usual. Signal handlers can only be set from the main thread;
    elsewhere the event is never set.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        requested.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0


def init_distributed(device_name):
    """Join the process group when launched by torchrun (RANK set); otherwise one process."""
    if "RANK" not in os.environ:
        return Distributed(), pick_device(device_name)
    dist = Distributed(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    device = pick_device(device_name)
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        device = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend=backend)
    return dist, device


def train(config, out=print):
    """Train per `config`; returns {"iter_num", "val_loss", "val_bpb", "ckpt", "losses", ...}."""
    dist, device = init_distributed(config.device)
    try:
        with sigint_between_steps() as stop:
            result = _train(config, dist, device, out if dist.is_main else (lambda *a, **k: None), stop)
        if dist.world_size > 1:
            # Rank 0 saves and evaluates after the others are done; tearing the group down while
            # a peer's connection is still closing aborted rank 0 at exit about one run in five
            # ("terminate called without an active exception", gloo).
            torch.distributed.barrier()
        return result
    finally:
        if dist.world_size > 1:
            torch.distributed.destroy_process_group()


def _train(config, dist, device, out, stop):
    device_type = torch.device(device).type
    if config.dtype == "float16" and device_type == "cpu":
        # Measured on this project's CPU (AVX-512, no FP16 units): float16 matmuls ran at 1-22
        # GFLOP/s against ~195 for float32, and timing the matmul peak alone took over a minute.
        raise DataError("dtype float16 is for GPUs (autocast with a GradScaler); on the CPU its matmuls are "
                        "emulated and ~10x slower than float32: use --dtype bfloat16 or float32")
    if config.grad_accum % dist.world_size:
        raise DataError(f"grad_accum {config.grad_accum} must be a multiple of the world size {dist.world_size}")
    micro_steps = config.grad_accum // dist.world_size
    tokenizer_path, tag = resolve_tokenizer(config.data_dir, config.dataset, config.vocab_size, config.tokenizer)
    folder = token_dir(config.data_dir, config.dataset, tag)
    train_tokens, meta = load_tokens(folder, "train")
    val_tokens, _ = load_tokens(folder, "val")
    tokenizer_sha = file_sha256(tokenizer_path)
    if meta["tokenizer_sha256"] != tokenizer_sha:
        raise DataError(f"{folder}: token files were made with another tokenizer; run pretokenize again")
    if len(train_tokens) < config.max_seq_len + 2:
        raise DataError(f"the train split has {len(train_tokens)} tokens, fewer than max_seq_len + 2")

    out_dir = Path(config.out_dir)
    ckpt_path = out_dir / CKPT_NAME
    resumed = checkpoint.load(ckpt_path) if config.resume else None
    if config.resume and resumed is None:
        raise DataError(f"{ckpt_path}: nothing to resume")
    if resumed is not None:
        model_args = ModelArgs.from_dict(resumed["model_args"])
    else:
        model_args = ModelArgs(dim=config.dim, n_layers=config.n_layers, n_heads=config.n_heads,
                               n_kv_heads=config.n_kv_heads, vocab_size=meta["vocab_size"],
                               hidden_dim=config.hidden_dim, multiple_of=config.multiple_of,
                               max_seq_len=config.max_seq_len, dropout=config.dropout)
    if model_args.vocab_size != meta["vocab_size"] or model_args.max_seq_len < config.max_seq_len:
        raise DataError("the checkpoint's vocab_size/max_seq_len do not fit these token files")

    torch.manual_seed(config.seed)     # the same init on every rank (DDP also broadcasts rank 0's)
    model = Transformer(model_args).to(device)
    optimizer = make_optimizer(model, config, device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=config.dtype == "float16")
    iter_num = 0
    if resumed is not None:
        model.load_state_dict(checkpoint.clean_state_dict(resumed["model"]))
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        iter_num = resumed["iter_num"]
        torch.set_rng_state(resumed["rng"]["torch"])
        if device_type == "cuda" and resumed["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"])
        del resumed
    else:
        torch.manual_seed(config.seed + dist.rank)    # dropout masks differ across ranks

    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    raw_model = model
    if config.compile:
        model = torch.compile(model)
    if dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device_type == "cuda" else None)
    amp_dtype = _TORCH_DTYPES[config.dtype]

    def autocast():
        if amp_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=amp_dtype)

    n_params = sum(p.numel() for p in raw_model.parameters())
    flops_token = flops_per_token(n_params, model_args.n_layers, model_args.dim, config.max_seq_len)
    peak = measure_matmul_peak(device, amp_dtype, size=2048, seconds=0.3)
    tokens_per_step = config.batch_size * config.grad_accum * config.max_seq_len
    out(f"model: {n_params / 1e6:.2f}M parameters, {model_args.to_dict()}")
    out(f"device {device} ({dist.world_size} process(es)), dtype {config.dtype}, "
        f"{tokens_per_step:,} tokens/step, matmul peak {peak / 1e9:.1f} GFLOP/s")

    log_path = out_dir / LOG_NAME
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    losses, result = [], {"val_loss": None, "val_bpb": None}
    tokens_per_s = 0.0
    saved_at = None
    step_time = time.perf_counter()
    while iter_num < config.max_iters:
        lr = get_lr(iter_num, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for micro in range(micro_steps):
            starts = batch_starts(config.seed, iter_num, dist.rank * micro_steps + micro,
                                  len(train_tokens), config.max_seq_len, config.batch_size)
            x, y = make_batch(train_tokens, starts, config.max_seq_len, device)
            # Gradients are all-reduced on the last micro-step only.
            sync = micro == micro_steps - 1 or dist.world_size == 1
            with contextlib.nullcontext() if sync else model.no_sync():
                with autocast():
                    _, loss = model(x, y)
                    loss = loss / micro_steps
                scaler.scale(loss).backward()
            step_loss += loss.item()
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        losses.append(step_loss)

        now = time.perf_counter()
        dt, step_time = now - step_time, now
        tokens_per_s = tokens_per_step / dt
        mfu = flops_token * tokens_per_s / dist.world_size / peak
        record = {"iter": iter_num, "loss": step_loss, "lr": lr, "ms": 1000 * dt,
                  "tok_s": tokens_per_s, "mfu": mfu}
        if iter_num % config.log_interval == 0 or iter_num == 1:
            out(f"iter {iter_num:6d} | loss {step_loss:.4f} | lr {lr:.2e} | {1000 * dt:7.1f} ms | "
                f"{tokens_per_s:9,.0f} tok/s | mfu {100 * mfu:5.1f}%")
        if iter_num % config.eval_interval == 0 or iter_num == config.max_iters:
            if dist.is_main:
                val_loss, val_bpb = evaluate(raw_model, val_tokens, meta["splits"]["val"], config,
                                             device, autocast)
                result.update(val_loss=val_loss, val_bpb=val_bpb)
                record.update(val_loss=val_loss, val_bpb=val_bpb)
                out(f"eval {iter_num:6d} | val loss {val_loss:.4f} | val {val_bpb:.4f} bits/byte")
                checkpoint.save(_checkpoint_dict(raw_model, optimizer, scaler, iter_num, config,
                                                 tokenizer_path, tokenizer_sha, device_type), ckpt_path)
                saved_at = iter_num
                out(f"saved {ckpt_path}")
            step_time = time.perf_counter()     # the eval is not part of the next step's time
        if dist.is_main:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            if "val_loss" in record:
                # Redrawn from the whole log, so a resumed run's curve includes the steps before it.
                with open(log_path, encoding="utf-8") as log:
                    write_loss_curve(_log_records(log), out_dir / CURVE_NAME)
        if _stop_requested(stop, dist, device):
            if dist.is_main and saved_at != iter_num:
                checkpoint.save(_checkpoint_dict(raw_model, optimizer, scaler, iter_num, config,
                                                 tokenizer_path, tokenizer_sha, device_type), ckpt_path)
            raise Interrupted(iter_num, ckpt_path)
    result.update(iter_num=iter_num, ckpt=ckpt_path, losses=losses, tokens_per_s=tokens_per_s,
                  n_params=n_params, model_args=model_args.to_dict())
    return result


def _log_records(lines):
    """The log's records. A line torn by a full disk or a crash mid-append is skipped: the curve is
    worth less than a run that can resume."""
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def _stop_requested(stop, dist, device):
    """Whether SIGINT asked to stop; under DDP, whether it reached any rank, so that all ranks stop
    at the same step (one that stopped alone would leave the others waiting in an all-reduce)."""
    if dist.world_size == 1:
        return stop.is_set()
    flag = torch.tensor([float(stop.is_set())], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.item() > 0


def _checkpoint_dict(model, optimizer, scaler, iter_num, config, tokenizer_path, tokenizer_sha, device_type):
    return {
        "model": checkpoint.clean_state_dict(model.state_dict()),
        "model_args": model.args.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iter_num": iter_num,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if device_type == "cuda" else None},
        "data_cursor": {"sampler": "default_rng((seed, step, micro))", "seed": config.seed,
                        "next_step": iter_num},
        "config": dataclasses.asdict(config),
        "tokenizer": {"path": str(Path(tokenizer_path).resolve()), "sha256": tokenizer_sha,
                      "model": Path(tokenizer_path).read_bytes()},
    }
