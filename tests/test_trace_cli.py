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
from tests.support import cli
from tests.support.cli import NO_TORCH
from llama2_scratch import trace_experiments
from models import open_model, tokenizers
from reference import study, training
from reference.cache import points
from tests.support.weights import wide_logit_weights
from trainer import checkpoint

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32000, max_seq_len=24)
PROMPT = "Once upon a time, a fox"
CORRUPTED = "Once upon a time, a wolf"       # as many tokens as PROMPT, another next token
# The CLI where `import matplotlib` fails (tests.support.cli.NO_TORCH blocks torch the same way).
NO_MATPLOTLIB = NO_TORCH.replace("'torch'", "'matplotlib'")
# trace's vs_torch on an f32 export of the ckpt: tests/test_study.py's TORCH_FLOAT32_RTOL (1e-5,
# relative to a point's max |x|, measured 2.9e-6 at most) times the largest max |x| here (the
# logits, < 10).
VS_TORCH_MAX_ABS_DIFF = 1e-4


def run_cli(*args, script=None):
    """The CLI with torch (`script` None), or `python -c script ARGS` (NO_TORCH, NO_MATPLOTLIB)."""
    return cli.run_cli(*args, with_torch=True) if script is None else cli.run_python("-c", script, *args)


def save_ckpt(weights, args, path):
    checkpoint.save({"model": {name: torch.from_numpy(w) for name, w in weights.items()},
                     "model_args": args.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data):
    """An f32 and a q8_0 GGUF of one random model, its ckpt.pt, and two ckpts of other models."""
    root = tmp_path_factory.mktemp("trace")
    vocab = read_spm(shared_data / "llama2" / "tokenizer.model").vocab
    weights = wide_logit_weights(ARGS, seed=3)
    paths = {"f32": root / "m.gguf", "q8_0": root / "m-q8.gguf"}
    for dtype, path in paths.items():
        gguf.write(mapping.to_gguf(weights, ARGS, vocab, dtype=dtype), path)
    paths["ckpt"] = save_ckpt(weights, ARGS, root / "ckpt.pt")
    paths["other_seed"] = save_ckpt(wide_logit_weights(ARGS, seed=4), ARGS, root / "other.pt")
    wider = ModelArgs(**{**ARGS.to_dict(), "hidden_dim": 256})
    paths["other_shape"] = save_ckpt(wide_logit_weights(wider, seed=3), wider, root / "wider.pt")
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
    # torch's values as the CLI's own process computed them: its bits depend on the thread count,
    # which other tests in this process may have changed.
    names = ("blocks.1.attn.scores", "blocks.1.attn.pattern")
    saved = files["f32"].with_suffix(".torch.npz")
    script = ("import sys, numpy as np; from models import open_model; "
              "from llama2_scratch.trace_cmd import _torch_cache; "
              "c = _torch_cache(sys.argv[2], open_model(sys.argv[1]).model(), [int(i) for i in sys.argv[5:]]); "
              "np.savez(sys.argv[3], *(c[n] for n in sys.argv[4].split(',')))")
    result = cli.run_python("-c", script, files["f32"], files["ckpt"], saved, ",".join(names), *ids)
    assert result.returncode == 0, result.stderr
    torch_values = np.load(saved)
    below = np.tril_indices(len(ids))
    for i, name in enumerate(names):
        ours, theirs = cache[name][:, *below], torch_values[f"arr_{i}"][:, *below]
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
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--ckpt", files["ckpt"], "--patch", CORRUPTED,
                     "--plots", out)
    assert result.returncode == 0, result.stderr
    expected = [f"attention_block{i}.png" for i in range(ARGS.n_layers)]
    expected += ["logit_lens.png", "residual_norms.png", "torch_agreement.png", "patching.png"]
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


@pytest.fixture(scope="module")
def experiments(files):
    """trace --json with --attribute, --ablate and --patch, and the NumPy model in-process."""
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--attribute", "▁time", "--ablate", "1.0,0.3",
                     "--patch", CORRUPTED, "--position", "5", "--json", script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), Llama(ARGS, files["weights"]), Tokenizer(files["vocab"])


