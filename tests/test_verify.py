"""`verify` for real: small trained and random models exported in every dtype, run in torch, NumPy
and llama.cpp, must pass the thresholds; deliberately broken exports must fail, naming the check.

llama.cpp is part of the suite, not optional: CI installs llama-cpp-python ([test] extra), and a
test that needs it FAILS when it cannot be imported — a skipped llama.cpp test would let a broken
export through. Every run passes threads=1: on a busy 2-core machine spinning worker threads make
tiny matmuls far slower (see parity.backends.TorchBackend.logits), and one thread is plenty for
these models.

Identity checks (top-1 at every position, greedy continuations) are only meaningful where the
logits are well separated: the trained model is, and the random ones are scaled to be
(tests/support/verify.py); raw N(0, 0.02) init would give near-ties below f16 rounding.
"""

import json

import numpy as np
import pytest

from formats import gguf
from llama2_scratch.cli import main
from parity.metrics import identical_prefix, logit_metrics
from parity.prompts import FULL_CONTEXT, PROMPTS, greedy_prompt
from parity.report import Check
from parity.run import run_verify
from parity.thresholds import SAME_FILE, VS_TORCH
from tests.support import ggml_c
from tests.support import verify as vh
from tests.support.cli import run_cli
from trainer.export import export_llama2c, load_exportable

DTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]
REFERENCES = {"torch", "numpy", "llama.cpp", "sentencepiece"}
CHECK_KEYS = {"name", "reference", "candidate", "dtype", "metric", "value", "threshold", "ok"}


@pytest.fixture(scope="session")
def llama_cpp():
    """The llama_cpp module; a missing install is a failure, never a skip."""
    return ggml_c.llama_cpp()


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """ckpt.pt of a trained GQA model with a custom 384-piece vocabulary (tied classifier)."""
    return vh.trained_checkpoint(shared_data, tmp_path_factory.mktemp("verify-trained"))


@pytest.fixture(scope="module")
def llama2_random(shared_data, tmp_path_factory):
    """ckpt.pt of a random model with Llama 2's 32000-piece vocabulary, plain multi-head
    attention and an untied classifier."""
    root = tmp_path_factory.mktemp("verify-llama2")
    return vh.random_checkpoint(root / "ckpt.pt", shared_data / "llama2" / "tokenizer.model", seed=1,
                                dim=64, n_layers=2, n_heads=4, max_seq_len=64, tie_embeddings=False)


def _exported(ckpt, dtype, tmp_path):
    return vh.export(ckpt, dtype, tmp_path / f"model-{dtype}.gguf")


def _by(report, **fields):
    return [c for c in report.checks if all(getattr(c, k) == v for k, v in fields.items())]


def _assert_passes(report):
    assert report.ok, "\n".join(c.describe() for c in report.failures)


# ------------------------------------------------------------------------------ pure helpers


def test_logit_metrics_known_answer():
    ref = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]], np.float32)
    m = logit_metrics(ref, ref)
    assert m == {"max_abs_diff": 0.0, "nmse": 0.0, "kl": 0.0, "top1": 1.0}
    shifted = ref + np.float32(5)           # softmax ignores a constant: KL 0, but |Δ| = 5
    m = logit_metrics(ref, shifted)
    assert m["max_abs_diff"] == 5.0 and abs(m["kl"]) < 1e-12 and m["top1"] == 1.0
    swapped = ref[:, ::-1].copy()           # row 0's argmax moves; row 1's too
    m = logit_metrics(ref, swapped)
    assert m["top1"] == 0.0 and m["nmse"] == pytest.approx(((swapped - ref) ** 2).sum() / (ref ** 2).sum())
    # KL of p = softmax([0, 1, 2]) from q = softmax([2, 1, 0]), by hand: sum p (log p - log q)
    p = np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum()
    by_hand = float((p * (np.log(p) - np.log(p[::-1]))).sum())
    assert logit_metrics(ref[:1], swapped[:1])["kl"] == pytest.approx(by_hand)


def test_check_direction_and_non_finite_values_fail():
    assert Check("x", "torch", "numpy", "f32", "max_abs_diff", 1e-6, 1e-4).ok
    assert not Check("x", "torch", "numpy", "f32", "max_abs_diff", 1e-3, 1e-4).ok
    assert not Check("x", "torch", "numpy", "f32", "top1", 0.9, 1.0, ">=").ok
    for bad in (float("nan"), float("inf"), None):
        check = Check("x", "torch", "numpy", "f32", "max_abs_diff", bad, 1e-4)
        assert not check.ok and check.to_json()["value"] is None   # JSON has no NaN


