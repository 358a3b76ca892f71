"""The training loop: seekable batches, AdamW with warmup + cosine, eval in bits/byte, exact resume.

Exact resume rests on one rule: nothing the loop does depends on history it does not save. The
batch of step s, micro-step m is drawn from a fresh `np.random.default_rng((seed, s, m))`, so the
data cursor is just the step number; model, optimizer, grad scaler and torch's generators are
saved with it. Training N steps therefore equals training k, stopping, resuming and training
N - k, bit for bit on a CPU in float32 (tests/test_train.py checks it).

Under torchrun (DDP), rank r runs micro-steps r*A/W ... (r+1)*A/W - 1 of each step (A =
grad_accum, W = world size), scales its loss by W/A and lets DDP average the gradients: the same
global batch and the same mean loss as one process running all A micro-steps. Only rank 0
evaluates, prints and writes (processes and Ctrl-C: trainer/runtime.py).

The shape is nanoGPT's: `setup` builds a `RunState` (model, optimizer, scaler, step count, data,
measurements), then the loop in `_train` runs `train_step`, logs, and every eval_interval steps
`evaluate_and_save`s. `--engine numpy` keeps all of it but the step and the eval forward, which
reference/training.py computes in NumPy (trainer/numpy_engine.py). `--dtype auto` is resolved in
`setup` (trainer/runtime.py, pick_dtype), before anything depends on it.
"""

import contextlib
import dataclasses
import json
import math
import time
import typing
from pathlib import Path

import numpy as np
import torch

from data.paths import DataError, file_sha256, resolve_tokenizer, token_dir
from formats.atomic import atomic_write
from formats.spec import ModelArgs
from reference.training import decay_groups, learning_rate
from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.flops import flops_per_token, measure_matmul_peak, measure_numpy_peak
from trainer.model import Transformer
from trainer.numpy_engine import ADAM_EPS, NumpyEngine, refusal
from trainer.plot import write_loss_curve
from trainer.pretokenize import load_tokens
from trainer.runtime import (Distributed, Interrupted, init_distributed, pick_dtype, sigint_between_steps,
                             stop_requested)

CKPT_NAME = "ckpt.pt"
LOG_NAME = "log.jsonl"
CURVE_NAME = "loss.png"
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                 "float64": torch.float64}
# Trained in this dtype itself, without autocast (float64: to study the maths without rounding).
_PLAIN_DTYPES = ("float32", "float64")


def get_lr(it, config):
    """Linear warmup to learning_rate, cosine decay to min_lr at decay_iters, then min_lr
    (reference.training.learning_rate, shared with the NumPy training step)."""
    return learning_rate(it, max_lr=config.learning_rate, min_lr=config.min_lr,
                         warmup_iters=config.warmup_iters, decay_iters=config.decay_iters)


def batch_starts(seed, step, micro, n_tokens, seq_len, batch_size):
    """Window starts of one micro-batch: a pure function of (seed, step, micro)."""
    rng = np.random.default_rng((seed, step, micro))
    return rng.integers(0, n_tokens - seq_len - 1, size=batch_size, endpoint=True)


def make_windows(tokens, starts, seq_len):
    """(B, T+1) int64 windows: their first T are the inputs, their last T the targets (shifted by one)."""
    return np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)


def eval_starts(n_tokens, seq_len, max_windows):
    """Non-overlapping val windows, evenly spread, at most max_windows (all of them if fewer)."""
    n_windows = (n_tokens - 1) // seq_len
    if n_windows < 1:
        raise DataError(f"the val split has {n_tokens} tokens, fewer than max_seq_len + 1 = {seq_len + 1}")
    picked = np.unique(np.linspace(0, n_windows - 1, num=min(n_windows, max_windows)).round().astype(np.int64))
    return picked * seq_len


