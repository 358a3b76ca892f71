"""`train --engine numpy`: the training step by reference/training.py, in NumPy, inside the torch trainer's loop.

Everything around the step is trainer/train.py's: the batches (a function of seed, step and
micro-step), the initial weights (the torch Transformer built from the same seed, then read as
NumPy), the learning-rate schedule, clipping to the same global norm, the same weight-decay
groups, log.jsonl, evaluation windows and ckpt.pt. Only the step differs: the loss and every
gradient come from `loss_and_grads` and the update from `adamw_step`, so the two engines, given
the same seed and settings in float64, log the same losses to rounding (tests/test_engine_numpy.py).

The NumPy model holds views of the torch parameters' memory (`Tensor.numpy()` shares it), so
AdamW updating the arrays in place updates the Transformer that ckpt.pt saves, and resuming
(load_state_dict copies into that memory) restores the arrays. torch does nothing else here.
Not followed: dropout (the reference has none), DDP, --compile, GPUs, bf16/fp16; each is refused
(`refusal`).
"""

from reference.model import Llama
from reference.training import adamw_step, clip_grad_norm, decay_groups, loss_and_grads, mean_loss

DTYPES = ("float32", "float64")
ADAM_EPS = 1e-8     # torch.optim.AdamW's default; the torch engine passes it too


def refusal(config, world_size, device):
    """Why --engine numpy cannot run these settings (one line), or None."""
    if config.model.dropout > 0:
        return f"--engine numpy has no dropout: use --dropout 0 (got {config.model.dropout})"
    if world_size > 1:
        return "--engine numpy runs in one process: no torchrun/DDP"
    if config.compile:
        return "--engine numpy has nothing to compile: drop --compile"
    if device != "cpu":
        return f"--engine numpy runs on the cpu, not {device}"
    if config.dtype not in DTYPES:
        return f"--engine numpy computes in {' or '.join(DTYPES)}, not {config.dtype}"
    return None


class NumpyEngine:
    """The NumPy model over `torch_model`'s parameter memory, and AdamW's state per weight.

    Stands in for the torch optimizer in the trainer's RunState: state_dict/load_state_dict
    give ckpt.pt's "optimizer" entry ({"engine": "numpy", "state": {weight name: {"step",
    "exp_avg", "exp_avg_sq"}}}, tensors, so that torch's weights_only loader reads it).
    """

    def __init__(self, torch_model, config):
        self.config = config
        arrays = {name: p.detach().numpy() for name, p in torch_model.named_parameters()}
        self.model = Llama(torch_model.args, arrays, dtype=next(iter(arrays.values())).dtype)
        # The tied output is tok_embeddings itself: named_parameters lists it once, as loss_and_grads does.
        self.params = arrays
        decayed, kept = decay_groups({name: a.shape for name, a in arrays.items()})
        self.weight_decay = {**{name: config.weight_decay for name in decayed}, **{name: 0.0 for name in kept}}
        self.states = {name: {} for name in arrays}

    def forward_backward(self, x, y, micro_steps):
        """(loss, grads) of the micro-batch (x, y) ((B, T) arrays), each divided by the step's
        micro_steps: summed over them, the step's mean (the torch step divides its loss alike)."""
        loss, grads = loss_and_grads(self.model, x, y)
        return loss / micro_steps, {name: grad / micro_steps for name, grad in grads.items()}

    def update(self, grads, lr):
        """Clip `grads` to the global norm grad_clip (0: not clipped), then one AdamW step per weight."""
        config = self.config
        if config.grad_clip > 0:
            clip_grad_norm(grads, config.grad_clip)
        for name, param in self.params.items():
            adamw_step(param, grads[name], self.states[name], lr=lr, beta1=config.beta1, beta2=config.beta2,
                       eps=ADAM_EPS, weight_decay=self.weight_decay[name])

    def batch_loss(self, x, y):
        """Mean cross-entropy over the counted targets of (x, y), forward only."""
        return mean_loss(self.model, x, y)

    def state_dict(self):
        import torch

        return {"engine": "numpy", "state": {
            name: {"step": state["step"], "exp_avg": torch.from_numpy(state["exp_avg"].copy()),
                   "exp_avg_sq": torch.from_numpy(state["exp_avg_sq"].copy())}
            for name, state in self.states.items() if state}}

    def load_state_dict(self, saved):
        for name, state in saved["state"].items():
            self.states[name] = {"step": state["step"], "exp_avg": state["exp_avg"].numpy().copy(),
                                 "exp_avg_sq": state["exp_avg_sq"].numpy().copy()}
