"""One training step's gradients and loss, computed by the trainer's own code, saved for
tests/test_train.py's DDP test.

    python tests/ddp_step.py OUT.pt TRAIN_FLAGS...                                  (one process)
    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_step.py OUT.pt TRAIN_FLAGS...

Runs `setup` and the step's micro-batches (`_forward_backward`, with DDP's no_sync on all but
the last) and stops before the optimizer, so the gradients are what DDP averaged. The loss is
the ranks' step losses averaged as DDP averages gradients: the mean over the global batch.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.config import add_arguments, from_args  # noqa: E402
from trainer.runtime import init_distributed  # noqa: E402
from trainer.train import _forward_backward, setup  # noqa: E402


def main():
    out_path, flags = sys.argv[1], sys.argv[2:]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = from_args(parser.parse_args(flags))
    dist, device = init_distributed(config.device)
    run = setup(config, dist, device, out=lambda *args, **kwargs: None)
    loss = torch.tensor(sum(_forward_backward(run, micro) for micro in range(run.micro_steps)))
    if dist.world_size > 1:
        torch.distributed.all_reduce(loss)
        loss /= dist.world_size
    if dist.is_main:
        grads = {name: p.grad for name, p in run.raw_model.named_parameters()}
        torch.save({"loss": loss.item(), "grads": grads}, out_path)
    if dist.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
