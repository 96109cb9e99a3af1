"""Score a trained run on a split of its corpus: translate, write hypotheses and a JSON result.

Used by `encdec evaluate` (and so at the end of `encdec train`) and by `encdec study`, which
reads the JSON back: eval.<split>.beam<k>.json in the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from encdec.checkpoint import load_run
from encdec.data import load_corpus
from encdec.data.vocab import Vocab
from encdec.decode import translate_ids
from encdec.metrics import bleu, chrf
from encdec.quantize import quantize_int8


def result_path(run: Path, split: str, beam: int, int8: bool = False) -> Path:
    return Path(run) / f"eval.{split}.beam{beam}{'.int8' if int8 else ''}.json"


def score_run(run: Path, split: str, rt, *, beam: int = 4, alpha: float = 0.6, limit: int = 0, int8: bool = False,
              log=None,
              on_start: Callable[[int], None] | None = None,
              on_batch: Callable[[int], None] | None = None) -> dict:
    """BLEU and chrF (sacreBLEU) of the run's final weights on `split` (first `limit` sentences if > 0),
    against the main reference and, where the corpus has one, a second reference. With `int8` the
    weights are quantized first (`encdec.quantize`) and the files get an `.int8` suffix."""
    run = Path(run)
    cfg, model = load_run(run)
    vocab = Vocab(run / "vocab.model")
    pairs = load_corpus(cfg.data.source, cfg.data.cache_dir, log=log).split(split)
    if limit > 0:
        pairs = pairs[:limit]
    if on_start:
        on_start(len(pairs))
    model.to(rt.device)
    if int8:
        model = quantize_int8(model)
    t0 = time.time()
    hyp_ids = translate_ids(model, vocab.encode([p.src for p in pairs]), rt, beam=beam, alpha=alpha,
                            on_batch=on_batch)
    seconds = time.time() - t0
    hyps = [vocab.decode(h) for h in hyp_ids]
    hyp_file = run / f"hyps.{split}.beam{beam}{'.int8' if int8 else ''}.txt"
    hyp_file.write_text("".join(h + "\n" for h in hyps))
    refs = [p.tgt for p in pairs]
    result = {"split": split, "sentences": len(pairs), "beam": beam, "alpha": alpha, "int8": int8,
              "seconds": round(seconds, 1),
              "sent_per_s": round(len(pairs) / max(seconds, 1e-9), 1), "hypotheses": str(hyp_file)}
    b1, c1 = bleu(hyps, [refs]), chrf(hyps, [refs])
    result.update({"bleu": round(b1.score, 2), "chrf": round(c1.score, 2), "bleu_signature": b1.signature,
                   "chrf_signature": c1.signature})
    if any(p.extra_refs for p in pairs):
        second = [p.extra_refs[0] if p.extra_refs else p.tgt for p in pairs]
        b2, c2 = bleu(hyps, [refs, second]), chrf(hyps, [refs, second])
        result.update({"bleu_2refs": round(b2.score, 2), "chrf_2refs": round(c2.score, 2),
                       "bleu_2refs_signature": b2.signature})
    result_path(run, split, beam, int8).write_text(json.dumps(result, indent=2) + "\n")
    return result
