"""`llama2-scratch trace` end to end: the --json schema (docs/interfaces.md), the tables, --ckpt against
torch, --plots as PNG files, and one-line errors (exit 2) on input it cannot honour."""

import dataclasses
import json
import struct

import numpy as np
import pytest
import torch

from formats import gguf, llama2c, mapping
from formats.spec import ModelArgs
from formats.spm import read as read_spm
from reference.model import Llama
from reference.tokenizer import Tokenizer
from tests import helpers
from tests.helpers import NO_TORCH
from reference.cache import points
from tests.llama_helpers import random_weights, torch_model
from trainer import checkpoint

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32000, max_seq_len=24)
PROMPT = "Once upon a time, a fox"
# The CLI where `import matplotlib` fails (tests.helpers.NO_TORCH blocks torch the same way).
NO_MATPLOTLIB = NO_TORCH.replace("'torch'", "'matplotlib'")
# trace's vs_torch on an f32 export of the ckpt: tests/test_study.py's TORCH_FLOAT32_RTOL (1e-5,
# relative to a point's max |x|, measured 2.9e-6 at most) times the largest max |x| here (the
# logits, < 10).
VS_TORCH_MAX_ABS_DIFF = 1e-4


def run_cli(*args, script=None):
    """The CLI with torch (`script` None), or `python -c script ARGS` (NO_TORCH, NO_MATPLOTLIB)."""
    return helpers.run_cli(*args, with_torch=True) if script is None else helpers.run_python("-c", script, *args)


