"""`trace --html FILE` opened in a real headless Chromium with the network off: the page draws
without a console error, holds one panel per (block, head), opens a head's pattern on a click and
names the NumPy cache's weight under the mouse, and its logit lens shows what --json reports.

Needs Debian's chromium (`apt-get install -y chromium`, as .ci/run does) and playwright (in
[test]), which drives that browser: no browser is downloaded.
"""

import json
import os
import re

import numpy as np
import pytest
import torch

from formats import gguf, mapping
from formats.spec import ModelArgs
from formats.spm import read as read_spm
from reference.model import Llama
from reference.tokenizer import Tokenizer
from tests.support import cli
from tests.support.weights import wide_logit_weights
from trainer import checkpoint

CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, its network and every background service off, in a fresh profile.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Grouped-query attention (2 query heads per kv head), so the page's kv grouping is exercised.
ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32000, max_seq_len=24)
PROMPT = "Once upon a time, a fox"
# The page shows weights with 4 decimals, from --json's rounded to 4: within half a step.
SHOWN_WEIGHT_ATOL = 5e-5 + 1e-9


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Debian Chromium driven by playwright, offline, in a fresh profile."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium (as .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
            headless=True, offline=True, viewport={"width": 1300, "height": 900})
        yield context
        context.close()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("html")
    vocab = read_spm(shared_data / "llama2" / "tokenizer.model").vocab
    weights = wide_logit_weights(ARGS, seed=5)
    gguf.write(mapping.to_gguf(weights, ARGS, vocab, dtype="f32"), root / "m.gguf")
    checkpoint.save({"model": {name: torch.from_numpy(w) for name, w in weights.items()},
                     "model_args": ARGS.to_dict()}, root / "ckpt.pt")
    return {"root": root, "gguf": root / "m.gguf", "ckpt": root / "ckpt.pt", "weights": weights, "vocab": vocab}


