"""A model -> GGUF, llama2.c files or a Hugging Face folder, through formats/, with a preflight
and a read-back check.

The source is usually a ckpt.pt (`load_exportable`), but any model file gives an Exportable
(models.files: ModelFile.exportable), so a Hugging Face folder becomes a GGUF.

Accepts our checkpoints and llama2.c's own (train.py's): those have no hidden_dim, norm_eps,
rope_theta or tie_embeddings in model_args (ModelArgs derives the first three as llama2.c does;
tying is read from the weights: llama2.c ties, and saves output.weight equal to tok_embeddings),
and may carry torch.compile's `_orig_mod.` prefix.

Every file is read back after writing and compared: GGUF metadata and tensor bytes must equal what
was built (so a writer bug cannot pass silently), f32 weights must equal the checkpoint's bit for
bit, and the quantized ones are reported with their largest error.
"""

import dataclasses

import numpy as np

from formats import gguf, hf, llama2c, mapping, spm
from formats.atomic import atomic_files, atomic_folder
from formats.files import read_capped
from formats.spec import ModelArgs
from trainer import checkpoint


class ExportError(Exception):
    """A request the checkpoint cannot satisfy; printed as one line by the CLI."""


@dataclasses.dataclass
class Exportable:
    weights: dict       # llama2.c name -> float32 array; no output.weight when tied
    args: ModelArgs     # resolved: llama2.c-style checkpoints get hidden_dim, eps, theta, tying
    vocab: object       # formats.vocab.Vocab, or None when neither the source nor --tokenizer has one
    spm_model: bytes | None = None      # the SentencePiece .model behind `vocab`, when there is one


def load_exportable(ckpt_path, tokenizer_path=None):
    """Weights, resolved model_args and the vocabulary (from --tokenizer, else the ckpt's bytes)."""
    return exportable_from(checkpoint.load(ckpt_path), ckpt_path, tokenizer_path)


def exportable_from(ckpt, ckpt_path, tokenizer_path=None):
    """The same from the dict `checkpoint.load(ckpt_path)` returned (`ckpt_path` names it in errors)."""
    import torch

    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise ExportError(f"{ckpt_path}: not a training checkpoint (needs 'model' and 'model_args')")
    state = checkpoint.clean_state_dict(ckpt["model"])
    raw_args = checkpoint.stored_model_args(ckpt)
    if "tie_embeddings" not in raw_args:
        out, emb = state.get("output.weight"), state.get("tok_embeddings.weight")
        raw_args["tie_embeddings"] = out is None or (emb is not None and torch.equal(out, emb))
    try:
        args = ModelArgs.from_dict(raw_args)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{ckpt_path}: model_args: {exc}") from None
    weights = {name: t.detach().float().numpy() for name, t in state.items()
               if not (args.tie_embeddings and name == "output.weight")}
    emb = weights.get("tok_embeddings.weight")
    if emb is None or emb.shape != (args.vocab_size, args.dim):
        raise ExportError(f"{ckpt_path}: tok_embeddings.weight is {None if emb is None else emb.shape}, "
                          f"model_args say ({args.vocab_size}, {args.dim})")
    spm_model = stored_spm_model(ckpt) if tokenizer_path is None else None      # --tokenizer replaces it
    vocab = spm.from_bytes(spm_model, "the checkpoint's tokenizer").vocab if spm_model else None
    return exportable(weights, args, vocab, spm_model, tokenizer_path)


def stored_spm_model(ckpt):
    """The SentencePiece .model bytes a checkpoint dict stores, or None."""
    tok = ckpt.get("tokenizer")
    return bytes(tok["model"]) if isinstance(tok, dict) and tok.get("model") else None


def exportable(weights, args, vocab, spm_model, tokenizer_path=None):
    """An Exportable of a model's float32 `weights` and `args` with its own `vocab` (and the
    .model bytes behind it, or None), or --tokenizer's .model in their place; ExportError when the
    vocabulary does not fit the embedding."""
    if tokenizer_path is not None:
        spm_model = read_capped(tokenizer_path, spm.MAX_MODEL_BYTES)
        vocab = spm.from_bytes(spm_model, tokenizer_path).vocab
    if vocab is not None and len(vocab) != args.vocab_size:
        raise ExportError(f"the tokenizer has {len(vocab)} pieces but the model's vocab_size is {args.vocab_size}")
    return Exportable(weights, args, vocab, spm_model)


