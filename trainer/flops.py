"""Model FLOPs and a measured matmul peak, for MFU (model FLOPs utilization).

MFU = (model FLOPs per second actually achieved) / (peak FLOPs per second of the hardware). The
model side follows the PaLM appendix B estimate nanoGPT uses: 6 FLOPs per parameter per token
(forward 2, backward 4) plus the attention scores, 12 * n_layers * dim * T per token. The peak is
measured here, by timing matmuls in the training dtype, because a datasheet number does not exist
for "2 shared CPU cores" and would flatter or shame the same code on another machine. A step that
still achieves more than the measured peak shows the measurement was low: the trainer then raises
the peak to what was achieved (and says so), so MFU never reads above 100%.
"""

import time

# Products of n x n by n x n from small to large; measure_peak stops growing n once a size gains
# less than PLATEAU_GAIN, or once one product takes LONGEST_PRODUCT seconds (the CPUs here plateau
# by 1024-2048, where a product takes 0.1-0.2 s; a GPU needs the larger sizes, in milliseconds).
PEAK_SIZES = (256, 512, 1024, 2048, 4096, 8192)
PLATEAU_GAIN = 1.05
LONGEST_PRODUCT = 0.1
PEAK_TRIALS = 3


def flops_per_token(n_params, n_layers, dim, seq_len):
    """Training FLOPs per token (forward + backward)."""
    return 6 * n_params + 12 * n_layers * dim * seq_len


def measure_peak(matmul_seconds, sizes=PEAK_SIZES, trials=PEAK_TRIALS):
    """Peak FLOP/s: the best of `trials` timings of an n x n @ n x n product (2 n³ FLOPs) at each n
    of `sizes`, growing n until a size gains less than PLATEAU_GAIN over the best so far or one
    product takes LONGEST_PRODUCT seconds (a longer one hides no more overhead).

    matmul_seconds(n) -> seconds of one product (its first call at each n is a warm-up, not
    counted). The best, not the mean: other work on the machine only ever slows a trial, and a
    small product stays below the peak (too little work to hide the loop's and the threads'
    overheads). A peak measured too low makes MFU read above 100%.
    """
    best = 0.0
    for n in sizes:
        matmul_seconds(n)
        at_n = max(2 * n ** 3 / matmul_seconds(n) for _ in range(trials))
        gained = at_n > best * PLATEAU_GAIN
        best = max(best, at_n)
        if not gained or 2 * n ** 3 / at_n > LONGEST_PRODUCT:
            break
    return best


def measure_matmul_peak(device, dtype, sizes=PEAK_SIZES, trials=PEAK_TRIALS):
    """measure_peak of torch's matmul in `dtype` on `device`."""
    import torch

    def matmul_seconds(n):
        # Constant operands: the timing does not depend on the values, and drawing random ones
        # would advance torch's global generator, which exact resume needs untouched.
        a = torch.full((n, n), 0.5, device=device, dtype=dtype)
        b = torch.full((n, n), 0.25, device=device, dtype=dtype)
        start = time.perf_counter()
        (a @ b).sum().item()        # .item() waits for an asynchronous (GPU) kernel to finish
        return time.perf_counter() - start

    return measure_peak(matmul_seconds, sizes, trials)


def measure_numpy_peak(dtype, sizes=PEAK_SIZES, trials=PEAK_TRIALS):
    """measure_peak of NumPy's matmul (its BLAS) in `dtype`: the NumPy engine's hardware peak."""
    import numpy as np

    def matmul_seconds(n):
        a, b = np.full((n, n), 0.5, dtype=dtype), np.full((n, n), 0.25, dtype=dtype)
        start = time.perf_counter()
        a @ b
        return time.perf_counter() - start

    return measure_peak(matmul_seconds, sizes, trials)
