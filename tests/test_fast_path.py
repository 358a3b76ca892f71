"""The fast path (reference/runtime/fast.py, reference/runtime/blockwise.py) against the plain reference model.

Same weights, same maths: logits agree to float32 rounding and greedy decoding picks the same ids,
for float32 weights and for quantized ones kept quantized (compared with the plain model that
dequantizes the same file at load). Plus what makes it fast and small, checked structurally
(never by timing): views instead of copies, no float32 expansion of quantized weights.
"""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference.runtime.fast
from formats import gguf, llama2c, mapping, quant
from formats.ggml import GGMLType
from reference.runtime.blockwise import BlockMatrix, Int8BlockMatrix, product
from reference.runtime.packing import RowStack, fused_rows, row_range, stack_rows
from formats.spec import ModelArgs
from reference.runtime.fast import FastLlama
from reference.generate import generate
from models import load_model, open_model
from reference.model import Llama
from tests.support.compare import FAST_LOGITS_ATOL
from tests.support.files import write_gguf
from tests.support.models import RowsPastFirstFail, small_configs
from tests.support.weights import wide_logit_weights


CONFIGS = {
    "mha": ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=320, max_seq_len=64),
    "gqa-untied": ModelArgs(dim=96, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=256, hidden_dim=160,
                            max_seq_len=64, tie_embeddings=False),
    "mqa": ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=128, max_seq_len=64),
}


def greedy_ids(model, prompt, n_new):
    return list(generate(model, prompt, np.random.default_rng(0), n_new, temperature=0.0))


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    args = CONFIGS[request.param]
    return args, wide_logit_weights(args, seed=0)


# --- float32: fast vs plain ----------------------------------------------------------------------

def test_prefill_then_decode_logits_match_the_plain_model(config):
    args, weights = config
    plain, fast = Llama(args, weights), FastLlama(args, weights)
    tokens = np.random.default_rng(1).integers(0, args.vocab_size, 40)
    expected = plain.forward(tokens[:30], all_logits=True)
    got = fast.forward(tokens[:30], all_logits=True)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=FAST_LOGITS_ATOL)
    for pos in range(30, 40):                      # decode: one token at a time against the cache
        expected, got = plain.forward(tokens[pos:pos + 1], pos), fast.forward(tokens[pos:pos + 1], pos)
        assert got.dtype == np.float32 and got.shape == (args.vocab_size,)
        np.testing.assert_allclose(got, expected, rtol=0, atol=FAST_LOGITS_ATOL)


def test_greedy_ids_are_identical(config):
    args, weights = config
    prompt = np.random.default_rng(2).integers(0, args.vocab_size, 5).tolist()
    assert greedy_ids(FastLlama(args, weights), prompt, 40) == greedy_ids(Llama(args, weights), prompt, 40)


def test_a_new_prompt_at_position_0_overwrites_the_cache(config):
    args, weights = config
    fast = FastLlama(args, weights)
    fast.forward(np.arange(20) % args.vocab_size)
    tokens = np.random.default_rng(3).integers(0, args.vocab_size, 12)
    np.testing.assert_allclose(fast.forward(tokens, all_logits=True),
                               Llama(args, weights).forward(tokens, all_logits=True), rtol=0, atol=FAST_LOGITS_ATOL)


@settings(max_examples=25)
@given(args=small_configs(), seed=st.integers(0, 2**16), data=st.data())
def test_chunked_decoding_matches_the_plain_model(args, seed, data):
    """Any chunking of a sequence (prompt, single tokens, more chunks) on any small config (MHA,
    GQA, MQA, head_dim 2, odd hidden_dim and vocabularies), with prompts' queries attended in
    blocks of any size, gives the plain model's logits."""
    weights = wide_logit_weights(args, seed)
    query_block = data.draw(st.sampled_from([1, 3, 7, reference.runtime.fast.QUERY_BLOCK]))
    n_tokens = data.draw(st.integers(1, args.max_seq_len))
    tokens = np.random.default_rng(seed).integers(0, args.vocab_size, n_tokens)
    expected = Llama(args, weights).forward(tokens, all_logits=True)
    cuts = sorted(data.draw(st.sets(st.integers(1, n_tokens - 1), max_size=n_tokens - 1))) if n_tokens > 1 else []
    fast = FastLlama(args, weights)
    default_block, reference.runtime.fast.QUERY_BLOCK = reference.runtime.fast.QUERY_BLOCK, query_block
    try:
        stepped = [fast.forward(tokens[start:end], start_pos=start, all_logits=True)
                   for start, end in zip([0] + cuts, cuts + [n_tokens])]
    finally:
        reference.runtime.fast.QUERY_BLOCK = default_block
    np.testing.assert_allclose(np.concatenate(stepped), expected, rtol=0, atol=FAST_LOGITS_ATOL)


