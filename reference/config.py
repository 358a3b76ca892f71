"""Model hyperparameters as plain data, shared by the NumPy reference and the torch trainer.

Torch-free on purpose: `trainer/model.py` imports `ModelArgs` from here, never the reverse.
`to_dict()` is the plain `model_args` dict stored in ckpt.pt (see ../shared/SPEC.md);
`from_dict()` also reads llama2.c's own checkpoints, which store neither `hidden_dim`,
`norm_eps`, `rope_theta` nor `tie_embeddings` (derived or defaulted as llama2.c does).
"""

import dataclasses
import math
import operator


def default_hidden_dim(dim, multiple_of):
    """llama2.c's SwiGLU width: two thirds of 4*dim, rounded up to a multiple of `multiple_of`.

    The 2/3 keeps the parameter count of a 4*dim GELU MLP now that SwiGLU has three matrices.
    >>> default_hidden_dim(288, 32)    # int(2*4*288/3) = 768, already a multiple of 32
    768
    >>> default_hidden_dim(64, 32)     # int(2*4*64/3) = 170 -> 192
    192
    """
    return multiple_of * math.ceil(int(2 * 4 * dim / 3) / multiple_of)


@dataclasses.dataclass(frozen=True)
class ModelArgs:
    """Llama 2 hyperparameters. The defaults are the seed config (llama2.c's stories15M shape).

    `n_kv_heads=None` means n_heads (plain multi-head attention); `hidden_dim=None` means
    `default_hidden_dim(dim, multiple_of)`. Both are resolved when the object is built, so every
    stored field is a concrete number.
    """
    dim: int = 288
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None
    vocab_size: int = 32000
    hidden_dim: int | None = None
    multiple_of: int = 32
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 256
    dropout: float = 0.0
    tie_embeddings: bool = True     # output.weight is tok_embeddings.weight, as in llama2.c

    def __post_init__(self):
        # Frozen dataclass: resolving and normalizing fields needs object.__setattr__.
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        # Numbers read from files arrive as numpy scalars: store plain Python numbers so that
        # to_dict() stays a plain dict (torch.load(weights_only=True) refuses numpy scalars).
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                     "max_seq_len", "hidden_dim"):     # hidden_dim last: its default reads two above
            value = getattr(self, name)
            if name == "hidden_dim" and value is None:
                value = default_hidden_dim(self.dim, self.multiple_of)
            try:
                number = operator.index(value)      # ints and numpy ints, never floats or bools
            except TypeError:
                number = None
            if isinstance(value, bool) or number is None or number < 1:
                raise ValueError(f"ModelArgs.{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, number)
        for name in ("norm_eps", "rope_theta", "dropout"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "tie_embeddings", bool(self.tie_embeddings))
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            # RoPE rotates (x[2j], x[2j+1]) pairs, so a head needs an even width.
            raise ValueError(f"head_dim {self.head_dim} (dim/n_heads) must be even for RoPE")
        if not self.norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError(f"norm_eps {self.norm_eps} and rope_theta {self.rope_theta} must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} must be in [0, 1)")

    @property
    def head_dim(self):
        """Width of one attention head, hd = dim / n_heads."""
        return self.dim // self.n_heads

    @property
    def kv_dim(self):
        """Rows of wk and wv: n_kv_heads * head_dim (< dim under grouped-query attention)."""
        return self.n_kv_heads * self.head_dim

    def to_dict(self):
        """The plain dict stored as ckpt.pt's `model_args` (every field, resolved)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, model_args):
        """Build from a `model_args` dict; unknown keys are an error (they are usually typos)."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(model_args) - known)
        if unknown:
            raise ValueError(f"unknown model_args keys: {', '.join(unknown)}")
        return cls(**model_args)
