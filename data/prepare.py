"""`prepare`: turn a raw corpus into documents, split them train/val, write one JSONL per split.

A *document* is the unit that is never cut: the split puts each one wholly in train or in val,
and pretokenize frames each with BOS ... EOS. What a document is depends on the source:

    tinyshakespeare  one speech (the text between blank lines)
    prachathai       one article: title, newline, body_text (records with neither are skipped)
    wisesight        one message (one line of the corpus files)
    text             one paragraph (between blank lines) of each UTF-8 file

The split is by content, not position: a document goes to val when the first 8 bytes of
sha256(text), as an integer, fall in the lowest `val_fraction` of the range. So it does not depend
on file order, a duplicated document never straddles the split, and adding documents never moves
old ones. Line endings are normalized to "\\n" (a "\\r" would otherwise become a byte token).
"""

import hashlib
import io
import json
import zipfile
from pathlib import Path

from data import corpora
from data.paths import DataError, SPLITS, dataset_dir, split_path
from formats.atomic import atomic_write

DATASETS = ("tinyshakespeare", "prachathai", "wisesight", "text")
DEFAULT_VAL_FRACTION = 0.1
_HASH_RANGE = 1 << 64


def read_utf8(path):
    """A file's text with "\\n" line endings; a DataError (not a traceback) when it is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 at byte {exc.start}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def paragraphs(text):
    """Blank-line-separated blocks, each without its surrounding newlines.

    >>> paragraphs("A:\\nhi\\n\\nB:\\nho\\n")
    ['A:\\nhi', 'B:\\nho']
    """
    return [block.strip("\n") for block in text.split("\n\n") if block.strip()]


def tinyshakespeare_documents(input_path, data_dir):
    """Speeches of Tiny Shakespeare from `input_path`, or from a checksummed download."""
    if input_path is None:
        input_path = dataset_dir(data_dir, "tinyshakespeare") / "input.txt"
        if not input_path.is_file():
            url, sha256 = corpora.FILES["tinyshakespeare/input.txt"]
            corpora.download(url, input_path, sha256)
    return paragraphs(read_utf8(_existing(input_path)))


def prachathai_documents(input_path):
    """Articles of prachathai-67k: its release zip (JSONL files inside) or one JSONL file."""
    path = _existing(_required(input_path, "prachathai", "the prachathai-67k zip or a JSONL file"))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".jsonl"))
            if not names:
                raise DataError(f"{path}: the zip holds no .jsonl file")
            sources = [(f"{path}:{n}", archive.read(n).decode("utf-8")) for n in names]
    else:
        sources = [(str(path), read_utf8(path))]
    documents = []
    for where, text in sources:
        for number, line in enumerate(io.StringIO(text), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} line {number}: not JSON ({exc.msg})") from None
            parts = [str(record.get(k) or "").strip() for k in ("title", "body_text")]
            document = "\n".join(p for p in parts if p).replace("\r\n", "\n")
            if document:
                documents.append(document)
    return documents


def wisesight_documents(input_path):
    """Messages of the wisesight corpus: every non-blank line of the folder's .txt files."""
    folder = _existing(_required(input_path, "wisesight", "the folder of wisesight .txt files"))
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else [folder]
    if not files:
        raise DataError(f"{folder}: no .txt files")
    return [line.strip() for f in files for line in read_utf8(f).split("\n") if line.strip()]


def text_documents(input_path):
    """Paragraphs of a UTF-8 file, or of every file under a folder (in sorted path order)."""
    root = _existing(_required(input_path, "text", "a UTF-8 file or folder"))
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return [doc for f in files for doc in paragraphs(read_utf8(f))]


def _required(input_path, dataset, what):
    if input_path is None:
        raise DataError(f"prepare {dataset} needs --input PATH ({what})")
    return input_path


def _existing(path):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    return path


def in_val(document, val_fraction):
    """True when the document belongs to the val split (see the module docstring)."""
    digest = hashlib.sha256(document.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < val_fraction * _HASH_RANGE


def split_documents(documents, val_fraction=DEFAULT_VAL_FRACTION):
    """{"train": [...], "val": [...]}, each in corpus order; neither empty when there are >= 2."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val fraction must be in (0, 1), got {val_fraction}")
    if len(documents) < 2:
        raise DataError(f"{len(documents)} document(s): need at least 2 for a train/val split")
    flags = [in_val(d, val_fraction) for d in documents]
    if all(flags) or not any(flags):
        # A corpus this small can land on one side; move the document whose hash is nearest the
        # threshold (val takes the lowest hashes) so the split stays a function of content.
        hashes = [hashlib.sha256(d.encode("utf-8")).digest() for d in documents]
        pick = min if not any(flags) else max
        nearest = pick(range(len(documents)), key=hashes.__getitem__)
        flags[nearest] = not flags[nearest]
    return {"train": [d for d, v in zip(documents, flags) if not v],
            "val": [d for d, v in zip(documents, flags) if v]}


def load_documents(dataset, input_path=None, data_dir="data"):
    if dataset == "tinyshakespeare":
        return tinyshakespeare_documents(input_path, data_dir)
    if dataset == "prachathai":
        return prachathai_documents(input_path)
    if dataset == "wisesight":
        return wisesight_documents(input_path)
    if dataset == "text":
        return text_documents(input_path)
    raise DataError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")


def prepare(dataset, input_path=None, data_dir="data", val_fraction=DEFAULT_VAL_FRACTION):
    """Write DATA_DIR/<dataset>/{train,val}.jsonl; returns {split: (path, documents, chars)}."""
    splits = split_documents(load_documents(dataset, input_path, data_dir), val_fraction)
    dataset_dir(data_dir, dataset).mkdir(parents=True, exist_ok=True)
    report = {}
    for split in SPLITS:
        path = split_path(data_dir, dataset, split)
        lines = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in splits[split])
        with atomic_write(path) as f:
            f.write(lines.encode("utf-8"))
        report[split] = (path, len(splits[split]), sum(len(d) for d in splits[split]))
    return report


def read_documents(path):
    """The documents of a split written by `prepare`."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]
