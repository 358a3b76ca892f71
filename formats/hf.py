"""A Hugging Face Llama folder  <->  llama2.c-named float32 weights, ModelArgs, tokenizer bytes.

The folder is what transformers' `LlamaForCausalLM.save_pretrained` writes and
`from_pretrained` / `AutoTokenizer.from_pretrained` load:

    config.json               the hyperparameters (CONFIG_KEYS below), model_type "llama"
    model.safetensors         the weights under Hugging Face's names (TENSOR_NAMES below), or
    model.safetensors.index.json + its shards (read only; `to_hf` writes one file, float32)
    generation_config.json    bos/eos ids for `generate`
    tokenizer.model           the SentencePiece model, byte for byte
    tokenizer.json            the same tokenizer as Hugging Face's fast-tokenizer pipeline
                              (formats/hf_tokenizer.py): loads without sentencepiece or protobuf
    tokenizer_config.json     the special pieces and flags; the class that loads tokenizer.json
    special_tokens_map.json   bos/eos/unk pieces

This is the one place where Hugging Face names appear.

Q and K rows. Meta's Llama (and llama2.c, llama.cpp, this project) rotates adjacent pairs
(x[2j], x[2j+1]) of each head by RoPE (reference/rope.py); transformers' `rotate_half` pairs
x[j] with x[j + hd/2] instead, at the same angle m * theta^(-2j/hd). So Hugging Face stores
wq and wk with each head's rows reordered, pair j's two rows moving to rows j and j + hd/2:

    HF row  s * hd/2 + j   =   Meta row  2j + s          (per head; s = 0, 1; j < hd/2)

q_proj = to_half_split(wq, n_heads), k_proj = to_half_split(wk, n_kv_heads) (under GQA wk has
n_kv_heads heads); wv, wo and the rest are unchanged. Then q·k is the same sum of the same
products either way, so the two layouts compute the same attention.

What we cannot run is refused with a FormatError naming the config.json key: another
model_type or architecture, rope scaling, biases, an activation other than SiLU, a head_dim other
than hidden_size / num_attention_heads.

The tokenizer: tokenizer_config.json names PreTrainedTokenizerFast, which loads tokenizer.json as
written; LlamaTokenizer would rebuild its own pipeline from the vocabulary and merges (no
normalizer, a Metaspace prefix that is not SentencePiece's dummy prefix) and differ on leading and
repeated spaces. tokenizer.model stays the reference: `from_hf` returns its bytes, or, in a folder
with only tokenizer.json, the bytes of a .model rebuilt from it (hf_tokenizer.from_json: the same
ids, scores from the merge order).
"""

import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np

from formats import hf_tokenizer, safetensors, spec, spm
from formats.atomic import atomic_write
from formats.errors import FormatError
from formats.files import MAX_JSON_BYTES, confined, parse_json, read_capped
from formats.spec import ModelArgs

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"

ARCHITECTURE = "LlamaForCausalLM"
MODEL_TYPE = "llama"

# llama2.c name -> Hugging Face name; "{i}" is the layer index.
TENSOR_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "layers.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.feed_forward.w1.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.feed_forward.w2.weight": "model.layers.{i}.mlp.down_proj.weight",
    "layers.{i}.feed_forward.w3.weight": "model.layers.{i}.mlp.up_proj.weight",
}
# Rows permuted between the layouts, and the ModelArgs field giving each one's head count.
PERMUTED = {"attention.wq": "n_heads", "attention.wk": "n_kv_heads"}
# Older checkpoints also store RoPE's inverse frequencies, a buffer derived from the config.
_DERIVED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")

# ModelArgs field -> config.json key.
CONFIG_KEYS = {
    "dim": "hidden_size", "hidden_dim": "intermediate_size", "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads", "vocab_size": "vocab_size",
    "norm_eps": "rms_norm_eps", "rope_theta": "rope_theta", "max_seq_len": "max_position_embeddings",
    "tie_embeddings": "tie_word_embeddings",
}
REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
# What transformers' LlamaConfig assumes for an absent key (num_key_value_heads: the head count).
DEFAULTS = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 2048,
            "tie_word_embeddings": False}
