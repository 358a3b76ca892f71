"""The torch model holding given weights, its logits as NumPy, hypothesis' small model shapes, and
a matrix whose products fail on purpose.
Imports torch lazily so that the property tests, and children that block torch, run without it."""

import numpy as np
from hypothesis import strategies as st

from formats.spec import ModelArgs
from reference.runtime.blockwise import BlockMatrix


def torch_model(args: ModelArgs, weights, dtype=None):
    """trainer.model.Transformer in eval mode holding `weights` (float64 with dtype='float64')."""
    import torch
    from trainer.model import Transformer

    model = Transformer(args).eval()
    state = {name: torch.from_numpy(array) for name, array in weights.items()}
    if args.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, strict=True)
    return model.double() if dtype == "float64" else model


def torch_logits(model, tokens):
    """All-position logits of one sequence as a NumPy array: (T,) ids -> (T, V)."""
    import torch

    with torch.no_grad():
        logits, _ = model(torch.as_tensor(np.asarray(tokens, dtype=np.int64))[None])
    return logits[0].numpy()


@st.composite
def small_configs(draw):
    """Small ModelArgs covering MHA/GQA/MQA, tied/untied, any hidden_dim and odd vocabularies."""
    n_kv_heads = draw(st.integers(1, 2))
    n_heads = n_kv_heads * draw(st.integers(1, 3))
    head_dim = draw(st.sampled_from([2, 4, 8]))
    return ModelArgs(dim=n_heads * head_dim, n_layers=draw(st.integers(1, 2)), n_heads=n_heads,
                     n_kv_heads=n_kv_heads, vocab_size=draw(st.integers(2, 40)),
                     hidden_dim=draw(st.integers(1, 24)), max_seq_len=16,
                     tie_embeddings=draw(st.booleans()))


class RowsPastFirstFail(BlockMatrix):
    """An (8, 4) matrix of ones whose product raises ValueError on any row range but the first
    while `fail` is set: the range a second thread or a helper process computes."""

    def __init__(self, fail=True):
        super().__init__((8, 4))
        self.fail = fail

    def product(self, x, out, start, stop):
        if start > 0 and self.fail:
            raise ValueError("rows past the first range fail")
        out[:, start:stop] = 1.0
