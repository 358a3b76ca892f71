"""bench/gpu_check.py's CPU path (`--device cpu --tiny`), as CI can run it: the whole check passes
and prints every step's rows; a limit that is not met fails its row and the exit status; without
sentencepiece it pretokenizes with our tokenizer and gets sentencepiece's ids. The GPU itself is
not tested here: the script awaits a machine with one.
"""

import importlib.util
import sys

import numpy as np
import pytest

from tests.support.cli import REPO, run_python

sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402

STEPS = ("data", "parity", "train", "export", "resume", "all")


def test_cpu_path_passes_and_prints_every_step(shared_data, tmp_path):
    result = run_python(REPO / "bench" / "gpu_check.py", "--data", shared_data, "--device", "cpu", "--tiny",
                        "--steps", "12", "--resume-steps", "2", "--out", tmp_path, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check: CPU") and "FAIL" not in result.stdout, result.stdout
    rows = [line.split() for line in lines[2:]]
    assert [step for step in STEPS if step in {row[0] for row in rows}] == list(STEPS), result.stdout
    checked = [line for line in lines if line.endswith(" ok")]
    # 6 parity rows, MFU and loss falls, the GGUF and verify, 2 resume rows
    assert len(checked) == 12, result.stdout
    assert any(line.startswith("resume") and "equal" in line for line in checked), result.stdout


def test_a_limit_not_met_fails_its_row(monkeypatch):
    monkeypatch.setitem(gpu_check.LIMITS, "float32", (0.0, 0.0, 0.0))
    rows = gpu_check.parity_rows(gpu_check.TINY, 64, "cpu")
    failed = [r.check for r in rows if r.ok is False]
    assert failed == ["float32 logits vs cpu float64", "float32 loss vs cpu float64",
                      "float32 grads vs cpu float64"], failed
    assert "FAIL" in gpu_check.table(rows, "header")


def test_parity_errors_measure_what_they_say():
    """Logits off by 1% of their largest value, the loss by 0.5, one gradient by 10% of its norm."""
    import torch
    logits, grads = torch.tensor([[1.0, -2.0]]), {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0])}
    # a's error (0.3, 0.4): norm 0.5 = 10% of ‖(3, 4)‖ = 5 (its largest element alone would say 8%)
    candidate = (logits + torch.tensor([[0.0, 0.02]]), 1.5, {"a": torch.tensor([3.3, 4.4]), "b": torch.tensor([1.0])})
    errors = gpu_check.parity_errors((logits, 1.0, grads), candidate)
    np.testing.assert_allclose(errors, (0.01, 0.5, 0.1), rtol=1e-6)


def test_without_sentencepiece_pretokenizes_to_its_ids(shared_data, tmp_path, monkeypatch):
    """Where sentencepiece cannot be found, the check trains on Llama 2's vocabulary and its
    stand-in gives the token files sentencepiece writes."""
    spm = pytest.importorskip("sentencepiece")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentencepiece"
                        else find_spec(name, *a))
    settings, vocab_size, rows = gpu_check.prepare_data(shared_data, tmp_path, 0, 20_000)
    assert vocab_size == 32000 and "our tokenizer" in rows[1].value and sys.modules.get("sentencepiece") is spm
    from trainer.pretokenize import load_tokens
    folder = next((tmp_path / "data").rglob("meta.json")).parent
    ids, _ = load_tokens(folder, "val")
    sp = spm.SentencePieceProcessor(model_file=str(shared_data / "llama2" / "tokenizer.model"))
    from data.prepare import read_documents
    from trainer.pretokenize import encode_documents
    documents = read_documents(next((tmp_path / "data").rglob("val.jsonl")))
    assert np.array_equal(np.asarray(ids), encode_documents(sp, documents))


def test_a_step_that_raises_is_a_failed_row(shared_data, tmp_path, monkeypatch, capsys):
    """On a GPU machine lent for minutes, an error must still print the table and exit 1."""
    def broken(*args):
        raise RuntimeError("no space left on device")
    monkeypatch.setattr(gpu_check, "prepare_data", broken)
    status = gpu_check.main(["--data", str(shared_data), "--device", "cpu", "--tiny", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    row = next(line.split(None, 2) for line in out.splitlines() if line.startswith("prepare"))
    assert status == 1 and row[1] == "error" and row[2].split() == [
        "RuntimeError:", "no", "space", "left", "on", "device", "none", "FAIL"], out
