"""Tests that kill the mutations issue 23 found surviving: each test below names the mutation it
is there for. None needs llama.cpp or torch."""

import json

import numpy as np
import pytest

from formats import gguf, hf
from formats.ggml import BLOCK, GGMLType
from formats.gguf import GGUFFile
from formats.spec import ModelArgs
from llama2_scratch import cli
from models import load_model
from reference.runtime import load
from tests.support.files import byte_vocab, write_gguf
from tests.support.quant import map_scales
from tests.support.weights import wide_logit_weights

# k-quants need rows of 256: the smallest model whose every matrix takes them.
K_ARGS = ModelArgs(dim=256, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=262, hidden_dim=256, max_seq_len=16)
# Fast vs plain on the same weights: float32 summation order only. The fast path's one-token kernel
# sums codes per block, then scales; the plain one multiplies dequantized weights (tests/test_fast_quants.py
# bounds such a product by 1e-5 of the sum of its terms' magnitudes). Here the logits' magnitudes are
# ~10 and the sums run over 256 terms of ~0.1: 1e-4 absolute is ~10x that bound; the two mutations
# below move logits by units.
FAST_VS_PLAIN_ATOL = 1e-4


def small_scales(bits):
    """fp16 d and dmin of 2^-9 (0x1800) for every block: weights of ~0.1, as a quantizer's would be."""
    return np.full_like(bits, 0x1800)


@pytest.fixture(scope="module")
def kquant_gguf(tmp_path_factory):
    """A llama GGUF whose matrices are all random Q4_K blocks (and the embedding Q6_K): formats/
    cannot quantize to k-quants, so the blocks are drawn, with small scales."""
    path = tmp_path_factory.mktemp("kquant") / "m.gguf"
    write_gguf(K_ARGS, wide_logit_weights(K_ARGS, seed=2), path, vocab=byte_vocab(K_ARGS.vocab_size))
    f32 = gguf.read(path)
    rng = np.random.default_rng(5)
    tensors = []
    for t in f32.tensors:
        if len(t.shape) == 2:
            kind = GGMLType.Q6_K if t.name == "token_embd.weight" else GGMLType.Q4_K
            n_blocks, type_size = t.shape[1] // BLOCK[kind][0], BLOCK[kind][1]
            raw = rng.integers(0, 256, size=(t.shape[0], n_blocks, type_size), dtype=np.uint8)
            map_scales(raw, kind, small_scales)
            t = gguf.Tensor(t.name, kind, t.shape, raw.reshape(t.shape[0], -1))
        tensors.append(t)
    gguf.write(GGUFFile(f32.metadata, tensors), path)
    return path


def test_a_kquant_gguf_runs_fast_as_it_runs_plain_read_in_chunks(kquant_gguf, monkeypatch):
    """Kills: read_codes losing the k-quants' subtract sign (Q4_K's weights are d*sc*q - dmin*m),
    and a chunked read restarting at the tensor's first row (READ_CHUNK_BYTES set to one row here,
    so every matrix is read in 256 or 262 pieces): the fast path keeps these matrices as codes read
    by load.read_codes, the plain one dequantizes them (formats.quant)."""
    monkeypatch.setattr(load, "READ_CHUNK_BYTES", 1)
    plain, fast = load_model(kquant_gguf), load_model(kquant_gguf, fast=True)
    tokens = np.array([1, 70, 200, 9, 33])
    expected = plain.forward(tokens, all_logits=True)
    assert np.abs(expected).max() > 1                    # logits that a wrong weight would move
    np.testing.assert_allclose(fast.forward(tokens, all_logits=True), expected, rtol=0, atol=FAST_VS_PLAIN_ATOL)


def test_trace_vs_float64_compares_against_a_float64_run(tmp_path, capsys):
    """Kills: trace --vs-float64 comparing the float32 cache with itself (every difference 0)."""
    args = ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=262, hidden_dim=64, max_seq_len=16)
    path = write_gguf(args, wide_logit_weights(args, seed=4), tmp_path / "m.gguf", vocab=byte_vocab(262))
    assert cli.main(["trace", str(path), "--prompt", "ab", "--vs-float64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ids = report["ids"]
    ours = load_model(path).run_with_cache(ids)[1]["logits"]
    exact = load_model(path, dtype=np.float64).run_with_cache(ids)[1]["logits"]
    expected = float(np.abs(ours.astype(np.float64) - exact).max())
    logits = next(p for p in report["points"] if p["name"] == "logits")
    # float32 rounding of a float32 run is never exactly 0 across 262 logits; the same two runs
    # repeated give the same bits, so the report must give that value (1e-9 relative: JSON floats).
    assert expected > 0
    assert logits["vs_float64"]["max_abs_diff"] == pytest.approx(expected, rel=1e-9)


def test_a_config_without_tie_word_embeddings_is_untied_as_in_transformers():
    """Kills: tie_word_embeddings defaulting to True (transformers' LlamaConfig default is False)."""
    config = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "vocab_size": 4}
    assert hf.args_from_config(config, "config.json").tie_embeddings is False
    assert hf.DEFAULTS["tie_word_embeddings"] is False
