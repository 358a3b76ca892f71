"""The classifier and its cross-entropy in one pass, without materializing the logits.

At the seed config a batch of 16 x 256 positions over a 32000-piece vocabulary has 131M logits:
524 MB in float32, and the plain path (matmul, log_softmax, their backward) holds several such
tensors at once. Measured here for that batch (classifier + loss, forward and backward): peak RSS
growth 1,477 MB plain vs 208 MB chunked in float32, 1,494 MB vs 365 MB under bfloat16 autocast,
at about the same speed (the three matmuls dominate). The rows go through in chunks:

    logits_c = h_c · Wᵀ                                  (n, V) for a chunk of n rows
    loss    += Σ_c [logsumexp(logits_c) − logits_c[target]]        over non-ignored rows
    g_c      = (softmax(logits_c) − onehot(target)) / n_valid      (the gradient of the mean)
    ∂h_c     = g_c · W          ∂W += g_cᵀ · h_c

The gradients are computed in the forward pass, chunk by chunk, and only scaled by the incoming
gradient in backward: the loss is a scalar, so nothing else is needed later. Under autocast the
two matmul operands are cast to the autocast dtype (as nn.Linear would be) while logsumexp and
softmax run in float32, as autocast runs them.
"""

import torch

from reference.training import IGNORE_INDEX
# Rows per chunk: 512 x 32000 float32 logits is 64 MB; smaller chunks make the matmuls too thin.
CHUNK_ROWS = 512


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, compute_dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # softmax and the sums run in at least float32 (float64 stays float64).
        acc_dtype = torch.promote_types(compute_dtype, torch.float32)
        n_valid = (targets != IGNORE_INDEX).sum().clamp(min=1)
        total = torch.zeros((), dtype=acc_dtype, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
        w = weight.to(compute_dtype)                                              # (V, D)
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, h.shape[0], CHUNK_ROWS):
                h_c = h[start:start + CHUNK_ROWS].to(compute_dtype)                   # (n, D)
                t_c = targets[start:start + CHUNK_ROWS]
                valid = t_c != IGNORE_INDEX
                picked = t_c.clamp(min=0)[:, None]                                    # (n, 1)
                logits = (h_c @ w.T).to(acc_dtype)                                    # (n, V)
                lse = torch.logsumexp(logits, dim=-1)                                 # (n,)
                total += ((lse - logits.gather(1, picked).squeeze(1)) * valid).sum()
                if need_h or need_w:
                    probs = logits.sub_(lse[:, None]).exp_()                           # softmax, in place
                    probs.scatter_add_(1, picked, torch.full_like(lse[:, None], -1.0))
                    probs.mul_((valid.to(acc_dtype) / n_valid)[:, None])
                    g = probs.to(compute_dtype)
                    if need_h:
                        grad_h[start:start + CHUNK_ROWS] = (g @ w).to(h.dtype)
                    if need_w:
                        grad_w += (g.T @ h_c).to(acc_dtype)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return (None if grad_h is None else grad_h * grad_loss.to(grad_h.dtype),
                None if grad_w is None else (grad_w * grad_loss).to(ctx.weight_dtype), None, None)


def linear_cross_entropy(h, weight, targets):
    """Mean cross-entropy of the logits h · weightᵀ against targets, ids of -1 ignored.

    h (N, D), weight (V, D), targets (N,) int64 -> a scalar. Equal to
    F.cross_entropy(h @ weight.T, targets, ignore_index=-1) up to float rounding.
    """
    device_type = h.device.type
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else h.dtype
    return _LinearCrossEntropy.apply(h, weight, targets, compute_dtype)
