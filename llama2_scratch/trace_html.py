"""`trace --html FILE`: one self-contained HTML page of a traced forward pass.

The page is trace's --json document embedded once (a <script type="application/json">) and the
style and script below, inline: opening it makes no request to any network, so it works offline
and in a mail attachment. The script draws, from that document alone:

    the prompt          a strip of tokens (piece, id, position); clicking one selects that query
                        position in every section
    attention           per block, every head's pattern as a small canvas, the query heads that
                        share a kv head in one group, each with its entropy against log2(n) and
                        the key it weights most; clicking a head opens its T×T pattern with token
                        labels on both axes, and hovering a cell names query, key and weight
    logit lens          blocks × positions, the top next token and its probability, shaded by it;
                        hovering a cell lists the top --top-k
    residual stream     the RMS of every position's residual stream through the blocks
    attribution         only with --attribute: the logit split into embed, heads and MLPs, as bars
    ablation            only with --ablate: the next token before and after
    patching            only with --patch: the share recovered per point, the residual stream per
                        position, shaded red (worse) to blue (restored)
    gradients           only with --grads: gradient RMS per weight and (with torch) per point
    torch agreement     only with --ckpt: max |Δ| and the bit-identical share of every point

Canvases are filled pixel by pixel (one pixel per attention weight, scaled up without
smoothing): a 256-token prompt's 65,536 cells per head would be as many SVG elements.
"""

import json
import os

from formats.atomic import atomic_write