def test_greedy_prompt_leaves_room_for_the_continuation():
    assert identical_prefix([1, 2, 3], [1, 2, 4]) == 2
    ids = list(range(300))
    assert len(greedy_prompt(ids, 256)) == 128          # 128 new tokens fit
    assert len(greedy_prompt(ids, 160)) == 80           # half the context
    assert len(greedy_prompt(ids[:20], 2048)) == 20


def test_thresholds_are_ordered_by_precision():
    """A coarser dtype never gets a tighter limit; f32 demands identical argmaxes everywhere."""
    for table in (VS_TORCH, SAME_FILE):
        assert table["f32"].top1 == 1.0 and table["f32"].greedy == 1.0
        for fine, coarse in (("f32", "f16"), ("f16", "bf16"), ("bf16", "q8_0"), ("q8_0", "q4_0")):
            for field in ("max_abs_diff", "nmse", "kl"):
                assert getattr(table[fine], field) <= getattr(table[coarse], field), (field, fine, coarse)
            assert table[fine].top1 >= table[coarse].top1


# ------------------------------------------------------------------- real runs, every dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_trained_gqa_custom_vocab(trained, llama_cpp, tmp_path, dtype):
    report = run_verify(_exported(trained, dtype, tmp_path), ckpt_path=trained, use_llama_cpp=True,
                        threads=1)
    assert report.implementations == ["torch", "numpy", "llama.cpp"]
    _assert_passes(report)
    # every prompt tokenizes identically in sentencepiece, ours and llama.cpp (Thai included)
    tokenizer = [c for c in report.checks if c.name.startswith("tokenizer/")]
    assert {c.name for c in tokenizer} == {f"tokenizer/{p}" for p in [*PROMPTS, FULL_CONTEXT]}
    assert {c.candidate for c in tokenizer} == {"numpy", "llama.cpp"} and all(c.value == 1 for c in tokenizer)
    if dtype == "f32":
        # the bar: top-1 at every position, identical greedy text in all three
        assert all(c.value == 1.0 for c in _by(report, metric="top1") + _by(report, metric="identical_prefix"))
        greedy = _by(report, name="greedy/english", reference="torch", candidate="llama.cpp")[0]
        assert greedy.detail == "128 tokens identical"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_random_llama2_vocab_untied_mha(llama2_random, llama_cpp, tmp_path, dtype):
    report = run_verify(_exported(llama2_random, dtype, tmp_path), ckpt_path=llama2_random,
                        use_llama_cpp=True, threads=1)
    _assert_passes(report)
    assert gguf.read(tmp_path / f"model-{dtype}.gguf").tensor("output.weight")     # untied really
    if dtype == "f32":
        assert all(c.value == 1.0 for c in _by(report, metric="top1") + _by(report, metric="identical_prefix"))


@pytest.mark.parametrize("version", [0, 1, 2])
def test_llama2c_exports_match_torch(trained, tmp_path, version):
    """The files run.c (v0) and runq.c (v2) read compute what torch computes (NumPy reads them)."""
    out = tmp_path / f"model-v{version}.bin"
    export_llama2c(load_exportable(trained), version, out)
    report = run_verify(out, ckpt_path=trained, threads=1)
    assert report.dtype == ("int8" if version == 2 else "f32")
    _assert_passes(report)
    assert _by(report, name="config")[0].value == 0


# ---------------------------------------------------------------------------------- the CLI