def test_attribute_splits_the_logit_as_study_does(experiments, files):
    doc, model, tokenizer = experiments
    ids = tokenizer.encode(PROMPT)
    logits, cache = model.run_with_cache(ids)
    token = files["vocab"].pieces.index("▁time")
    entry = doc["attribution"]
    assert entry["position"] == 5 and entry["token"] == {"id": token, "piece": "▁time"}
    # In-process and in the CLI BLAS may sum the float64 products in another order: measured 1.5e-13
    # relative apart; 1e-9 is far below any part that matters and far above that.
    parts = study.logit_attribution(model, cache, 5, token)
    assert list(entry["parts"]) == list(parts)
    np.testing.assert_allclose(list(entry["parts"].values()), list(parts.values()), rtol=1e-9, atol=1e-12)
    assert entry["logit"] == float(logits[5, token])
    # The parts are summed in float64, the logit computed in float32: a few float32 ulps of a logit < 10.
    assert entry["sum_of_parts"] == pytest.approx(entry["logit"], abs=1e-5)


@pytest.mark.parametrize("spelling", ["▁upon", "id", "upon"])
def test_attribute_takes_a_piece_an_id_or_one_token_of_text(files, spelling):
    # "upon" is no piece of Llama 2's vocabulary; with the dummy prefix it encodes to "▁upon".
    token = files["vocab"].pieces.index("▁upon")
    spelling = str(token) if spelling == "id" else spelling
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--attribute", spelling, "--json", script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["attribution"]["token"] == {"id": token, "piece": "▁upon"}


def test_ablate_moves_the_next_token_as_study_says(experiments):
    doc, model, tokenizer = experiments
    ids = tokenizer.encode(PROMPT)
    entry = doc["ablation"]
    assert entry["heads"] == [[1, 0], [0, 3]] and entry["position"] == 5
    before = np.exp(np.float64(model.run_with_hooks(ids, {})[5]) - np.max(model.run_with_hooks(ids, {})[5]))
    before /= before.sum()
    after_logits = np.float64(study.ablate_heads(model, ids, [(1, 0), (0, 3)])[5])
    after = np.exp(after_logits - after_logits.max())
    after /= after.sum()
    top = np.argsort(-after, kind="stable")[:5]
    assert [t["id"] for t in entry["after"]] == top.tolist()
    # float32 logits, the CLI's and this process's BLAS: within a few ulps.
    np.testing.assert_allclose([t["prob"] for t in entry["after"]], after[top], rtol=1e-5)
    assert entry["kl_bits"] == pytest.approx(np.sum(before * np.log2(before / after)), rel=1e-4)
    assert entry["kl_bits"] > 0
    assert entry["how"] == "zero"                   # without --ablate-with


@pytest.fixture(scope="module")
def mean_ablated(files):
    """trace --json --ablate-with mean on the heads and position of `experiments`."""
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--ablate", "1.0,0.3", "--ablate-with", "mean",
                     "--position", "5", "--json", script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["ablation"]


def softmax64(logits):
    probs = np.exp(np.float64(logits) - np.max(logits))
    return probs / probs.sum()


def test_ablate_with_mean_reports_study_mean_ablation(mean_ablated, files):
    # The CLI's own model: the f32 GGUF opened as trace opens it (its norm_eps is stored as float32).
    model = open_model(files["f32"]).model()
    ids = Tokenizer(files["vocab"]).encode(PROMPT)
    before = softmax64(model.run_with_hooks(ids, {})[5])
    after = softmax64(study.ablate_heads(model, ids, [(1, 0), (0, 3)], how="mean")[5])
    top = np.argsort(-after, kind="stable")[:5]
    assert mean_ablated["how"] == "mean" and mean_ablated["heads"] == [[1, 0], [0, 3]]
    assert mean_ablated["position"] == 5 and [t["id"] for t in mean_ablated["after"]] == top.tolist()
    assert [t["id"] for t in mean_ablated["before"]] == np.argsort(-before, kind="stable")[:5].tolist()
    # One code path (ablate_heads on the same float32 weights) in two processes: measured bit-identical.
    # Only BLAS summing float32 products in another order could part them, by a few ulps of logits
    # < 10, which moves a probability by < 1e-5 relative (the KL by < 1e-4, as for zero ablation).
    np.testing.assert_allclose([t["prob"] for t in mean_ablated["after"]], after[top], rtol=1e-5)
    assert mean_ablated["after_of_top_before"] == pytest.approx(after[np.argmax(before)], rel=1e-5)
    assert mean_ablated["kl_bits"] == pytest.approx(np.sum(before * np.log2(before / after)), rel=1e-4)