def test_bad_requests_fail_as_in_the_plain_model(config):
    args, weights = config
    fast = FastLlama(args, weights)
    with pytest.raises(ValueError, match="skip uncached"):
        fast.forward([1], start_pos=1)
    with pytest.raises(ValueError, match="token ids"):
        fast.forward([args.vocab_size])
    with pytest.raises(ValueError, match="missing"):
        FastLlama(args, {k: v for k, v in weights.items() if k != "norm.weight"})


# --- weights used where they lie ----------------------------------------------------------------

def test_fused_rows_is_a_view_only_for_adjacent_matrices():
    w = np.arange(24, dtype=np.float32).reshape(8, 3)
    fused = fused_rows([w[:2], w[2:5], w[5:]])
    np.testing.assert_array_equal(fused, w)
    assert np.shares_memory(fused, w) and not fused.flags.writeable
    assert fused_rows([w[:2], w[3:]]) is None                       # a gap
    assert fused_rows([w[2:5], w[:2]]) is None                      # out of order
    assert fused_rows([w[:2], np.arange(18, dtype=np.float32).reshape(6, 3)]) is None   # two buffers


def test_f32_gguf_weights_are_read_once_into_one_buffer(tmp_path):
    args, weights = CONFIGS["mha"], wide_logit_weights(CONFIGS["mha"], seed=0)
    path = write_gguf(args, weights, tmp_path / "m.gguf", "f32")
    model = load_model(path, fast=True)
    layer = model.layers[0]
    # Our GGUF stores wq, wk, wv back to back, and reference/runtime/memory.py keeps file order: the
    # fused matrix spans the three copies without a further copy.
    assert layer.wqkv is not None and np.shares_memory(layer.wqkv, layer.wq)
    matrices = [layer.wqkv, layer.wo, layer.w1, layer.w2, layer.w3, model.tok_embeddings]
    for w in matrices:
        assert not isinstance(w, np.memmap) and not isinstance(w.base, np.memmap)
        assert not w.flags.writeable                                 # read-only, as the file was
    roots = {id(_root(w)) for layer in model.layers for w in (layer.wq, layer.wo, layer.w1, layer.w2)}
    assert len(roots | {id(_root(model.tok_embeddings))}) == 1      # one buffer for all of them
    np.testing.assert_array_equal(layer.wq, weights["layers.0.attention.wq.weight"])
    np.testing.assert_array_equal(model.tok_embeddings, weights["tok_embeddings.weight"])


def test_with_mmap_f32_weights_stay_views_of_the_file(tmp_path):
    args, weights = CONFIGS["mha"], wide_logit_weights(CONFIGS["mha"], seed=0)
    path = write_gguf(args, weights, tmp_path / "m.gguf", "f32")
    mapped, copied = load_model(path, fast=True, mmap=True), load_model(path, fast=True)
    layer = mapped.layers[0]
    assert layer.wqkv is not None and np.shares_memory(layer.wqkv, layer.wq)
    for w in (layer.wq, layer.wo, layer.w1, layer.w2, mapped.tok_embeddings):   # wqkv spans wq: above
        assert isinstance(_root(w), np.memmap) and not w.flags.writeable
    tokens = np.arange(10)
    np.testing.assert_array_equal(mapped.forward(tokens, all_logits=True), copied.forward(tokens, all_logits=True))


def _root(array):
    """The last array in `array`'s chain of bases, through the wrapper as_strided puts around a
    fused view's base (FastLayer.wq is a row range of one)."""
    while True:
        base = array.base if isinstance(array.base, np.ndarray) else getattr(array.base, "base", None)
        if not isinstance(base, np.ndarray):
            return array
        array = base


# --- quantized weights kept quantized ------------------------------------------------------------

