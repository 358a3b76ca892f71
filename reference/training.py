"""The training step in NumPy: the loss, every weight's gradient, and the AdamW update.

    loss  = mean over counted positions of -log softmax(logits)[target]      (target -1: ignored)
    grads = ∂loss/∂w for every weight w, by the chain rule from the logits back to the embeddings
    w    <- AdamW(w, grad, lr(step)), after clipping the gradients to a global norm

The forward pass is reference/model.py's own (`run_with_cache` keeps every activation); the
backward pass walks it in reverse with the backward function beside each forward one
(rmsnorm_backward, rope_backward, attention_backward, swiglu_backward, linear_backward), and
the three steps only a model has (cross-entropy, the output projection, the embedding lookup)
are here. The learning-rate schedule and the weight-decay groups are the torch trainer's own
(trainer/train.py calls learning_rate and decay_groups); clip_grad_norm and adamw_step repeat
torch's clip_grad_norm_ and AdamW (tests/test_training.py). docs/training-step.md works it by hand.
Shapes: B rows of T positions, D, H, Hkv, hd, F, V as in formats/spec.py.
"""

import math

import numpy as np

from formats.spec import weight_shapes
from reference.attention import attention_backward
from reference.model import LAYER_TENSORS
from reference.rmsnorm import rmsnorm_backward
from reference.rope import rope_backward
from reference.swiglu import linear_backward, swiglu_backward

IGNORE_INDEX = -1    # a target that is not counted, as in the trainer's cross-entropy


def check_batch(args, tokens, targets):
    """(tokens, targets, n_counted) after checking them against the model `args`.

    tokens, targets: (B, T) integer arrays, T <= max_seq_len, tokens in [0, V), targets in [0, V)
    or -1, at least one target counted (a mean over none is NaN). Each failure is a ValueError
    saying which.
    """
    tokens, targets = np.asarray(tokens), np.asarray(targets)
    for name, ids in (("tokens", tokens), ("targets", targets)):
        if ids.ndim != 2 or 0 in ids.shape or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} must be a non-empty (B, T) integer array, got {ids.dtype} {ids.shape}")
    if tokens.shape != targets.shape:
        raise ValueError(f"tokens {tokens.shape} and targets {targets.shape} must have the same shape")
    if tokens.shape[1] > args.max_seq_len:
        raise ValueError(f"sequences of {tokens.shape[1]} tokens exceed the context, max_seq_len {args.max_seq_len}")
    if tokens.min() < 0 or tokens.max() >= args.vocab_size:
        raise ValueError(f"token ids must be in [0, {args.vocab_size}), got {tokens.min()}..{tokens.max()}")
    if targets.min() < IGNORE_INDEX or targets.max() >= args.vocab_size:
        raise ValueError(f"target ids must be in [0, {args.vocab_size}) or {IGNORE_INDEX} (ignored), "
                         f"got {targets.min()}..{targets.max()}")
    n_counted = int(np.count_nonzero(targets != IGNORE_INDEX))
    if n_counted == 0:
        raise ValueError(f"every target is {IGNORE_INDEX} (ignored): the mean loss of no positions is undefined")
    return tokens, targets, n_counted


def log_softmax(logits):
    """logits - logsumexp(logits) over the last axis, shifted by the max so exp never overflows."""
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def cross_entropy(logits, targets):
    """-log softmax(logits)[target] at each position, 0 where the target is -1. (T, V), (T,) -> (T,).

    >>> cross_entropy(np.log(np.array([[0.25, 0.75], [0.5, 0.5]])), np.array([1, -1]))  # -log 0.75
    array([0.28768207, 0.        ])
    """
    counted = targets != IGNORE_INDEX
    picked = np.take_along_axis(log_softmax(logits), np.where(counted, targets, 0)[:, None], axis=-1)[:, 0]
    return np.where(counted, -picked, 0)


def mean_loss(model, tokens, targets):
    """The mean cross-entropy of `model` on a batch, forward only: loss_and_grads' loss without
    the gradients (an eval batch). tokens, targets as loss_and_grads takes them."""
    tokens, targets, n_counted = check_batch(model.args, tokens, targets)
    total = sum(float(np.sum(cross_entropy(model.forward(row, all_logits=True), row_targets)))
                for row, row_targets in zip(tokens, targets))
    return total / n_counted


