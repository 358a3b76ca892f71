"""`llama2-scratch inspect FILE [--json]`: describe a GGUF or llama2.c file, or a Hugging Face
folder (schema in docs/interfaces.md, section 2)."""

import json
import sys

from formats import gguf, llama2c
from models import open_model

HELP = "header, metadata and tensor table of a GGUF or llama2.c file, or a Hugging Face folder"

# How many items of an array the table shows before summarizing with its length.
PREVIEW_ITEMS = 5


def describe(path):
    """The `inspect --json` document for the GGUF, llama2.c file or Hugging Face folder at `path`."""
    model_file = open_model(path)
    if model_file.kind == "gguf":
        return _describe_gguf(model_file.source)
    if model_file.kind == "llama2c":
        return _describe_llama2c(model_file.source)
    if model_file.kind == "hf":
        return _describe_hf(model_file.source)
    raise ValueError(f"{path}: {model_file.kind.described}; inspect describes GGUF and llama2.c files "
                     "and Hugging Face folders")


def _value_json(vtype, value):
    if vtype == gguf.ValueType.ARRAY:
        etype = value.element_type
        if etype == gguf.ValueType.ARRAY:
            items = [_value_json(etype, item) for item in value.items]
        else:
            items = value.to_python()
        return {"type": "ARRAY", "element_type": etype.name, "value": items}
    return {"type": vtype.name, "value": value}


def _describe_gguf(gf):
    return {
        "format": "gguf",
        "version": gf.version,
        "alignment": gf.alignment,
        "data_offset": gf.data_offset,
        "metadata": {key: _value_json(v.type, v.value) for key, v in gf.metadata.items()},
        "tensors": [{"name": t.name, "shape": list(t.shape), "type": t.type.name, "offset": t.offset,
                     "nbytes": t.nbytes} for t in gf.tensors],
    }


def _describe_llama2c(ckpt):
    return {
        "format": "llama2c",
        "version": ckpt.version,
        "config": llama2c.config_of(ckpt.args),
        "shared_classifier": ckpt.shared_classifier,
        "group_size": ckpt.group_size,
        "tensors": llama2c.tensor_table(ckpt),
    }


def _describe_hf(folder):
    """config.json as it is, whether tokenizer.model is there, and the safetensors tensors in
    the files' order (sharded: the index's). config.json is shown only once it reads as a Llama
    we run (formats.hf.args_from_config): what was not validated is never printed."""
    folder.args         # noqa: B018  (FormatError naming the key that does not)
    return {
        "format": "hf",
        "config": folder.config,
        "tokenizer_model": folder.tokenizer_model is not None,
        "tensors": [{"name": name, "shape": list(t.shape), "dtype": t.dtype, "nbytes": t.nbytes}
                    for name, t in folder.tensors.items()],
    }


def _preview(value):
    if isinstance(value, dict) and value.get("type") == "ARRAY":
        items = value["value"]
        shown = ", ".join(_preview(v) if isinstance(v, dict) else repr(v) for v in items[:PREVIEW_ITEMS])
        more = ", ..." if len(items) > PREVIEW_ITEMS else ""
        return f"[{shown}{more}] ({len(items)} {value['element_type']})"
    return repr(value["value"]) if isinstance(value, dict) else repr(value)


def format_table(doc):
    """The human-readable table: header line, metadata (arrays summarized), tensors."""
    lines = []
    if doc["format"] == "gguf":
        lines.append(f"GGUF v{doc['version']}  alignment {doc['alignment']}  data offset {doc['data_offset']}  "
                     f"{len(doc['metadata'])} keys  {len(doc['tensors'])} tensors")
        width = max((len(k) for k in doc["metadata"]), default=0)
        for key, value in doc["metadata"].items():
            kind = value["type"] if value["type"] != "ARRAY" else f"ARRAY[{value['element_type']}]"
            lines.append(f"  {key:<{width}}  {kind:<14} {_preview(value)}")
        rows = [(t["name"], t["type"], "x".join(map(str, t["shape"])), str(t["offset"]), str(t["nbytes"]))
                for t in doc["tensors"]]
        header = ("name", "type", "shape", "offset", "nbytes")
    elif doc["format"] == "hf":
        lines.append(f"Hugging Face folder  {len(doc['tensors'])} tensors  "
                     f"tokenizer.model {'yes' if doc['tokenizer_model'] else 'no'}")
        width = max((len(k) for k in doc["config"]), default=0)
        lines.extend(f"  {key:<{width}}  {value!r}" for key, value in doc["config"].items())
        rows = [(t["name"], t["dtype"], "x".join(map(str, t["shape"])), str(t["nbytes"])) for t in doc["tensors"]]
        header = ("name", "dtype", "shape", "nbytes")
    else:
        c = doc["config"]
        lines.append(f"llama2.c v{doc['version']}  shared_classifier {doc['shared_classifier']}  "
                     f"group_size {doc['group_size']}")
        lines.append("  " + "  ".join(f"{k} {v}" for k, v in c.items()))
        rows = [(t["name"], t["dtype"], "x".join(map(str, t["shape"])), str(t["offset"])) for t in doc["tensors"]]
        header = ("name", "dtype", "shape", "offset")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows)
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("file", help="a .gguf file, a llama2.c .bin checkpoint (v0, v1 or v2) or a Hugging Face "
                                     "folder")
    parser.add_argument("--json", action="store_true", help="print the full description as one JSON document")


def run(args):
    doc = describe(args.file)
    if args.json:
        json.dump(doc, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(format_table(doc))
    return 0