# key -> the only value we can run (or absence); anything else is refused.
ONLY = {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "rope_scaling": None}


def hf_name(name):
    """llama2.c name -> Hugging Face name.

    >>> hf_name("layers.3.attention.wq.weight")
    'model.layers.3.self_attn.q_proj.weight'
    """
    layer = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if layer:
        return TENSOR_NAMES["layers.{i}." + layer[2]].format(i=layer[1])
    return TENSOR_NAMES[name]


def to_half_split(w, n_heads):
    """Rows of wq/wk from Meta's adjacent RoPE pairs to Hugging Face's half-split layout.

    w: (n_heads * hd, D) -> (n_heads * hd, D); head h's row 2j + s moves to row s * hd/2 + j.
    >>> to_half_split(np.arange(8).reshape(8, 1), 2).ravel()     # two heads of hd = 4
    array([0, 2, 1, 3, 4, 6, 5, 7])
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def to_adjacent_pairs(w, n_heads):
    """The inverse of `to_half_split`: Hugging Face's q_proj/k_proj rows back to Meta's.

    >>> to_adjacent_pairs(np.array([[0], [2], [1], [3]]), 1).ravel()
    array([0, 1, 2, 3])
    """
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def _kind(name):
    """'layers.3.attention.wq.weight' -> 'attention.wq' (None for a tensor outside the blocks)."""
    layer = re.fullmatch(r"layers\.\d+\.(.+)\.weight", name)
    return layer[1] if layer else None


# ------------------------------------------------------------------------------------ config


def config_dict(args: ModelArgs, vocab):
    """config.json's contents for `args`; bos/eos ids from the tokenizer's `vocab`."""
    config = {"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE}
    config.update({key: getattr(args, field) for field, key in CONFIG_KEYS.items()})
    config.update({"head_dim": args.head_dim, **ONLY, "torch_dtype": "float32"})
    config.update(_special_ids(vocab))
    return config


def _special_ids(vocab):
    """bos/eos ids a SentencePiece vocabulary declares (-1 there means it has none)."""
    return {key: (i if i >= 0 else None) for key, i in (("bos_token_id", vocab.bos_id),
                                                        ("eos_token_id", vocab.eos_id))}


def _number(config, key, path, kind):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FormatError(path, key, None, f"{_short(value)} is not {'an int' if kind is int else 'a number'}")
    # An int of 400 digits would overflow every float computed from it (and any int count).
    if value.bit_length() > 64 if isinstance(value, int) else not math.isfinite(value):
        raise FormatError(path, key, None, f"{_short(value)} is out of range")
    return value


def _short(value, limit=60):
    """A JSON value for a message: its repr, cut when long; a huge int by its size (Python
    refuses to print one of over 4,300 digits)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _refuse_unsupported(config, path):
    """FormatError naming the first key whose value we cannot run."""
    if config.get("model_type") != MODEL_TYPE:
        raise FormatError(path, "model_type", None, f"{config.get('model_type')!r}, only {MODEL_TYPE!r} "
                                                    "is supported")
    architectures = config.get("architectures")
    if architectures is not None and architectures != [ARCHITECTURE]:
        raise FormatError(path, "architectures", None, f"{architectures!r}, only [{ARCHITECTURE!r}] "
                                                       "is supported")
    for key, value in ONLY.items():
        if key in config and config[key] != value:
            raise FormatError(path, key, None, f"{config[key]!r} is not supported (only {value!r})")
    # transformers 5 folds rope_theta and rope_scaling into rope_parameters.
    rope = config.get("rope_parameters")
    if rope is not None and (not isinstance(rope, dict) or rope.get("rope_type", "default") != "default"
                             or set(rope) - {"rope_type", "rope_theta"}):
        raise FormatError(path, "rope_parameters", None, f"{rope!r}: only plain RoPE (rope_type "
                                                         "'default', rope_theta) is supported")