def cross_entropy_backward(logits, targets, n_counted):
    """∂(mean loss)/∂logits: (softmax(logits) - onehot(target)) / n_counted, 0 at ignored positions.

    logits (T, V), targets (T,) -> (T, V). With p = softmax(l), -log p_t = logsumexp(l) - l_t, and
    ∂logsumexp(l)/∂l_j = p_j, ∂l_t/∂l_j = δ_tj: so p - onehot(t). The mean divides each counted
    position's loss by n_counted, the count over the whole batch; an ignored target adds nothing
    to the loss, so its row of the gradient is 0 (and it is not in the count).
    >>> cross_entropy_backward(np.log(np.array([[0.25, 0.75], [0.5, 0.5]])), np.array([1, -1]), 1)
    array([[ 0.25, -0.25],
           [ 0.  ,  0.  ]])
    """
    grad = np.exp(log_softmax(logits))
    counted = targets != IGNORE_INDEX
    grad[np.flatnonzero(counted), targets[counted]] -= 1
    return grad * (counted[:, None] / logits.dtype.type(n_counted))


def embedding_backward(tokens, grad_out, vocab_size):
    """∂loss/∂tok_embeddings from grad_out = ∂loss/∂tok_embeddings[tokens]: a scatter-add.

    tokens (T,), grad_out (T, D) -> (V, D). Row v receives the sum of grad_out over the positions
    holding token v (a token used twice is looked up twice: both gradients add); np.add.at adds
    every repeat, where `out[tokens] += grad_out` would keep only one of them.
    >>> embedding_backward(np.array([2, 0, 2]), np.array([[1.0], [10.0], [100.0]]), 3).ravel()
    array([ 10.,   0., 101.])
    """
    out = np.zeros((vocab_size, grad_out.shape[-1]), dtype=grad_out.dtype)
    np.add.at(out, tokens, grad_out)
    return out


def loss_and_grads(model, tokens, targets):
    """(loss, grads) of the mean cross-entropy of `model` (a reference.model.Llama) on a batch.

    tokens, targets: (B, T) ids, target -1 ignored (checked by check_batch). loss: a float, the
    mean of -log p(target) over the counted targets of the whole batch. grads: {state-dict name:
    array of that weight's shape, in the model's dtype}; a tied model has no output.weight, the
    output projection's gradient is added into tok_embeddings.weight (one matrix, two uses).
    Runs the model's forward pass row by row from position 0 (overwriting its KV cache).
    """
    args = model.args
    tokens, targets, n_counted = check_batch(args, tokens, targets)
    grads = {name: np.zeros(shape, dtype=model.dtype) for name, shape in weight_shapes(args).items()}
    total = 0.0
    for row_tokens, row_targets in zip(tokens, targets):
        logits, cache = model.run_with_cache(row_tokens)
        total += float(np.sum(cross_entropy(logits, row_targets)))
        d_logits = cross_entropy_backward(logits, row_targets, n_counted)         # (T, V)
        d_final, d_output = linear_backward(cache["final_norm"], model.output, d_logits)
        grads["tok_embeddings.weight" if args.tie_embeddings else "output.weight"] += d_output
        last = cache[f"blocks.{args.n_layers - 1}.resid_post"]
        dh, d_norm = rmsnorm_backward(last, model.norm, args.norm_eps, d_final)
        grads["norm.weight"] += d_norm
        for i in reversed(range(args.n_layers)):
            dh = block_backward(model, i, cache, dh, grads)
        grads["tok_embeddings.weight"] += embedding_backward(row_tokens, dh, args.vocab_size)
    return total / n_counted, grads


def block_backward(model, i, cache, d_out, grads):
    """Block i backward: ∂loss/∂resid_pre from d_out = ∂loss/∂resid_post; adds its weights' grads.

    resid_mid = resid_pre + attention(rmsnorm(resid_pre)) and resid_post = resid_mid +
    swiglu(rmsnorm(resid_mid)): each residual add passes its gradient to both of its inputs, so
    the gradient reaching resid_pre is d_out plus what comes back through the two branches.
    """
    args, layer, eps = model.args, model.layers[i], model.args.norm_eps
    point = {name: cache[f"blocks.{i}.{name}"] for name in (
        "resid_pre", "attn_norm", "attn.q_rot", "attn.k_rot", "attn.v", "attn.pattern", "attn.z",
        "resid_mid", "ffn_norm", "mlp.gate", "mlp.up")}
    weight = {field: grads[f"layers.{i}.{name}.weight"] for field, name in LAYER_TENSORS.items()}

    dx, dw1, dw2, dw3 = swiglu_backward(point["ffn_norm"], layer.w1, layer.w2, layer.w3, d_out,
                                        point["mlp.gate"], point["mlp.up"])
    d_mid, d_ffn_norm = rmsnorm_backward(point["resid_mid"], layer.ffn_norm, eps, dx)
    d_mid += d_out
    n_tokens = d_out.shape[0]
    z = point["attn.z"].swapaxes(0, 1).reshape(n_tokens, args.dim)             # (H, T, hd) -> (T, D)
    dz, dwo = linear_backward(z, layer.wo, d_mid)
    dz = dz.reshape(n_tokens, args.n_heads, args.head_dim).swapaxes(0, 1)      # (H, T, hd)
    dq, dk, dv = attention_backward(point["attn.q_rot"], point["attn.k_rot"], point["attn.v"],
                                    point["attn.pattern"], dz)
    cos, sin = model.rope_cos[:n_tokens], model.rope_sin[:n_tokens]
    dq, dk = rope_backward(dq, cos, sin), rope_backward(dk, cos, sin)
    x = point["attn_norm"]
    dx = 0      # x feeds wq, wk and wv: their gradients add
    for name, d_heads in (("wq", dq), ("wk", dk), ("wv", dv)):
        dx_part, dw = linear_backward(x, getattr(layer, name), d_heads.swapaxes(0, 1).reshape(n_tokens, -1))
        weight[name] += dw
        dx = dx + dx_part
    d_pre, d_attn_norm = rmsnorm_backward(point["resid_pre"], layer.attention_norm, eps, dx)
    for name, grad in (("w1", dw1), ("w2", dw2), ("w3", dw3), ("wo", dwo), ("ffn_norm", d_ffn_norm),
                       ("attention_norm", d_attn_norm)):
        weight[name] += grad
    return d_pre + d_mid