def save_ckpt(weights, args, path):
    checkpoint.save({"model": {name: torch.from_numpy(w) for name, w in weights.items()},
                     "model_args": args.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data):
    """An f32 and a q8_0 GGUF of one random model, its ckpt.pt, and two ckpts of other models."""
    root = tmp_path_factory.mktemp("trace")
    vocab = read_spm(shared_data / "llama2" / "tokenizer.model").vocab
    weights = random_weights(ARGS, seed=3)
    paths = {"f32": root / "m.gguf", "q8_0": root / "m-q8.gguf"}
    for dtype, path in paths.items():
        gguf.write(mapping.to_gguf(weights, ARGS, vocab, dtype=dtype), path)
    paths["ckpt"] = save_ckpt(weights, ARGS, root / "ckpt.pt")
    paths["other_seed"] = save_ckpt(random_weights(ARGS, seed=4), ARGS, root / "other.pt")
    wider = ModelArgs(**{**ARGS.to_dict(), "hidden_dim": 256})
    paths["other_shape"] = save_ckpt(random_weights(wider, seed=3), wider, root / "wider.pt")
    paths["weights"], paths["vocab"] = weights, vocab
    return paths


@pytest.fixture(scope="module")
def traced(files):
    """trace --json with --ckpt on the f32 file, and the same prompt's ids and cache in-process."""
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--ckpt", files["ckpt"], "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    ids = Tokenizer(files["vocab"]).encode(PROMPT)
    _, cache = Llama(ARGS, files["weights"]).run_with_cache(ids)
    return json.loads(result.stdout), ids, cache


SPEC_KEYS = ["tokens", "points", "logit_lens", "heads"]


def test_json_has_the_spec_schema_and_its_extensions(traced, files):
    doc, ids, cache = traced
    assert list(doc) == SPEC_KEYS + ["attention", "residual", "schema_version", "model", "prompt", "ids"]
    assert doc["schema_version"] == 2 and doc["prompt"] == PROMPT and doc["ids"] == ids
    # GGUF stores norm_eps as a float32.
    stored_args = {**ARGS.to_dict(), "norm_eps": float(np.float32(ARGS.norm_eps))}
    assert doc["model"] == {"file": str(files["f32"]), "kind": "gguf", "stored": ["f32"], "dtype": "float32",
                            "args": stored_args}
    assert doc["tokens"] == [{"id": i, "piece": files["vocab"].pieces[i]} for i in ids]
    assert [p["name"] for p in doc["points"]] == list(cache)
    descriptions = {name: what for name, _, what in points(ARGS.n_layers)}
    for point in doc["points"]:
        assert list(point) == ["name", "shape", "rms", "max_abs", "vs_torch", "block", "description"]
        assert list(point["vs_torch"]) == ["max_abs_diff", "bit_identical"]
        array = cache[point["name"]].astype(np.float64)
        finite = array[np.isfinite(array)]                    # scores' masked -inf are not data
        assert point["shape"] == list(array.shape)
        assert point["rms"] == pytest.approx(np.sqrt(np.mean(finite ** 2)), rel=1e-12)
        assert point["max_abs"] == np.max(np.abs(finite))
        assert point["description"] == descriptions[point["name"]]
        name = point["name"]
        assert point["block"] == (int(name.split(".")[1]) if name.startswith("blocks.") else None)
    n_tokens = len(ids)
    assert [(e["layer"], e["position"]) for e in doc["logit_lens"]] == [
        (layer, t) for layer in range(ARGS.n_layers) for t in range(n_tokens)]
    for entry in doc["logit_lens"]:
        assert list(entry) == ["layer", "position", "top", "block"] and len(entry["top"]) == 3
        assert entry["block"] == entry["layer"]
        assert all(list(top) == ["id", "piece", "prob"] for top in entry["top"])
        assert all(top["piece"] == files["vocab"].pieces[top["id"]] for top in entry["top"])
        probs = [top["prob"] for top in entry["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert [(h["layer"], h["head"]) for h in doc["heads"]] == [
        (layer, head) for layer in range(ARGS.n_layers) for head in range(ARGS.n_heads)]
    assert all(0 <= h["entropy_bits"] <= h["max_entropy_bits"] + 1e-9 for h in doc["heads"])


def test_json_heads_name_the_token_they_attend_to_most(traced, files):
    doc, ids, cache = traced
    n_tokens = len(ids)
    # Queries 1..T-1 see 2..T keys: the most spread-out rows average log2(2..T) bits.
    assert doc["heads"][0]["max_entropy_bits"] == pytest.approx(np.mean(np.log2(np.arange(2, n_tokens + 1))),
                                                                rel=1e-12)
    group = ARGS.n_heads // ARGS.n_kv_heads
    for h in doc["heads"]:
        assert h["block"] == h["layer"] and h["kv_head"] == h["head"] // group
        rows = cache[f"blocks.{h['block']}.attn.pattern"][h["head"], 1:].astype(np.float64)
        mean = rows.sum(axis=0) / (n_tokens - 1)
        key = h["top_key"]["position"]
        assert mean[key] == pytest.approx(mean.max(), rel=1e-12) and h["top_key"]["mean_weight"] == pytest.approx(
            mean.max(), rel=1e-12)
        assert h["top_key"]["id"] == ids[key] and h["top_key"]["piece"] == files["vocab"].pieces[ids[key]]


def test_json_attention_patterns_leave_out_the_mask(traced):
    doc, ids, cache = traced
    assert [a["block"] for a in doc["attention"]] == list(range(ARGS.n_layers))
    for entry in doc["attention"]:
        pattern = cache[f"blocks.{entry['block']}.attn.pattern"]
        assert len(entry["pattern"]) == ARGS.n_heads
        for head, rows in enumerate(entry["pattern"]):
            assert [len(row) for row in rows] == list(range(1, len(ids) + 1))
            for query, row in enumerate(rows):
                # Rounded to 4 decimals: half a step off at most.
                np.testing.assert_allclose(row, pattern[head, query, :query + 1], rtol=0, atol=5e-5 + 1e-12)


def test_json_vs_torch_agreement(traced, files):
    doc, ids, cache = traced
    points = {p["name"]: p["vs_torch"] for p in doc["points"]}
    assert points["embed"] == points["blocks.0.resid_pre"] == {"max_abs_diff": 0.0, "bit_identical": 1.0}
    worst = max(points, key=lambda name: points[name]["max_abs_diff"])
    assert points[worst]["max_abs_diff"] <= VS_TORCH_MAX_ABS_DIFF, worst
    # The bit-identical share counts the causal triangle only: the mask's -inf (scores) and 0
    # (pattern) above it are the same in every implementation and would count as agreement.
    _, torch_cache = torch_model(ARGS, files["weights"]).run_with_cache(ids)
    below = np.tril_indices(len(ids))
    for name in ("blocks.1.attn.scores", "blocks.1.attn.pattern"):
        ours, theirs = cache[name][:, *below], torch_cache[name].numpy()[:, *below]
        assert points[name]["bit_identical"] == np.mean(ours.view(np.uint32) == theirs.view(np.uint32)), name


def test_quantized_file_against_its_ckpt_shows_the_rounding(files):
    result = run_cli("trace", files["q8_0"], "--prompt", PROMPT, "--ckpt", files["ckpt"], "--json")
    assert result.returncode == 0, result.stderr
    embed = json.loads(result.stdout)["points"][0]
    # Q8_0 rounds each weight to 1/127 of its 32-block's max |w| (~3 std): half a step is ~0.006 std.
    assert embed["name"] == "embed" and 0 < embed["vs_torch"]["max_abs_diff"] < 0.01
    assert embed["vs_torch"]["bit_identical"] < 0.1


def test_table_without_torch(files):
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--position", "2", "--vs-float64", script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{files['f32']}: 2 blocks, dim 64, 4 heads (2 kv)")
    header = next(line for line in lines if line.startswith("point"))
    assert "max |Δ| f64" in header and "torch" not in header
    rows = [line.split()[0] for line in lines if line.startswith(("embed", "blocks.", "final_norm", "logits"))]
    assert rows[:3] == ["embed", "blocks.0.resid_pre", "blocks.0.attn_norm"] and rows[-1] == "logits"
    assert len(rows) == 1 + 18 * ARGS.n_layers + 2
    piece = files["vocab"].pieces[Tokenizer(files["vocab"]).encode(PROMPT)[2]]
    assert f"logit lens at position 2 ({piece!r})" in result.stdout
    assert sum(line.startswith("  block ") for line in lines) == ARGS.n_layers
    assert "attends most" in result.stdout


def png_size(path):
    """(width, height) from a PNG's IHDR, after checking the signature and that IHDR comes first."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", path         # complete: ends with IEND
    return struct.unpack(">II", data[16:24])


def test_plots_are_png_figures(files, tmp_path):
    out = tmp_path / "figures"
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--ckpt", files["ckpt"], "--plots", out)
    assert result.returncode == 0, result.stderr
    expected = [f"attention_block{i}.png" for i in range(ARGS.n_layers)]
    expected += ["logit_lens.png", "residual_norms.png", "torch_agreement.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert result.stderr == f"trace: wrote {len(expected)} figures to {out}: {', '.join(expected)}\n"
    for name in expected:
        width, height = png_size(out / name)
        assert width >= 400 and height >= 200, (name, width, height)


@pytest.mark.parametrize("case, message", [
    ("long_prompt", "--prompt: 25 tokens do not fit the model's 24-token context"),
    ("other_seed", "not this model's checkpoint: its tok_embeddings differ from MODEL's by 1.41"),
    ("other_shape", "not this model's checkpoint: hidden_dim 256, MODEL has 192"),
    ("no_matplotlib", "--plots needs matplotlib: pip install matplotlib"),
    ("top_k", "--top-k must be >= 1, got 0"),
    ("position", "--position 9 is outside the prompt's 9 tokens"),
])
def test_bad_requests_get_one_line_and_exit_2(files, tmp_path, case, message):
    base = ("trace", files["f32"], "--prompt", PROMPT)
    requests = {
        "long_prompt": (("trace", files["f32"], "--prompt", "fox" * 23), None),   # <s> ▁fo x fox fox ...
        "other_seed": ((*base, "--ckpt", files["other_seed"]), None),
        "other_shape": ((*base, "--ckpt", files["other_shape"]), None),
        "no_matplotlib": ((*base, "--plots", tmp_path / "p"), NO_MATPLOTLIB),
        "top_k": ((*base, "--top-k", "0"), NO_TORCH),
        "position": ((*base, "--position", "9"), NO_TORCH),
    }
    argv, script = requests[case]
    result = run_cli(*argv, script=script)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "p").exists()


def without_prefix(vocab):
    """Llama 2's vocabulary as if learned without the dummy prefix: each capitalized "▁Word" piece
    spelt "Word" (where that piece is not there already), as a line-initial word is learned then."""
    taken = set(vocab.pieces)
    pieces = [p[1:] if p[:1] == "\u2581" and p[1:].isalpha() and p[1:2].isupper() and p[1:] not in taken else p
              for p in vocab.pieces]
    return dataclasses.replace(vocab, pieces=pieces)


@pytest.mark.parametrize("case, warned", [
    ("gguf_with_prefix", False), ("gguf_without_prefix", True), ("bin_llama2_pieces", False),
    ("bin_pieces_without_prefix", True), ("gguf_own_tokenizer", False)])
def test_tokenizer_bin_on_a_vocabulary_without_the_dummy_prefix_warns(files, tmp_path, case, warned):
    vocab = files["vocab"]
    model, tokenizer_vocab = tmp_path / "m.gguf", vocab
    if case.startswith("gguf"):
        flagged = dataclasses.replace(vocab, add_space_prefix=case != "gguf_without_prefix")
        gguf.write(mapping.to_gguf(files["weights"], ARGS, flagged, dtype="f32"), model)
    else:
        model = tmp_path / "m.bin"
        llama2c.write(llama2c.Checkpoint(ARGS, files["weights"]), model, version=0)
        tokenizer_vocab = without_prefix(vocab) if case == "bin_pieces_without_prefix" else vocab
    tokenizer = tmp_path / "tokenizer.bin"
    llama2c.write_tokenizer(tokenizer_vocab, tokenizer)
    extra = () if case == "gguf_own_tokenizer" else ("--tokenizer", tokenizer)
    result = run_cli("trace", model, "--prompt", "ROMEO: Is the day so young?", "--json", *extra, script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    if not warned:
        assert result.stderr == ""
    else:
        why = "says its vocabulary adds no dummy prefix" if case.startswith("gguf") else "its pieces look trained"
        assert result.stderr.startswith(f"warning: --tokenizer {tokenizer}: a tokenizer.bin adds a '▁'")
        assert why in result.stderr and len(result.stderr.splitlines()) == 1
