"""Hugging Face MarianMT export (identical logits and greedy outputs) and CTranslate2 conversion."""

import pytest
import torch
from typer.testing import CliRunner

from encdec.checkpoint import load_run
from encdec.cli import app
from encdec.data import load_corpus
from encdec.data.batching import collate
from encdec.data.vocab import Vocab
from encdec.decode import greedy, translate_ids
from encdec.export import marian_permutation
from encdec.model import sinusoids
from encdec.runtime import Runtime

from conftest import CACHE

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[dev])")
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(trained_tiny):
    return trained_tiny


def test_the_permutation_turns_encdec_positions_into_marians():
    d = 16
    ours = sinusoids(50, d)[:, marian_permutation(d)]
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    theirs = MarianSinusoidalPositionalEmbedding(50, d).create_weight()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_hf_export_has_identical_logits_and_greedy_outputs(trained, tmp_path):
    from transformers import MarianMTModel, MarianTokenizer

    r = run("export", "hf", "--checkpoint", trained, "--out", tmp_path / "hf")
    assert r.exit_code == 0, r.output
    hf = MarianMTModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    tok = MarianTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    cfg, model = load_run(trained)
    vocab = Vocab(trained / "vocab.model")
    pairs = load_corpus(cfg.data.source, cfg.data.cache_dir).split("test")[:16]
    assert tok([p.src for p in pairs]).input_ids == [ids + [3] for ids in vocab.encode([p.src for p in pairs])]
    batch = collate(list(zip(vocab.encode([p.src for p in pairs]), vocab.encode([p.tgt for p in pairs]))))
    with torch.no_grad():
        ours = model.eval()(batch.src, batch.src_mask, batch.tgt_in).logits
        theirs = hf(input_ids=batch.src, attention_mask=batch.src_mask.long(), decoder_input_ids=batch.tgt_in).logits
    assert (ours - theirs).abs().max() < 1e-4
    g = greedy(model, batch.src, batch.src_mask, max_extra=20)
    out = hf.generate(input_ids=batch.src, attention_mask=batch.src_mask.long(), num_beams=1, do_sample=False,
                      max_new_tokens=batch.src.size(1) + 20)
    hf_ids = [[t for t in row[1:] if t not in (0, 3)] for row in out.tolist()]  # drop <s>, padding and </s>
    assert hf_ids == g


def test_ct2_greedy_matches_encdec_on_the_test_split(trained, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install -e .[dev])")
    r = run("export", "ct2", "--checkpoint", trained, "--out", tmp_path / "ct2")
    assert r.exit_code == 0, r.output
    cfg, model = load_run(trained)
    vocab = Vocab(trained / "vocab.model")
    sources = vocab.encode([p.src for p in load_corpus(cfg.data.source, cfg.data.cache_dir).split("test")])
    ours = translate_ids(model, sources, Runtime.create("cpu", "fp32"), beam=1)
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    results = translator.translate_batch([vocab.pieces(s) + ["</s>"] for s in sources], beam_size=1,
                                         max_decoding_length=max(len(s) for s in sources) + 51)
    theirs = [vocab.sp.piece_to_id(r.hypotheses[0]) for r in results]
    same = sum(a == b for a, b in zip(ours, theirs))
    assert same >= 0.99 * len(sources), f"{same} of {len(sources)} identical"


def test_other_wirings_are_refused_with_the_reason(tmp_path):
    out = tmp_path / "run"
    r = run("train", "--data", "synthetic:copy", "--preset", "tiny", "--steps", 2, "--out", out, "--no-evaluate",
            "--set", f"data.cache_dir={CACHE}", "--set", "model.wiring=dense",
            "--set", "train.eval_every=1000", "--set", "train.dev_bleu_sentences=0")
    assert r.exit_code == 0, r.output
    r = run("export", "hf", "--checkpoint", out, "--out", tmp_path / "hf")
    assert r.exit_code == 2 and "wiring=dense" in r.output and "Traceback" not in r.output
    r = run("export", "onnx", "--checkpoint", out, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "choose hf or ct2" in r.output