def adamw_step(param, grad, state, *, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update of `param` in place (Loshchilov & Hutter 2019), as torch.optim.AdamW does it.

    state: a dict, empty before the first step, then holding step, exp_avg (m) and exp_avg_sq (v):

        t += 1
        param *= 1 - lr * weight_decay                 decoupled decay, before the Adam step
        m = beta1 m + (1 - beta1) grad                 (torch: m.lerp_(grad, 1 - beta1))
        v = beta2 v + (1 - beta2) grad²
        param -= lr / (1 - beta1^t) · m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The divisions by 1 - beta^t (bias correction) undo the zeros m and v start from: at t = 1,
    m / (1 - beta1) = grad, so the first step moves each weight by about lr. The operations are
    torch's own, in its order, so float64 results agree to the last bits.
    """
    if not state:
        state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
    state["step"] += 1
    step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
    param *= 1 - lr * weight_decay
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1 ** step)
    denom = np.sqrt(exp_avg_sq) / (1 - beta2 ** step) ** 0.5 + eps
    param += -step_size * exp_avg / denom


def learning_rate(step, *, max_lr, min_lr, warmup_iters, decay_iters):
    """The learning rate of step `step` (from 0): linear warmup, cosine decay, then min_lr.

        step < warmup_iters:   max_lr (step + 1) / (warmup_iters + 1)
        step >= decay_iters:   min_lr
        otherwise:             min_lr + ½ (1 + cos(π progress)) (max_lr - min_lr),
                               progress = (step - warmup_iters) / (decay_iters - warmup_iters)
    >>> [round(learning_rate(s, max_lr=1.0, min_lr=0.1, warmup_iters=3, decay_iters=7), 4) for s in (0, 3, 5, 9)]
    [0.25, 1.0, 0.55, 0.1]
    """
    if step < warmup_iters:
        return max_lr * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(decay_iters - warmup_iters, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in place so their global norm is at most max_norm; -> the norm before.

    grads: {name: array}. As torch.nn.utils.clip_grad_norm_: norm = sqrt(Σ_w |grad_w|²) over all
    the weights together, every gradient multiplied by min(max_norm / (norm + 1e-6), 1), which
    keeps the direction of the whole update and bounds its size.
    >>> grads = {"a": np.array([3.0]), "b": np.array([4.0])}
    >>> clip_grad_norm(grads, 1.0), grads["a"], grads["b"]   # norm 5 -> 1: each times 1 / (5 + 1e-6)
    (5.0, array([0.59999988]), array([0.79999984]))
    """
    norms = [np.linalg.norm(grad.ravel()) for grad in grads.values()]
    total = np.linalg.norm(np.array(norms))
    scale = min(max_norm / (total + 1e-6), 1.0)
    for grad in grads.values():
        grad *= scale
    return float(total)


def decay_groups(shapes):
    """(decayed, not decayed): the names in `shapes` ({name: shape}), order kept, split by rank.

    Matrices and embeddings (2 or more axes) take weight decay; the RMSNorm gains (1 axis) do not,
    since decaying a gain toward 0 only shrinks its layer's output.
    >>> decay_groups({"tok_embeddings.weight": (5, 4), "norm.weight": (4,), "output.weight": (5, 4)})
    (['tok_embeddings.weight', 'output.weight'], ['norm.weight'])
    """
    decayed = [name for name, shape in shapes.items() if len(shape) >= 2]
    return decayed, [name for name, shape in shapes.items() if len(shape) < 2]
