"""llama2.c-named weights + ModelArgs  <->  a llama.cpp-loadable GGUF (`general.architecture = "llama"`).

This is the one place where GGUF names appear. Everything else in the project uses llama2.c's
(Meta's) names: `tok_embeddings`, `layers.{i}.attention.wq`, `feed_forward.w1`, ...

What llama.cpp needs (llama-model.cpp, llama-vocab.cpp; docs/formats.md section 3):
- hyperparameters as UINT32 (FLOAT32 for eps and rope base) — INT32 or UINT64 fails the load;
- `llama.rope.dimension_count` = head_dim, taken from the checkpoint, never guessed;
- exactly the tensors the architecture expects (`output` only when the classifier is untied;
  any extra tensor fails the load with "wrong number of tensors");
- no Q/K permutation: llama2.c/Meta weights rotate adjacent pairs, as llama.cpp's llama arch does
  (only Hugging Face checkpoints are permuted);
- the vocabulary as `tokenizer.ggml.*`, token types as an INT32 array, n_vocab = token_embd rows.
"""

import re

import numpy as np

from formats import spec
from formats.errors import FormatError
from formats.ggml import GGMLType
from formats.gguf import Array, GGUFFile, Tensor, Value, ValueType
from formats.vocab import Vocab, check_pieces

ARCH = "llama"

# llama2.c name -> GGUF name of the tensors outside the blocks.
GLOBAL_NAMES = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}
# formats.spec.LAYER_KINDS -> GGUF name inside a block: layers.{i}.<kind>.weight <-> blk.{i}.<name>
LAYER_NAMES = {
    "attention_norm": "attn_norm.weight",
    "attention.wq": "attn_q.weight",
    "attention.wk": "attn_k.weight",
    "attention.wv": "attn_v.weight",
    "attention.wo": "attn_output.weight",
    "ffn_norm": "ffn_norm.weight",
    "feed_forward.w1": "ffn_gate.weight",
    "feed_forward.w2": "ffn_down.weight",
    "feed_forward.w3": "ffn_up.weight",
}

# ModelArgs field or property -> (GGUF key, type). All UINT32 except the two floats (llama.cpp
# reads these with exact types).
HPARAM_KEYS = {
    "max_seq_len": ("llama.context_length", ValueType.UINT32),
    "dim": ("llama.embedding_length", ValueType.UINT32),
    "n_layers": ("llama.block_count", ValueType.UINT32),
    "hidden_dim": ("llama.feed_forward_length", ValueType.UINT32),
    "n_heads": ("llama.attention.head_count", ValueType.UINT32),
    "n_kv_heads": ("llama.attention.head_count_kv", ValueType.UINT32),
    "head_dim": ("llama.rope.dimension_count", ValueType.UINT32),
    "norm_eps": ("llama.attention.layer_norm_rms_epsilon", ValueType.FLOAT32),
    "rope_theta": ("llama.rope.freq_base", ValueType.FLOAT32),
    "vocab_size": ("llama.vocab_size", ValueType.UINT32),
}

# `general.file_type` (llama_ftype) for a file whose matrices are all of one type.
FILE_TYPE = {
    GGMLType.F32: 0, GGMLType.F16: 1, GGMLType.Q4_0: 2, GGMLType.Q4_1: 3, GGMLType.Q8_0: 7,
    GGMLType.Q5_0: 8, GGMLType.Q5_1: 9, GGMLType.BF16: 32,
}
QUANTIZED = {GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0}
DTYPE_NAMES = {"f32": GGMLType.F32, "f16": GGMLType.F16, "bf16": GGMLType.BF16, "q8_0": GGMLType.Q8_0,
               "q4_0": GGMLType.Q4_0, "q4_1": GGMLType.Q4_1, "q5_0": GGMLType.Q5_0, "q5_1": GGMLType.Q5_1}

_LAYER_WEIGHT = re.compile(r"layers\.(\d+)\.(.+)\.weight")    # spec.layer_weight(i, kind)
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(.+)")
_GLOBAL_FROM_GGUF = {g: name for name, g in GLOBAL_NAMES.items()}
_KIND_FROM_GGUF = {g: kind for kind, g in LAYER_NAMES.items()}