def make_optimizer(model, config, device_type):
    """AdamW; matrices and embeddings decay, norm gains do not (decaying a gain toward 0 only hurts)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    decayed, kept = decay_groups({name: p.shape for name, p in params.items()})   # as reference.training
    groups = [{"params": [params[name] for name in decayed], "weight_decay": config.weight_decay},
              {"params": [params[name] for name in kept], "weight_decay": 0.0}]
    # The fused kernel is one launch per step instead of several per tensor (CUDA and CPU).
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), eps=ADAM_EPS,
                             fused=device_type in ("cuda", "cpu"))


@dataclasses.dataclass
class Data:
    """The token splits of one dataset, and the tokenizer that made them (saved in every checkpoint)."""
    train: np.ndarray
    val: np.ndarray
    val_split: dict         # the val split's {"tokens", "bytes"}: bits/byte needs the ratio
    vocab_size: int
    tokenizer_path: Path
    tokenizer_sha: str


@dataclasses.dataclass
class RunState:
    """Everything a run holds between steps: what it trains, how far it is, what it measured.

    `raw_model` is the Transformer (its weights are evaluated and saved); `model` is what the
    training forward runs, the same module compiled and/or wrapped in DistributedDataParallel.
    With --engine numpy, `optimizer` is the NumpyEngine, which steps the weights and saves and
    loads AdamW's state in its stead.
    """
    config: TrainConfig
    dist: Distributed
    device: str
    out: typing.Callable
    data: Data
    raw_model: Transformer
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | NumpyEngine
    scaler: torch.amp.GradScaler
    iter_num: int = 0
    losses: list = dataclasses.field(default_factory=list)    # train loss of each step run here
    val_loss: float | None = None
    val_bpb: float | None = None
    saved_at: int | None = None     # the iter_num ckpt.pt holds, when saved by this run
    flops_token: float = 0.0        # model FLOPs per token and the measured matmul peak: MFU
    peak: float = 0.0
    peak_raised: bool = False       # a step achieved more than the measured peak (said once)
    tokens_per_s: float = 0.0       # of the last step
    step_time: float = 0.0          # time.perf_counter() when the current step's clock started
    curve_note: str | None = None   # why loss.png is not drawn (no matplotlib), said once

    @property
    def device_type(self):
        return torch.device(self.device).type

    @property
    def micro_steps(self):
        """Micro-batches this rank runs per step."""
        return self.config.grad_accum // self.dist.world_size

    @property
    def tokens_per_step(self):
        return self.config.batch_size * self.config.grad_accum * self.config.model.max_seq_len

    @property
    def n_params(self):
        return sum(p.numel() for p in self.raw_model.parameters())

    @property
    def out_dir(self):
        return Path(self.config.out_dir)

    @property
    def ckpt_path(self):
        return self.out_dir / CKPT_NAME

    def autocast(self):
        """The mixed-precision context of --dtype: torch.autocast, or nothing for float32 and float64."""
        if self.config.dtype in _PLAIN_DTYPES:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=_TORCH_DTYPES[self.config.dtype])

    def result(self):
        return {"val_loss": self.val_loss, "val_bpb": self.val_bpb, "iter_num": self.iter_num,
                "ckpt": self.ckpt_path, "losses": self.losses, "tokens_per_s": self.tokens_per_s,
                "n_params": self.n_params, "model_args": self.raw_model.args.to_dict()}


def train(config, out=print):
    """Train per `config`; returns {"iter_num", "val_loss", "val_bpb", "ckpt", "losses", ...}."""
    # The NumPy engine runs on the CPU; "auto" must not pick a GPU for it.
    dist, device = init_distributed("cpu" if config.engine == "numpy" and config.device == "auto" else config.device)
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
    """The loop: step, log, every eval_interval evaluate and save; stop cleanly on SIGINT."""
    run = setup(config, dist, device, out)
    if stop_requested(stop, dist, device):
        raise KeyboardInterrupt("interrupted before the first step; nothing new was saved")
    run.step_time = time.perf_counter()
    while run.iter_num < config.max_iters:
        record = train_step(run)
        if run.iter_num % config.log_interval == 0 or run.iter_num == 1:
            out(f"iter {run.iter_num:6d} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
                f"{record['ms']:7.1f} ms | {record['tok_s']:9,.0f} tok/s | mfu {100 * record['mfu']:5.1f}%")
        if run.iter_num % config.eval_interval == 0 or run.iter_num == config.max_iters:
            evaluate_and_save(run, record)
        append_log(run, record)
        if stop_requested(stop, dist, device):
            if dist.is_main and run.saved_at != run.iter_num:
                save(run)
            raise Interrupted(run.iter_num, run.ckpt_path)
    return run.result()


# ---- setup ----------------------------------------------------------------------------------

def setup(config, dist, device, out):
    """Check the settings against the data, build (or resume) model and optimizer, announce them."""
    device_type = torch.device(device).type
    data = load_data(config)
    resumed = checkpoint.load(Path(config.out_dir) / CKPT_NAME) if config.resume else None
    model_args = _model_args(config, data, resumed)
    dtype, reason = resolve_dtype(config, dist, device, model_args, resumed)
    out(f"dtype {dtype}: {reason}")
    config = dataclasses.replace(config, dtype=dtype)
    _check_runtime(config, dist, device_type)
    torch.manual_seed(config.seed)     # the same init on every rank (DDP also broadcasts rank 0's)
    raw_model = Transformer(model_args).to(device)
    if dtype == "float64":
        raw_model = raw_model.double()
    numpy_engine = config.engine == "numpy"
    run = RunState(config, dist, device, out, data, raw_model, model=raw_model,
                   optimizer=NumpyEngine(raw_model, config) if numpy_engine else
                   make_optimizer(raw_model, config, device_type),
                   scaler=torch.amp.GradScaler(device_type, enabled=config.dtype == "float16"))
    if resumed is not None:
        _restore(run, resumed)
        del resumed     # its tensors (optimizer state: twice the weights) are loaded: free them
    else:
        torch.manual_seed(config.seed + dist.rank)    # dropout masks differ across ranks
    _compile_and_wrap(run)
    run.flops_token = flops_per_token(run.n_params, model_args.n_layers, model_args.dim, config.model.max_seq_len)
    run.peak = measure_numpy_peak(dtype) if numpy_engine else measure_matmul_peak(device, _TORCH_DTYPES[dtype])
    out(f"model: {run.n_params / 1e6:.2f}M parameters, {model_args.to_dict()}")
    out(f"engine {config.engine}, device {device} ({dist.world_size} process(es)), dtype {config.dtype}, "
        f"{run.tokens_per_step:,} tokens/step, matmul peak {run.peak / 1e9:.1f} GFLOP/s")
    if dist.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        start_log(run.out_dir / LOG_NAME, run.iter_num)
    return run


def resolve_dtype(config, dist, device, model_args, resumed):
    """(dtype, reason): --dtype as given; for auto, the dtype a resumed run was trained in, else
    pick_dtype's choice for this machine (rank 0's under DDP, so that every rank trains alike)."""
    if config.dtype != "auto":
        return config.dtype, "as --dtype asked"
    trained = resumed.get("config", {}).get("dtype") if resumed is not None else None
    if trained not in (None, "auto"):
        return trained, "the dtype ckpt.pt was trained in (resume)"
    if config.engine == "numpy":
        return "float32", "the NumPy engine computes in float32 or float64 (no bf16)"
    choice = list(pick_dtype(device, config.batch_size * config.model.max_seq_len, model_args.dim,
                             model_args.hidden_dim))
    if dist.world_size > 1:
        torch.distributed.broadcast_object_list(choice, src=0)
    return tuple(choice)


def _check_runtime(config, dist, device_type):
    if config.engine == "numpy" and (reason := refusal(config, dist.world_size, device_type)):
        raise DataError(reason)
    if config.dtype == "float16" and device_type == "cpu":
        # Measured on this project's CPU (AVX-512, no FP16 units): float16 matmuls ran at 1-22
        # GFLOP/s against ~195 for float32, and timing the matmul peak alone took over a minute.
        raise DataError("dtype float16 is for GPUs (autocast with a GradScaler); on the CPU its matmuls are "
                        "emulated and ~10x slower than float32: use --dtype bfloat16 or float32")
    if config.grad_accum % dist.world_size:
        raise DataError(f"grad_accum {config.grad_accum} must be a multiple of the world size {dist.world_size}")


def load_data(config):
    """The pretokenized splits of config.dataset, checked against the tokenizer that must have made them."""
    tokenizer_path, tag = resolve_tokenizer(config.data_dir, config.dataset, config.vocab_size, config.tokenizer)
    folder = token_dir(config.data_dir, config.dataset, tag)
    train_tokens, meta = load_tokens(folder, "train")
    val_tokens, _ = load_tokens(folder, "val")
    tokenizer_sha = file_sha256(tokenizer_path)
    if meta["tokenizer_sha256"] != tokenizer_sha:
        raise DataError(f"{folder}: token files were made with another tokenizer; run pretokenize again")
    if len(train_tokens) < config.model.max_seq_len + 2:
        raise DataError(f"the train split has {len(train_tokens)} tokens, fewer than max_seq_len + 2")
    return Data(train_tokens, val_tokens, meta["splits"]["val"], meta["vocab_size"], Path(tokenizer_path),
                tokenizer_sha)


def _model_args(config, data, resumed):
    """A resumed run's ModelArgs are its checkpoint's; a new run's, the config's with the data's vocab_size."""
    if resumed is None:
        model_args = config.model_args(data.vocab_size)
    else:
        model_args = ModelArgs.from_dict(checkpoint.stored_model_args(resumed))
    if model_args.vocab_size != data.vocab_size or model_args.max_seq_len < config.model.max_seq_len:
        raise DataError("the checkpoint's vocab_size/max_seq_len do not fit these token files")
    return model_args


