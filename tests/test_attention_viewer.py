"""The attention viewer, opened in a real headless Chromium: switch kind, layer and head; check the pixels."""

import shutil
from pathlib import Path

import pytest
import torch

from encdec.analysis.attention import collect, plot_grid, write_html
from encdec.model import Transformer

from conftest import tiny

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _maps(wiring="final", **changes):
    torch.manual_seed(0)
    model = Transformer(tiny(**{"wiring": wiring, "n_enc_layers": 2, "n_dec_layers": 2, **changes})).eval()
    return collect(model, lambda ids: [f"t{i}" for i in ids], [5, 6, 7, 8, 9], [10, 11, 12])


def test_collected_maps_are_distributions_over_the_right_tokens():
    maps = _maps()
    assert maps.weights["enc"].shape == (2, 4, 6, 6)  # 5 source pieces + </s>
    assert maps.weights["dec"].shape == (2, 4, 4, 4)  # <s> + 3 target pieces
    assert maps.weights["cross"].shape == (2, 4, 4, 6)
    for w in maps.weights.values():
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    assert maps.weights["dec"][..., 0, 1:].abs().max() == 0  # causal: position 0 sees only <s>
    assert maps.tgt_tokens == ["<s>", "t10", "t11", "t12"] and maps.out_tokens[-1] == "</s>"
    dense = _maps("dense")
    assert dense.weights["cross"].shape[-1] == 12 and dense.mem_tokens[6] == "2:t5"
    # dense over the embeddings and Z of a 3-layer encoder: 2 blocks of keys, labelled by their state
    emb_z = _maps("dense", n_enc_layers=3, memory_states=(0, 3))
    assert emb_z.weights["cross"].shape[-1] == len(emb_z.mem_tokens) == 12
    assert emb_z.mem_tokens[0] == "emb:t5" and emb_z.mem_tokens[6] == "3:t5"


def test_grid_png_is_written(tmp_path):
    path = plot_grid(_maps(), "cross", tmp_path / "cross.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_viewer_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium; scripts/setup.sh does it)")
    maps = _maps()
    page_file = write_html(maps, tmp_path / "attention.html")
    assert "http" not in page_file.read_text().split("<script>")[1]  # nothing fetched: works offline
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        assert page.inner_text("#caption") == "cross-attention · layer 1 · head 1"  # the default view
        page.select_option("#kind", value="enc")
        page.select_option("#layer", "2")
        page.click("#heads button[data-head='2']")  # head 3
        assert page.inner_text("#caption") == "encoder self-attention · layer 2 · head 3"
        assert page.get_attribute("#heads button.active", "data-head") == "2"
        w = maps.weights["enc"][1, 2]  # (S, S) what must be drawn
        for i, j in [(0, 0), (2, 3), (5, 1), (4, 4)]:
            rgb = page.evaluate(
                """([i, j]) => { const c = document.getElementById('map');
                     const x = 130 + j * 18 + 9, y = 130 + i * 18 + 9;
                     return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)); }""",
                [i, j])
            expected = round(255 * (1 - float(w[i, j])))
            assert abs(rgb[0] - expected) <= 1 and abs(rgb[1] - expected) <= 1 and rgb[2] == 255, (i, j, rgb)
        page.screenshot(path=str(tmp_path / "viewer.png"))
        browser.close()
    assert not errors
    assert (tmp_path / "viewer.png").stat().st_size > 1000
    print(f"screenshot: {tmp_path / 'viewer.png'}")