def gguf_name(name):
    """llama2.c name -> GGUF name ('layers.3.attention.wq.weight' -> 'blk.3.attn_q.weight')."""
    layer = _LAYER_WEIGHT.fullmatch(name)
    if layer:
        return f"blk.{layer[1]}.{LAYER_NAMES[layer[2]]}"
    return GLOBAL_NAMES[name]


def llama2c_name(name):
    """GGUF name -> llama2.c name, or None for a name the llama architecture does not have."""
    block = _BLOCK_TENSOR.fullmatch(name)
    if block:
        kind = _KIND_FROM_GGUF.get(block[2])
        return spec.layer_weight(block[1], kind) if kind else None
    return _GLOBAL_FROM_GGUF.get(name)


def to_gguf(weights, args, vocab=None, dtype="f32", alignment=32, name=None):
    """Build a llama.cpp-loadable GGUFFile for the model `args` (a formats.spec.ModelArgs).

    weights: llama2.c name -> float array (numpy or anything np.asarray takes), exactly the
    tensors of spec.weight_shapes(args) (`output.weight` only when args.tie_embeddings is False).
    dtype: "f32", "f16", "bf16", "q8_0", "q4_0" (also "q4_1", "q5_0", "q5_1"): the type of every
    2-D matrix; norms stay F32 as llama.cpp expects. vocab: a formats.vocab.Vocab whose length is
    vocab_size (llama.cpp needs one to load; None writes no tokenizer keys). Raises ValueError
    naming the tensor when the request is impossible (missing/extra/misshapen tensors, rows not
    divisible by the block).
    """
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {dtype!r}")
    matrix_type = DTYPE_NAMES[dtype]
    shapes = spec.weight_shapes(args)
    arrays = {llama_name: np.asarray(w) for llama_name, w in weights.items()}
    spec.check_weights(arrays, shapes)
    if vocab is not None and len(vocab) != args.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} pieces but vocab_size is {args.vocab_size}")

    metadata = {"general.architecture": Value(ValueType.STRING, ARCH)}
    if name:
        metadata["general.name"] = Value(ValueType.STRING, name)
    metadata["general.file_type"] = Value(ValueType.UINT32, FILE_TYPE[matrix_type])
    if matrix_type in QUANTIZED:
        metadata["general.quantization_version"] = Value(ValueType.UINT32, 2)
    if alignment != 32:
        metadata["general.alignment"] = Value(ValueType.UINT32, alignment)
    for field, (key, vtype) in HPARAM_KEYS.items():
        value = getattr(args, field)
        metadata[key] = Value(vtype, float(np.float32(value)) if vtype == ValueType.FLOAT32 else int(value))
    if vocab is not None:
        metadata.update(vocab_to_metadata(vocab))

    tensors = []
    for llama_name in shapes:
        array = arrays[llama_name]
        ggml_type = matrix_type if array.ndim == 2 else GGMLType.F32
        try:
            tensors.append(Tensor.from_array(gguf_name(llama_name), array, ggml_type))
        except ValueError as exc:
            raise ValueError(f"{llama_name} as {dtype}: {exc}") from None
    return GGUFFile(metadata, tensors)


def vocab_to_metadata(vocab):
    """The `tokenizer.ggml.*` keys for a SentencePiece-style (llama) vocabulary."""
    if len(set(vocab.pieces)) != len(vocab.pieces):
        raise ValueError("vocab has duplicate pieces; llama.cpp requires unique tokens")
    return {
        "tokenizer.ggml.model": Value(ValueType.STRING, "llama"),
        "tokenizer.ggml.tokens": Value(ValueType.ARRAY, Array(ValueType.STRING, list(vocab.pieces))),
        "tokenizer.ggml.scores": Value(ValueType.ARRAY, Array(ValueType.FLOAT32, vocab.scores)),
        "tokenizer.ggml.token_type": Value(ValueType.ARRAY, Array(ValueType.INT32, vocab.types)),
        "tokenizer.ggml.bos_token_id": Value(ValueType.UINT32, int(vocab.bos_id)),
        "tokenizer.ggml.eos_token_id": Value(ValueType.UINT32, int(vocab.eos_id)),
        "tokenizer.ggml.unknown_token_id": Value(ValueType.UINT32, int(vocab.unk_id)),
        "tokenizer.ggml.add_bos_token": Value(ValueType.BOOL, bool(vocab.add_bos)),
        "tokenizer.ggml.add_eos_token": Value(ValueType.BOOL, bool(vocab.add_eos)),
        "tokenizer.ggml.add_space_prefix": Value(ValueType.BOOL, bool(vocab.add_space_prefix)),
    }