def args_from_config(config, path):
    """config.json's dict -> ModelArgs; refuses what the reference model cannot run."""
    if not isinstance(config, dict):
        raise FormatError(path, "config", None, "must be a JSON object")
    _refuse_unsupported(config, path)
    config = {**DEFAULTS, **config}
    rope = config.get("rope_parameters")
    if rope and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    if config.get("num_key_value_heads") is None and "num_attention_heads" in config:
        config["num_key_value_heads"] = config["num_attention_heads"]
    for key in REQUIRED:
        if key not in config:
            raise FormatError(path, key, None, "missing")
    fields = {}
    for field, key in CONFIG_KEYS.items():
        if field == "tie_embeddings":
            if not isinstance(config[key], bool):
                raise FormatError(path, key, None, f"{config[key]!r} is not true or false")
            fields[field] = config[key]
        else:
            kind = (int, float) if field in ("norm_eps", "rope_theta") else int
            fields[field] = _number(config, key, path, kind)
    try:
        args = ModelArgs(**fields)
    except ValueError as exc:
        raise FormatError(path, "config", None, str(exc)) from None
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim != args.head_dim:
        raise FormatError(path, "head_dim", None, f"{head_dim!r}, but hidden_size / num_attention_heads "
                                                  f"is {args.head_dim}: only that is supported")
    return args


def _read_json(path):
    """A JSON file of the folder, read whole (up to MAX_JSON_BYTES), confined to the folder."""
    data = read_capped(confined(path.parent, path), MAX_JSON_BYTES)
    return parse_json(data, path)


# ------------------------------------------------------------------------------------ reading


def _read_tensors(folder):
    """Hugging Face name -> safetensors.Tensor: model.safetensors, else the sharded index (the
    order transformers looks for them in)."""
    if (folder / WEIGHTS).exists():
        return safetensors.read(confined(folder, folder / WEIGHTS)).tensors
    if (folder / INDEX).exists():
        return safetensors.read_index(confined(folder, folder / INDEX))
    raise FormatError(folder, WEIGHTS, None, f"neither {WEIGHTS} nor {INDEX} is in the folder")


def _weight(tensors, name, shape, where):
    """The tensor `name` as float32 of `shape`; errors name it."""
    tensor = tensors.get(name)
    if tensor is None:
        raise FormatError(where, name, None, "missing")
    if tensor.dtype not in ("F32", "F16", "BF16", "F64"):
        raise FormatError(where, name, None, f"dtype {tensor.dtype}, a weight must be floating point")
    if tensor.shape != tuple(shape):
        raise FormatError(where, name, None, f"shape {tensor.shape}, config.json implies {tuple(shape)}")
    return tensor.to_float32()