def test_cli_json_schema_and_exit_0(trained, llama_cpp, tmp_path, capsys):
    path = _exported(trained, "q8_0", tmp_path)
    assert main(["verify", str(path), "--ckpt", str(trained), "--llama-cpp", "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["checks"]
    for check in doc["checks"]:
        assert CHECK_KEYS <= set(check) and check["reference"] in REFERENCES and check["dtype"] == "q8_0"
        assert check["ok"] is True and isinstance(check["value"], (int, float))
    pairs = {(c["reference"], c["candidate"]) for c in doc["checks"] if c["name"].startswith("logits/")}
    assert pairs == {("torch", "numpy"), ("torch", "llama.cpp"), ("numpy", "llama.cpp")}
    metrics = {c["metric"] for c in doc["checks"]}
    assert {"max_abs_diff", "nmse", "kl", "top1", "ids_equal"} <= metrics
    assert "identical_prefix" not in metrics        # greedy text is gated in float32 only (parity/thresholds.py)


def test_cli_text_report(trained, tmp_path, capsys):
    path = _exported(trained, "f32", tmp_path)
    assert main(["verify", str(path), "--ckpt", str(trained), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "logits/thai" in out and "greedy/english" in out and out.rstrip().endswith("checks passed")


def test_usage_errors_exit_2(trained, tmp_path, capsys):
    path = _exported(trained, "f32", tmp_path)
    assert main(["verify", str(path)]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    out = tmp_path / "model.bin"
    export_llama2c(load_exportable(trained), 0, out)
    assert main(["verify", str(out), "--llama-cpp"]) == 2
    assert "GGUF only" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing.gguf"), "--llama-cpp"]) == 2


# ----------------------------------------------------------------- broken exports must fail


def test_wrong_head_count_fails_config_and_logits(trained, llama_cpp, tmp_path, capsys):
    bad = vh.broken_head_count(_exported(trained, "f32", tmp_path), tmp_path / "bad.gguf")
    code = main(["verify", str(bad), "--ckpt", str(trained), "--llama-cpp", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "FAIL config torch vs file" in err and "llama.attention.head_count: file 2, checkpoint 4" in err
    # both readers load it (every shape fits) and both compute something else than torch
    assert "FAIL logits/english torch vs numpy" in err and "FAIL logits/english torch vs llama.cpp" in err
    assert "FAIL load" not in err


def test_permuted_qk_fails_logits_only(trained, llama_cpp, tmp_path):
    bad = vh.broken_permuted_qk(_exported(trained, "f32", tmp_path), tmp_path / "bad.gguf")
    report = run_verify(bad, ckpt_path=trained, use_llama_cpp=True, threads=1)
    failed = {(c.name.split("/")[0], c.reference, c.candidate) for c in report.failures}
    assert ("logits", "torch", "numpy") in failed and ("logits", "torch", "llama.cpp") in failed
    assert _by(report, name="config")[0].ok                      # the hyperparameters are right
    assert all(c.ok for c in _by(report, reference="numpy", candidate="llama.cpp"))   # same file, same maths


def test_f32_file_with_f16_rounded_matrices_fails_logits(trained, llama_cpp, tmp_path):
    bad = vh.broken_f16_matrices(_exported(trained, "f32", tmp_path), tmp_path / "bad.gguf")
    report = run_verify(bad, ckpt_path=trained, use_llama_cpp=True, threads=1)
    failed = {(c.name.split("/")[0], c.metric, c.candidate) for c in report.failures if c.reference == "torch"}
    for metric in ("max_abs_diff", "nmse", "kl"):
        assert ("logits", metric, "numpy") in failed and ("logits", metric, "llama.cpp") in failed, metric
    assert _by(report, name="config")[0].ok
    assert all(c.ok for c in _by(report, reference="numpy", candidate="llama.cpp"))   # same file, same maths


def test_wrong_rope_dims_fails_to_load(trained, llama_cpp, tmp_path, capsys):
    bad = vh.broken_rope_dims(_exported(trained, "f32", tmp_path), tmp_path / "bad.gguf")
    code = main(["verify", str(bad), "--ckpt", str(trained), "--llama-cpp", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "FAIL config torch vs file" in err and "llama.rope.dimension_count: file 8, checkpoint 16" in err
    assert "FAIL load numpy vs file" in err and "llama.rope.dimension_count" in err
    assert "FAIL load llama.cpp vs file" in err


def test_wrong_tokenizer_flag_fails_tokenizer_checks(trained, llama_cpp, tmp_path):
    """The custom vocabulary has no dummy prefix; a file claiming one tokenizes every prompt
    differently from the sentencepiece model the network was trained with."""
    gf = gguf.read(_exported(trained, "f32", tmp_path))
    gf.metadata["tokenizer.ggml.add_space_prefix"] = gguf.Value(gguf.ValueType.BOOL, True)
    gguf.write(gf, tmp_path / "bad.gguf")
    report = run_verify(tmp_path / "bad.gguf", ckpt_path=trained, use_llama_cpp=True, threads=1)
    failed = {(c.name, c.candidate) for c in report.failures if c.name.startswith("tokenizer/")}
    assert ("tokenizer/english", "numpy") in failed and ("tokenizer/english", "llama.cpp") in failed


# ------------------------------------------------------------------------ without torch


def test_verify_against_llama_cpp_runs_without_torch(trained, llama_cpp, tmp_path):
    path = _exported(trained, "q4_0", tmp_path)
    result = run_cli("verify", path, "--llama-cpp", "--json", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {(c["reference"], c["candidate"]) for c in doc["checks"] if c["name"].startswith("logits/")} == \
        {("numpy", "llama.cpp")}
    assert any(c["name"] == "tokenizer/thai" and c["candidate"] == "llama.cpp" for c in doc["checks"])
    result = run_cli("verify", path, "--ckpt", trained, cwd=tmp_path)
    assert result.returncode == 2 and "needs torch" in result.stderr
