"""Coverage-guided fuzzing of one reader with atheris (libFuzzer for Python): optional, longer
than CI can afford, and not collected by pytest.

    pip install atheris
    python tests/fuzz_atheris.py KIND [CORPUS_DIR] -max_total_time=600 -timeout=1 -rss_limit_mb=2048

KIND is one of tests/support/fuzz.py's kinds (gguf-llama, gguf-rich, gguf-quants, llama2c-v0,
llama2c-v1, llama2c-v2, tokenizer.bin, spm, tokens, ckpt, safetensors, hf), or a whole-model kind
(model-llama2c-v1, model-gguf-llama, model-hf: the file opened as `generate` opens it and both
models built, so NaN/inf weights and huge contexts are reached). The fuzzer controls the kind's
first file (for tokens, meta.json, train.bin staying valid; for hf, config.json); an empty or
new CORPUS_DIR starts from the valid file. An input whose first two bytes are b"\xff\xfe" places
the file instead as support.fuzz.PLACES[third byte % 6] (a FIFO, a folder, a symlink to
/dev/zero, /dev/urandom or to a file outside the folder holding the rest), and a reader must
refuse it without blocking. The contract is the suite's: only FormatError may escape,
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
    from tests.support.fuzz import KINDS, MODEL_KINDS, MODEL_READERS, PLACES, READERS, build_valid_files, place

# An input starting so chooses how the file is placed (PLACES) rather than its bytes.
PLACE_PREFIX = b"\xff\xfe"


def main():
    kind = sys.argv.pop(1) if len(sys.argv) > 1 else None
    if kind not in KINDS and kind not in MODEL_KINDS:
        sys.exit(f"usage: {sys.argv[0]} KIND [libFuzzer options]; KIND is one of "
                 f"{', '.join(KINDS + sorted(MODEL_KINDS))}")
    readers = {**READERS, **MODEL_READERS}
    root = Path(tempfile.mkdtemp(prefix="fuzz-atheris-"))
    (root / "valid").mkdir()        # the valid files' own folder: some kinds (hf) write folders there
    valid = build_valid_files(root / "valid")[MODEL_KINDS.get(kind, (kind,))[0]]
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
        how = "file"
        if data[:2] == PLACE_PREFIX and len(data) > 2:
            how, data = PLACES[data[2] % len(PLACES)], data[3:]
        place(folder / target, how, data, root / "outside")
        try:
            readers[kind](folder)
        except FormatError:
            pass

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
