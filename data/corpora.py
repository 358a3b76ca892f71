"""The reference files that tests and benchmarks read, where each comes from, and how they are found.

    tinyshakespeare/input.txt                   Tiny Shakespeare (karpathy/char-rnn), 1,115,394 bytes
    llama2/tokenizer.model, tokenizer.bin       Meta's Llama 2 SentencePiece model and llama2.c's
                                                export of it (karpathy/llama2.c)
    thai/wisesight-{neg,neu,pos}.txt            wisesight-sentiment (PyThaiNLP, CC0), one message a line

`data_folder(candidates)` returns one folder holding all of them, searched in this order:
  1. $LLAMA2_SCRATCH_DATA, a folder with this layout (every file must be there);
  2. the candidate folders the caller names, the first that exists (the test suite names the
     read-only copies beside the checkout);
  3. ${XDG_CACHE_HOME:-~/.cache}/llama2-scratch/data, where each missing file is downloaded from
     its canonical URL, checked against its sha256 and written atomically. Offline, the error
     names the file and the variable to set instead.
"""

import hashlib
import os
from pathlib import Path

from data.paths import DataError
from formats.atomic import atomic_write

ENV_VAR = "LLAMA2_SCRATCH_DATA"
_GITHUB = "https://raw.githubusercontent.com/"
# layout path -> (canonical URL, sha256 of its bytes)
FILES = {
    "tinyshakespeare/input.txt": (
        _GITHUB + "karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    "llama2/tokenizer.model": (
        _GITHUB + "karpathy/llama2.c/master/tokenizer.model",
        "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"),
    "llama2/tokenizer.bin": (
        _GITHUB + "karpathy/llama2.c/master/tokenizer.bin",
        "50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361"),
    "thai/wisesight-neg.txt": (
        _GITHUB + "PyThaiNLP/wisesight-sentiment/master/neg.txt",
        "a58220b2221cc51e2072e676329b6a2249046ccc2e5692e53636430eaee82690"),
    "thai/wisesight-neu.txt": (
        _GITHUB + "PyThaiNLP/wisesight-sentiment/master/neu.txt",
        "afe5cb9b3d09cff1ae482826e1aeebba402c602f451dc7d5198a725c1bcd44e3"),
    "thai/wisesight-pos.txt": (
        _GITHUB + "PyThaiNLP/wisesight-sentiment/master/pos.txt",
        "a118567bfbf9e1aae0fcd621235a4b27319945746907c790cc6957aacab6a0a1"),
}


def cache_folder():
    """${XDG_CACHE_HOME:-~/.cache}/llama2-scratch/data."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llama2-scratch" / "data"


def data_folder(candidates=()):
    """A folder holding every file of FILES, found as the module docstring says."""
    if os.environ.get(ENV_VAR):
        folder = Path(os.environ[ENV_VAR])
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(f"{folder / missing[0]}: not found (${ENV_VAR} names {folder}, which must "
                            f"hold {', '.join(FILES)})")
        return folder
    for folder in map(Path, candidates):
        if folder.is_dir():
            return folder
    folder = cache_folder()
    for name, (url, sha256) in FILES.items():
        if not (folder / name).is_file():
            download(url, folder / name, sha256, hint=f"or set ${ENV_VAR} to a folder holding {name}")
    return folder


def download(url, path, sha256, hint="pass --input PATH to a local copy"):
    """Fetch `url` into `path` (atomically) when its bytes have the given sha256; else DataError."""
    import urllib.request  # here, not at the top: it costs every `llama2-scratch` command ~6 MB

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot download {url} ({exc}); {hint}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DataError(f"{url}: sha256 {actual} is not the expected {sha256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(data)