def test_a_row_stack_multiplies_as_its_matrices_stacked_over_any_row_range():
    """float32, Q4_1 (mins) and float32 rows that cannot fuse: stack_rows makes them one RowStack,
    whose product over any range of rows (what the executor hands each thread) and whose
    slice_rows are those of the dense stack. Tolerance: float32 sums in another order (1e-5)."""
    rng = np.random.default_rng(20)
    first, last = rng.standard_normal((5, 64), dtype=np.float32), rng.standard_normal((4, 64), dtype=np.float32)
    raw = quant.quantize(rng.standard_normal((3, 64), dtype=np.float32), GGMLType.Q4_1)
    middle = Int8BlockMatrix.from_codes(quant.codes_rows(raw, GGMLType.Q4_1, 64))
    stack = stack_rows([first, middle, last])
    assert isinstance(stack, RowStack) and stack.shape == (12, 64) and stack.compressed
    dense = np.concatenate([first, quant.dequantize(raw, GGMLType.Q4_1, (3, 64)), last])
    for x in (rng.standard_normal((1, 64), dtype=np.float32), rng.standard_normal((4, 64), dtype=np.float32)):
        for start, stop in [(0, 12), (2, 7), (5, 8), (6, 12), (4, 5)]:
            out = np.full((len(x), 12), np.nan, np.float32)
            product(x, stack, out, start, stop)
            np.testing.assert_allclose(out[:, start:stop], x @ dense[start:stop].T, rtol=1e-5, atol=1e-5)
            assert np.isnan(out[:, :start]).all() and np.isnan(out[:, stop:]).all()    # other rows untouched
            np.testing.assert_allclose(product(x, row_range(stack, start, stop), np.empty((len(x), stop - start),
                                                                                           np.float32)),
                                       x @ dense[start:stop].T, rtol=1e-5, atol=1e-5)
    assert row_range(stack, 5, 8) is not stack and isinstance(row_range(stack, 5, 8), Int8BlockMatrix)
    assert np.shares_memory(row_range(stack, 0, 3), first)
    assert not RowStack([first, last]).compressed and stack_rows([first]) is first


def test_int8_block_rows_are_exactly_the_dequantized_weights():
    x = np.random.default_rng(0).standard_normal((70, 96), dtype=np.float32)
    raw = quant.quantize(x, GGMLType.Q8_0)
    m = Int8BlockMatrix.from_codes(quant.codes_rows(raw, GGMLType.Q8_0, x.shape[1]))
    expected = quant.dequantize(raw, GGMLType.Q8_0, x.shape)
    np.testing.assert_array_equal(m.rows(0, 70, np.empty((70, 96), np.float32)), expected)
    np.testing.assert_array_equal(m.take(np.array([3, 0, 69])), expected[[3, 0, 69]])
    # The codes are the file's int8 codes, stored block-major (n_blocks, 32, rows) (issue 15).
    stored = raw.reshape(70, 3, 34)[:, :, 2:].view(np.int8)
    np.testing.assert_array_equal(m.codes, stored.transpose(1, 2, 0))


