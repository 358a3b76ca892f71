"""Small models for the verify tests: one trained, the others random but well separated.

Every model is a ckpt.pt (what `export` and `verify --ckpt` read) holding its tokenizer's .model
bytes, as trainer/train.py writes them. Random init (N(0, 0.02)) gives logits of about ±0.1 whose
top two often differ by less than the rounding of a lossy dtype, so a "top-1 disagreement" there
says nothing about the file. `random_checkpoint` therefore scales an untied classifier so logits
spread over a few units, as a trained model's do; top-1 and greedy checks are then meaningful.
(Scaling a tied embedding instead makes a model that predicts its input token with probability
~1, which hides every error: random models here are untied.)

Random models say little about attention (their attention is nearly uniform: permuting Q/K moves
their logits by ~0.1), so the broken-export tests use the trained model.
"""

import math

import numpy as np
import torch

from formats import gguf
from formats.spec import ModelArgs
from tests.support.pipeline import build_dataset, tiny_config
from trainer import checkpoint
from trainer.export import export_gguf, load_exportable
from trainer.model import Transformer
from trainer.train import train

# Standard deviation the logits of a random model are scaled to (trained tiny models measured
# here spread their logits with a std of 2-4).
RANDOM_LOGIT_STD = 3.0


def trained_checkpoint(shared_data, root, **overrides):
    """A tiny GQA model (dim 64, 4 query / 2 kv heads, context 192) trained on Tiny Shakespeare
    with a custom 384-piece vocabulary; returns the ckpt path."""
    data_dir = build_dataset(shared_data, root)
    settings = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=192, batch_size=8,
                    max_iters=60, warmup_iters=5, learning_rate=1e-2, min_lr=1e-3)
    settings.update(overrides)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)    # a model this small trains faster on one thread of a busy machine
    try:
        result = train(tiny_config(data_dir, root / "out", **settings), out=lambda *a: None)
    finally:
        torch.set_num_threads(saved)
    return result["ckpt"]


def random_checkpoint(path, tokenizer_model, seed=0, **model_args):
    """A random model with the vocabulary of `tokenizer_model` (a .model file), saved as ckpt.pt."""
    from formats import spm

    vocab_size = len(spm.read(tokenizer_model).vocab)
    args = ModelArgs(vocab_size=vocab_size, **model_args)
    torch.manual_seed(seed)
    model = Transformer(args)
    if args.tie_embeddings:
        raise ValueError("random_checkpoint scales the classifier: use tie_embeddings=False")
    with torch.no_grad():
        # logits = rmsnorm(h) @ output.T with |rmsnorm(h)| ~ sqrt(dim): scale the classifier rows
        # to std RANDOM_LOGIT_STD / sqrt(dim).
        w = model.output.weight
        w.mul_(RANDOM_LOGIT_STD / math.sqrt(args.dim) / float(w.std()))
    state = {name: t.clone() for name, t in model.state_dict().items()}
    checkpoint.save({"model": state, "model_args": args.to_dict(), "iter_num": 0,
                     "tokenizer": {"path": str(tokenizer_model), "sha256": "",
                                   "model": open(tokenizer_model, "rb").read()}}, path)
    return path


def export(ckpt_path, dtype, out_path):
    """GGUF export through trainer/export.py (what `llama2-scratch export` runs)."""
    export_gguf(load_exportable(ckpt_path), dtype, out_path)
    return out_path


# ------------------------------------------------------------------- deliberately broken exports


def broken_head_count(good_path, out_path):
    """The old converter's guess: half the heads (twice the head width) with rope dims to match,
    so every shape still fits and the file loads everywhere; only the maths is wrong."""
    gf = gguf.read(good_path)
    md = gf.metadata
    for key in ("llama.attention.head_count", "llama.attention.head_count_kv"):
        md[key] = gguf.Value(gguf.ValueType.UINT32, md[key].value // 2)
    rope = md["llama.rope.dimension_count"].value
    md["llama.rope.dimension_count"] = gguf.Value(gguf.ValueType.UINT32, rope * 2)
    gguf.write(gf, out_path)
    return out_path


def broken_rope_dims(good_path, out_path):
    """rope.dimension_count half the head width (a converter capping it): llama.cpp's llama arch
    and our reader both refuse to load it."""
    gf = gguf.read(good_path)
    key = "llama.rope.dimension_count"
    gf.metadata[key] = gguf.Value(gguf.ValueType.UINT32, gf.metadata[key].value // 2)
    gguf.write(gf, out_path)
    return out_path


def broken_f16_matrices(good_path, out_path):
    """An "f32" file whose matrices went through f16 on the way (a converter that kept the weights
    in half precision and labelled them F32): every shape and hyperparameter right, the logits off
    by ~1e-2, two orders above the f32 gates on any CPU. One matrix alone measured 1.8-5.5e-5 on
    an AVX2 machine, inside the max |Δ| gate, so a single one cannot fail every gate everywhere."""
    gf = gguf.read(good_path)
    gf.tensors = [gguf.Tensor.from_array(t.name, np.asarray(t.data).astype(np.float16).astype(np.float32))
                  if len(t.shape) == 2 else t for t in gf.tensors]
    gguf.write(gf, out_path)
    return out_path


def broken_permuted_qk(good_path, out_path):
    """Q and K rows permuted per head as Hugging Face's converter does (pairs (j, j + hd/2) instead
    of (2j, 2j+1)): right for HF checkpoints, wrong for ours. f32 files only."""
    gf = gguf.read(good_path)
    n_heads = gf.metadata["llama.attention.head_count"].value
    n_kv = gf.metadata["llama.attention.head_count_kv"].value
    tensors = []
    for t in gf.tensors:
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = n_heads if "attn_q" in t.name else n_kv
            w = np.asarray(t.data, np.float32)                                # (heads*hd, D)
            hd = w.shape[0] // heads
            w = w.reshape(heads, hd // 2, 2, -1).swapaxes(1, 2).reshape(t.shape)
            t = gguf.Tensor.from_array(t.name, w, t.type)
        tensors.append(t)
    gguf.write(gguf.GGUFFile(gf.metadata, tensors), out_path)
    return out_path
