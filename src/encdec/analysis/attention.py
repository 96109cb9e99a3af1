"""Attention maps of one sentence pair: PNG grids (layer x head) and an offline HTML viewer.

The weights come from `model(..., return_attn=True)` (../shared/STYLE.md C7): encoder self-attention
(L_enc, H, S, S), decoder self-attention (L_dec, H, T, T) and cross-attention (L_dec, H, T, S').
For `dense` wiring the cross-attention keys are the states it reads, one block of S per state
(S' = K*S); their labels carry the state, e.g. "2:casa", or "emb:casa" for the embeddings.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from encdec.data.batching import collate
from encdec.decode import greedy
from encdec.model import Transformer
from encdec.wiring import memory_states

KINDS = {"enc": "encoder self-attention", "dec": "decoder self-attention", "cross": "cross-attention"}


@dataclass
class AttentionMaps:
    src_tokens: list[str]  # S labels (source pieces + </s>)
    tgt_tokens: list[str]  # T labels (<s> + target pieces): the decoder's input positions
    out_tokens: list[str]  # T labels: what each decoder position predicts (target pieces + </s>)
    mem_tokens: list[str]  # S' labels of the cross-attention keys
    weights: dict[str, Tensor]  # "enc" (L, H, S, S), "dec" (L, H, T, T), "cross" (L, H, T, S')
    tgt_ids: list[int]  # the target shown (forced or the model's greedy output)

    def query_keys(self, kind: str) -> tuple[list[str], list[str]]:
        """Row (query) and column (key) labels of one attention kind."""
        if kind == "enc":
            return self.src_tokens, self.src_tokens
        if kind == "dec":
            return self.out_tokens, self.tgt_tokens
        return self.out_tokens, self.mem_tokens


@torch.no_grad()
def collect(model: Transformer, pieces, src_ids: list[int], tgt_ids: list[int] | None = None) -> AttentionMaps:
    """Attention weights for one source (and target; default: the model's greedy translation).

    pieces: id list -> piece strings (`Vocab.pieces`).
    """
    model.eval()
    device = next(model.parameters()).device
    batch = collate([(src_ids, tgt_ids or [])]).to(device)
    if tgt_ids is None:
        tgt_ids = greedy(model, batch.src, batch.src_mask)[0]
        batch = collate([(src_ids, tgt_ids)]).to(device)
    out = model(batch.src, batch.src_mask, batch.tgt_in, return_attn=True)
    src_tokens = pieces(src_ids) + ["</s>"]
    mem = [f"{'emb' if j == 0 else j}:{t}" for j in memory_states(model.cfg) for t in src_tokens] \
        if model.cfg.wiring == "dense" else src_tokens
    weights = {"enc": torch.stack([w[0] for w in out.enc_self_attn]).float().cpu(),
               "dec": torch.stack([w[0] for w in out.dec_self_attn]).float().cpu(),
               "cross": torch.stack([w[0] for w in out.cross_attn]).float().cpu()}
    return AttentionMaps(src_tokens, ["<s>"] + pieces(tgt_ids), pieces(tgt_ids) + ["</s>"], mem, weights, tgt_ids)


def encode_pair(vocab, src: str, tgt: str | None) -> tuple[list[int], list[int] | None]:
    src_ids = vocab.encode([src])[0]
    return src_ids, (vocab.encode([tgt])[0] if tgt else None)


def plot_grid(maps: AttentionMaps, kind: str, path: Path, *, max_heads: int = 16) -> Path:
    """One PNG: rows = layers, columns = heads, each a heat map with token tick labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = maps.weights[kind][:, :max_heads]  # (L, H, Tq, Tk)
    L, H, Tq, Tk = w.shape
    rows, cols = maps.query_keys(kind)
    cell = 0.16 * max(Tq, Tk) + 1.2
    fig, axes = plt.subplots(L, H, figsize=(cell * H, cell * L), squeeze=False)
    small = max(3.0, min(7.0, 180 / max(Tq, Tk)))
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            ax.imshow(w[layer, head].numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_title(f"layer {layer + 1} head {head + 1}", fontsize=8)
            ax.set_xticks(range(Tk))
            ax.set_yticks(range(Tq))
            ax.set_xticklabels(cols, rotation=90, fontsize=small)
            ax.set_yticklabels(rows, fontsize=small)
    fig.suptitle(f"{KINDS[kind]} (rows: queries, columns: keys)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_html(maps: AttentionMaps, path: Path, title: str = "encdec attention") -> Path:
    """A self-contained page (no network): pick attention kind, layer and head; the map is drawn
    on a canvas, cell (i, j) filled with white-to-blue by weight w as rgb(255(1-w), 255(1-w), 255)."""
    data = {}
    for kind in KINDS:
        rows, cols = maps.query_keys(kind)
        data[kind] = {"name": KINDS[kind], "rows": rows, "cols": cols,
                      "w": [[[[round(float(x), 4) for x in r] for r in head] for head in layer]
                            for layer in maps.weights[kind].tolist()]}
    page = _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
#controls { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; flex-wrap: wrap; }
#heads button { margin: 0 2px; padding: 2px 8px; }
#heads button.active { background: #2a6fdb; color: white; border-color: #2a6fdb; }
#caption { font-weight: 600; margin: 6px 0; }
#hover { color: #555; min-height: 1.2em; }
</style></head>
<body>
<h2>__TITLE__</h2>
<div id="controls">
  <label>attention <select id="kind"></select></label>
  <label>layer <select id="layer"></select></label>
  <span id="heads"></span>
</div>
<div id="caption"></div>
<canvas id="map"></canvas>
<div id="hover"></div>
<script>
const DATA = __DATA__;
const CELL = 18, LEFT = 130, TOP = 130;
const state = {kind: "cross", layer: 0, head: 0};
const kindSel = document.getElementById("kind"), layerSel = document.getElementById("layer");
for (const k of Object.keys(DATA)) kindSel.add(new Option(DATA[k].name, k));
function fillLayers() {
  layerSel.innerHTML = "";
  DATA[state.kind].w.forEach((_, i) => layerSel.add(new Option(String(i + 1), String(i + 1))));
  layerSel.value = String(state.layer + 1);
  const heads = document.getElementById("heads");
  heads.innerHTML = "head ";
  DATA[state.kind].w[0].forEach((_, h) => {
    const b = document.createElement("button");
    b.textContent = String(h + 1); b.dataset.head = String(h);
    b.onclick = () => { state.head = h; draw(); };
    heads.appendChild(b);
  });
}
function draw() {
  const d = DATA[state.kind], w = d.w[state.layer][state.head];
  const c = document.getElementById("map"), ctx = c.getContext("2d");
  c.width = LEFT + CELL * d.cols.length + 10; c.height = TOP + CELL * d.rows.length + 10;
  ctx.fillStyle = "white"; ctx.fillRect(0, 0, c.width, c.height);
  for (let i = 0; i < d.rows.length; i++) for (let j = 0; j < d.cols.length; j++) {
    const v = Math.round(255 * (1 - w[i][j]));
    ctx.fillStyle = `rgb(${v},${v},255)`;
    ctx.fillRect(LEFT + j * CELL, TOP + i * CELL, CELL, CELL);
  }
  ctx.fillStyle = "#222"; ctx.font = "11px sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  d.rows.forEach((t, i) => ctx.fillText(t, LEFT - 4, TOP + i * CELL + CELL / 2));
  d.cols.forEach((t, j) => { ctx.save(); ctx.translate(LEFT + j * CELL + CELL / 2, TOP - 4);
    ctx.rotate(-Math.PI / 2); ctx.textAlign = "left"; ctx.fillText(t, 0, 0); ctx.restore(); });
  document.getElementById("caption").textContent =
    `${d.name} \u00b7 layer ${state.layer + 1} \u00b7 head ${state.head + 1}`;
  document.querySelectorAll("#heads button").forEach(b =>
    b.classList.toggle("active", Number(b.dataset.head) === state.head));
  c.dataset.kind = state.kind; c.dataset.layer = String(state.layer); c.dataset.head = String(state.head);
}
kindSel.onchange = () => { state.kind = kindSel.value; state.layer = 0; state.head = 0; fillLayers(); draw(); };
layerSel.onchange = () => { state.layer = Number(layerSel.value) - 1; draw(); };
document.getElementById("map").onmousemove = (e) => {
  const d = DATA[state.kind], j = Math.floor((e.offsetX - LEFT) / CELL), i = Math.floor((e.offsetY - TOP) / CELL);
  const ok = i >= 0 && j >= 0 && i < d.rows.length && j < d.cols.length;
  document.getElementById("hover").textContent =
    ok ? `${d.rows[i]} \u2192 ${d.cols[j]}: ${d.w[state.layer][state.head][i][j].toFixed(3)}` : "";
};
kindSel.value = state.kind; fillLayers(); draw();
</script></body></html>
"""
