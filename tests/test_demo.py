"""demo end to end on a small slice of Tiny Shakespeare, a few steps: every file appears."""

from llama2_scratch.cli import main
from formats import gguf, llama2c


def test_demo_runs_every_step(shared_data, tmp_path, capsys):
    text = (shared_data / "tinyshakespeare/input.txt").read_text(encoding="utf-8")[:150_000]
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    status = main(["demo", "--input", str(tmp_path / "input.txt"), "--data-dir", str(tmp_path / "data"),
                   "--out-dir", str(out), "--max-iters", "3", "--dtype", "float32", "--max-new-tokens", "8"])
    printed = capsys.readouterr().out
    assert status == 0
    for name in ("ckpt.pt", "model.gguf", "model.bin", "tokenizer.bin"):
        assert str(out / name) in printed and (out / name).is_file()
    assert "ROMEO:" in printed and "bits/byte" in printed
    # verify ran torch, NumPy and llama.cpp (installed by the [test] extra) on the export
    assert "checks pass (torch, numpy, llama.cpp)" in printed, printed
    assert gguf.read(out / "model.gguf").metadata["llama.vocab_size"].value == 1024
    assert llama2c.read(out / "model.bin").args.dim == 128
