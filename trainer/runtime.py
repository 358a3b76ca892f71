"""Where a run executes: the device, the dtype, torchrun's process group, stopping cleanly on Ctrl-C.

`--dtype auto` (pick_dtype) picks per machine: on a GPU bf16 autocast where it has bf16, else fp16
with a grad scaler; on a CPU bf16 only where the CPU computes it natively and a measured matmul of
the model's shape is faster than fp32 (without the hardware, autocast emulates bf16 and ran one
measured matmul 6.6x slower than fp32); else fp32.

Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE set) every process joins one group; otherwise the run
is one process of rank 0. A first SIGINT only sets a flag the loop reads between steps, and under
DDP the ranks agree on it, so every rank stops after the same step and rank 0 saves whole steps.
"""

import contextlib
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import torch

# /proc/cpuinfo flags of the instructions that compute bf16 products: x86's AVX512-BF16 and AMX,
# ARM's BF16 extension (its "Features" line).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
MIN_TRIAL_MACS = 2 ** 25    # ~0.3 ms of fp32 products on one core of the CPUs here


def pick_device(name):
    """`name`, or for "auto" the first of cuda, mps, cpu that this machine has."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def choose_dtype(device_type, gpu_bf16=False, cpu_native_bf16=False, bf16_slowdown=None):
    """(dtype, reason) for --dtype auto, from what was found out about the machine.

    gpu_bf16: the CUDA device supports bf16. cpu_native_bf16: the CPU has bf16 instructions.
    bf16_slowdown: a bf16 autocast matmul's time over the same fp32 matmul's (None: not measured).

    >>> choose_dtype("cpu", cpu_native_bf16=False, bf16_slowdown=6.6)
    ('float32', 'this CPU has no native bf16; bf16 matmul 6.6x slower')
    >>> choose_dtype("cpu", cpu_native_bf16=True, bf16_slowdown=0.5)
    ('bfloat16', 'this CPU has native bf16; bf16 matmul 2x faster')
    """
    if device_type == "cuda":
        if gpu_bf16:
            return "bfloat16", "this GPU supports bf16"
        return "float16", "this GPU has no bf16; fp16 autocast with a grad scaler"
    if device_type != "cpu":
        return "float32", f"auto picks float32 on {device_type}"
    speed = "" if bf16_slowdown is None else (
        f"; bf16 matmul {bf16_slowdown:.3g}x slower" if bf16_slowdown >= 1 else
        f"; bf16 matmul {1 / bf16_slowdown:.3g}x faster")
    if not cpu_native_bf16:
        return "float32", "this CPU has no native bf16" + speed
    if bf16_slowdown is None or bf16_slowdown >= 1:
        return "float32", "this CPU has native bf16, but it is not faster here" + speed
    return "bfloat16", "this CPU has native bf16" + speed


def cpu_has_native_bf16(cpuinfo=Path("/proc/cpuinfo")):
    """Whether the CPU lists bf16 instructions among its flags; without /proc/cpuinfo (macOS,
    Windows), torch's own probe of AVX512-BF16 where this torch has it."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return bool(probe and probe())
    flags = set()
    for line in lines:
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def bf16_slowdown(rows, dim, hidden, trials=7):
    """A CPU bf16 autocast matmul's best time over fp32's: (rows, dim) @ (dim, hidden), the
    model's feed-forward product at the run's batch. The two alternate, trial by trial, so that
    other work on the machine slows both alike; the best of each is kept (load only adds time).
    A trial repeats a small product until it holds MIN_TRIAL_MACS multiply-adds: one product of a
    tiny model takes microseconds, where the timer's and the thread pool's jitter decide."""
    # Constant operands: random ones would advance torch's generator, which exact resume needs untouched.
    a, b = torch.full((rows, dim), 0.5), torch.full((dim, hidden), 0.25)
    repeats = range(max(1, MIN_TRIAL_MACS // (rows * dim * hidden)))
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    for trial in range(trials + 1):
        for dtype in best:
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                start = time.perf_counter()
                for _ in repeats:
                    a @ b
                seconds = time.perf_counter() - start
            if trial:       # trial 0 is a warm-up: thread pools, kernel choice
                best[dtype] = min(best[dtype], seconds)
    return best[torch.bfloat16] / best[torch.float32]


def pick_dtype(device, rows, dim, hidden):
    """(dtype, reason) for --dtype auto on `device`, measuring what choose_dtype needs."""
    device_type = torch.device(device).type
    if device_type == "cuda":
        return choose_dtype(device_type, gpu_bf16=torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        return choose_dtype(device_type, cpu_native_bf16=cpu_has_native_bf16(),
                            bf16_slowdown=bf16_slowdown(min(rows, 4096), dim, hidden))
    return choose_dtype(device_type)


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


def stop_requested(stop, dist, device):
    """Whether SIGINT asked to stop; under DDP, whether it reached any rank, so that all ranks stop
    at the same step (one that stopped alone would leave the others waiting in an all-reduce)."""
    if dist.world_size == 1:
        return stop.is_set()
    flag = torch.tensor([float(stop.is_set())], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.item() > 0
