"""int8 decoding (`encdec.quantize`): close to float32 on a trained model, reachable from the CLI."""

import json

import torch
from typer.testing import CliRunner

from encdec.checkpoint import load_run
from encdec.cli import app
from encdec.data import load_corpus
from encdec.data.vocab import BOS, Vocab
from encdec.decode import beam_search, greedy
from encdec.linear import Linear
from encdec.quantize import quantize_int8


def test_int8_agrees_with_float32_on_at_least_95_percent_of_tokens(trained_tiny):
    cfg, model = load_run(trained_tiny)
    vocab = Vocab(trained_tiny / "vocab.model")
    pairs = load_corpus(cfg.data.source, cfg.data.cache_dir).split("test")[:64]
    src = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in vocab.encode([p.src for p in pairs])],
                                          batch_first=True)
    mask = src != 0
    q = quantize_int8(model)
    assert type(model.decoder[0].ffn.w1) is Linear and model.out_proj is None  # the original untouched
    int8_linear = torch.ao.nn.quantized.dynamic.Linear
    assert type(q.decoder[0].ffn.w1) is int8_linear and type(q.out_proj) is int8_linear
    ref = greedy(model, src, mask)
    # every step's choice given the float32 output so far (a first disagreement would shift the rest)
    tgt = torch.nn.utils.rnn.pad_sequence([torch.tensor([BOS, *r]) for r in ref], batch_first=True)
    real = torch.nn.utils.rnn.pad_sequence([torch.ones(len(r) + 1, dtype=torch.bool) for r in ref], batch_first=True)
    with torch.no_grad():
        a = model(src, mask, tgt).logits.argmax(-1)  # (B, T)
        b = q(src, mask, tgt).logits.argmax(-1)
    agree = ((a == b) & real).sum().item() / real.sum().item()
    assert agree >= 0.95, agree
    assert all(len(h) == 2 for h in beam_search(q, src[:4], mask[:4], beam=2, nbest=2))


def test_evaluate_int8_writes_its_own_result_files(trained_tiny):
    r = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(trained_tiny), "--int8", "--beam", "1",
                                 "--limit", "20", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads(r.output[r.output.index("{"):])
    assert result["int8"] is True and result["sentences"] == 20
    assert (trained_tiny / "eval.test.beam1.int8.json").exists()
    assert (trained_tiny / "hyps.test.beam1.int8.txt").read_text().count("\n") == 20