def _restore(run, resumed):
    """Continue where the ckpt.pt dict `resumed` stopped: weights, optimizer, scaler, step, generators."""
    trained_by = resumed.get("config", {}).get("engine", "torch")
    if trained_by != run.config.engine:
        # Their optimizer states have different layouts; the weights alone would restart AdamW.
        raise DataError(f"ckpt.pt was trained with --engine {trained_by}: resume it with the same engine")
    run.raw_model.load_state_dict(checkpoint.clean_state_dict(resumed["model"]))
    run.optimizer.load_state_dict(resumed["optimizer"])
    run.scaler.load_state_dict(resumed["scaler"])
    run.iter_num = resumed["iter_num"]
    torch.set_rng_state(resumed["rng"]["torch"])
    if run.device_type == "cuda" and resumed["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(resumed["rng"]["cuda"])


def _compile_and_wrap(run):
    """TF32 matmuls on CUDA, then run.model = raw_model, compiled if asked, in DDP under torchrun."""
    if run.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if run.config.compile:
        run.model = torch.compile(run.model)
    if run.dist.world_size > 1:
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.dist.local_rank] if run.device_type == "cuda" else None)


# ---- one step ---------------------------------------------------------------------------------

def train_step(run):
    """One optimizer step over this rank's micro-batches; -> the step's log record."""
    lr = get_lr(run.iter_num, run.config)
    step_loss = (_numpy_step if run.config.engine == "numpy" else _torch_step)(run, lr)
    run.iter_num += 1
    run.losses.append(step_loss)

    now = time.perf_counter()
    dt, run.step_time = now - run.step_time, now
    run.tokens_per_s = run.tokens_per_step / dt
    return {"iter": run.iter_num, "loss": step_loss, "lr": lr, "ms": 1000 * dt, "tok_s": run.tokens_per_s,
            "mfu": mfu(run)}


