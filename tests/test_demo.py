"""demo end to end on a small slice of Tiny Shakespeare, a few steps: every file appears, and
the llama2.c commands it prints name files in the layouts those programs read."""

import re
import struct

import pytest

from formats import gguf, llama2c
from llama2_scratch import demo_cmd
from llama2_scratch.cli import main
from trainer.runtime import Interrupted


def test_demo_runs_every_step(shared_data, tmp_path, capsys):
    text = (shared_data / "tinyshakespeare/input.txt").read_text(encoding="utf-8")[:150_000]
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    status = main(["demo", "--input", str(tmp_path / "input.txt"), "--data-dir", str(tmp_path / "data"),
                   "--out-dir", str(out), "--max-iters", "3", "--dtype", "float32", "--max-new-tokens", "8",
                   "--speeches", "3"])
    printed = capsys.readouterr().out
    assert status == 0
    for name in ("ckpt.pt", "model.gguf", "model.bin", "tokenizer.bin"):
        assert str(out / name) in printed and (out / name).is_file()
    assert "ROMEO:" in printed and "bits/byte" in printed
    # verify ran torch, NumPy and llama.cpp (installed by the [test] extra) on the export
    assert "checks pass (torch, numpy, llama.cpp)" in printed, printed
    assert gguf.read(out / "model.gguf").metadata["llama.vocab_size"].value == 1024
    assert llama2c.read(out / "model.bin").args.dim == 128
    assert_llama2c_commands_fit(printed)
    samples = printed.split("== 7/7")[1].split("\n== done")[0].split("\n", 1)[1]
    assert samples.startswith("ROMEO:") and samples.count("\n\n") >= 2      # three speeches


def assert_llama2c_commands_fit(printed):
    """run.c reads version 0 (7 int32 of config, the weights right after); runq.c version 2 (the
    magic, version 2, then the config). Both take tokenizer.bin with -z."""
    commands = re.findall(r"\./(run|runq) (\S+) -z (\S+)", printed)
    assert sorted(program for program, _, _ in commands) == ["run", "runq"]
    for program, model, tokenizer in commands:
        head = open(model, "rb").read(8)
        checkpoint = llama2c.read(model)
        if program == "run":
            assert checkpoint.version == 0 and struct.unpack("<i", head[:4])[0] == checkpoint.args.dim == 128
        else:
            assert checkpoint.version == 2 and struct.unpack("<Ii", head) == (llama2c.MAGIC, 2)
        assert len(llama2c.read_tokenizer(tokenizer, checkpoint.args.vocab_size).pieces) == 1024


@pytest.mark.parametrize("interrupt, said", [
    (Interrupted(7, "out/demo/ckpt.pt"),
     "llama2-scratch demo: interrupted after iter 7; its checkpoint is out/demo/ckpt.pt (running demo again "
     "starts over)"),
    (KeyboardInterrupt(), "llama2-scratch demo: interrupted (running demo again starts over)"),
])
def test_ctrl_c_is_one_line_without_resume(monkeypatch, capsys, interrupt, said):
    """Ctrl-C during training (Interrupted) or elsewhere: one line, and no --resume, which demo lacks."""
    def interrupted(args):
        raise interrupt

    monkeypatch.setattr(demo_cmd, "_run", interrupted)
    try:
        status = main(["demo"])
    except KeyboardInterrupt:       # would end the whole pytest session instead of failing here
        pytest.fail("Ctrl-C escaped demo: the user sees a traceback")
    assert status == 130
    assert capsys.readouterr().err.splitlines() == [said]