@pytest.mark.parametrize("ggml_type", [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q5_1])
def test_chunked_matmul_equals_a_matmul_with_the_dequantized_matrix(ggml_type, monkeypatch):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((300, 64), dtype=np.float32)
    x = rng.standard_normal((5, 64), dtype=np.float32)
    raw = quant.quantize(w, ggml_type)
    tensor = gguf.Tensor("t", ggml_type, w.shape, raw)
    monkeypatch.setattr("reference.runtime.blockwise.CHUNK_ELEMENTS", 64 * 7)      # 43 chunks of 7 rows
    # Every quantized type is transcoded to int8 codes and block scales (+ mins) (issue 15).
    m = Int8BlockMatrix.from_codes(quant.codes_rows(raw, ggml_type, 64))
    assert m.chunk_rows == 7
    expected = x @ tensor.to_float32().T
    # The same float32 weights in another summation order per chunk: a few ulps of the outputs.
    np.testing.assert_allclose(m.matmul(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.matmul(x[:1]), expected[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_quantized_gguf_matches_the_plain_model_and_greedy_ids(tmp_path, config, dtype):
    """Fast (kept quantized) vs plain (dequantized at load) on the same file."""
    args, weights = config
    assert args.hidden_dim % 32 == 0 and args.dim % 32 == 0, "every config's rows divide into 32-element blocks"
    path = write_gguf(args, weights, tmp_path / f"m.{dtype}.gguf", dtype)
    fast, plain = load_model(path, fast=True), load_model(path)
    assert isinstance(fast.layers[0].w2, BlockMatrix)
    tokens = np.random.default_rng(4).integers(0, args.vocab_size, 24)
    np.testing.assert_allclose(fast.forward(tokens, all_logits=True), plain.forward(tokens, all_logits=True),
                               rtol=0, atol=FAST_LOGITS_ATOL)
    prompt = tokens[:4].tolist()
    assert greedy_ids(load_model(path, fast=True), prompt, 30) == greedy_ids(load_model(path), prompt, 30)


def test_llama2c_v2_int8_groups_stay_int8(tmp_path):
    args = CONFIGS["gqa-untied"]
    weights = wide_logit_weights(args, seed=5)
    path = tmp_path / "m.bin"
    llama2c.write(llama2c.Checkpoint(args, weights), path, 2)
    fast, plain = load_model(path, fast=True), load_model(path)
    assert isinstance(fast.layers[0].w1, Int8BlockMatrix) and fast.layers[0].w1.codes.dtype == np.int8
    tokens = np.random.default_rng(6).integers(0, args.vocab_size, 20)
    np.testing.assert_allclose(fast.forward(tokens, all_logits=True), plain.forward(tokens, all_logits=True),
                               rtol=0, atol=FAST_LOGITS_ATOL)


def test_the_fast_flag_keeps_its_meaning_through_the_models_layer(tmp_path):
    # `fast` is one name from the command down to the loader: lost on the way, generate would
    # run on float32 weights (4x the memory) and only this would notice.
    args = CONFIGS["gqa-untied"]
    path = write_gguf(args, wide_logit_weights(args, seed=5), tmp_path / "m.gguf", "q8_0")
    assert isinstance(open_model(path).weights(fast=True)["layers.0.feed_forward.w2.weight"], Int8BlockMatrix)
    assert isinstance(open_model(path).weights()["layers.0.feed_forward.w2.weight"], np.ndarray)
    assert isinstance(open_model(path).model(fast=True).layers[0].w2, Int8BlockMatrix)
    assert not isinstance(open_model(path).model(), FastLlama)
    assert isinstance(load_model(path, fast=True).layers[0].w1, Int8BlockMatrix)


def test_q8_0_model_never_holds_its_weights_in_float32(tmp_path, monkeypatch):
    """Load and run a Q8_0 model under tracemalloc (NumPy reports its allocations to it; the
    mapped file is not an allocation): the peak stays far below the float32 size of the weights.
    Expanding at load, as the plain path does, allocates all of it."""
    monkeypatch.setattr("reference.runtime.blockwise.CHUNK_ELEMENTS", 1 << 14)     # a 64 KiB scratch
    args = ModelArgs(dim=256, n_layers=4, n_heads=8, vocab_size=4096, max_seq_len=32)
    weights = wide_logit_weights(args, seed=7)
    f32_bytes = sum(w.nbytes for w in weights.values())                       # ~18 MB
    path = write_gguf(args, weights, tmp_path / "m.gguf", "q8_0")
    del weights

    def peak_of(fn):
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    tokens = np.arange(16)
    fast_peak = peak_of(lambda: load_model(path, fast=True).forward(tokens))
    plain_peak = peak_of(lambda: load_model(path).forward(tokens))
    # Allowed: the int8 codes (1/4 of the float32 size: load.read_codes gathers them from the file), the
    # float32 block scales (1/8, briefly twice while they are transposed), a chunk of scratch,
    # activations and the KV cache. Measured 0.37 here; the plain path 1.03.
    assert fast_peak < 0.5 * f32_bytes, f"{fast_peak / 1e6:.1f} MB traced vs {f32_bytes / 1e6:.1f} MB of f32 weights"
    assert plain_peak > f32_bytes


def test_q8_0_read_from_the_file_equals_the_blocks_in_the_map(tmp_path):
    """load.read_codes gathers codes and scales through the file: the same numbers as the mapped
    blocks read by formats.quant.codes_rows, with wq|wk|wv and w1|w3 sharing one array (fused)."""
    args, weights = CONFIGS["gqa-untied"], wide_logit_weights(CONFIGS["gqa-untied"], seed=8)
    path = write_gguf(args, weights, tmp_path / "m.gguf", "q8_0")
    model = load_model(path, fast=True)
    tensors, _, _ = mapping.from_gguf(gguf.read(path))
    for name, got in [("layers.1.attention.wk.weight", model.layers[1].wk),
                      ("layers.2.feed_forward.w3.weight", model.layers[2].w3),
                      ("output.weight", model.output)]:
        tensor = tensors[name]
        mapped = Int8BlockMatrix.from_codes(quant.codes_rows(tensor.data, GGMLType.Q8_0, tensor.shape[1]))
        np.testing.assert_array_equal(got.codes, mapped.codes)
        np.testing.assert_array_equal(got.scales, mapped.scales)
        assert got.codes.strides[-1] == 1         # gathered: each block's codes one run over the rows
    layer = model.layers[0]
    assert np.shares_memory(layer.wqkv.codes, layer.wv.codes) and np.shares_memory(layer.w13.codes, layer.w1.codes)
    # The fused matrices' scales are views too, not second copies.
    assert np.shares_memory(layer.wqkv.scales, layer.wq.scales) and np.shares_memory(layer.w13.scales, layer.w3.scales)


def test_matrices_of_several_types_with_one_codes_form_are_fused(tmp_path):
    """wq, wk in Q8_0 and wv in Q4_0 (as llama.cpp's mixes hold them: codes in groups of 32, no
    mins) share one codes array and one product; wv in Q4_1 (mins) cannot, and stays apart from
    wq|wk. Either way the logits are the plain model's (the dequantized weights) within
    FAST_LOGITS_ATOL."""
    args, weights = CONFIGS["gqa-untied"], wide_logit_weights(CONFIGS["gqa-untied"], seed=12)
    tokens = np.random.default_rng(13).integers(0, args.vocab_size, 9)
    for wv_type, fused in [(GGMLType.Q4_0, True), (GGMLType.Q4_1, False)]:
        model_file = mapping.to_gguf(weights, args, dtype="q8_0")
        model_file.tensors = [t if not t.name.endswith("attn_v.weight") else gguf.Tensor.from_array(
                                  t.name, weights[f"layers.{t.name.split('.')[1]}.attention.wv.weight"], wv_type)
                              for t in model_file.tensors]
        path = tmp_path / f"{wv_type.name}.gguf"
        gguf.write(model_file, path)
        model, plain = load_model(path, fast=True), load_model(path)
        # One product where fused; else a RowStack of wq|wk's product and wv's.
        assert all(isinstance(layer.wqkv, RowStack) != fused for layer in model.layers)
        together = model.layers[0].wqkv if fused else model.layers[0].wqkv.matrices[0]
        assert np.shares_memory(together.codes, model.layers[0].wk.codes)
        assert np.shares_memory(together.codes, model.layers[0].wv.codes) == fused
        assert fused or [m.shape[0] for m in model.layers[0].wqkv.matrices] == [args.dim + args.kv_dim, args.kv_dim]
        np.testing.assert_allclose(model.forward(tokens, all_logits=True), plain.forward(tokens, all_logits=True),
                                   rtol=0, atol=FAST_LOGITS_ATOL)


@pytest.mark.parametrize("dtype", ["f32", "q8_0"])
@pytest.mark.parametrize("config, threads", [("mha", 3), ("gqa-untied", 2)])
def test_products_shared_between_threads_give_the_same_logits(tmp_path, monkeypatch, dtype, config, threads):
    # q8_0 prompts also share attention (by kv heads: 4 over 3 threads, 2 over 2) and SwiGLU.
    args, weights = CONFIGS[config], wide_logit_weights(CONFIGS[config], seed=9)
    path = write_gguf(args, weights, tmp_path / "m.gguf", dtype)
    tokens = np.random.default_rng(10).integers(0, args.vocab_size, 12)

    def run(model):
        prompt = model.forward(tokens[:4], all_logits=True)
        return prompt, np.stack([model.forward(tokens[p:p + 1], p) for p in range(4, len(tokens))])

    expected_prompt, expected = run(load_model(path, fast=True))
    monkeypatch.setattr("reference.runtime.executor.Executor.SPLIT_ELEMENTS", 1)          # split every product
    monkeypatch.setattr("reference.runtime.executor.Executor.SPLIT_QUANTIZED", 1)
    monkeypatch.setattr("reference.runtime.executor.Executor.SPLIT_PROMPT", 1)
    got_prompt, got = run(load_model(path, fast=True, threads=threads))
    if dtype == "f32":
        np.testing.assert_array_equal(got, expected)      # one dot per row, whichever thread runs it
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=FAST_LOGITS_ATOL)
    # A prompt's rows of a product are BLAS sgemm calls over other column ranges when split: the
    # same dequantized weights, a summation order that may differ in the last bits.
    np.testing.assert_allclose(got_prompt, expected_prompt, rtol=0, atol=FAST_LOGITS_ATOL)


def test_docstring_examples():
    import doctest

    import reference.runtime.packing
    result = doctest.testmod(reference.runtime.packing)
    assert result.attempted > 0 and result.failed == 0


def test_a_failure_in_a_worker_thread_reaches_the_caller_and_the_worker_lives_on(monkeypatch):
    from reference.runtime.executor import Executor

    monkeypatch.setattr(Executor, "SPLIT_QUANTIZED", 1)
    executor, w = Executor(threads=2), RowsPastFirstFail()
    with pytest.raises(ValueError, match="rows past the first range fail"):
        executor(np.ones((1, 4), np.float32), w)
    w.fail = False
    assert (executor(np.ones((1, 4), np.float32), w) == 1.0).all()