def mfu(run):
    """This process's model FLOP/s over the peak. A step cannot beat the hardware: one that beat the
    measured peak shows it was measured low (timed while other work ran), so the peak is raised to
    what the step achieved, said once, and MFU stays at most 1."""
    achieved = run.flops_token * run.tokens_per_s / run.dist.world_size
    if achieved > run.peak:
        if not run.peak_raised:
            run.out(f"matmul peak raised from {run.peak / 1e9:.1f} to {achieved / 1e9:.1f} GFLOP/s: step "
                    f"{run.iter_num} achieved more than was measured at start (MFU is against the higher peak)")
        run.peak, run.peak_raised = achieved, True
    return achieved / run.peak


def _torch_step(run, lr):
    """Autograd over the micro-batches, clipping and torch's AdamW; -> the step's mean loss."""
    config = run.config
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    step_loss = 0.0
    for micro in range(run.micro_steps):
        step_loss += _forward_backward(run, micro)
    if config.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss


def _numpy_step(run, lr):
    """reference.training's gradients summed over the micro-batches, each divided by their count
    as the torch step divides the loss, then clipping and AdamW in NumPy; -> the step's mean loss."""
    step_loss, grads = 0.0, {}
    for micro in range(run.micro_steps):
        window = _micro_windows(run, micro)
        loss, micro_grads = run.optimizer.forward_backward(window[:, :-1], window[:, 1:], run.micro_steps)
        step_loss += loss
        for name, grad in micro_grads.items():
            grads[name] = grads[name] + grad if name in grads else grad
    run.optimizer.update(grads, lr)
    return step_loss


def _micro_windows(run, micro):
    """The (B, T+1) token windows of this rank's micro-batch `micro` of the current step."""
    config, seq_len = run.config, run.config.model.max_seq_len
    starts = batch_starts(config.seed, run.iter_num, run.dist.rank * run.micro_steps + micro,
                          len(run.data.train), seq_len, config.batch_size)
    return make_windows(run.data.train, starts, seq_len)


def _forward_backward(run, micro):
    """Loss and gradients of this rank's micro-batch `micro`; -> its share of the step's mean loss."""
    batch = torch.from_numpy(_micro_windows(run, micro)).to(run.device)
    x, y = batch[:, :-1], batch[:, 1:]
    # Gradients are all-reduced on the last micro-step only.
    sync = micro == run.micro_steps - 1 or run.dist.world_size == 1
    with contextlib.nullcontext() if sync else run.model.no_sync():
        with run.autocast():
            _, loss = run.model(x, y)
            loss = loss / run.micro_steps
        run.scaler.scale(loss).backward()
    return loss.item()