def weights_from_hf(tensors, args: ModelArgs, where):
    """Hugging Face-named tensors -> llama2.c-named float32 arrays, q/k rows back in Meta's order.

    A tied model may carry lm_head.weight only as a copy of the embeddings.
    """
    # Count before listing every tensor name: a hostile num_hidden_layers must not build a huge
    # table. When too few, one of the first len(tensors) + 1 names is missing: name it.
    needed = 2 + len(spec.LAYER_KINDS) * args.n_layers + (not args.tie_embeddings)
    if needed > len(tensors):
        layers = (spec.layer_weight(i, kind) for i in range(args.n_layers) for kind in spec.LAYER_KINDS)
        names = itertools.chain(["tok_embeddings.weight", "norm.weight"],
                                [] if args.tie_embeddings else [spec.OUTPUT], layers)
        missing = next(hf_name(name) for name in names if hf_name(name) not in tensors)
        raise FormatError(where, missing, None,
                          f"missing ({len(tensors)} tensors, config.json's model has {needed})")
    shapes = spec.weight_shapes(args)
    weights = {}
    for name, shape in shapes.items():
        w = _weight(tensors, hf_name(name), shape, where)
        heads = PERMUTED.get(_kind(name))
        weights[name] = to_adjacent_pairs(w, getattr(args, heads)) if heads else w
    known = {hf_name(name) for name in shapes}
    for name in tensors:
        if name in known or _DERIVED.fullmatch(name):
            continue
        if name == hf_name(spec.OUTPUT) and args.tie_embeddings:
            if not np.array_equal(_weight(tensors, name, shapes["tok_embeddings.weight"], where),
                                  weights["tok_embeddings.weight"]):
                raise FormatError(where, name, None, "differs from model.embed_tokens.weight, but "
                                                     "tie_word_embeddings is true")
            continue
        raise FormatError(where, name, None, "not a tensor of this Llama model")
    return weights


@dataclasses.dataclass(eq=False)
class Folder:
    """A Hugging Face Llama folder as read, nothing converted: what `read_folder` returns."""
    path: Path
    config: dict                # config.json, a JSON object
    tensors: dict               # Hugging Face name -> safetensors.Tensor (views into the mapped files)
    tokenizer_model: bytes | None   # tokenizer.model's bytes (else rebuilt from tokenizer.json), or None
    tokenizer_path: Path | None     # the file those bytes came from: tokenizer.model or tokenizer.json

    @property
    def args(self):
        """config.json as ModelArgs (`args_from_config`: FormatError for what we cannot run)."""
        return args_from_config(self.config, self.path / CONFIG)


def read_folder(folder):
    """Parse a Hugging Face Llama folder: config.json (must be a JSON object), the safetensors
    headers (model.safetensors, else the sharded index), tokenizer.model's bytes if present, else
    those of a .model rebuilt from tokenizer.json (`_tokenizer_from_json`), else None."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(folder, "folder", None, "not a folder (a Hugging Face model is a folder "
                                                  f"holding {CONFIG} and {WEIGHTS})")
    config = _read_json(folder / CONFIG)
    if not isinstance(config, dict):
        raise FormatError(folder / CONFIG, "config", None, "must be a JSON object")
    tokenizer, tokenizer_bytes = folder / TOKENIZER, None
    if tokenizer.exists():
        tokenizer_bytes = read_capped(confined(folder, tokenizer), spm.MAX_MODEL_BYTES)
    elif (folder / TOKENIZER_JSON).exists():
        tokenizer, tokenizer_bytes = folder / TOKENIZER_JSON, _tokenizer_from_json(folder)
    return Folder(folder, config, _read_tensors(folder), tokenizer_bytes,
                  tokenizer if tokenizer_bytes is not None else None)


def _tokenizer_from_json(folder):
    """.model bytes rebuilt from tokenizer.json, bos/eos/unk named by tokenizer_config.json if any."""
    names = _read_json(folder / TOKENIZER_CONFIG) if (folder / TOKENIZER_CONFIG).exists() else {}
    names = {key: value.get("content") if isinstance(value, dict) else value
             for key, value in (names.items() if isinstance(names, dict) else ())
             if key in ("bos_token", "eos_token", "unk_token") and isinstance(value, (str, dict))}
    return spm.to_bytes(hf_tokenizer.from_json(_read_json(folder / TOKENIZER_JSON), folder / TOKENIZER_JSON, names))


def from_hf(folder):
    """Read a Hugging Face Llama folder -> (weights with llama2.c names, ModelArgs, the
    tokenizer.model bytes or None when the folder has none).

    config.json has no multiple_of or dropout (hidden_dim is given, dropout only trains): they
    come back as ModelArgs' defaults. float32 weights stay views into the mapped file.
    """
    parsed = read_folder(folder)
    args = parsed.args
    return weights_from_hf(parsed.tensors, args, parsed.path), args, parsed.tokenizer_model


# ------------------------------------------------------------------------------------ writing


def _write_json(obj, path):
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def special_tokens(vocab):
    """special_tokens_map.json's contents: the bos/eos/unk pieces (None for an id of -1)."""
    return {key: (vocab.pieces[i] if i >= 0 else None) for key, i in
            (("bos_token", vocab.bos_id), ("eos_token", vocab.eos_id), ("unk_token", vocab.unk_id))}