def _get(metadata, key, types, path, default=None):
    value = metadata.get(key)
    if value is None:
        if default is None:
            raise FormatError(path, key, None, "required key is missing")
        return default
    if value.type not in types:
        raise FormatError(path, key, None, f"has type {value.type.name}, expected "
                                           f"{'/'.join(t.name for t in types)}")
    return value.value


def vocab_from_metadata(metadata, path="<gguf>"):
    """A Vocab from `tokenizer.ggml.*` keys, or None when the file has no tokenizer."""
    if "tokenizer.ggml.tokens" not in metadata:
        return None
    model = _get(metadata, "tokenizer.ggml.model", (ValueType.STRING,), path)
    if model != "llama":
        raise FormatError(path, "tokenizer.ggml.model", None, f"{model!r} tokenizers are not supported (only 'llama')")
    tokens = _get(metadata, "tokenizer.ggml.tokens", (ValueType.ARRAY,), path)
    n = len(tokens)
    scores = _get(metadata, "tokenizer.ggml.scores", (ValueType.ARRAY,), path,
                  Array(ValueType.FLOAT32, np.zeros(n, np.float32)))
    types = _get(metadata, "tokenizer.ggml.token_type", (ValueType.ARRAY,), path,
                 Array(ValueType.INT32, np.ones(n, np.int32)))
    for key, arr, etypes in (("tokenizer.ggml.tokens", tokens, (ValueType.STRING,)),
                             ("tokenizer.ggml.scores", scores, (ValueType.FLOAT32,)),
                             ("tokenizer.ggml.token_type", types, (ValueType.INT32, ValueType.UINT32))):
        if arr.element_type not in etypes or len(arr) != n:
            raise FormatError(path, key, None, f"expected {n} {etypes[0].name} items (one per token), found "
                                               f"{len(arr)} {arr.element_type.name}")
    check_pieces(tokens.items, types.items, path, "tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
    ids = {}
    for field, key, default in (("unk_id", "unknown_token_id", 0), ("bos_id", "bos_token_id", 1),
                                ("eos_id", "eos_token_id", 2)):
        ids[field] = int(_get(metadata, "tokenizer.ggml." + key, (ValueType.UINT32, ValueType.INT32), path, default))
        if not 0 <= ids[field] < n:
            raise FormatError(path, "tokenizer.ggml." + key, None, f"id {ids[field]} is outside the {n}-token vocabulary")
    flags = {field: bool(_get(metadata, "tokenizer.ggml." + key, (ValueType.BOOL,), path, default))
             for field, key, default in (("add_bos", "add_bos_token", True), ("add_eos", "add_eos_token", False),
                                         ("add_space_prefix", "add_space_prefix", True))}
    return Vocab(list(tokens.items), np.asarray(scores.items, np.float32), np.asarray(types.items, np.int32),
                 **ids, **flags)


def _check_plain_llama(md, path):
    """Refuse the llama-architecture files whose model we do not compute, each in one line: a
    mixture of experts (llama.cpp's converter writes Mixtral as "llama" with llama.expert_count)
    and a scaled RoPE (llama.rope.scaling.type "linear", "yarn", ...). The other keys its
    converters add (general.*, llama.attention.key_length, a chat template, ...) are ignored."""
    experts = _get(md, "llama.expert_count", (ValueType.UINT32,), path, 0)
    if experts:
        raise FormatError(path, "llama.expert_count", None,
                          f"is {experts}: mixture-of-experts models are not supported")
    scaling = _get(md, "llama.rope.scaling.type", (ValueType.STRING,), path, "none")
    if scaling != "none":
        raise FormatError(path, "llama.rope.scaling.type", None, f"is {scaling!r}: only unscaled RoPE is supported")


def from_gguf(gguf_file, path=None):
    """(tensors, args, vocab) from a llama GGUF: tensors keyed by llama2.c names (their data
    still views into the file), args a formats.spec.ModelArgs, vocab a Vocab or None.

    Every hyperparameter is read with its exact type and cross-checked against the tensor shapes,
    so a file with a wrong head count or rope dimension fails here with the key named. Keys the
    file leaves out (eps, rope base, head_count_kv) keep ModelArgs' defaults.
    """
    path = path or getattr(gguf_file, "path", None) or "<gguf>"
    md = gguf_file.metadata
    arch = _get(md, "general.architecture", (ValueType.STRING,), path)
    if arch != ARCH:
        raise FormatError(path, "general.architecture", None, f"is {arch!r}; only 'llama' is supported")
    _check_plain_llama(md, path)
    u32 = (ValueType.UINT32,)
    fields = {field: int(_get(md, key, u32, path)) for field, (key, vtype) in HPARAM_KEYS.items()
              if vtype == ValueType.UINT32 and field not in ("head_dim", "vocab_size", "n_kv_heads")}
    fields["n_kv_heads"] = int(_get(md, "llama.attention.head_count_kv", u32, path, fields["n_heads"]))
    for field in ("norm_eps", "rope_theta"):
        key = HPARAM_KEYS[field][0]
        if key in md:
            fields[field] = float(_get(md, key, (ValueType.FLOAT32,), path))

    tensors = {}
    for t in gguf_file.tensors:
        name = llama2c_name(t.name)
        if name is None:
            raise FormatError(path, f"tensor {t.name}", None, "is not a tensor of the llama architecture")
        tensors[name] = t
    embd = tensors.get("tok_embeddings.weight")
    if embd is None:
        raise FormatError(path, "tensor token_embd.weight", None, "is missing")
    if len(embd.shape) != 2:
        raise FormatError(path, "tensor token_embd.weight", None, f"has shape {embd.shape}; it must be 2-D")
    fields["vocab_size"] = int(embd.shape[0])
    fields["tie_embeddings"] = "output.weight" not in tensors
    # Each layer has 9 tensors: a block_count beyond the tensor count (which the file size bounds)
    # would otherwise make weight_shapes() list billions of names before anything fails.
    if fields["n_layers"] > len(tensors):
        raise FormatError(path, "llama.block_count", None,
                          f"{fields['n_layers']} layers cannot fit in a file of {len(tensors)} tensors")
    args = _model_args(fields, path)
    rope_dims = int(_get(md, "llama.rope.dimension_count", u32, path, args.head_dim))
    if rope_dims != args.head_dim:
        raise FormatError(path, "llama.rope.dimension_count", None,
                          f"is {rope_dims} but embedding_length/head_count = {args.head_dim}")
    declared_vocab = _get(md, "llama.vocab_size", u32, path, args.vocab_size)
    if declared_vocab != args.vocab_size:
        raise FormatError(path, "llama.vocab_size", None,
                          f"is {declared_vocab} but token_embd has {args.vocab_size} rows")

    shapes = spec.weight_shapes(args)
    for name, shape in shapes.items():
        if name not in tensors:
            raise FormatError(path, f"tensor {gguf_name(name)}", None, "is missing")
        if tuple(tensors[name].shape) != shape:
            raise FormatError(path, f"tensor {gguf_name(name)}", None,
                              f"has shape {tuple(tensors[name].shape)}; the hyperparameters imply {shape}")
    for name in tensors:
        if name not in shapes:
            raise FormatError(path, f"tensor {gguf_name(name)}", None, f"is unexpected for {args.n_layers} layers")

    vocab = vocab_from_metadata(md, path)
    if vocab is not None and len(vocab) != args.vocab_size:
        raise FormatError(path, "tokenizer.ggml.tokens", None,
                          f"has {len(vocab)} tokens but token_embd has {args.vocab_size} rows")
    return {name: tensors[name] for name in shapes}, args, vocab


def _model_args(fields, path):
    """ModelArgs from the hyperparameters read out of a GGUF; its checks fail as a FormatError
    naming the key the blamed field was read from (vocab_size: the rows of token_embd)."""
    try:
        return spec.ModelArgs(**fields)
    except spec.ArgsError as exc:
        key = "tensor token_embd.weight" if exc.field == "vocab_size" else HPARAM_KEYS[exc.field][0]
        raise FormatError(path, key, None, str(exc)) from None