def write_page(model_files, name, *extra):
    """trace --json --html on the model: (the --json document, the page's path)."""
    path = model_files["root"] / name
    result = cli.run_cli("trace", model_files["gguf"], "--prompt", PROMPT, "--json", "--html", path, *extra,
                             with_torch=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"trace: wrote {path}\n"
    return json.loads(result.stdout), path


def open_page(browser, path):
    """The page loaded and drawn; its console errors and every request that was not the file."""
    page = browser.new_page()
    errors, requests = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: None if request.url.startswith("file:") else requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, errors, requests


@pytest.fixture(scope="module")
def plain(model_files, browser):
    doc, path = write_page(model_files, "plain.html")
    page, errors, requests = open_page(browser, path)
    yield doc, path, page, errors, requests
    page.close()


def test_page_draws_offline_without_errors(plain):
    doc, path, page, errors, requests = plain
    assert errors == [] and requests == []
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|https?://(?!www\.w3\.org/2000/svg)", html)
    # The --json document, embedded once.
    assert html.count('id="trace-data"') == 1
    embedded = page.evaluate("JSON.parse(document.getElementById('trace-data').textContent)")
    assert embedded == doc


def test_one_panel_per_head_grouped_by_kv_head(plain):
    _, _, page, _, _ = plain
    panels = page.eval_on_selector_all(".head-panel", "ps => ps.map(p => [+p.dataset.block, +p.dataset.head])")
    assert panels == [[block, head] for block in range(ARGS.n_layers) for head in range(ARGS.n_heads)]
    groups = page.eval_on_selector_all(".kv-group", "gs => gs.map(g => g.querySelectorAll('.head-panel').length)")
    assert groups == [ARGS.n_heads // ARGS.n_kv_heads] * (ARGS.n_layers * ARGS.n_kv_heads)


def hover_cell(page, query, key):
    """Move the mouse over cell (query, key) of the open pattern; the tooltip's text."""
    detail = page.eval_on_selector("#detail", "d => ({...d.dataset})")
    box = page.locator("#detail-canvas").bounding_box()
    cell, left, top = float(detail["cell"]), float(detail["left"]), float(detail["top"])
    page.mouse.move(box["x"] + left + (key + 0.5) * cell, box["y"] + top + (query + 0.5) * cell)
    return page.inner_text("#tip")


def test_clicking_a_head_opens_its_pattern_and_hovering_names_the_weight(plain, model_files):
    doc, _, page, errors, _ = plain
    ids = Tokenizer(model_files["vocab"]).encode(PROMPT)
    _, cache = Llama(ARGS, model_files["weights"]).run_with_cache(ids)
    pieces = [t["piece"] for t in doc["tokens"]]
    n_tokens = len(ids)
    for block, head in [(1, 3), (0, 1)]:
        page.click(f'.head-panel[data-block="{block}"][data-head="{head}"]')
        assert page.eval_on_selector("#detail", "d => [d.hidden, +d.dataset.block, +d.dataset.head]") == [
            False, block, head]
        pattern = cache[f"blocks.{block}.attn.pattern"][head]
        for query, key in [(n_tokens - 1, 0), (n_tokens - 1, n_tokens - 1), (4, 2), (4, 3)]:
            text = hover_cell(page, query, key)
            assert f"query '{pieces[query]}' ({query}) → key '{pieces[key]}' ({key})" in text, text
            shown = float(re.search(r"weight ([0-9.]+)", text).group(1))
            assert shown == pytest.approx(float(pattern[query, key]), abs=SHOWN_WEIGHT_ATOL), (block, head, query, key)
        assert "masked" in hover_cell(page, 2, 5)
    assert errors == []


def test_lens_cells_show_the_tokens_json_reports(plain):
    doc, _, page, _, _ = plain
    cells = page.eval_on_selector_all(
        ".lens-cell", "cs => cs.map(c => [+c.dataset.block, +c.dataset.pos, c.querySelector('.t').textContent])")
    assert cells == [[e["block"], e["position"], json.dumps(e["top"][0]["piece"], ensure_ascii=False)[1:-1]]
                     for e in doc["logit_lens"]]
    entry = doc["logit_lens"][-1]
    page.hover(f'.lens-cell[data-block="{entry["block"]}"][data-pos="{entry["position"]}"]')
    tip = page.inner_text("#tip").splitlines()
    assert [line.split()[0] for line in tip[1:]] == [f"{t['prob']:.4f}" for t in entry["top"]]


def test_selecting_a_token_selects_that_position_everywhere(plain):
    _, _, page, _, _ = plain
    page.click('.tok[data-pos="3"]')
    assert page.eval_on_selector_all(".tok.selected", "ts => ts.map(t => +t.dataset.pos)") == [3]
    assert set(page.eval_on_selector_all(".lens-cell.selected", "cs => cs.map(c => +c.dataset.pos)")) == {3}
    assert page.eval_on_selector_all("svg .line.selected", "ls => ls.map(l => +l.dataset.pos)") == [3]
    captions = page.eval_on_selector_all(".head-panel .caption", "cs => cs.map(c => c.textContent)")
    assert all("q3→" in caption for caption in captions)


def test_sections_only_for_the_options_given(plain, model_files, browser):
    _, _, page, _, _ = plain
    assert page.eval_on_selector("#agreement", "s => s.hidden") is True
    doc, path = write_page(model_files, "ckpt.html", "--ckpt", model_files["ckpt"])
    with_ckpt, errors, _ = open_page(browser, path)
    assert with_ckpt.eval_on_selector("#agreement", "s => s.hidden") is False
    rows = with_ckpt.eval_on_selector_all("#agreement-table tr", "rs => rs.length")
    assert rows == 1 + len(doc["points"]) and errors == []
    with_ckpt.close()


def test_a_prompt_cannot_close_the_script(model_files, browser):
    prompt = "a </script><script>document.body.dataset.ready = 'x'</script> <!-- b"
    result = cli.run_cli("trace", model_files["gguf"], "--prompt", prompt, "--html", model_files["root"] / "esc.html")
    assert result.returncode == 0, result.stderr
    page, errors, _ = open_page(browser, model_files["root"] / "esc.html")
    assert errors == [] and page.inner_text("#model .prompt-text") == prompt
    page.close()


def test_experiment_sections_show_what_json_reports(model_files, browser):
    doc, path = write_page(model_files, "experiments.html", "--attribute", "▁time", "--ablate", "1.0",
                           "--patch", "Once upon a time, a wolf", "--grads")
    page, errors, _ = open_page(browser, path)
    assert errors == []
    hidden = page.eval_on_selector_all("section", "ss => Object.fromEntries(ss.map(s => [s.id, s.hidden]))")
    assert hidden == {"prompt": False, "attention": False, "lens": False, "residual": False, "attribution": False,
                      "ablation": False, "patching": False, "grads": False, "agreement": True}
    parts = page.eval_on_selector_all("#attribution-table tr", "rs => rs.map(r => [r.dataset.part, r.cells[1].textContent])")
    assert parts == [[name, f"{value:+.4f}"] for name, value in doc["attribution"]["parts"].items()]
    cells = page.eval_on_selector_all("#patching-table td", "cs => cs.map(c => [c.dataset.point, +c.dataset.pos, c.textContent])")
    recovered = doc["patching"]["recovered"]
    assert cells and all(text == f"{recovered[name][pos]:.2f}" for name, pos, text in cells)
    for table, key in (("#grads-weights", "weights"), ("#grads-points", "points")):
        shown = page.eval_on_selector_all(f"{table} tr[data-name]", "rs => rs.map(r => [r.dataset.name, r.cells[1].textContent])")
        assert [name for name, _ in shown] == list(doc["grads"][key])
        assert all(float(text) == pytest.approx(doc["grads"][key][name], rel=5e-3) for name, text in shown)   # 3 digits
    page.close()


@pytest.mark.parametrize("how, says", [("zero", "with their output z set to 0:"),
                                       ("mean", "with each one's output z set to its mean over the prompt's")])
def test_ablation_hint_says_what_replaced_z(model_files, browser, how, says):
    doc, path = write_page(model_files, f"ablate-{how}.html", "--ablate", "1.0", "--ablate-with", how)
    page, errors, _ = open_page(browser, path)
    assert errors == [] and doc["ablation"]["how"] == how
    assert says in page.inner_text("#ablation-hint")
    page.close()


@pytest.mark.parametrize("case", ["no_folder", "a_folder", "long_prompt"])
def test_bad_requests_write_nothing(model_files, tmp_path, case):
    # Root writes into any folder whatever its mode, so "unwritable" is a folder that is not there,
    # or a FILE that is a folder.
    target = {"no_folder": tmp_path / "missing" / "page.html", "a_folder": tmp_path,
              "long_prompt": tmp_path / "page.html"}[case]
    prompt = "fox" * 23 if case == "long_prompt" else PROMPT         # 25 tokens, the context holds 24
    result = cli.run_cli("trace", model_files["gguf"], "--prompt", prompt, "--html", target)
    assert result.returncode == 2 and result.stdout == "" and len(result.stderr.splitlines()) == 1, result
    assert ("--prompt: 25 tokens" if case == "long_prompt" else f"--html {target}: cannot write") in result.stderr
    assert os.listdir(tmp_path) == []
