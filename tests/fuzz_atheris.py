"""Coverage-guided fuzzing of one reader with atheris (libFuzzer for Python): optional, longer
than CI can afford, and not collected by pytest.

    pip install atheris
    python tests/fuzz_atheris.py KIND [CORPUS_DIR] -max_total_time=600 -timeout=1 -rss_limit_mb=2048

KIND is one of tests/fuzz_targets.py's kinds (gguf-llama, gguf-rich, gguf-quants, llama2c-v0,
llama2c-v1, llama2c-v2, tokenizer.bin, spm, tokens, ckpt, safetensors, hf). The fuzzer controls the
kind's first file (for tokens, meta.json, train.bin staying valid; for hf, config.json); an empty or
new CORPUS_DIR starts from the valid file. The contract is the suite's: only FormatError may escape,
so anything else stops the run and libFuzzer writes the input that did it to ./crash-*. -timeout
flags inputs slower than a second (the suite's budget is 100 ms a case; this leaves room for
coverage instrumentation). Replay a crash with the same command and the crash file instead of
CORPUS_DIR.
"""

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Coverage is collected on our code only; instrumenting torch and numpy would drown it.
with atheris.instrument_imports(include=["formats", "reference", "trainer"]):
    from formats.errors import FormatError
    from tests.fuzz_targets import KINDS, READERS, build_valid_files


def main():
    kind = sys.argv.pop(1) if len(sys.argv) > 1 else None
    if kind not in KINDS:
        sys.exit(f"usage: {sys.argv[0]} KIND [libFuzzer options]; KIND is one of {', '.join(KINDS)}")
    root = Path(tempfile.mkdtemp(prefix="fuzz-atheris-"))
    (root / "valid").mkdir()        # the valid files' own folder: some kinds (hf) write folders there
    valid = build_valid_files(root / "valid")[kind]
    target = sorted(valid)[0]
    folder = root / kind
    folder.mkdir()
    for name, data in valid.items():
        (folder / name).write_bytes(data)
    # libFuzzer's positional arguments are corpus folders (or crash files to replay); the first
    # folder, made if needed, starts from the valid file when empty.
    paths = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    if not paths:
        paths = [root / "corpus"]
        sys.argv.append(str(paths[0]))
    if not paths[0].is_file():
        paths[0].mkdir(parents=True, exist_ok=True)
        if not any(paths[0].iterdir()):
            (paths[0] / target).write_bytes(valid[target])

    def one_input(data):
        (folder / target).write_bytes(data)
        try:
            READERS[kind](folder)
        except FormatError:
            pass

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
