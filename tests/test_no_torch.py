"""Inference needs NumPy only: load models and run them in a Python where torch cannot import
(nor transformers: a Hugging Face folder is read by formats/hf.py)."""

from tests.support.cli import run_python

# Runs in a fresh interpreter. sys.modules["torch"] = None makes every `import torch` raise
# ImportError, exactly as if torch were not installed.
SCRIPT = r'''
import sys
sys.modules["torch"] = None
sys.modules["transformers"] = None
try:
    import torch
    raise AssertionError("torch imported despite being blocked")
except ImportError:
    pass

import numpy as np
from formats import gguf, hf, llama2c, mapping, spm
from formats.spec import ModelArgs
from formats.vocab import Vocab
from llama2_scratch.cli import main
from models import load_model
from models.tokenizers import open_tokenizer
from tests.support.weights import wide_logit_weights

out = sys.argv[1]
args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=32)
weights = wide_logit_weights(args, seed=0)
gguf.write(mapping.to_gguf(weights, args, dtype="q8_0"), f"{out}/model.gguf")
llama2c.write(llama2c.Checkpoint(args, weights), f"{out}/model.bin", 1)

for name in ("model.gguf", "model.bin"):
    model = load_model(f"{out}/{name}")
    prompt = np.arange(10)
    logits = model.forward(prompt)
    logits = model.forward([int(np.argmax(logits))], start_pos=len(prompt))
    assert logits.shape == (300,) and logits.dtype == np.float32 and np.isfinite(logits).all(), name

# A Hugging Face folder computes what the llama2.c file of the same weights computes, bit for bit
# (q/k rows permuted on export and back on reading), and carries its tokenizer.
vocab = Vocab(["<unk>", "<s>", "</s>"] + [f"p{i}" for i in range(297)], np.zeros(300), [2, 3, 3] + [1] * 297)
spm.write(spm.SentencePieceModel(vocab), f"{out}/tokenizer.model")
hf.to_hf(weights, args, open(f"{out}/tokenizer.model", "rb").read(), f"{out}/hf")
prompt = np.arange(10)
assert np.array_equal(load_model(f"{out}/hf").forward(prompt, all_logits=True),
                      load_model(f"{out}/model.bin").forward(prompt, all_logits=True))
ids = open_tokenizer(f"{out}/hf").encode("p7p1 p2")
assert ids == open_tokenizer(f"{out}/tokenizer.model").encode("p7p1 p2") and len(ids) > 1, ids
assert main(["generate", f"{out}/hf", "--prompt", "p7", "--max-new-tokens", "3", "--temperature", "0"]) == 0
assert main(["verify", f"{out}/hf"]) == 2       # without transformers: nothing to compare with

with open(f"{out}/ckpt.pt", "wb") as f:           # what a torch checkpoint starts with
    f.write(b"PK\x03\x04" + bytes(60))
try:
    load_model(f"{out}/ckpt.pt")
    raise AssertionError("a ckpt.pt loaded without torch")
except ImportError as exc:
    assert "needs torch" in str(exc), exc
assert sys.modules["torch"] is None
print("inference without torch: ok")
'''


def test_loading_and_inference_work_without_torch(tmp_path):
    result = run_python("-c", SCRIPT, tmp_path, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "inference without torch: ok" in result.stdout
