"""Loading: weights from every file kind are exactly what was saved (or what the stored type
encodes), and a model loaded from a file computes what the model built in memory computes."""

import gguf.quants
import numpy as np
import pytest
import torch

from formats import gguf as gguf_format
from formats import llama2c, mapping, quant
from formats.llama2c_quant import default_group_size, quantize
from formats.errors import FormatError
from formats.ggml import GGMLType
from formats.spec import ModelArgs
from models import load_model
from parity.metrics import logit_metrics
from reference.runtime.load import weights_from_gguf, weights_from_llama2c
from reference.model import Llama
from tests.support.files import write_gguf
from tests.support.weights import wide_logit_weights
from trainer.export import load_exportable
from trainer.model import Transformer

# Q8_0 logits vs F32 logits: mean over positions of KL(softmax(f32) || softmax(q8_0)), in nats.
# Q8_0 rounds each weight to a step of max|block|/127 (~0.5% rms of a Gaussian weight). On the
# test model below (random weights, logits std 2) that moves logits by 0.045 rms: measured mean
# KL 9.3e-4 (max over positions 3.9e-3); the same file as BF16 gives 8.7e-5 and as Q4_0 0.22.
# 5e-3 passes Q8_0 with margin and fails anything as lossy as 4 bits (a wrong scale, a lost sign).
Q8_0_MEAN_KL = 5e-3

ARGS = {
    "tied": ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=64),
    "untied": ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=301, hidden_dim=96,
                        max_seq_len=64, tie_embeddings=False),
}


@pytest.fixture(params=list(ARGS), scope="module")
def trained(request):
    """(args, torch state dict as NumPy) of a torch model with random weights; a tied model's
    state dict lists output.weight too, so it is dropped for the file writers."""
    args = ARGS[request.param]
    torch.manual_seed(0)
    model = Transformer(args)
    with torch.no_grad():                     # non-trivial norm gains, so a mix-up would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(1.0, 0.1)
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    if args.tie_embeddings:
        del state["output.weight"]
    return args, state


def write_llama2c(args, weights, path, version):
    llama2c.write(llama2c.Checkpoint(args, weights), path, version)
    return path


def assert_same_bits(loaded, expected):
    assert loaded.keys() == expected.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(loaded[name], array, strict=True, err_msg=name)


def assert_same_args(loaded, args):
    # GGUF stores norm_eps as FLOAT32: equal as float32, which is the precision it is used in.
    assert np.float32(loaded.norm_eps) == np.float32(args.norm_eps)
    assert {**loaded.to_dict(), "norm_eps": None, "multiple_of": None} == \
           {**args.to_dict(), "norm_eps": None, "multiple_of": None}


def test_f32_gguf_weights_are_the_state_dict_bit_for_bit(trained, tmp_path):
    args, state = trained
    loaded_args, weights = weights_from_gguf(gguf_format.read(write_gguf(args, state, tmp_path / "m.gguf", "f32")))
    assert_same_args(loaded_args, args)
    assert_same_bits(weights, state)


@pytest.mark.parametrize("version", [0, 1])
def test_llama2c_weights_are_the_state_dict_bit_for_bit(trained, tmp_path, version):
    args, state = trained
    loaded_args, weights = weights_from_llama2c(llama2c.read(write_llama2c(args, state, tmp_path / "m.bin", version)))
    assert_same_args(loaded_args, args)
    assert_same_bits(weights, state)


def test_ckpt_weights_are_the_state_dict_bit_for_bit(trained, tmp_path):
    """Including what torch.compile and llama2.c leave: `_orig_mod.` prefixes, no hidden_dim.
    A ckpt.pt is read by trainer/ (it needs torch); the NumPy model is built from these."""
    args, state = trained
    model_args = args.to_dict()
    if args.tie_embeddings:    # a llama2.c-style dict: hidden_dim etc. derived on load
        model_args = {k: model_args[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads",
                                                 "vocab_size", "multiple_of", "max_seq_len", "dropout")}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"_orig_mod.{k}": torch.from_numpy(v) for k, v in state.items()},
                "model_args": model_args, "iter_num": 0}, path)
    loaded = load_exportable(path)
    assert loaded.args == args
    assert_same_bits(loaded.weights, state)


