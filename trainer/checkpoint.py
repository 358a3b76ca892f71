"""ckpt.pt: save atomically, load with weights_only=True, and normalize foreign checkpoints.

The dict (../shared/SPEC.md): "model" (llama2.c names), "model_args" (plain dict), and for
resuming "optimizer", "scaler", "iter_num", "rng" (torch CPU and CUDA generator states),
"data_cursor" (the sampler's seed and next step: batches are a function of those two), "config"
(the TrainConfig as a dict) and "tokenizer" ({"path", "sha256", "model": the .model bytes}), so
export finds the vocabulary even after the data folder is gone.
"""

import io

from formats.atomic import atomic_write

# Buffers llama2.c's model.py keeps in some state dicts; they are derived, not weights.
_DERIVED = ("freqs_cos", "freqs_sin")
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")   # torch.compile, DistributedDataParallel


def save(ckpt, path):
    """torch.save into memory, then atomically replace `path`: a crash never leaves half a file."""
    import torch

    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def load(path):
    """The checkpoint dict (tensors on the CPU); weights_only, so no code in the file runs."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def clean_state_dict(state_dict):
    """llama2.c names only: wrapper prefixes stripped, derived RoPE buffers dropped."""
    clean = {}
    for name, tensor in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name not in _DERIVED:
            clean[name] = tensor
    return clean
