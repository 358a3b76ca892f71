"""export: GGUF and llama2.c files read back equal to the checkpoint; llama2.c checkpoints; preflight."""

import numpy as np
import pytest
import torch

from formats import gguf, llama2c, mapping, spm
from llama2_scratch.cli import main
from formats.spec import ModelArgs
from tests.support.pipeline import build_dataset, tiny_config
from trainer import checkpoint
from trainer.model import Transformer
from trainer.train import train


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """(ckpt path, tokenizer .model path) of a tiny model trained for 2 steps."""
    root = tmp_path_factory.mktemp("export")
    data_dir = build_dataset(shared_data, root)
    result = train(tiny_config(data_dir, root / "out", max_iters=2), out=lambda *a: None)
    return result["ckpt"], data_dir / "text" / "tok384.model"


def test_gguf_f32_round_trip_is_bit_exact(trained, tmp_path, capsys):
    ckpt_path, tokenizer = trained
    out = tmp_path / "model.gguf"
    assert main(["export", str(ckpt_path), "--to", "gguf", "-o", str(out)]) == 0
    tensors, args, vocab = mapping.from_gguf(gguf.read(out), str(out))
    state = checkpoint.load(ckpt_path)["model"]
    assert set(tensors) == set(state) - {"output.weight"}        # tied: llama.cpp reuses token_embd
    for name, tensor in tensors.items():
        assert tensor.to_float32().tobytes() == state[name].numpy().tobytes(), name
    assert args.n_kv_heads == 2 and args.hidden_dim == state["layers.0.feed_forward.w1.weight"].shape[0]
    assert vocab == spm.read(tokenizer).vocab
    assert "read back" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0", "q4_0"])
def test_gguf_other_dtypes(trained, tmp_path, dtype):
    out = tmp_path / f"model-{dtype}.gguf"
    assert main(["export", str(trained[0]), "--to", "gguf", "--dtype", dtype, "-o", str(out)]) == 0
    assert gguf.read(out).tensor("blk.0.attn_q.weight").type.name == dtype.upper()


@pytest.mark.parametrize("version", [0, 1, 2])
def test_llama2c_round_trip(trained, tmp_path, version):
    ckpt_path, tokenizer = trained
    out, tok = tmp_path / "model.bin", tmp_path / "tokenizer.bin"
    assert main(["export", str(ckpt_path), "--to", "llama2c", "--version", str(version), "-o", str(out),
                 "--tokenizer-out", str(tok)]) == 0
    back = llama2c.read(out)
    state = checkpoint.load(ckpt_path)["model"]
    assert back.version == version and back.shared_classifier
    wq = back.weights["layers.1.attention.wq.weight"]
    expected = state["layers.1.attention.wq.weight"].numpy()
    if version == 2:
        np.testing.assert_allclose(wq.to_float32(), expected, atol=float(np.abs(expected).max()) / 127)
    else:
        assert np.array_equal(wq, expected)
    assert llama2c.read_tokenizer(tok, back.args.vocab_size).pieces == spm.read(tokenizer).vocab.pieces


def llama2c_style_checkpoint(path, dim=64, vocab_size=384):
    """A checkpoint shaped like llama2.c's train.py output: compiled names, its 8 model_args."""
    args = dict(dim=dim, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=vocab_size, multiple_of=32,
                max_seq_len=32, dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(ModelArgs(**args))
    state = {f"_orig_mod.{k}": v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": state, "model_args": args, "iter_num": 0, "best_val_loss": 1.0}, path)
    return model


def test_llama2c_checkpoint_is_accepted(trained, tmp_path):
    model = llama2c_style_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "m.gguf"
    assert main(["export", str(tmp_path / "ckpt.pt"), "--to", "gguf", "--tokenizer", str(trained[1]),
                 "-o", str(out)]) == 0
    tensors, args, _ = mapping.from_gguf(gguf.read(out), str(out))
    assert args.hidden_dim == 192 and "output.weight" not in tensors
    assert np.array_equal(tensors["tok_embeddings.weight"].to_float32(), model.tok_embeddings.weight.detach().numpy())


@pytest.mark.parametrize("extra, message", [
    (["--dtype", "q8_0"], "q8_0"),                                 # dim 48 rows do not split into 32-blocks
    (["--tokenizer", "LLAMA2"], "32000 pieces"),                   # vocab/embedding mismatch
])
def test_preflight_refuses_impossible_requests(trained, shared_data, tmp_path, capsys, extra, message):
    llama2c_style_checkpoint(tmp_path / "ckpt.pt", dim=48)
    extra = [str(shared_data / "llama2/tokenizer.model") if e == "LLAMA2" else e for e in extra]
    if "--tokenizer" not in extra:
        extra += ["--tokenizer", str(trained[1])]
    status = main(["export", str(tmp_path / "ckpt.pt"), "--to", "gguf", "-o", str(tmp_path / "x.gguf"), *extra])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()


def test_gguf_without_a_tokenizer_is_refused(tmp_path, capsys):
    llama2c_style_checkpoint(tmp_path / "ckpt.pt")
    assert main(["export", str(tmp_path / "ckpt.pt"), "--to", "gguf", "-o", str(tmp_path / "x.gguf")]) == 2
    assert "--tokenizer" in capsys.readouterr().err
