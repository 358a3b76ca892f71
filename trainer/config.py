"""Training settings as plain data: defaults, then a TOML file, then command-line flags.

A `TrainConfig` holds the run's settings and the model it trains, `model: ModelArgs`. Settings are
flat: every TrainConfig field but `model`, and every ModelArgs field but those in
`NOT_MODEL_SETTINGS`, is one `train` flag (`--learning-rate` for `learning_rate`, `--dim` for
`model.dim`) and one TOML key (either spelling). A field added to ModelArgs thus becomes a flag
and a key without touching this module.
"""

import argparse
import dataclasses
import tomllib
import typing

from data.paths import DEFAULT_DATA_DIR, DataError
from formats.spec import ModelArgs

DEVICES = ("auto", "cpu", "cuda", "mps")
# "auto": the fastest that trains well on this machine, decided at start (trainer/runtime.py, pick_dtype).
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
# torch: autograd and torch.optim; numpy: reference/training.py's backward pass and AdamW (trainer/numpy_engine.py).
ENGINES = ("torch", "numpy")

# The ModelArgs fields that are not settings. vocab_size is the tokenizer's: `train` fills it in
# (`model_args`), so `TrainConfig.model.vocab_size` is only ModelArgs' default until then. The
# others keep Llama 2's values: llama2.c's .bin has no field for norm_eps or rope_theta, and its
# train.py always ties the embeddings.
NOT_MODEL_SETTINGS = ("vocab_size", "norm_eps", "rope_theta", "tie_embeddings")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "tinyshakespeare"
    vocab_size: int | None = None       # a vocabulary from train-vocab ...
    tokenizer: str | None = None        # ... or any SentencePiece .model
    data_dir: str = DEFAULT_DATA_DIR
    out_dir: str = "out"
    # model (the seed config's shape); its max_seq_len is also the length of the training windows
    model: ModelArgs = ModelArgs()
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
    dtype: str = "auto"
    engine: str = "torch"
    compile: bool = False
    seed: int = 1337
    resume: bool = False

    def __post_init__(self):
        if self.device not in DEVICES:
            raise DataError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise DataError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.engine not in ENGINES:
            raise DataError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_batches", "log_interval"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def decay_iters(self):
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters

    def model_args(self, vocab_size):
        """The ModelArgs to build: this config's model with the tokenizer's vocab_size."""
        return dataclasses.replace(self.model, vocab_size=vocab_size)

    def settings(self):
        """{setting: value}, flat, in flag order: what `from_settings` takes back (ckpt.pt's "config")."""
        return {name: getattr(self.model if name in MODEL_SETTINGS else self, name) for name in SETTINGS}


MODEL_SETTINGS = tuple(f.name for f in dataclasses.fields(ModelArgs) if f.name not in NOT_MODEL_SETTINGS)


def _setting_fields():
    """name -> dataclass field of every setting, in flag order: `model` expands in its place."""
    fields = {}
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model":
            fields.update((f.name, f) for f in dataclasses.fields(ModelArgs) if f.name in MODEL_SETTINGS)
        else:
            fields[field.name] = field
    return fields


SETTINGS = _setting_fields()


def add_arguments(parser):
    """One flag per setting, each defaulting to None so that only flags actually given override."""
    parser.add_argument("--config", help="TOML file of settings (keys as the flags, - or _)")
    for name, field in SETTINGS.items():
        flag = "--" + name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            # `int | None` -> int: the flag parses the value, leaving it out keeps None.
            kind = field.type if isinstance(field.type, type) else typing.get_args(field.type)[0]
            parser.add_argument(flag, type=kind, default=None, metavar=name.upper(),
                                help=f"default: {field.default}")


def load_toml(path):
    """{setting: value} from a TOML file; an unknown key is an error (it is usually a typo)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: {exc}") from None
    settings = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise DataError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return settings


def from_args(args):
    """TrainConfig from parsed flags: defaults < --config file < flags."""
    settings = load_toml(args.config) if getattr(args, "config", None) else {}
    settings.update({name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None})
    return from_settings(settings)


def from_settings(settings):
    """TrainConfig from flat {setting: value} (unset ones keep their defaults); DataError if bad.

    >>> from_settings({"dim": 64, "n_heads": 4, "max_iters": 10}).model.head_dim
    16
    """
    model = {name: value for name, value in settings.items() if name in MODEL_SETTINGS}
    rest = {name: value for name, value in settings.items() if name not in MODEL_SETTINGS}
    try:
        return TrainConfig(model=ModelArgs(**model), **rest)
    except (TypeError, ValueError) as exc:
        raise DataError(f"bad setting: {exc}") from None
