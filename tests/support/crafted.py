"""Hostile inputs, crafted one by one, and what the reader must say about each: per format the
cases its own tests run (GGUF_BAD_FILES, HF_BAD_CONFIGS, SAFETENSORS_BAD, SPM_BAD), and the
whole catalogue CRAFTED (kind, label, make, fragment) that test_fuzz.py runs through every reader."""

import io
import json
import math
import struct
import zipfile

import numpy as np
import torch

from formats import gguf, llama2c
from formats.ggml import GGMLType
from formats.gguf import Tensor, Value, ValueType
from tests.support.files import gguf_header, gguf_string, tensor_info, written
from tests.support.fuzz import PIECES, llama_gguf, saved, small_ckpt


GGUF_BAD_FILES = {
    "magic": (b"GGUB" + bytes(20), "magic at byte 0"),
    "version": (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version at byte 4"),
    "kv_count near 2**64": (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**64 - 1), "kv_count"),
    "tensor_count near 2**64": (b"GGUF" + struct.pack("<IQQ", 3, 2**64 - 1, 0), "tensor_count"),
    "string length past EOF": (gguf_header(0, 1, struct.pack("<Q", 2**63) + b"k" * 16), "kv[0].key at byte 24"),
    "unknown value type": (gguf_header(0, 1, gguf_string("k") + struct.pack("<I", 13)), "unknown value type 13"),
    "array count past EOF": (gguf_header(0, 1, gguf_string("k") + struct.pack("<IIQ", 9, 4, 2**62)), "count"),
    "nested too deep": (gguf_header(0, 1, gguf_string("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 40 +
                                    struct.pack("<IQ", 4, 0)), "nested deeper"),
    "bool byte 2": (gguf_header(0, 1, gguf_string("k") + struct.pack("<IB", 7, 2)), "BOOL byte"),
    "non-UTF-8 key": (gguf_header(0, 1, gguf_string(b"\xff\xfe") + struct.pack("<IB", 0, 1)), "invalid UTF-8"),
    "non-UTF-8 string value": (gguf_header(0, 1, gguf_string("k") + struct.pack("<I", 8) + gguf_string(b"a\xc3")),
                               "invalid UTF-8"),
    "duplicate key": (gguf_header(0, 2, (gguf_string("k") + struct.pack("<IB", 0, 1)) * 2), "duplicate key"),
    "alignment not a power of two": (gguf_header(0, 1, gguf_string("general.alignment") + struct.pack("<II", 4, 24)),
                                     "general.alignment"),
    "alignment wrong type": (gguf_header(0, 1, gguf_string("general.alignment") + struct.pack("<Iq", 11, 32)),
                             "general.alignment"),
    "n_dims > 4": (gguf_header(1, 0, tensor_info("t", [1] * 5)), "n_dims"),
    "dims overflow int64": (gguf_header(1, 0, tensor_info("t", [2**32, 2**32])), "overflow"),
    "dim above int64": (gguf_header(1, 0, tensor_info("t", [2**63])), "overflow"),
    "unknown tensor type": (gguf_header(1, 0, tensor_info("t", [4], 99)), "ggml type 99"),
    "row not a multiple of the block": (gguf_header(1, 0, tensor_info("t", [33], 8)), "block size"),
    "duplicate tensor name": (gguf_header(2, 0, tensor_info("t", [8]) + tensor_info("t", [8], 0, 32)),
                              "duplicate tensor name"),
    "offset past EOF": (gguf_header(1, 0, tensor_info("t", [8])), "passes the end"),
    "misaligned offset": (gguf_header(2, 0, tensor_info("t", [8]) + tensor_info("u", [8], 0, 33) + bytes(200)),
                          "misaligned"),
    "overlapping tensors": (gguf_header(2, 0, tensor_info("t", [16]) + tensor_info("u", [8], 0, 32) + bytes(300)),
                            "overlaps"),
    "first offset not zero": (gguf_header(1, 0, tensor_info("t", [8], 0, 64) + bytes(300)), "gap"),
}


# label -> (edit of config.json's dict, what the error says)
HF_BAD_CONFIGS = {
    "model_type mistral": (lambda c: {**c, "model_type": "mistral"}, "model_type: 'mistral'"),
    "a classifier": (lambda c: {**c, "architectures": ["LlamaForSequenceClassification"]}, "architectures"),
    "rope_scaling linear": (lambda c: {**c, "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    "rope_parameters llama3": (lambda c: {**c, "rope_parameters": {"rope_type": "llama3", "rope_theta": 1.0}},
                               "rope_parameters"),
    "attention bias": (lambda c: {**c, "attention_bias": True}, "attention_bias: True is not supported"),
    "mlp bias": (lambda c: {**c, "mlp_bias": True}, "mlp_bias"),
    "gelu": (lambda c: {**c, "hidden_act": "gelu"}, "hidden_act"),
    "head_dim twice hidden/heads": (lambda c: {**c, "head_dim": 2 * c["head_dim"]}, "head_dim"),
    "no hidden_size": (lambda c: {k: v for k, v in c.items() if k != "hidden_size"}, "hidden_size: missing"),
    "layers as a string": (lambda c: {**c, "num_hidden_layers": "1"}, "num_hidden_layers: '1' is not an int"),
    "layers 2**40": (lambda c: {**c, "num_hidden_layers": 2**40}, "model.layers.1.input_layernorm.weight: missing"),
    "eps a string": (lambda c: {**c, "rms_norm_eps": "1e-5"}, "rms_norm_eps"),
    "tie 'yes'": (lambda c: {**c, "tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    "3 kv heads for 2 heads": (lambda c: {**c, "num_key_value_heads": 3}, "not divisible"),
    "vocab_size 9 for 8 rows": (lambda c: {**c, "vocab_size": c["vocab_size"] + 1}, "model.embed_tokens.weight: shape"),
    "a list": (lambda c: [c], "must be a JSON object"),
}


def with_header(header, data=b""):
    """A file whose header is `header` (a JSON-able object, or raw bytes) followed by `data`."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype="F32", shape=(1,), offsets=(0, 4)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# label -> (file bytes, what the error says, whether the package refuses the file too: where it
# does not, we are stricter and it reads the file)
SAFETENSORS_BAD = {
    "empty file": (b"", "header_length at byte 0: needs 8 bytes", True),
    "header length past the file": (struct.pack("<Q", 100) + b"{}", "header at byte 8: needs 100 bytes", True),
    "header length 2**64-1": (struct.pack("<Q", 2**64 - 1) + b"{}", "over the 100000000-byte limit", True),
    "header not UTF-8": (with_header(b'{"\xff":1}'), "invalid UTF-8 at byte 10", True),
    "header not JSON": (with_header(b'{"a":'), "invalid JSON", True),
    "header a JSON list": (with_header(b"[]"), "must be a JSON object, got a JSON list", True),
    "header nested 100000 deep": (with_header(b"[" * 100_000), "nested too deeply", True),
    "int of 5000 digits": (with_header(b'{"t":{"dtype":"F32","shape":[' + b"1" * 5000 + b'],"data_offsets":[0,4]}}'),
                           "invalid JSON", True),
    "unknown dtype": (with_header({"t": entry("F12")}, bytes(4)), "header['t'].dtype at byte 8: unknown dtype 'F12'",
                      True),
    "dtype F8_E4M3 (unsupported here)": (with_header({"t": entry("F8_E4M3", (4,))}, bytes(4)), "unknown dtype", False),
    "entry a string": (with_header({"t": "F32"}), "header['t'] at byte 8: must be an object", True),
    "entry without shape": (with_header({"t": {"dtype": "F32", "data_offsets": [0, 4]}}, bytes(4)),
                            "expected exactly ['dtype', 'shape', 'data_offsets']", True),
    "entry with an extra key": (with_header({"t": {**entry(), "x": 1}}, bytes(4)), "keys ['data_offsets', 'dtype'",
                                False),
    "negative dim": (with_header({"t": entry(shape=(-1,))}, bytes(4)), "shape at byte 8", True),
    "dim true": (with_header({"t": entry(shape=(True,))}, bytes(4)), "shape at byte 8", True),
    "33 dims": (with_header({"t": entry(shape=(1,) * 33)}, bytes(4)), "at most 32", False),
    "shape 2**20 x 2**20": (with_header({"t": entry(shape=(2**20, 2**20))}, bytes(4)), "span 4 bytes but shape", True),
    "shape 2**40 x 2**40": (with_header({"t": entry(shape=(2**40, 2**40))}, bytes(4)), "passes 2**63 bytes", True),
    "huge shape around a zero": (with_header({"t": entry(shape=(0, 2**62, 2**62), offsets=(0, 0))}),
                                 "passes 2**63 bytes", True),
    "offsets of three": (with_header({"t": entry(offsets=(0, 4, 8))}, bytes(8)), "two non-negative ints", True),
    "offsets reversed": (with_header({"t": entry(offsets=(4, 0))}, bytes(4)), "end 0 is before begin 4", True),
    "shape/offset disagreement": (with_header({"t": entry(shape=(2,))}, bytes(4)),
                                  "span 4 bytes but shape (2,) of F32 takes 8", True),
    "offsets past the file": (with_header({"t": entry(offsets=(4, 8))}, bytes(4)),
                              "[4, 8) passes the end of the data (4 bytes)", True),
    "offsets overlapping": (with_header({"a": entry(), "b": entry(shape=(2,), offsets=(2, 10))}, bytes(10)),
                            "tensor['b'].data_offsets", True),
    "a gap before a tensor": (with_header({"t": entry(offsets=(4, 8))}, bytes(8)), "leaving bytes 0..4 unused", True),
    "bytes after the last tensor": (with_header({"t": entry()}, bytes(5)), "1 bytes after the last tensor", True),
    "a name twice": (with_header(b'{"t":' + json.dumps(entry()).encode() + b',"t":'
                                 + json.dumps(entry()).encode() + b"}", bytes(4)), "key 't' appears twice", False),
    "metadata of numbers": (with_header({"__metadata__": {"a": 1}}), "must be an object of strings", True),
}


SPM_BAD = [
    # (bytes, field named in the error, byte offset, message fragment)
    (b"", "pieces", None, "no pieces"),
    (bytes.fromhex("0a"), "model.field1", 0, "past the end"),
    (bytes.fromhex("0a 05 6162"), "model.field1", 0, "needs 5 bytes"),
    (bytes.fromhex("0b"), "model.field1", 0, "wire type 3"),
    (bytes.fromhex("02 00"), "model.field0", 0, "field number 0"),
    (bytes.fromhex("08 ffffffffffffffffffff 01"), "model.field1", 0, "longer than 10 bytes"),
    (bytes.fromhex("10 01"), "trainer_spec", 0, "wire type 0"),
    (bytes.fromhex("0a 03 0a 05 61"), "pieces[0].field1", 2, "needs 5 bytes"),
    (bytes.fromhex("0a 03 0a 01 ff"), "pieces[0].piece", 2, "invalid UTF-8 at byte 4"),
    (bytes.fromhex("0a 05 0a 01 61 10 00"), "pieces[0].score", 5, "wire type 0"),
    (bytes.fromhex("0a 00"), "pieces[0].piece", 0, "empty piece"),
    (bytes.fromhex("0a 05 0a 01 61 18 07"), "pieces[0].type", 0, "unknown piece type 7"),
    (bytes.fromhex("0a 03 0a 01 61 0a 03 0a 01 61"), "pieces[1].piece", 5, "repeats piece 0"),
    (bytes.fromhex("0a 03 0a 01 61 12 03 c8 02 05"), "trainer_spec.bos_id", None, "not a piece id"),
    (bytes.fromhex("0a 03 0a 01 61 12 02 18 09"), "trainer_spec.model_type", None, "unknown model type"),
]


def gguf_with(edit):
    """The llama GGUF with `edit(gguf_file)` applied, as bytes."""
    def make(files, tmp):
        gf = llama_gguf()
        edit(gf)
        return {"m.gguf": written(gguf.write, gf, tmp / "crafted.gguf").read_bytes()}
    return make


def set_key(key, vtype, value):
    return gguf_with(lambda gf: gf.metadata.__setitem__(key, Value(vtype, value)))


def replace_tensor(name, tensor):
    def edit(gf):
        gf.tensors[[t.name for t in gf.tensors].index(name)] = tensor
    return gguf_with(edit)


def drop_last_token(gf):
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        items = gf.metadata[key].value.items
        gf.metadata[key].value.items = items[:-1]


def gguf_bytes(data):
    return lambda files, tmp: {"m.gguf": data}


U32, F32_ = ValueType.UINT32, ValueType.FLOAT32


GGUF_CRAFTED = [
    # model-level: hyperparameters that disagree with each other or with the tensors
    ("block_count near 2**32", set_key("llama.block_count", U32, 2**32 - 1), "llama.block_count"),
    ("block_count 0", set_key("llama.block_count", U32, 0), "n_layers must be a positive int"),
    ("embedding_length 0", set_key("llama.embedding_length", U32, 0), "dim must be a positive int"),
    ("head_count 0", set_key("llama.attention.head_count", U32, 0), "n_heads must be a positive int"),
    ("head_count_kv 3", set_key("llama.attention.head_count_kv", U32, 3), "not divisible by n_kv_heads"),
    ("context_length 0", set_key("llama.context_length", U32, 0), "max_seq_len must be a positive int"),
    ("rope dims 3", set_key("llama.rope.dimension_count", U32, 3), "llama.rope.dimension_count"),
    ("feed_forward_length as INT32", set_key("llama.feed_forward_length", ValueType.INT32, 8), "expected UINT32"),
    ("norm_eps -1", set_key("llama.attention.layer_norm_rms_epsilon", F32_, -1.0), "must be a positive finite number"),
    ("norm_eps NaN", set_key("llama.attention.layer_norm_rms_epsilon", F32_, math.nan), "must be a positive"),
    ("rope freq_base 0", set_key("llama.rope.freq_base", F32_, 0.0), "llama.rope.freq_base"),
    ("llama.vocab_size 9 vs 8 embedding rows", set_key("llama.vocab_size", U32, 9), "token_embd has 8 rows"),
    ("7 tokens vs 8 embedding rows", gguf_with(drop_last_token), "has 7 tokens but token_embd has 8 rows"),
    ("bos id past the vocabulary", set_key("tokenizer.ggml.bos_token_id", U32, 2**32 - 1), "outside the 8-token"),
    ("gpt2 tokenizer", set_key("tokenizer.ggml.model", ValueType.STRING, "gpt2"), "not supported"),
    ("mixture of experts", set_key("llama.expert_count", U32, 8), "mixture-of-experts models are not supported"),
    ("expert_count as a string", set_key("llama.expert_count", ValueType.STRING, "8"), "expected UINT32"),
    ("yarn RoPE", set_key("llama.rope.scaling.type", ValueType.STRING, "yarn"), "only unscaled RoPE"),
    ("token_embd 0-dim", replace_tensor("token_embd.weight", Tensor("token_embd.weight", GGMLType.F32, (),
                                                                    np.array(1, np.float32))), "must be 2-D"),
    ("token_embd 1-D", replace_tensor("token_embd.weight", Tensor.from_array("token_embd.weight",
                                                                             np.ones(32, np.float32))), "2-D"),
    ("foreign tensor name", replace_tensor("output_norm.weight", Tensor.from_array(
        "blk.0.attn_q.weight.x", np.ones(4, np.float32))), "not a tensor of the llama architecture"),
    # byte level, beyond GGUF_BAD_FILES above
    ("n_dims 2**32-1", gguf_bytes(gguf_header(1, 0, gguf_string(b"t") + struct.pack("<I", 2**32 - 1) + bytes(64))),
     "n_dims"),
    ("ne[0] 2**63-1 of F32", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [2**63 - 1]))), "passes the end"),
    # A zero dim makes the tensor empty, but NumPy still refuses a view whose other dims overflow
    # the address space ("array is too big", found by atheris): the reader bounds them first.
    ("dims [0, 2**40, 2**40] of F32", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [0, 2**40, 2**40]))
                                                 + bytes(64)), "t).ne at byte"),
    ("dims [0, 2**62] of Q8_0", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [0, 2**62], 8)) + bytes(64)),
     "span"),
    # the k-quant and i-quant blocks: a row that is not a whole number of blocks, data cut short
    ("IQ2_XXS row of 300", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [300], 16)) + bytes(512)),
     "row length 300 is not a multiple of IQ2_XXS's block size 256"),
    ("MXFP4 row of 48", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [48, 2], 39)) + bytes(64)),
     "not a multiple of MXFP4's block size 32"),
    ("Q5_K rows past the end", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [256, 4], 13)) + bytes(600)),
     "passes the end"),
    ("IQ1_M block cut short", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [256], 29)) + bytes(40)),
     "data [64, 120) passes the end"),
    ("key length 2**64-1", gguf_bytes(gguf_header(0, 1, struct.pack("<Q", 2**64 - 1) + bytes(16))), "kv[0].key"),
    ("2**60 strings", gguf_bytes(gguf_header(0, 1, gguf_string(b"k") + struct.pack("<IIQ", 9, 8, 2**60)
                                             + bytes(64))), "cannot fit"),
    ("tensor count 1, no info", gguf_bytes(gguf_header(1, 0, bytes(24))), "tensor_info[0]"),
    ("alignment 2**31 and a tensor", gguf_bytes(gguf_header(1, 1, gguf_string(b"general.alignment")
                                                            + struct.pack("<II", 4, 2**31)
                                                            + tensor_info(b"t", [1]) + bytes(64))),
     "passes the end"),
    # A 0-dim F16 tensor is well formed (the file then fails as a model); to_float32 used to
    # refuse it with a bare ValueError.
    ("0-dim F16 tensor", gguf_bytes(gguf_header(1, 0, tensor_info(b"t", [], 1)) + bytes(64)), "general.architecture"),
]


GGUF_CRAFTED += [(f"test_gguf: {name}", gguf_bytes(data), fragment) for name, (data, fragment) in
                 sorted(GGUF_BAD_FILES.items())]


FIELDS = list(llama2c.CONFIG_FIELDS)


def llama2c_patch(offset, fmt, value):
    def make(files, tmp):
        data = bytearray(files["m.bin"])
        struct.pack_into(fmt, data, offset, value)
        return {"m.bin": bytes(data)}
    return make


def llama2c_crafted():
    """(kind, label, make, fragment): every config field at 0, -1 and INT32_MIN in every version,
    and the v1/v2 header flags."""
    cases = []
    for version in (0, 1, 2):
        base = 0 if version == 0 else 8
        for i, field in enumerate(FIELDS):
            for value in (0, -1, -2**31):
                # v0 stores an unshared classifier as a negative vocab_size: -1 is legal, then the
                # size is wrong (-2**31 has no positive int32 counterpart).
                fragment = "file size" if (version, field, value) == (0, "vocab_size", -1) else f"config.{field}"
                cases.append((f"llama2c-v{version}", f"{field}={value}",
                              llama2c_patch(base + 4 * i, "<i", value), fragment))
        cases += [(f"llama2c-v{version}", "vocab_size 9 vs 8 embedding rows",
                   llama2c_patch(base + 4 * FIELDS.index("vocab_size"), "<i", 9 if version else -9), "file size"),
                  (f"llama2c-v{version}", "n_layers 2**31-1",
                   llama2c_patch(base + 4 * FIELDS.index("n_layers"), "<i", 2**31 - 1), "file size")]
    cases += [("llama2c-v1", "version 3", llama2c_patch(4, "<i", 3), "version"),
              ("llama2c-v1", "shared flag 2", llama2c_patch(36, "<B", 2), "shared_classifier")]
    cases += [("llama2c-v2", f"group_size {g}", llama2c_patch(37, "<i", g), "group_size")
              for g in (0, -4, 3, 2**31 - 1)]
    return cases


def tokenizer_piece(score, raw):
    return struct.pack("<fI", score, len(raw)) + raw


def tokenizer_bin(max_length, raws):
    return lambda files, tmp: {"tok.bin": struct.pack("<I", max_length)
                                          + b"".join(tokenizer_piece(-i, r) for i, r in enumerate(raws))}


RAWS = [p.replace("\u2581", " ").encode() for p in PIECES]


TOKENIZER_CRAFTED = [
    ("max_token_length 0", tokenizer_bin(0, RAWS), "longer than max_token_length 0"),
    ("length 2**32-1 past EOF", lambda files, tmp: {"tok.bin": struct.pack("<IfI", 2**32 - 1, 0, 2**32 - 1) + b"x"},
     "token[0].bytes"),
    ("byte 0xff", tokenizer_bin(8, RAWS[:7] + [b"\xff"]), "invalid UTF-8"),
    ("UTF-8 surrogate", tokenizer_bin(8, RAWS[:7] + [b"\xed\xa0\x80"]), "invalid UTF-8"),
    ("overlong UTF-8", tokenizer_bin(8, RAWS[:7] + [b"\xc0\x80"]), "invalid UTF-8"),
    ("7 pieces for an 8-row embedding", tokenizer_bin(8, RAWS[:7]), "token[7].score"),
    ("9 pieces for an 8-row embedding", tokenizer_bin(8, RAWS + [b"z"]), "end of vocabulary"),
]


def spm_bytes(hex_text):
    return lambda files, tmp: {"m.model": bytes.fromhex(hex_text)}


# Pieces "a", "b", "c": enough for the default bos_id 1 and eos_id 2 to be piece ids.
THREE_PIECES = "0a 03 0a 01 61  0a 03 0a 01 62  0a 03 0a 01 63 "


SPM_CRAFTED = [
    ("pieces length 2**64-1", spm_bytes("0a ffffffffffffffffff01 00"), "needs 18446744073709551615 bytes"),
    ("pieces as fixed32", spm_bytes("0d 00000000"), "wire type 5"),
    ("wire type 6", spm_bytes("0e 00"), "unsupported wire type 6"),
    ("wire type 7", spm_bytes("0f 00"), "unsupported wire type 7"),
    ("11-byte varint", spm_bytes("08 8080808080808080808001"), "longer than 10 bytes"),
    ("unk_id -1", spm_bytes(THREE_PIECES + "12 0c c0 02 ffffffffffffffffff01"), "trainer_spec.unk_id"),
    ("pad_id 100", spm_bytes(THREE_PIECES + "12 03 d8 02 64"), "trainer_spec.pad_id"),
    ("piece type 0", spm_bytes("0a 05 0a 01 61 18 00"), "unknown piece type 0"),
] + [(f"test_spm: {message}", spm_bytes(data.hex()), message) for data, _, _, message in SPM_BAD]


def tokens_with(meta_edit=None, train=None):
    def make(files, tmp):
        meta = json.loads(files["meta.json"])
        if meta_edit:
            meta_edit(meta)
        return {"meta.json": json.dumps(meta).encode(), "train.bin": files["train.bin"] if train is None else train}
    return make


def raw_meta(data):
    return lambda files, tmp: {**files, "meta.json": data}


def set_meta(path, value):
    *parents, last = path.split(".")

    def edit(meta):
        for key in parents:
            meta = meta[key]
        meta[last] = value
    return tokens_with(edit)


def drop_meta(key):
    return tokens_with(lambda meta: meta.pop(key))


TOKENS_CRAFTED = [
    ("empty meta.json", raw_meta(b""), "Expecting value"),
    ("meta.json not UTF-8", raw_meta(b'{"dtype": "\xff"}'), "utf-8"),
    ("meta.json nested 100000 deep", raw_meta(b"[" * 100_000), "nested too deeply"),
    ("meta.json int of 5000 digits", raw_meta(b"1" * 5000), "meta.json"),
    ("meta.json an array", raw_meta(b"[]"), "must be a JSON object"),
    ("dtype <f4", set_meta("dtype", "<f4"), "dtype"),
    ("dtype object", set_meta("dtype", "|O"), "dtype"),
    ("dtype a list", set_meta("dtype", ["<u2"]), "dtype"),
    ("vocab_size 0", set_meta("vocab_size", 0), "vocab_size"),
    ("vocab_size -1", set_meta("vocab_size", -1), "vocab_size"),
    ("vocab_size true", set_meta("vocab_size", True), "vocab_size"),
    ("vocab_size '8'", set_meta("vocab_size", "8"), "vocab_size"),
    ("vocab_size 8.0", set_meta("vocab_size", 8.0), "vocab_size"),
    ("no splits", drop_meta("splits"), "splits.train"),
    ("no tokenizer hash", drop_meta("tokenizer_sha256"), "tokenizer_sha256"),
    ("tokens -1", set_meta("splits.train.tokens", -1), "splits.train.tokens"),
    ("tokens 201 for 200", set_meta("splits.train.tokens", 201), "holds 200 tokens"),
    ("bytes 0", set_meta("splits.train.bytes", 0), "splits.train.bytes"),
    ("odd byte count", tokens_with(train=bytes(401)), "not a whole number"),
    ("id 8 in an 8-piece vocabulary", tokens_with(train=np.full(200, 8, "<u2").tobytes()), "token[0]"),
    ("id 65535", tokens_with(train=np.r_[np.zeros(199), 65535].astype("<u2").tobytes()), "token[199] at byte 398"),
    ("vocab_size 2**70 and a uint32 file", tokens_with(lambda m: m.update(vocab_size=2**70, dtype="<u4"),
                                                       train=bytes(800)), None),
    ("empty split", tokens_with(lambda m: m["splits"]["train"].update(tokens=0, bytes=0), train=b""), None),
]


def rezipped(data, replace=None, compression=zipfile.ZIP_STORED):
    """A torch.save archive re-zipped with some records replaced (the pickle is 'archive/data.pkl')."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, (replace or {}).get(info.filename.split("/", 1)[1])
                             or source.read(info.filename))
    return out.getvalue()


def ckpt_bytes(make_data):
    return lambda files, tmp: {"ckpt.pt": make_data(files["ckpt.pt"])}


def pickle_patched(data, old, new):
    """The archive `data` with bytes `old` of its pickle replaced (pickletools.dis shows them)."""
    pickled = zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    assert old in pickled
    return rezipped(data, {"data.pkl": pickled.replace(old, new, 1)})


# One (2, 3) float tensor: its storage is ('storage', FloatStorage, '0', 'cpu', 6) -> "K\x06t",
# its size (2, 3) -> "K\x02K\x03\x86".
ONE_TENSOR = {"model": {"w": torch.ones(2, 3)}, "model_args": {}}


INT32_MAX_OP = b"J\xff\xff\xff\x7f"  # BININT 2**31-1


CKPT_CRAFTED = [
    ("empty file", ckpt_bytes(lambda data: b""), "not a torch.save zip archive"),
    ("legacy (pre-zip) torch.save", ckpt_bytes(lambda data: saved(small_ckpt(), _use_new_zipfile_serialization=False)),
     "not a torch.save zip archive"),
    # torch.load takes both for its legacy format, whose reads the pickle sizes: it used to
    # allocate 64 MiB for the first and 256 MiB for the second (found by the flip/splice test).
    ("one junk byte before the zip", ckpt_bytes(lambda data: b"X" + data), "magic at byte 0"),
    ("legacy pickle with a 2**28-byte string", ckpt_bytes(lambda data: b"\x80\x02X" + struct.pack("<I", 2**28)),
     "magic at byte 0"),
    ("deflated records (a zip bomb's shape)", ckpt_bytes(lambda data: rezipped(data, compression=zipfile.ZIP_DEFLATED)),
     "is compressed"),
    ("a list", ckpt_bytes(lambda data: saved([1, 2])), "is a list"),
    ("no model", ckpt_bytes(lambda data: saved({"model_args": {}})), "model"),
    ("model holds an int", ckpt_bytes(lambda data: saved({"model": {"w": 1}, "model_args": {}})), "model"),
    ("model_args a list", ckpt_bytes(lambda data: saved({"model": {}, "model_args": [1]})), "model_args"),
    ("storage of 2**31-1 floats in a 24-byte record",
     ckpt_bytes(lambda data: pickle_patched(saved(ONE_TENSOR), b"K\x06t", INT32_MAX_OP + b"t")),
     "does not match expected size"),
    ("size (2**31-1, 2**31-1) over 6 floats",
     ckpt_bytes(lambda data: pickle_patched(saved(ONE_TENSOR), b"K\x02K\x03\x86", INT32_MAX_OP * 2 + b"\x86")),
     "pickle"),
    ("os.system as a global", ckpt_bytes(lambda data: pickle_patched(data, b"collections\nOrderedDict",
                                                                      b"os\nsystem")), "os.system"),
]


def safetensors_bytes(data):
    return lambda files, tmp: {"m.safetensors": data}


def hf_config(edit):
    return lambda files, tmp: {**files, "config.json": json.dumps(edit(json.loads(files["config.json"]))).encode()}


SAFETENSORS_CRAFTED = [(f"test_safetensors: {label}", safetensors_bytes(data), fragment)
                       for label, (data, fragment, _) in sorted(SAFETENSORS_BAD.items())]


HF_CRAFTED = [(f"test_hf: {label}", hf_config(edit), fragment) for label, (edit, fragment) in sorted(HF_BAD_CONFIGS.items())]


CRAFTED = ([("gguf-llama", label, make, fragment) for label, make, fragment in GGUF_CRAFTED]
           + llama2c_crafted()
           + [("tokenizer.bin", *case) for case in TOKENIZER_CRAFTED]
           + [("spm", *case) for case in SPM_CRAFTED]
           + [("tokens", *case) for case in TOKENS_CRAFTED]
           + [("ckpt", *case) for case in CKPT_CRAFTED]
           + [("safetensors", *case) for case in SAFETENSORS_CRAFTED]
           + [("hf", *case) for case in HF_CRAFTED])