def check_writable(path):
    """A ValueError naming --html when `path`'s folder does not exist or cannot be written, so the
    forward pass is not run for nothing."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"--html {path}: cannot write there (the folder must exist and be writable)")


def page(report):
    """The HTML text of the page for `report` (trace's --json document)."""
    # "<" escaped so no piece can close the script element ("</script>") or open a comment.
    data = json.dumps(report, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    title = f"trace: {os.path.basename(report['model']['file'])}"
    return (PAGE.replace("@TITLE@", _escape(title)).replace("@STYLE@", STYLE)
            .replace("@SCRIPT@", SCRIPT).replace("@DATA@", data))


def write_page(path, report):
    """Write the page for `report` to `path`, whole or not at all (formats/atomic.py)."""
    with atomic_write(path) as f:
        f.write(page(report).encode("utf-8"))


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>@TITLE@</title>
<style>@STYLE@</style>
</head>
<body>
<header id="model"></header>
<section id="prompt"><h2>Prompt</h2><p class="hint">Click a token to follow that position (as the query) through every section.</p><div id="tokens"></div></section>
<section id="attention"><h2>Attention</h2><p class="hint" id="attention-hint"></p><div id="blocks"></div>
<div id="detail" hidden><h3 id="detail-title"></h3><p class="hint">Rows: queries; columns: keys. Grey: masked future keys. Shade: √weight. Hover a cell; click one to select its query.</p><div id="detail-wrap"><canvas id="detail-canvas"></canvas></div></div></section>
<section id="lens"><h2>Logit lens</h2><p class="hint">The next token read from each block's residual stream (final norm, then the output layer): the top token and its probability, shaded by it. Hover a cell for the top tokens.</p><div class="scroll"><table id="lens-table"></table></div></section>
<section id="residual"><h2>Residual stream RMS</h2><p class="hint">One line per position, through embed and each block's attention (a) and MLP (m). The selected position is drawn dark.</p><div id="residual-plot"></div></section>
<section id="attribution" hidden><h2>Attribution (--attribute)</h2><p class="hint" id="attribution-hint"></p><table id="attribution-table" class="grid"></table></section>
<section id="ablation" hidden><h2>Ablation (--ablate)</h2><p class="hint" id="ablation-hint"></p><table id="ablation-table" class="grid"></table></section>
<section id="patching" hidden><h2>Activation patching (--patch)</h2><p class="hint" id="patching-hint"></p><div class="scroll"><table id="patching-table" class="grid"></table></div><h3>Every other point, patched whole (all positions at once)</h3><div class="scroll"><table id="patching-points" class="grid"></table></div></section>
<section id="grads" hidden><h2>Gradients (--grads)</h2><p class="hint" id="grads-hint"></p><div class="groups"><div class="scroll"><table id="grads-weights" class="grid"></table></div><div class="scroll"><table id="grads-points" class="grid"></table></div></div></section>
<section id="agreement" hidden><h2>NumPy against torch (--ckpt)</h2><p class="hint">Every point: max |Δ| and the share of bit-identical values (the causal mask left out).</p><div class="scroll"><table id="agreement-table"></table></div></section>
<div id="tip" hidden></div>
<script type="application/json" id="trace-data">@DATA@</script>
<script>@SCRIPT@</script>
</body>
</html>
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #111; background: #fff; }
h1 { font-size: 1.4em; margin: 0.2em 0; } h2 { font-size: 1.2em; margin: 1.4em 0 0.3em; }
h3 { font-size: 1.05em; margin: 0.8em 0 0.3em; }
.hint { color: #555; margin: 0.2em 0 0.6em; }
#model table { border-collapse: collapse; } #model td { padding: 1px 10px 1px 0; }
#model .prompt-text { font-family: ui-monospace, monospace; background: #f4f4f4; padding: 2px 6px; white-space: pre-wrap; display: block; max-height: 7.5em; overflow: auto; }
#tokens { display: flex; flex-wrap: wrap; gap: 4px; max-height: 16em; overflow: auto; }
.tok { border: 1px solid #bbb; border-radius: 4px; padding: 2px 6px; cursor: pointer; text-align: center; background: #fafafa; }
.tok .piece { font-family: ui-monospace, monospace; white-space: pre; display: block; }
.tok .meta { color: #666; font-size: 12px; display: block; }
.tok.selected { background: #08306b; color: #fff; border-color: #08306b; } .tok.selected .meta { color: #ddd; }
.block { margin: 0.4em 0 1em; }
.groups { display: flex; flex-wrap: wrap; gap: 10px; }
.kv-group { border: 1px solid #ccd; border-radius: 6px; padding: 4px 6px; }
.kv-group > .label { font-size: 12px; color: #555; }
.panels { display: flex; gap: 6px; flex-wrap: wrap; }
.head-panel { cursor: pointer; border: 2px solid transparent; border-radius: 4px; padding: 2px; width: 136px; }
.head-panel.open { border-color: #d94801; }
.head-panel canvas { width: 108px; height: 108px; image-rendering: pixelated; display: block; border: 1px solid #ddd; }
.head-panel .caption { font-size: 12px; line-height: 1.3; }
.head-panel .caption .piece { font-family: ui-monospace, monospace; white-space: pre; }
.head-panel .caption > * { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#detail-wrap { overflow: auto; max-height: 90vh; }
#detail-canvas { display: block; }
.scroll { overflow-x: auto; }
table.grid { border-collapse: collapse; font-size: 12px; }
table.grid th { font-weight: normal; color: #333; padding: 2px 4px; white-space: pre; font-family: ui-monospace, monospace; }
table.grid td { padding: 2px 4px; text-align: center; white-space: pre; font-family: ui-monospace, monospace; min-width: 3.5em; }
.lens-cell .p { display: block; font-size: 11px; }
.lens-cell.selected, table.grid th.selected { outline: 2px solid #d94801; outline-offset: -2px; }
#agreement-table td, #agreement-table th { text-align: right; }
.bar { height: 10px; }
#agreement-table td:first-child { text-align: left; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 4px 8px; border-radius: 4px; font-size: 13px; white-space: pre; z-index: 10; font-family: ui-monospace, monospace; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
svg .line { fill: none; stroke-width: 1.2; opacity: 0.45; }
svg .line.selected { stroke: #d94801 !important; stroke-width: 3; opacity: 1; }
svg .mean { fill: none; stroke: #000; stroke-width: 2.5; }
"""

SCRIPT = r"""
"use strict";
const doc = JSON.parse(document.getElementById("trace-data").textContent);
const T = doc.tokens.length, args = doc.model.args, L = args.n_layers, H = args.n_heads, KV = args.n_kv_heads;
const GROUP = H / KV;
let selected = T - 1;               // the query position every section follows
let open = null;                    // {block, head} shown in the detail view
const tip = document.getElementById("tip");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}
const show = piece => JSON.stringify(piece).slice(1, -1);     // control characters visible
function showTip(event, text) {
  if (!text) return hideTip();
  tip.textContent = text; tip.hidden = false;
  tip.style.left = (event.clientX + 14) + "px"; tip.style.top = (event.clientY + 14) + "px";
}
function hideTip() { tip.hidden = true; }
function attach(node, text) {
  node.addEventListener("mousemove", e => showTip(e, typeof text === "function" ? text(e) : text));
  node.addEventListener("mouseleave", hideTip);
}
// Weight 0 white to 1 dark blue (matplotlib's "Blues" ends); masked keys grey.
function blue(w) { return [247 + (8 - 247) * w, 251 + (48 - 251) * w, 255 + (107 - 255) * w]; }
const weight = (block, head, q, k) => k <= q ? doc.attention[block].pattern[head][q][k] : null;

function header() {
  const m = doc.model, a = m.args;
  const rows = [["file", m.file], ["kind", `${m.kind}, weights stored as ${m.stored.join(", ")}; run in NumPy ${m.dtype}`],
    ["model", `${a.n_layers} blocks, dim ${a.dim}, ${a.n_heads} heads (${a.n_kv_heads} kv, head dim ${a.dim / a.n_heads}), hidden ${a.hidden_dim}, vocab ${a.vocab_size}, context ${a.max_seq_len}`],
    ["arguments", Object.entries(a).map(([k, v]) => `${k}=${typeof v === "number" ? Number(v.toPrecision(6)) : v}`).join("  ")]];
  const table = el("table");
  for (const [k, v] of rows) table.append(el("tr", {}, el("td", {}, k), el("td", {}, String(v))));
  table.append(el("tr", {}, el("td", {}, "prompt"), el("td", {}, el("span", {class: "prompt-text"}, doc.prompt))));
  document.getElementById("model").append(el("h1", {}, "trace of one forward pass"), table);
}

function tokens() {
  const strip = document.getElementById("tokens");
  doc.tokens.forEach((t, pos) => {
    const node = el("div", {class: "tok", "data-pos": pos}, el("span", {class: "piece"}, show(t.piece)),
                    el("span", {class: "meta"}, `${pos} · id ${t.id}`));
    node.addEventListener("click", () => select(pos));
    strip.append(node);
  });
}

function paint(canvas, block, head) {
  canvas.width = T; canvas.height = T;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(T, T);
  for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) {
    const w = weight(block, head, q, k), at = 4 * (q * T + k);
    const [r, g, b] = w === null ? [218, 218, 218] : blue(Math.sqrt(w));
    image.data[at] = r; image.data[at + 1] = g; image.data[at + 2] = b; image.data[at + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

function argmaxKey(block, head, q) {
  const row = doc.attention[block].pattern[head][q];
  let best = 0;
  for (let k = 1; k < row.length; k++) if (row[k] > row[best]) best = k;
  return best;
}

function attention() {
  document.getElementById("attention-hint").textContent =
    `Each small square is one head's pattern (rows: queries, columns: keys). ${GROUP > 1 ? `Heads in one box share a kv head (${GROUP} query heads per kv head). ` : ""}` +
    "Shade: the square root of the weight, so that weak, spread-out weights still show. " +
    "Below each: its entropy against log2(n), the most it could be; the key it weights most on average; and where the selected query looks. Click a head to open it.";
  const root = document.getElementById("blocks");
  const heads = {};
  for (const h of doc.heads) heads[`${h.block}.${h.head}`] = h;
  for (let block = 0; block < L; block++) {
    const groups = el("div", {class: "groups"});
    for (let kv = 0; kv < KV; kv++) {
      const panels = el("div", {class: "panels"});
      for (let head = kv * GROUP; head < (kv + 1) * GROUP; head++) {
        const h = heads[`${block}.${head}`];
        const caption = el("div", {class: "caption"});
        const panel = el("div", {class: "head-panel", "data-block": block, "data-head": head}, el("canvas"), caption);
        panel.addEventListener("click", () => openHead(block, head));
        attach(panel, `block ${block} head ${head} (kv ${kv}): click to open`);
        panels.append(panel);
      }
      // Without grouped-query attention every head has its own kv head: no box to draw.
      groups.append(GROUP > 1 ? el("div", {class: "kv-group"}, el("div", {class: "label"}, `kv head ${kv}`), panels) : panels);
    }
    root.append(el("div", {class: "block"}, el("h3", {}, `block ${block}`), groups));
  }
}

function captions() {
  for (const h of doc.heads) {
    const panel = document.querySelector(`.head-panel[data-block="${h.block}"][data-head="${h.head}"]`);
    if (!panel.dataset.painted) { paint(panel.querySelector("canvas"), h.block, h.head); panel.dataset.painted = "1"; }
    const k = argmaxKey(h.block, h.head, selected), w = weight(h.block, h.head, selected, k);
    const caption = panel.querySelector(".caption");
    caption.replaceChildren(
      el("b", {}, `head ${h.head}`),
      el("div", {title: "mean entropy of its rows / log2(n), the most it could be"}, `${h.entropy_bits.toFixed(2)} / ${h.max_entropy_bits.toFixed(2)} bits`),
      el("div", {}, "most ", el("span", {class: "piece"}, `'${show(h.top_key.piece)}'`), ` @${h.top_key.position}`),
      el("div", {}, `q${selected}→`, el("span", {class: "piece"}, `'${show(doc.tokens[k].piece)}'`), `@${k} ${w.toFixed(2)}`));
  }
}

// The detail view: cell size from the prompt length, labels of both axes drawn beside the cells.
const LABEL_FONT = 12;
function detailGeometry() {
  const cell = Math.max(4, Math.min(28, Math.floor(720 / T)));
  const labelled = cell >= LABEL_FONT;     // a label per row and column only where one fits
  const longest = Math.max(...doc.tokens.map(t => show(t.piece).length)) + 5;
  const margin = labelled ? Math.min(160, 8 + longest * 7.5) : 40;
  return {cell, labelled, left: margin, top: margin};
}

function drawDetail() {
  if (!open) return;
  const {block, head} = open, g = detailGeometry(), size = g.cell * T;
  const canvas = document.getElementById("detail-canvas");
  const scale = window.devicePixelRatio || 1;
  canvas.style.width = (g.left + size + 10) + "px"; canvas.style.height = (g.top + size + 10) + "px";
  canvas.width = (g.left + size + 10) * scale; canvas.height = (g.top + size + 10) * scale;
  const ctx = canvas.getContext("2d");
  ctx.scale(scale, scale);
  const cells = document.createElement("canvas");
  paint(cells, block, head);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(cells, g.left, g.top, size, size);
  ctx.strokeStyle = "#d94801"; ctx.lineWidth = 2;
  ctx.strokeRect(g.left, g.top + selected * g.cell, size, g.cell);
  ctx.fillStyle = "#222"; ctx.font = `${LABEL_FONT}px ui-monospace, monospace`;
  const every = g.labelled ? 1 : Math.ceil(T / 16);
  for (let t = 0; t < T; t += every) {
    const text = g.labelled ? `${show(doc.tokens[t].piece)} ${t}` : String(t);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(text, g.left - 4, g.top + (t + 0.5) * g.cell);
    ctx.save();      // key labels read bottom to top, like a spreadsheet's rotated header
    ctx.translate(g.left + (t + 0.5) * g.cell, g.top - 4); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left"; ctx.fillText(text, 0, 0);
    ctx.restore();
  }
  document.getElementById("detail-title").textContent = `block ${block}, head ${head}` + (GROUP > 1 ? ` (kv head ${Math.floor(head / GROUP)})` : "");
  const detail = document.getElementById("detail");
  detail.dataset.block = block; detail.dataset.head = head; detail.dataset.cell = g.cell;
  detail.dataset.left = g.left; detail.dataset.top = g.top;
}

function cellAt(event) {
  const g = detailGeometry(), box = event.target.getBoundingClientRect();
  const k = Math.floor((event.clientX - box.left - g.left) / g.cell), q = Math.floor((event.clientY - box.top - g.top) / g.cell);
  return q >= 0 && q < T && k >= 0 && k < T ? {q, k} : null;
}

function openHead(block, head) {
  open = {block, head};
  document.querySelectorAll(".head-panel.open").forEach(p => p.classList.remove("open"));
  document.querySelector(`.head-panel[data-block="${block}"][data-head="${head}"]`).classList.add("open");
  document.getElementById("detail").hidden = false;
  drawDetail();
  document.getElementById("detail").scrollIntoView({block: "nearest"});
}

function lens() {
  const k = doc.logit_lens[0].top.length;
  const table = document.getElementById("lens-table");
  table.className = "grid";
  const head = el("tr", {}, el("th", {}, "block \\ position"));
  doc.tokens.forEach((t, pos) => head.append(el("th", {"data-pos": pos}, `${show(t.piece)}\n${pos}`)));
  table.append(head);
  const rows = [];
  for (let block = 0; block < L; block++) { rows.push(el("tr", {}, el("th", {}, `block ${block}`))); table.append(rows[block]); }
  for (const entry of doc.logit_lens) {
    const top = entry.top[0], p = top.prob;
    const [r, g, b] = blue(p);
    const cell = el("td", {class: "lens-cell", "data-block": entry.block, "data-pos": entry.position},
                    el("span", {class: "t"}, show(top.piece)), el("span", {class: "p"}, p.toFixed(2)));
    cell.style.background = `rgb(${r},${g},${b})`; cell.style.color = p > 0.5 ? "#fff" : "#111";
    attach(cell, `block ${entry.block}, after '${show(doc.tokens[entry.position].piece)}' (position ${entry.position}): top ${k}\n` +
           entry.top.map(t => `${t.prob.toFixed(4)}  '${show(t.piece)}' (id ${t.id})`).join("\n"));
    cell.addEventListener("click", () => select(entry.position));
    rows[entry.block].append(cell);
  }
}

function residual() {
  const names = doc.residual.points, rms = doc.residual.rms;      // rms[position][point]
  const W = Math.max(560, 60 * names.length), Hh = 300, pad = {l: 56, r: 16, t: 10, b: 40};
  const ymax = Math.max(...rms.flat()) * 1.05;
  const x = i => pad.l + i * (W - pad.l - pad.r) / Math.max(1, names.length - 1);
  const y = v => pad.t + (1 - v / ymax) * (Hh - pad.t - pad.b);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", Hh);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node); return node;
  };
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4;
    add("line", {x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), stroke: "#eee"});
    add("text", {x: pad.l - 6, y: y(v) + 4, "text-anchor": "end"}, v.toFixed(2));
  }
  names.forEach((n, i) => add("text", {x: x(i), y: Hh - pad.b + 16, "text-anchor": "middle"},
                              n === "embed" ? "embed" : n.split(".")[1] + (n.endsWith("resid_mid") ? "a" : "m")));
  add("text", {x: pad.l, y: Hh - 6}, "after embed, then each block's attention (a) and MLP (m)");
  const path = values => values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
  rms.forEach((values, pos) => {
    const hue = Math.round(260 * pos / Math.max(1, T - 1));
    const line = add("path", {d: path(values), class: "line", "data-pos": pos, stroke: `hsl(${hue},70%,45%)`});
    attach(line, `position ${pos} '${show(doc.tokens[pos].piece)}'`);
    line.addEventListener("click", () => select(pos));
  });
  const mean = names.map((_, i) => rms.reduce((s, r) => s + r[i], 0) / T);
  add("path", {d: path(mean), class: "mean"});
  add("text", {x: x(names.length - 1) - 4, y: y(mean[mean.length - 1]) - 8, "text-anchor": "end"}, "mean");
  document.getElementById("residual-plot").append(svg);
}

function agreement() {
  if (doc.points[0].vs_torch === null) return;
  document.getElementById("agreement").hidden = false;
  const table = document.getElementById("agreement-table");
  table.className = "grid";
  table.append(el("tr", {}, el("th", {}, "point"), el("th", {}, "shape"), el("th", {}, "max |Δ|"), el("th", {}, "bit-identical"), el("th", {}, "what")));
  for (const p of doc.points) {
    const d = p.vs_torch.max_abs_diff;
    table.append(el("tr", {}, el("td", {}, p.name), el("td", {}, p.shape.join("×")),
      el("td", {}, d === 0 ? "0 (exact)" : d.toExponential(2)), el("td", {}, (100 * p.vs_torch.bit_identical).toFixed(1) + "%"),
      el("td", {style: "text-align:left;font-family:system-ui"}, p.description)));
  }
}

function reveal(id, hint) {
  document.getElementById(id).hidden = false;
  document.getElementById(id + "-hint").textContent = hint;
}
const quoted = piece => `'${show(piece)}'`;

function attribution() {
  const a = doc.attribution;
  if (!a) return;
  reveal("attribution", `The logit of ${quoted(a.token.piece)} (id ${a.token.id}) at position ${a.position} ` +
    `(after ${quoted(doc.tokens[a.position].piece)}) is ${a.logit.toFixed(4)}: what the embedding, each head (through its slice of wo) ` +
    `and each MLP write along that token's direction, scaled by the final norm as the forward pass scaled it. ` +
    `They sum to ${a.sum_of_parts.toFixed(4)}. Blue pushes the token up, red down.`);
  const table = document.getElementById("attribution-table");
  const largest = Math.max(...Object.values(a.parts).map(Math.abs)) || 1;
  for (const [name, value] of Object.entries(a.parts)) {
    const bar = el("div", {class: "bar"});
    bar.style.width = (60 * Math.abs(value) / largest) + "px";
    bar.style.background = value >= 0 ? "#2171b5" : "#cb181d";
    bar.style.marginLeft = value >= 0 ? "60px" : (60 - 60 * Math.abs(value) / largest) + "px";
    table.append(el("tr", {"data-part": name}, el("td", {style: "text-align:left"}, name), el("td", {}, (value >= 0 ? "+" : "") + value.toFixed(4)),
                    el("td", {style: "min-width:124px;text-align:left"}, bar)));
  }
}

function ablation() {
  const a = doc.ablation;
  if (!a) return;
  const how = a.how === "mean" ? `each one's output z set to its mean over the prompt's ${doc.tokens.length} positions`
                                : "their output z set to 0";
  reveal("ablation", `Heads ${a.heads.map(h => h.join(".")).join(", ")} with ${how}: the next token after ` +
    `position ${a.position} (${quoted(doc.tokens[a.position].piece)}) before and after. KL(before ‖ after) = ${a.kl_bits.toFixed(4)} bits; ` +
    `${quoted(a.before[0].piece)} went from ${a.before[0].prob.toFixed(4)} to ${a.after_of_top_before.toFixed(4)}.`);
  const table = document.getElementById("ablation-table");
  table.append(el("tr", {}, el("th", {}, "before"), el("th", {}, ""), el("th", {}, "after"), el("th", {}, "")));
  a.before.forEach((b, i) => table.append(el("tr", {}, el("td", {}, quoted(b.piece)), el("td", {}, b.prob.toFixed(4)),
                                                el("td", {}, quoted(a.after[i].piece)), el("td", {}, a.after[i].prob.toFixed(4)))));
}

// Recovered share -1..1: red (made it worse) through white to blue (restored the clean run).
function diverging(v) {
  const t = Math.max(-1, Math.min(1, v));
  return t >= 0 ? [255 + (33 - 255) * t, 255 + (113 - 255) * t, 255 + (181 - 255) * t]
                : [255 + (203 - 255) * -t, 255 + (24 - 255) * -t, 255 + (29 - 255) * -t];
}
function shade(cell, v) {
  const [r, g, b] = diverging(v);
  cell.style.background = `rgb(${r},${g},${b})`; cell.style.color = Math.abs(v) > 0.6 ? "#fff" : "#111";
}

function patching() {
  const p = doc.patching;
  if (!p) return;
  const m = p.metric;
  reveal("patching", `Clean: this page's prompt; corrupted: "${p.corrupted_prompt}". Metric: logit ${quoted(m.token.piece)} − logit ` +
    `${quoted(m.other.piece)} at position ${m.position}: ${p.clean.toFixed(4)} clean, ${p.corrupted.toFixed(4)} corrupted. ` +
    "Each cell: the share of that difference recovered when the corrupted run takes the clean run's value there, " +
    "(patched − corrupted) / (clean − corrupted); the residual stream one position at a time.");
  const columns = ["embed"];
  for (let i = 0; i < L; i++) for (const point of ["resid_pre", "resid_mid", "resid_post"]) columns.push(`blocks.${i}.${point}`);
  const table = document.getElementById("patching-table");
  const header = el("tr", {}, el("th", {}, "position"));
  for (const c of columns) header.append(el("th", {}, c === "embed" ? "embed" : c.split(".")[1] + " " + c.split(".")[2].replace("resid_", "")));
  table.append(header);
  doc.tokens.forEach((t, pos) => {
    const row = el("tr", {}, el("th", {"data-pos": pos}, `${pos} ${quoted(t.piece)}`));
    for (const c of columns) {
      const v = p.recovered[c][pos], cell = el("td", {"data-point": c, "data-pos": pos}, v.toFixed(2));
      shade(cell, v);
      attach(cell, `${c} at position ${pos} (${quoted(t.piece)}): recovered ${v.toFixed(4)}`);
      row.append(cell);
    }
    table.append(row);
  });
  // The points inside the blocks: one row per point, one column per block.
  const points = document.getElementById("patching-points"), inner = [], outer = [];
  for (const name of Object.keys(p.recovered)) {
    if (columns.includes(name)) continue;
    if (name.startsWith("blocks.")) { const point = name.split(".").slice(2).join("."); if (!inner.includes(point)) inner.push(point); }
    else outer.push(name);
  }
  const top = el("tr", {}, el("th", {}, "point"));
  for (let i = 0; i < L; i++) top.append(el("th", {}, `block ${i}`));
  points.append(top);
  const cellOf = name => {
    const v = p.recovered[name], cell = el("td", {"data-point": name}, v.toFixed(3));
    shade(cell, v);
    return cell;
  };
  for (const point of inner) {
    const row = el("tr", {}, el("th", {style: "text-align:left"}, point));
    for (let i = 0; i < L; i++) row.append(cellOf(`blocks.${i}.${point}`));
    points.append(row);
  }
  for (const name of outer) points.append(el("tr", {}, el("th", {style: "text-align:left"}, name), cellOf(name)));
}

function gradients() {
  const g = doc.grads;
  if (!g) return;
  reveal("grads", `The loss: the mean cross-entropy of the prompt's ${g.n_targets} next tokens, ${g.loss.toFixed(4)}. ` +
    "Left: the RMS of its gradient for every weight (NumPy's backward pass" + (g.vs_torch ? "; torch's autograd agrees to the share shown" : "") + "). " +
    (g.points ? "Right: the RMS of its gradient at every named point (torch autograd)." : "Gradients at the named points need torch."));
  const bars = (table, entries, extra) => {
    const largest = Math.max(...entries.map(([, v]) => v)) || 1;
    for (const [name, v] of entries) {
      const bar = el("div", {class: "bar"});
      bar.style.width = (100 * v / largest) + "px"; bar.style.background = "#6a51a3";
      const row = el("tr", {"data-name": name}, el("td", {style: "text-align:left"}, name), el("td", {}, v.toPrecision(3)),
                     el("td", {style: "min-width:104px;text-align:left"}, bar));
      if (extra) row.append(el("td", {}, extra(name)));
      table.append(row);
    }
  };
  const weights = document.getElementById("grads-weights");
  weights.append(el("tr", {}, el("th", {}, "weight"), el("th", {}, "RMS ∂loss/∂w"), el("th", {}, ""), ...(g.vs_torch ? [el("th", {}, "torch: max |Δ| / max |g|")] : [])));
  bars(weights, Object.entries(g.weights), g.vs_torch ? name => g.vs_torch[name].toExponential(1) : null);
  if (g.points) {
    const points = document.getElementById("grads-points");
    points.append(el("tr", {}, el("th", {}, "point"), el("th", {}, "RMS ∂loss/∂x"), el("th", {}, "")));
    bars(points, Object.entries(g.points), null);
  }
}

function select(pos) {
  selected = pos;
  document.querySelectorAll(".tok").forEach(n => n.classList.toggle("selected", Number(n.dataset.pos) === pos));
  document.querySelectorAll(".lens-cell, #lens-table th[data-pos]").forEach(n => n.classList.toggle("selected", Number(n.dataset.pos) === pos));
  document.querySelectorAll("svg .line").forEach(n => n.classList.toggle("selected", Number(n.dataset.pos) === pos));
  const line = document.querySelector(`svg .line[data-pos="${pos}"]`);
  if (line) line.parentNode.append(line);          // drawn last, on top of the others
  captions();
  drawDetail();
}

header(); tokens(); attention(); lens(); residual(); attribution(); ablation(); patching(); gradients(); agreement();
const detailCanvas = document.getElementById("detail-canvas");
attach(detailCanvas, e => {
  const c = cellAt(e);
  if (!c) return "";
  const w = weight(open.block, open.head, c.q, c.k);
  return `query '${show(doc.tokens[c.q].piece)}' (${c.q}) → key '${show(doc.tokens[c.k].piece)}' (${c.k})\nweight ${w === null ? "masked (a future key)" : w.toFixed(4)}`;
});
detailCanvas.addEventListener("click", e => { const c = cellAt(e); if (c) select(c.q); });
select(selected);
openHead(0, 0);
window.scrollTo(0, 0);
document.body.dataset.ready = "1";
"""