# ---- evaluate, save, log --------------------------------------------------------------------

@torch.no_grad()
def evaluate(run):
    """(val loss in nats/token, bits per byte) of run.raw_model over the chosen val windows.

    bits/byte = loss * (tokens / bytes of the split) / ln 2: nats per token times tokens per
    byte, so models with different tokenizers compare on the same text.
    """
    config, model, tokens, seq_len = run.config, run.raw_model, run.data.val, run.config.model.max_seq_len
    model.eval()
    starts = eval_starts(len(tokens), seq_len, config.eval_batches * config.batch_size)
    total, count = 0.0, 0
    for i in range(0, len(starts), config.batch_size):
        window = make_windows(tokens, starts[i:i + config.batch_size], seq_len)
        total += _batch_loss(run, window) * window[:, 1:].size
        count += window[:, 1:].size
    model.train()
    loss = total / count
    return loss, loss * run.data.val_split["tokens"] / run.data.val_split["bytes"] / math.log(2)


def _batch_loss(run, window):
    """The mean loss of the (B, T+1) windows `window`, forward only, by the run's engine."""
    if run.config.engine == "numpy":
        return run.optimizer.batch_loss(window[:, :-1], window[:, 1:])
    batch = torch.from_numpy(window).to(run.device)
    with run.autocast():
        _, loss = run.raw_model(batch[:, :-1], batch[:, 1:])
    return loss.item()


def evaluate_and_save(run, record):
    """Rank 0 evaluates (into run and `record`) and saves ckpt.pt; the eval is not timed as a step."""
    if run.dist.is_main:
        run.val_loss, run.val_bpb = evaluate(run)
        record.update(val_loss=run.val_loss, val_bpb=run.val_bpb)
        run.out(f"eval {run.iter_num:6d} | val loss {run.val_loss:.4f} | val {run.val_bpb:.4f} bits/byte")
        save(run)
        run.out(f"saved {run.ckpt_path}")
    run.step_time = time.perf_counter()


def save(run):
    """ckpt.pt of the state after run.iter_num steps (atomically replaced)."""
    checkpoint.save(_checkpoint_dict(run), run.ckpt_path)
    run.saved_at = run.iter_num


def append_log(run, record):
    """Rank 0 appends the step's record to log.jsonl and, after an eval, redraws loss.png."""
    if not run.dist.is_main:
        return
    log_path = run.out_dir / LOG_NAME
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
    if "val_loss" in record:
        # Redrawn from the whole log, so a resumed run's curve includes the steps before it.
        with open(log_path, encoding="utf-8") as log:
            note = write_loss_curve(_log_records(log), run.out_dir / CURVE_NAME)
        if note and not run.curve_note:
            run.out(note)
        run.curve_note = note


def start_log(log_path, iter_num):
    """Keep the records of log.jsonl up to step iter_num: none for a fresh run (an older run's
    points would mix into the new loss curve), those its checkpoint holds for a resumed one (a
    run killed after logging steps it never saved logs them again when it reruns them)."""
    if not log_path.exists():
        return
    with open(log_path, encoding="utf-8") as log:
        kept = [r for r in _log_records(log) if isinstance(r, dict) and r.get("iter", 0) <= iter_num]
    with atomic_write(log_path) as f:
        f.write("".join(json.dumps(record) + "\n" for record in kept).encode("utf-8"))


def _log_records(lines):
    """The log's records. A line torn by a full disk or a crash mid-append is skipped: the curve is
    worth less than a run that can resume."""
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def _checkpoint_dict(run):
    """The ckpt.pt dict (layout in trainer/checkpoint.py) of the state after run.iter_num steps."""
    tokenizer_path = run.data.tokenizer_path
    return {
        "model": checkpoint.clean_state_dict(run.raw_model.state_dict()),
        **checkpoint.model_args_entries(run.raw_model.args),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "iter_num": run.iter_num,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if run.device_type == "cuda" else None},
        "data_cursor": {"sampler": "default_rng((seed, step, micro))", "seed": run.config.seed,
                        "next_step": run.iter_num},
        "config": run.config.settings(),
        "tokenizer": {"path": str(tokenizer_path.resolve()), "sha256": run.data.tokenizer_sha,
                      "model": tokenizer_path.read_bytes()},
    }
