"""Training settings as plain data: defaults, then a TOML file, then command-line flags.

Every field is one `train` flag (`--learning-rate` for `learning_rate`) and one TOML key (either
spelling). Model fields (dim ... dropout) become `ModelArgs`; vocab_size comes from the tokenizer.
"""

import argparse
import dataclasses
import tomllib
import typing

from data.paths import DEFAULT_DATA_DIR, DataError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "tinyshakespeare"
    vocab_size: int | None = None       # a vocabulary from train-vocab ...
    tokenizer: str | None = None        # ... or any SentencePiece .model
    data_dir: str = DEFAULT_DATA_DIR
    out_dir: str = "out"
    # model (the seed config's shape; n_kv_heads/hidden_dim None = ModelArgs' defaults)
    dim: int = 288
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None
    hidden_dim: int | None = None
    multiple_of: int = 32
    max_seq_len: int = 256
    dropout: float = 0.0
    # optimization; the global batch is batch_size * grad_accum sequences per step
    batch_size: int = 16
    grad_accum: int = 1
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None   # None: max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0              # 0 disables clipping
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_batches: int = 50              # at most this many val batches per evaluation
    log_interval: int = 10
    # runtime
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    seed: int = 1337
    resume: bool = False

    def __post_init__(self):
        if self.device not in DEVICES:
            raise DataError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise DataError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_batches",
                     "log_interval", "max_seq_len"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def decay_iters(self):
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def add_arguments(parser):
    """One flag per field, each defaulting to None so that only flags actually given override."""
    parser.add_argument("--config", help="TOML file of settings (keys as the flags, - or _)")
    for name, field in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            # `int | None` -> int: the flag parses the value, leaving it out keeps None.
            kind = field.type if isinstance(field.type, type) else typing.get_args(field.type)[0]
            parser.add_argument(flag, type=kind, default=None, metavar=name.upper(),
                                help=f"default: {field.default}")


def load_toml(path):
    """{field: value} from a TOML file; an unknown key is an error (it is usually a typo)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: {exc}") from None
    settings = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise DataError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return settings


def from_args(args, **overrides):
    """TrainConfig from parsed flags: defaults < --config file < flags < overrides."""
    settings = load_toml(args.config) if getattr(args, "config", None) else {}
    settings.update({name: getattr(args, name) for name in FIELDS
                     if getattr(args, name, None) is not None})
    settings.update(overrides)
    try:
        return TrainConfig(**settings)
    except TypeError as exc:
        raise DataError(f"bad setting: {exc}") from None
