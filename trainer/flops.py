"""Model FLOPs and a measured matmul peak, for MFU (model FLOPs utilization).

MFU = (model FLOPs per second actually achieved) / (peak FLOPs per second of the hardware). The
model side follows the PaLM appendix B estimate nanoGPT uses: 6 FLOPs per parameter per token
(forward 2, backward 4) plus the attention scores, 12 * n_layers * dim * T per token. The peak is
measured here, by timing a large matmul in the training dtype, because a datasheet number does
not exist for "2 shared CPU cores" and would flatter or shame the same code on another machine.
"""

import time


def flops_per_token(n_params, n_layers, dim, seq_len):
    """Training FLOPs per token (forward + backward)."""
    return 6 * n_params + 12 * n_layers * dim * seq_len


def measure_matmul_peak(device, dtype, size=1024, seconds=0.5):
    """FLOP/s of an n x n @ n x n matmul in `dtype` on `device`, best of a timed loop."""
    import torch

    # Constant operands: the timing does not depend on the values, and drawing random ones would
    # advance torch's global generator, which exact resume needs untouched.
    a = torch.full((size, size), 0.5, device=device, dtype=dtype)
    b = torch.full((size, size), 0.25, device=device, dtype=dtype)
    flops = 2 * size ** 3
    (a @ b).sum().item()            # warm-up: thread pools and kernel selection are not the peak
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        start = time.perf_counter()
        (a @ b).sum().item()        # .item() waits for an asynchronous (GPU) kernel to finish
        best = max(best, flops / (time.perf_counter() - start))
    return best