def export_gguf(model, dtype, out_path):
    """Write a GGUF; returns {"tensors", "max_abs_error"} from reading it back."""
    if model.vocab is None:
        raise ExportError("no tokenizer in the checkpoint: pass --tokenizer PATH.model "
                          "(llama.cpp cannot load a GGUF without a vocabulary)")
    try:
        built = mapping.to_gguf(model.weights, model.args, model.vocab, dtype)
    except ValueError as exc:
        raise ExportError(f"cannot export as {dtype}: {exc}") from None
    try:
        gguf.write(built, out_path)
    except ValueError as exc:       # a value the header cannot hold (a context past UINT32)
        raise ExportError(f"cannot export as a GGUF: {exc}") from None
    back = gguf.read(out_path)
    if back.metadata != built.metadata:
        raise ExportError(f"{out_path}: metadata read back differs from what was written")
    for want, got in zip(built.tensors, back.tensors, strict=True):
        if (want.name, want.type, want.shape) != (got.name, got.type, got.shape) or \
                np.asarray(want.data).tobytes() != np.asarray(got.data).tobytes():
            raise ExportError(f"{out_path}: tensor {want.name} read back differs")
    tensors, _, vocab = mapping.from_gguf(back, str(out_path))
    if vocab != model.vocab:
        raise ExportError(f"{out_path}: vocabulary read back differs")
    errors = {name: float(np.abs(_as_float32(t) - model.weights[name]).max()) for name, t in tensors.items()}
    if dtype == "f32" and any(errors.values()):
        raise ExportError(f"{out_path}: f32 weights read back differ from the checkpoint")
    return {"tensors": len(tensors), "max_abs_error": max(errors.values())}


def _as_float32(tensor):
    return tensor.to_float32() if hasattr(tensor, "to_float32") else np.asarray(tensor, dtype=np.float32)


def export_llama2c(model, version, out_path, tokenizer_out=None):
    """Write a llama2.c model (and tokenizer.bin); returns {"max_abs_error", ...} after reading back."""
    if tokenizer_out is not None and model.vocab is None:
        raise ExportError("--tokenizer-out: no tokenizer in the checkpoint; pass --tokenizer PATH.model")
    # Written beside their targets and renamed together once both read back right.
    paths = [out_path] if tokenizer_out is None else [out_path, tokenizer_out]
    with atomic_files(*paths) as temps:
        report = _write_llama2c(model, version, temps[0], out_path)
        if tokenizer_out is not None:
            llama2c.write_tokenizer(model.vocab, temps[1])
            pieces = llama2c.read_tokenizer(temps[1], len(model.vocab)).pieces
            if pieces != model.vocab.pieces:
                raise ExportError(f"{tokenizer_out}: pieces read back differ")
    return report


def _write_llama2c(model, version, path, out_path):
    """export_llama2c's model file, written to `path` and read back (errors name `out_path`)."""
    args = model.args
    try:
        llama2c.write(llama2c.Checkpoint(args, model.weights), path, version)
    except ValueError as exc:
        raise ExportError(f"cannot export as llama2.c v{version}: {exc}") from None
    back = llama2c.read(path)
    if llama2c.config_of(back.args) != llama2c.config_of(args) or back.weights.keys() != model.weights.keys():
        raise ExportError(f"{out_path}: config or tensor list read back differs")
    errors = [float(np.abs(_as_float32(w) - model.weights[name]).max()) for name, w in back.weights.items()]
    if version != 2 and any(errors):
        raise ExportError(f"{out_path}: float32 weights read back differ from the checkpoint")
    return {"max_abs_error": max(errors), "group_size": back.group_size}


def export_hf(model, out_dir):
    """Write a Hugging Face Llama folder (formats.hf.to_hf: float32, q/k in the half-split
    layout); returns {"tensors", "max_abs_error"} after reading it back with formats.hf.from_hf,
    which must give the same ModelArgs, tokenizer.model and weights bit for bit."""
    if model.spm_model is None:
        raise ExportError("a Hugging Face folder needs the SentencePiece .model: pass --tokenizer PATH.model "
                          "(the source holds none, or only a vocabulary that is not a .model)")
    # Built beside out_dir and swapped in whole once read back: a failure leaves out_dir as it was,
    # and a success leaves nothing of an older folder there (no stale shards or index).
    with atomic_folder(out_dir) as build:
        try:
            hf.to_hf(model.weights, model.args, model.spm_model, build)
        except ValueError as exc:
            raise ExportError(f"cannot export as a Hugging Face folder: {exc}") from None
        weights, args, spm_model = hf.from_hf(build)
        if args != _hf_args(model.args) or spm_model != model.spm_model:
            raise ExportError(f"{out_dir}: config.json or tokenizer.model read back differs")
        if weights.keys() != model.weights.keys() or any(
                weights[name].tobytes() != np.asarray(w, np.float32).tobytes() for name, w in model.weights.items()):
            raise ExportError(f"{out_dir}: weights read back differ from the source")
    return {"tensors": len(weights), "max_abs_error": 0.0}


def _hf_args(args):
    """`args` as config.json keeps them: it has no multiple_of or dropout (hidden_dim is explicit)."""
    return dataclasses.replace(args, multiple_of=ModelArgs.multiple_of, dropout=ModelArgs.dropout)
