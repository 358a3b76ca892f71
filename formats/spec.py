"""The model spec: Llama 2's hyperparameters, their checks and derivations, and its tensors.

The bottom of the stack: formats/, reference/ and trainer/ all import it, it imports only the
standard library. Adding a hyperparameter means adding a field to `ModelArgs` here, then touching
only the places that genuinely use it (a file format that stores it, the maths that reads it).

Derived numbers:
    head_dim   hd = dim / n_heads                  (RoPE needs it even)
    kv_dim     n_kv_heads * hd                     (rows of wk and wv; < dim under GQA)
    hidden_dim multiple_of * ceil(int(8 dim / 3) / multiple_of), when not given (llama2.c's rule)

Tensors, with llama2.c's (Meta's) state-dict names; matrices are torch nn.Linear weights,
(out, in), row-major. D dim, F hidden_dim, V vocab_size, KV kv_dim:

    tok_embeddings.weight              (V, D)
    layers.{i}.attention_norm.weight   (D,)
    layers.{i}.attention.wq.weight     (D, D)      wk, wv: (KV, D)      wo: (D, D)
    layers.{i}.ffn_norm.weight         (D,)
    layers.{i}.feed_forward.w1.weight  (F, D)      w2: (D, F)           w3: (F, D)
    norm.weight                        (D,)
    output.weight                      (V, D), only when tie_embeddings is False
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


class ArgsError(ValueError):
    """Hyperparameters that make no model. `field` is the one blamed; `detail` says what is wrong
    with it, worded to follow the place a file stores it ("config.n_heads at byte 12: 3 does not
    divide dim 8", formats/llama2c.py); str() is the sentence on its own (by default
    "<field> <detail>"), for messages that name the field their own way.
    """

    def __init__(self, field, detail, sentence=None):
        super().__init__(sentence or f"{field} {detail}")
        self.field, self.detail = field, detail


_INT_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
               "max_seq_len", "hidden_dim")     # hidden_dim last: its default reads two above
_FLOAT_FIELDS = ("norm_eps", "rope_theta", "dropout")


@dataclasses.dataclass(frozen=True)
class ModelArgs:
    """Llama 2 hyperparameters. The defaults are the seed config (llama2.c's stories15M shape).

    `n_kv_heads=None` means n_heads (plain multi-head attention); `hidden_dim=None` means
    `default_hidden_dim(dim, multiple_of)`. Both are resolved when the object is built, so every
    stored field is a concrete number.
    >>> args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=100)
    >>> args.head_dim, args.kv_dim, args.hidden_dim
    (16, 32, 192)
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
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if name == "hidden_dim" and value is None:
                value = default_hidden_dim(self.dim, self.multiple_of)
            try:
                number = operator.index(value)      # ints and numpy ints, never floats or bools
            except TypeError:
                number = None
            if isinstance(value, bool) or number is None or number < 1:
                raise ArgsError(name, f"must be a positive int, got {value!r}")
            object.__setattr__(self, name, number)
        for name in _FLOAT_FIELDS:
            try:
                object.__setattr__(self, name, float(getattr(self, name)))
            except OverflowError:       # an int past float's range (JSON allows 1e400 as an int)
                raise ArgsError(name, "must be a positive finite number, got an int past float's range") from None
        object.__setattr__(self, "tie_embeddings", bool(self.tie_embeddings))
        if self.dim % self.n_heads:
            raise ArgsError("n_heads", f"{self.n_heads} does not divide dim {self.dim}",
                            f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ArgsError("n_kv_heads", f"{self.n_kv_heads} does not divide n_heads {self.n_heads}",
                            f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            # RoPE rotates (x[2j], x[2j+1]) pairs, so a head needs an even width.
            raise ArgsError("n_heads", f"head_dim = dim / n_heads = {self.head_dim} is odd; "
                                       "RoPE rotates pairs",
                            f"head_dim {self.head_dim} (dim/n_heads) must be even for RoPE")
        for name in ("norm_eps", "rope_theta"):     # also NaN and inf: the model divides by both
            if not 0 < getattr(self, name) < math.inf:
                raise ArgsError(name, f"must be a positive finite number, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ArgsError("dropout", f"{self.dropout} must be in [0, 1)")

    @property
    def head_dim(self):
        """Width of one attention head, hd = dim / n_heads."""
        return self.dim // self.n_heads

    @property
    def kv_dim(self):
        """Rows of wk and wv: n_kv_heads * head_dim (< dim under grouped-query attention)."""
        return self.n_kv_heads * self.head_dim

    def to_dict(self):
        """Every field, resolved, as a plain dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, model_args):
        """Build from a dict of fields; unknown keys are an error (they are usually typos)."""
        unknown = sorted(set(model_args) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown model_args keys: {', '.join(unknown)}")
        return cls(**model_args)


FIELDS = tuple(field.name for field in dataclasses.fields(ModelArgs))

OUTPUT = "output.weight"
# The tensors of one block, named "layers.{i}.<kind>.weight", in llama2.c's order.
LAYER_KINDS = ("attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
               "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


def layer_weight(i, kind):
    """The llama2.c name of block i's tensor `kind` ('layers.3.attention.wq.weight')."""
    return f"layers.{i}.{kind}.weight"


def kind_shapes(args):
    """Kind -> shape of each kind of tensor: "tok_embeddings", "norm", "output" (one tensor each,
    named "<kind>.weight") and the LAYER_KINDS (one per block, all blocks alike). No n_layers
    loop: a file reader sizes a header's claim with this before it lists any tensor.
    >>> kind_shapes(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=100))["attention.wk"]
    (32, 64)
    """
    D, F, V, KV = args.dim, args.hidden_dim, args.vocab_size, args.kv_dim
    return {"tok_embeddings": (V, D), "attention_norm": (D,), "attention.wq": (D, D),
            "attention.wk": (KV, D), "attention.wv": (KV, D), "attention.wo": (D, D),
            "ffn_norm": (D,), "feed_forward.w1": (F, D), "feed_forward.w2": (D, F),
            "feed_forward.w3": (F, D), "norm": (D,), "output": (V, D)}


def weight_shapes(args):
    """llama2.c name -> numpy shape of every tensor a model with `args` has (see the table above).

    >>> shapes = weight_shapes(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=100))
    >>> len(shapes), shapes["layers.1.attention.wk.weight"], "output.weight" in shapes
    (20, (32, 64), False)
    """
    kinds = kind_shapes(args)
    shapes = {"tok_embeddings.weight": kinds["tok_embeddings"], "norm.weight": kinds["norm"]}
    for i in range(args.n_layers):
        shapes.update({layer_weight(i, kind): kinds[kind] for kind in LAYER_KINDS})
    if not args.tie_embeddings:
        shapes[OUTPUT] = kinds["output"]
    return shapes


def check_weights(weights, shapes):
    """Raise ValueError naming the first tensors that are missing, unknown or misshapen.

    `weights` maps names to anything with a `.shape`; `shapes` is what `weight_shapes` returns.
    >>> check_weights({"norm.weight": dataclasses.make_dataclass("W", ["shape"])((3,))},
    ...               {"norm.weight": (4,)})
    Traceback (most recent call last):
    ...
    ValueError: norm.weight: shape (3,), the model needs (4,)
    """
    missing = [name for name in shapes if name not in weights]
    unknown = [name for name in weights if name not in shapes]
    if missing or unknown:
        raise ValueError(f"weights do not match the model's hyperparameters: missing {missing[:4]}, "
                         f"unexpected {unknown[:4]} (names unknown to this model)")
    for name, shape in shapes.items():
        got = tuple(weights[name].shape)
        if got != tuple(shape):
            raise ValueError(f"{name}: shape {got}, the model needs {tuple(shape)}")