@pytest.mark.parametrize("dtype, cast", [("f16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_gguf_weights_equal_torch_casts(trained, tmp_path, dtype, cast):
    """Matrices stored F16/BF16 load as exactly torch's .half()/.bfloat16() values; norms stay F32."""
    args, state = trained
    _, weights = weights_from_gguf(gguf_format.read(write_gguf(args, state, tmp_path / "m.gguf", dtype)))
    expected = {name: torch.from_numpy(w).to(cast).float().numpy() if w.ndim == 2 else w
                for name, w in state.items()}
    assert_same_bits(weights, expected)


@pytest.mark.parametrize("dtype, ggml_type", [("q8_0", GGMLType.Q8_0), ("q4_0", GGMLType.Q4_0)])
def test_quantized_gguf_weights_equal_the_dequantization(trained, tmp_path, dtype, ggml_type):
    """Each matrix is what formats/ (and, independently, gguf-py) decodes its blocks to."""
    args, state = trained
    path = write_gguf(args, state, tmp_path / "m.gguf", dtype)
    _, weights = weights_from_gguf(gguf_format.read(path))
    expected = {name: quant.dequantize(quant.quantize(w, ggml_type), ggml_type, w.shape)
                if w.ndim == 2 else w for name, w in state.items()}
    assert_same_bits(weights, expected)
    for tensor in gguf_format.read(path).tensors:
        if tensor.type == ggml_type:
            name = mapping.llama2c_name(tensor.name)
            oracle = gguf.quants.dequantize(np.asarray(tensor.data), gguf.GGMLQuantizationType(ggml_type))
            np.testing.assert_array_equal(weights[name], oracle, strict=True, err_msg=name)


def test_llama2c_v2_weights_equal_the_int8_group_dequantization(trained, tmp_path):
    args, state = trained
    _, weights = weights_from_llama2c(llama2c.read(write_llama2c(args, state, tmp_path / "m.bin", version=2)))
    group_size = default_group_size(args.dim)
    expected = {name: quantize(w, group_size).to_float32() if w.ndim == 2 else w
                for name, w in state.items()}
    assert_same_bits(weights, expected)


def test_q8_0_logits_are_within_kl_of_f32(tmp_path):
    # wide_logit_weights: logits with std ~2, so a distribution change is visible in the KL.
    args = ModelArgs(dim=128, n_layers=2, n_heads=4, vocab_size=512, max_seq_len=128)
    weights = wide_logit_weights(args, seed=0)
    tokens = np.random.default_rng(1).integers(0, args.vocab_size, args.max_seq_len)
    f32 = load_model(write_gguf(args, weights, tmp_path / "f32.gguf", "f32")).forward(tokens, all_logits=True)
    q8 = load_model(write_gguf(args, weights, tmp_path / "q8.gguf", "q8_0")).forward(tokens, all_logits=True)
    kl = logit_metrics(f32, q8)["kl"]          # mean over positions of KL(softmax(f32) || softmax(q8))
    assert kl <= Q8_0_MEAN_KL, f"Q8_0 mean KL {kl:.3g} nats"
    assert kl > 0, "Q8_0 logits identical to F32: the quantized file was not used"


@pytest.mark.parametrize("kind", ["gguf", "v0", "v1", "ckpt"])
def test_load_model_matches_the_model_built_in_memory(trained, tmp_path, kind):
    """Same weights, same maths: logits bit-identical whatever file the weights came from."""
    args, state = trained
    if kind == "gguf":
        path = write_gguf(args, state, tmp_path / "m.gguf", "f32")
    elif kind == "ckpt":
        path = tmp_path / "ckpt.pt"
        torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()},
                    "model_args": args.to_dict()}, path)
    else:
        path = write_llama2c(args, state, tmp_path / "m.bin", version=int(kind[1]))
    tokens = np.random.default_rng(2).integers(0, args.vocab_size, 32)
    expected = Llama(args, state).forward(tokens, all_logits=True)
    np.testing.assert_array_equal(load_model(path).forward(tokens, all_logits=True), expected)
    assert load_model(path, dtype=np.float64).forward(tokens).dtype == np.float64


def test_load_model_rejects_a_file_that_is_no_model(tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(FormatError):
        load_model(path)
