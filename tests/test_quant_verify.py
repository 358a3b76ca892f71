"""Files quantized by llama.cpp into every type it makes, run by us and by llama.cpp.

- Every file of tests/test_quant_llama_cpp.py (its f32 source quantized by llama_model_quantize to
  each LLAMA_FTYPE_MOSTLY_*, with an importance matrix of ones for those that need one, and the
  MXFP4/NVFP4 overrides) is loaded by the plain model (dequantized at load) and the fast model
  (int8 codes and block scales): the two agree to float32 rounding, and each agrees with
  llama.cpp's logits on the same file (f32 KV cache, every position) within the limits `verify`
  holds numpy and llama.cpp to for the file's types (parity/thresholds.py SAME_FILE; a mixed file
  gets the loosest of its types'). Those were measured on other models (bench/measure_thresholds.py):
  this is a second model they must hold on.
- `verify` answers for files of several types (Q4_K_M, Q5_K_M, Q3_K_M ...): with llama.cpp alone,
  and against the torch checkpoint the file was quantized from.
"""

import numpy as np
import pytest

from formats import quant
from formats.ggml import GGMLType
from parity import NUMPY, TORCH
from parity.backends import LlamaCppBackend
from parity.metrics import logit_metrics
from parity.run import run_verify
from parity.thresholds import SAME_FILE, VS_TORCH, file_dtype, for_pair
from models import load_model, open_model
from reference.runtime.blockwise import Int8BlockMatrix
from reference.runtime.packing import RowStack
from tests.support import verify as vh
from tests.support.compare import FAST_LOGITS_ATOL
from tests.support.ggml_c import ARGS, FTYPES, IMATRIX_FTYPES, OVERRIDE_TYPES, ftype, quantize_model
from tests.support.ggml_c import quantized, source  # noqa: F401 (fixtures, requested by name)

LABELS = FTYPES + IMATRIX_FTYPES + [t.name for t in OVERRIDE_TYPES]
# Mixes llama.cpp writes for its k-quant ftypes, and the types each holds on the source model.
MIXES = {"Q4_K_M": "q4_k+q6_k", "Q5_K_M": "q5_k+q6_k", "Q3_K_M": "q3_k+q4_k+q5_k+q6_k"}


@pytest.fixture(scope="module")
def prompts():
    """Two full-context sequences of ids (BOS first)."""
    rng = np.random.default_rng(0)
    return [[1] + rng.integers(3, ARGS.vocab_size, ARGS.max_seq_len - 1).tolist() for _ in range(2)]


@pytest.mark.parametrize("label", LABELS)
def test_plain_and_fast_models_agree_with_llama_cpp_on_the_same_file(quantized, prompts, label):
    path = quantized[label]
    dtype = file_dtype(open_model(path).dtypes)
    limits = for_pair(dtype, NUMPY)                       # numpy vs llama.cpp, the file's types
    plain, fast = load_model(path), load_model(path, fast=True)
    llama = LlamaCppBackend(path, ARGS.max_seq_len, threads=1)
    try:
        for ids in prompts:
            expected = llama.logits(ids)
            ours = plain.forward(np.asarray(ids), all_logits=True)
            np.testing.assert_allclose(fast.forward(np.asarray(ids), all_logits=True), ours,
                                       rtol=0, atol=FAST_LOGITS_ATOL)
            metrics = logit_metrics(expected, ours)
            assert metrics["kl"] <= limits.kl and metrics["top1"] >= limits.top1, (dtype, metrics)
    finally:
        llama.close()


def test_fast_models_hold_every_quantized_matrix_as_int8_codes(quantized):
    for label in ("Q4_K_M", "IQ2_XXS", "TQ1_0", "MXFP4"):
        model = load_model(quantized[label], fast=True)
        layer = model.layers[0]
        assert all(isinstance(w, Int8BlockMatrix) for w in (layer.wq, layer.wk, layer.wv, layer.w1, layer.w2,
                                                            layer.w3, model.output)), label
    # Q4_K_M: layer 0 is q4_k throughout, so one product makes q, k and v; llama.cpp gives layer
    # 1's wv q6_k (no mins, blocks of 16), so there wq | wk and wv are two products (a RowStack).
    first, second = load_model(quantized["Q4_K_M"], fast=True).layers
    assert first.wqkv is not None and np.shares_memory(first.wqkv.codes, first.wv.codes)
    assert second.w13 is not None and np.shares_memory(second.w13.codes, second.w3.codes)
    assert isinstance(second.wqkv, RowStack) and second.wv.mins is None and second.wq.mins is not None


@pytest.mark.parametrize("label", sorted(MIXES))
def test_verify_answers_for_files_of_several_types(quantized, label):
    report = run_verify(quantized[label], use_llama_cpp=True, threads=1)
    assert report.dtype == MIXES[label]
    assert report.ok, "\n".join(c.describe() for c in report.failures)
    assert {c.dtype for c in report.checks} == {MIXES[label]}


def test_verify_of_a_mixed_file_against_its_checkpoint(shared_data, tmp_path):
    ckpt = vh.random_checkpoint(tmp_path / "ckpt.pt", shared_data / "llama2" / "tokenizer.model", seed=2,
                                dim=256, hidden_dim=768, n_layers=2, n_heads=4, max_seq_len=64,
                                tie_embeddings=False)
    path = tmp_path / "Q4_K_M.gguf"
    assert quantize_model(vh.export(ckpt, "f32", tmp_path / "f32.gguf"), path, ftype("Q4_K_M")) == 0
    report = run_verify(path, ckpt_path=ckpt, use_llama_cpp=True, threads=1)
    assert report.implementations == ["torch", "numpy", "llama.cpp"] and report.dtype == "q4_k+q6_k"
    assert report.ok, "\n".join(c.describe() for c in report.failures)


def test_a_mixed_file_gets_the_loosest_limit_of_its_types():
    for table, reference in ((VS_TORCH, TORCH), (SAME_FILE, NUMPY)):
        mixed = for_pair("q4_k+q6_k", reference)
        q4_k, q6_k = table["q4_k"], table["q6_k"]
        assert mixed.kl == max(q4_k.kl, q6_k.kl) and mixed.top1 == min(q4_k.top1, q6_k.top1)
        assert mixed.max_abs_diff == max(q4_k.max_abs_diff, q6_k.max_abs_diff)
        assert for_pair("q6_k", reference) == q6_k


def test_every_type_a_file_can_hold_has_limits():
    for ggml_type in [*quant.CODES, GGMLType.F32, GGMLType.F16, GGMLType.BF16]:
        name = ggml_type.name.lower()
        assert name in VS_TORCH and name in SAME_FILE, name
