"""Where a run executes: the device, torchrun's process group, and stopping cleanly on Ctrl-C.

Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE set) every process joins one group; otherwise the run
is one process of rank 0. A first SIGINT only sets a flag the loop reads between steps, and under
DDP the ranks agree on it, so every rank stops after the same step and rank 0 saves whole steps.
"""

import contextlib
import dataclasses
import os
import signal
import threading

import torch


def pick_device(name):
    """`name`, or for "auto" the first of cuda, mps, cpu that this machine has."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


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
