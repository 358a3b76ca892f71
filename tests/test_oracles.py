"""llama.cpp as an independent oracle for the conventions: the NumPy reference and llama.cpp read
the same float32 GGUF (llama.cpp with an f32 KV cache) and must compute the same logits.

Our torch model shares formats/spec.py with the reference, so parity with it cannot tell a
convention both got wrong: the RoPE pairing, which kv head a query head reads under GQA/MQA,
the SwiGLU order (w2(silu(w1 x) * w3 x)), where eps enters RMSNorm, rope_theta, an untied
classifier. llama.cpp implements each on its own. The models are random (N(0, 0.5) weights, so
attention is far from uniform and a wrong convention moves logits by O(1)); tests/
test_published_facts.py checks the same conventions against published formulas.
"""

import numpy as np
import pytest

from formats import gguf, mapping
from formats.spec import ModelArgs, weight_shapes
from formats.vocab import TokenType, Vocab
from parity.backends import LlamaCppBackend
from models import load_model

# float32 in both, different summation orders and kernels (llama.cpp tiles its matmuls and runs
# its softmax and RMSNorm in its own order): measured max |Δ| 1.6e-5 (mha), 2.6e-5 (gqa), 3.1e-5
# (mqa) over 64 positions, logits spanning about ±12. 1e-4 is 3x the worst; a wrong convention
# moves them by O(1). The argmax agrees too: the closest top-2 gap measured is 6e-3.
ORACLE_ATOL = 1e-4

CONFIGS = {
    "mha": ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=300, max_seq_len=64),
    "gqa, theta 5e5, eps 1e-6": ModelArgs(dim=96, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=300,
                                          max_seq_len=64, rope_theta=5e5, norm_eps=1e-6),
    "mqa, untied, hidden 100": ModelArgs(dim=64, n_layers=3, n_heads=4, n_kv_heads=1, vocab_size=300,
                                         hidden_dim=100, max_seq_len=64, tie_embeddings=False),
}


def vocab(size):
    """<unk>, <s>, </s>, then plain pieces: llama.cpp loads a vocabulary with the model."""
    pieces = ["<unk>", "<s>", "</s>"] + [f"p{i}" for i in range(size - 3)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.NORMAL] * (size - 3)
    return Vocab(pieces, np.zeros(size, np.float32), np.array(types, np.int32))


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def model_file(request, tmp_path_factory):
    args = CONFIGS[request.param]
    rng = np.random.default_rng(0)
    weights = {name: (rng.standard_normal(shape) * 0.5).astype(np.float32)
               for name, shape in weight_shapes(args).items()}
    path = tmp_path_factory.mktemp("oracle") / "m.gguf"
    gguf.write(mapping.to_gguf(weights, args, vocab(args.vocab_size)), path)
    return args, path


def test_numpy_reference_computes_what_llama_cpp_computes(model_file):
    args, path = model_file
    tokens = np.random.default_rng(1).integers(3, args.vocab_size, args.max_seq_len).tolist()
    llama_cpp = LlamaCppBackend(path, n_ctx=args.max_seq_len, threads=1)
    try:
        expected = llama_cpp.logits(tokens)
    finally:
        llama_cpp.close()
    ours = load_model(path).forward(np.array(tokens), all_logits=True)
    assert np.abs(expected).max() > 5           # logits far apart: a convention error shows
    error = np.abs(ours - expected).max()
    assert error <= ORACLE_ATOL, f"max |Δlogits| {error:.3g} > {ORACLE_ATOL}"
    np.testing.assert_array_equal(ours.argmax(-1), expected.argmax(-1))