def test_ablate_with_mean_is_not_zero_ablation(mean_ablated, experiments):
    zeroed = experiments[0]["ablation"]
    assert (zeroed["heads"], zeroed["position"]) == (mean_ablated["heads"], mean_ablated["position"])
    assert zeroed["before"] == mean_ablated["before"]
    # On this model the two move the next token apart: other top tokens, KL 2.79 and 1.13 bits.
    assert [t["id"] for t in zeroed["after"]] != [t["id"] for t in mean_ablated["after"]]
    assert abs(zeroed["kl_bits"] - mean_ablated["kl_bits"]) > 0.5


def test_ablate_with_mean_prints_what_the_mean_is_over(files):
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--ablate", "1.0", "--ablate-with", "mean",
                     script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    assert "ablation of heads 1.0 (each one's z set to its mean over the prompt's 9 positions)" in result.stdout


def test_patch_reports_study_patching(experiments):
    doc, model, tokenizer = experiments
    ids, corrupted = tokenizer.encode(PROMPT), tokenizer.encode(CORRUPTED)
    entry = doc["patching"]
    top = int(np.argmax(model.run_with_hooks(ids, {})[-1]))
    other = int(np.argmax(model.run_with_hooks(corrupted, {})[-1]))
    assert (entry["metric"]["token"]["id"], entry["metric"]["other"]["id"]) == (top, other) and top != other
    expected = study.patch_activations(model, ids, corrupted, study.logit_difference(top, other))
    # float32 logits from another process's BLAS may differ in the last ulps (1e-6 of a logit < 10);
    # a share recovered divides by clean - corrupted (> 1 here), so 1e-5 absolute holds either way.
    np.testing.assert_allclose([entry["clean"], entry["corrupted"]], [expected.clean, expected.corrupted], atol=1e-5)
    assert abs(expected.clean - expected.corrupted) > 1
    recovered = expected.recovered()
    assert list(entry["recovered"]) == list(recovered)
    for name, value in recovered.items():
        np.testing.assert_allclose(entry["recovered"][name], value, rtol=0, atol=1e-5, err_msg=name)


def test_experiments_print_their_tables(files):
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--attribute", "▁time", "--ablate", "1.0",
                     "--patch", CORRUPTED, script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    n_parts = 1 + ARGS.n_layers * (ARGS.n_heads + 1)
    token, last = files["vocab"].pieces.index("▁time"), len(Tokenizer(files["vocab"]).encode(PROMPT)) - 1
    assert f"attribution of the logit of '▁time' (id {token}) at position {last} ('x'): " in out
    assert f"the {n_parts} parts sum to" in out and "blocks.1.mlp_out" in out
    assert "ablation of heads 1.0 (their z set to 0)" in out and "KL(before ‖ after)" in out
    assert f"patching from {CORRUPTED!r}" in out and "every other point, whole:" in out


@pytest.mark.parametrize("flags, message", [
    (("--ablate", "1-2"), "--ablate '1-2': '1-2' is not BLOCK.HEAD"),
    (("--ablate", "0.1,2.0"), "--ablate 2.0: the model has 2 blocks of 4 heads"),
    (("--ablate", "0.4"), "--ablate 0.4: the model has 2 blocks of 4 heads"),
    (("--ablate-with", "mean"), "--ablate-with mean: needs --ablate L.H[,L.H...], the heads to ablate"),
    (("--ablate", "1.0", "--ablate-with", "median"), "argument --ablate-with: invalid choice: 'median'"),
    (("--attribute", "no such token"), "--attribute 'no such token': not a piece of the vocabulary"),
    (("--attribute", "32000"), "--attribute 32000: the vocabulary has ids 0..31999"),
    (("--patch", "Once upon a time"), "--patch: the corrupted prompt has 5 tokens and the prompt 9"),
    (("--patch", PROMPT), "--patch: both prompts predict"),
    (("--attribute", "▁time", "--position", "-10"), "--position -10 is outside the prompt's 9 tokens"),
])
def test_bad_experiments_get_one_line_exit_2_and_write_nothing(files, tmp_path, flags, message):
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, *flags, "--html", tmp_path / "page.html",
                     "--plots", tmp_path / "figures", script=NO_TORCH)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def next_token_loss(logits, ids):
    """The mean cross-entropy of each token after the first given the ones before (float64)."""
    logits = np.asarray(logits[:-1], dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(ids) - 1), ids[1:]])