def tokenizer_config(vocab, max_seq_len):
    """tokenizer_config.json's contents: the class that loads tokenizer.json as written (see the
    module docstring), the .model's special pieces and whether it adds BOS and a dummy-prefix
    space."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": vocab.add_bos,
            "add_eos_token": vocab.add_eos, "add_prefix_space": vocab.add_space_prefix,
            **special_tokens(vocab), "pad_token": None, "model_max_length": max_seq_len,
            "clean_up_tokenization_spaces": False, "legacy": False}


def write_tokenizer(spm_model_bytes, out_dir, max_seq_len):
    """Write tokenizer.model, tokenizer.json, special_tokens_map.json and tokenizer_config.json
    into the folder `out_dir`."""
    model = spm.from_bytes(spm_model_bytes, TOKENIZER)
    _write_tokenizer(spm_model_bytes, model, hf_tokenizer.to_json(model), Path(out_dir), max_seq_len)


def _write_tokenizer(spm_model_bytes, model, tokenizer_json, out_dir, max_seq_len):
    with atomic_write(out_dir / TOKENIZER) as f:
        f.write(bytes(spm_model_bytes))
    _write_json(tokenizer_json, out_dir / TOKENIZER_JSON)
    _write_json(special_tokens(model.vocab), out_dir / SPECIAL_TOKENS_MAP)
    _write_json(tokenizer_config(model.vocab, max_seq_len), out_dir / TOKENIZER_CONFIG)


def hf_tensors(weights, args: ModelArgs):
    """llama2.c-named weights -> Hugging Face name -> float32 safetensors.Tensor, q/k permuted."""
    spec.check_weights(weights, spec.weight_shapes(args))
    tensors = {}
    for name, w in weights.items():
        w = np.asarray(w, dtype=np.float32)
        heads = PERMUTED.get(_kind(name))
        if heads:
            w = to_half_split(w, getattr(args, heads))
        tensors[hf_name(name)] = safetensors.Tensor("F32", w)
    return tensors


def to_hf(weights, args: ModelArgs, spm_model_bytes, out_dir):
    """Write a Hugging Face Llama folder (created if absent) that transformers loads.

    weights: llama2.c names -> arrays (exactly those of spec.weight_shapes(args)); spm_model_bytes:
    the SentencePiece .model the model was trained with (its piece count must fit vocab_size).
    """
    out_dir = Path(out_dir)
    tensors = hf_tensors(weights, args)
    model = spm.from_bytes(spm_model_bytes, TOKENIZER)
    vocab = model.vocab
    tokenizer_json = hf_tokenizer.to_json(model)    # before any file: it refuses what it cannot write
    if len(vocab) > args.vocab_size:
        raise ValueError(f"the tokenizer has {len(vocab)} pieces, the model only {args.vocab_size} rows")
    out_dir.mkdir(parents=True, exist_ok=True)
    # transformers refuses safetensors weights without a "format" it knows.
    safetensors.write(safetensors.SafetensorsFile(tensors, {"format": "pt"}), out_dir / WEIGHTS)
    _write_json(config_dict(args, vocab), out_dir / CONFIG)
    _write_json(_special_ids(vocab), out_dir / GENERATION_CONFIG)
    _write_tokenizer(spm_model_bytes, model, tokenizer_json, out_dir, args.max_seq_len)
