"""--dtype auto: the decision from the machine's capabilities and measurements (no timing here:
the measurements are given), the CPU flags it reads, and what `train` does with it."""

import doctest

import pytest
import torch

import trainer.runtime
from tests.support.pipeline import build_dataset, tiny_config
from trainer import checkpoint
from trainer.runtime import choose_dtype, cpu_has_native_bf16
from trainer.train import train

X86_FLAGS = "fpu vme sse sse2 avx avx2 fma avx512f avx512bw"


@pytest.fixture(scope="module")
def data_dir(shared_data, tmp_path_factory):
    return build_dataset(shared_data, tmp_path_factory.mktemp("dtype"))


@pytest.mark.parametrize("device_type, found, dtype, reason", [
    ("cpu", dict(cpu_native_bf16=False, bf16_slowdown=6.6), "float32",
     "this CPU has no native bf16; bf16 matmul 6.6x slower"),
    # emulated bf16 that happens to time faster is still refused: native is required
    ("cpu", dict(cpu_native_bf16=False, bf16_slowdown=0.8), "float32", "this CPU has no native bf16"),
    ("cpu", dict(cpu_native_bf16=True, bf16_slowdown=1.3), "float32",
     "this CPU has native bf16, but it is not faster here; bf16 matmul 1.3x slower"),
    ("cpu", dict(cpu_native_bf16=True, bf16_slowdown=0.25), "bfloat16",
     "this CPU has native bf16; bf16 matmul 4x faster"),
    ("cpu", dict(cpu_native_bf16=True), "float32", "not faster"),
    ("cuda", dict(gpu_bf16=True), "bfloat16", "this GPU supports bf16"),
    ("cuda", dict(gpu_bf16=False), "float16", "grad scaler"),
    ("mps", {}, "float32", "mps"),
])
def test_choose_dtype(device_type, found, dtype, reason):
    chosen, why = choose_dtype(device_type, **found)
    assert chosen == dtype and reason in why, why


def test_choose_dtype_docstring_examples():
    assert doctest.testmod(trainer.runtime).failed == 0


@pytest.mark.parametrize("cpuinfo, native", [
    (f"processor\t: 0\nflags\t\t: {X86_FLAGS}\n", False),
    (f"processor\t: 0\nflags\t\t: {X86_FLAGS} avx512_bf16\n", True),
    (f"flags\t\t: {X86_FLAGS} amx_bf16 amx_tile\n", True),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n", True),   # ARM (Graviton 3)
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n", False),
    # a flag's name mentioned outside the flags line is not a flag
    ("model name\t: bf16-less chip\nflags\t\t: avx2\n", False),
])
def test_cpu_flags(tmp_path, cpuinfo, native):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert cpu_has_native_bf16(path) is native


def test_without_proc_cpuinfo_torch_is_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_has_native_bf16(tmp_path / "missing") is True
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_train_prints_the_choice_first_and_trains_in_it(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("trainer.train.pick_dtype", lambda *args: ("bfloat16", "a reason"))
    lines = []
    train(tiny_config(data_dir, tmp_path, dtype="auto", max_iters=2), out=lines.append)
    assert lines[0] == "dtype bfloat16: a reason"
    assert checkpoint.load(tmp_path / "ckpt.pt")["config"]["dtype"] == "bfloat16"


def test_auto_resumes_in_the_dtype_the_run_was_trained_in(data_dir, tmp_path, monkeypatch):
    """A resumed run that picked anew could switch dtypes halfway (the measurement is timing):
    it keeps the checkpoint's."""
    train(tiny_config(data_dir, tmp_path, dtype="bfloat16", max_iters=2), out=lambda line: None)
    monkeypatch.setattr("trainer.train.pick_dtype", lambda *args: ("float32", "measured"))
    lines = []
    train(tiny_config(data_dir, tmp_path, dtype="auto", max_iters=3, resume=True), out=lines.append)
    assert lines[0] == "dtype bfloat16: the dtype ckpt.pt was trained in (resume)"


def test_float64_trains_in_float64(data_dir, tmp_path):
    result = train(tiny_config(data_dir, tmp_path, dtype="float64", max_iters=2), out=lambda line: None)
    assert all(loss == loss for loss in result["losses"])
    weights = checkpoint.load(tmp_path / "ckpt.pt")["model"]
    assert {tensor.dtype for tensor in weights.values()} == {torch.float64}