def test_grads_of_every_weight_and_every_point(files):
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--grads", "--json")
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["grads"]
    ids = Tokenizer(files["vocab"]).encode(PROMPT)
    model = Llama(ARGS, files["weights"])
    loss, grads = training.loss_and_grads(model, np.asarray([ids]), np.asarray([ids[1:] + [-1]]))
    # Another process's BLAS may sum float32 products in another order: a few ulps apart.
    assert entry["loss"] == pytest.approx(loss, rel=1e-6) and entry["n_targets"] == len(ids) - 1
    assert list(entry["weights"]) == list(grads)
    for name, grad in grads.items():
        assert entry["weights"][name] == pytest.approx(np.sqrt(np.mean(np.float64(grad) ** 2)), rel=1e-5), name
    # torch's autograd and NumPy's backward pass, both float32: measured 2e-6 of the largest gradient.
    assert max(entry["vs_torch"].values()) < 1e-4
    # Every point's gradient against central differences of the float64 NumPy model along a random
    # direction: float32 gradients, so 1e-3 relative (measured 7.7e-6 at worst); eps 1e-4 leaves a
    # truncation error near eps² and a rounding error near 1e-16 / eps, both far below that.
    _, point_grads = trace_experiments._torch_point_gradients(ARGS, files["weights"], ids, torch)
    assert list(point_grads) == [p["name"] for p in json.loads(result.stdout)["points"]] == list(entry["points"])
    model64, rng, eps = Llama(ARGS, files["weights"], np.float64), np.random.default_rng(0), 1e-4
    for name, grad in point_grads.items():
        finite = np.where(np.isfinite(grad), grad, 0.0)
        assert entry["points"][name] == pytest.approx(np.sqrt(np.mean(np.float64(finite) ** 2)), rel=1e-5), name
        direction = rng.standard_normal(grad.shape)

        def nudged(sign):
            return next_token_loss(model64.run_with_hooks(ids, {name: lambda v, _: v + sign * eps * direction}), ids)

        slope = (nudged(1) - nudged(-1)) / (2 * eps)
        assert np.sum(finite * direction) == pytest.approx(slope, rel=1e-3, abs=1e-7), name


def test_grads_need_two_tokens(files, tmp_path):
    result = run_cli("trace", files["f32"], "--prompt", "", "--grads", "--html", tmp_path / "p.html", script=NO_TORCH)
    assert result.returncode == 2 and result.stdout == "" and list(tmp_path.iterdir()) == []
    assert result.stderr.splitlines() == [
        "llama2-scratch: error: --grads: a prompt of 1 token has no next token to predict, so no loss to differentiate"]


def test_grads_without_torch_gives_the_weights(files):
    result = run_cli("trace", files["f32"], "--prompt", PROMPT, "--grads", script=NO_TORCH)
    assert result.returncode == 0, result.stderr
    assert "gradients at the named points need torch" in result.stdout
    assert "layers.1.feed_forward.w3.weight" in result.stdout


def test_too_few_capitalized_pieces_say_nothing():
    # Every capitalized piece bare would read as "trained without the prefix", but 19 pieces are
    # too few to tell (a 512-piece vocabulary without the prefix has 8; Thai has little case).
    bare = [f"Word{chr(97 + i)}" for i in range(tokenizers.MIN_CAPITALIZED_PIECES - 1)]
    assert not tokenizers.looks_trained_without_prefix(bare + ["▁the", "abc"])
    assert tokenizers.looks_trained_without_prefix(bare + ["Wordz"])
