"""Use a trained run: translate lines of text (`encdec translate`), or score it on a split of its
corpus, writing hypotheses and a JSON result (`encdec evaluate`, the end of `encdec train`, and
`encdec study`, which reads eval.<split>.beam<k>.json back).

Neither ever loses a line: one output per input line, whatever the line holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from encdec.checkpoint import FINAL_WEIGHTS, load_run
from encdec.config import ALPHA, BEAM
from encdec.data import load_corpus
from encdec.data.vocab import Vocab
from encdec.decode import source_room, translate_ids
from encdec.metrics import bleu, chrf
from encdec.quantize import quantize_int8

if TYPE_CHECKING:
    from encdec.runtime import Runtime


def read_lines(raw: bytes) -> tuple[list[str], list[int]]:
    """Input bytes -> one str per line, and the (1-based) numbers of the lines that held invalid
    UTF-8. Lines end at "\\n" only (a trailing "\\r" is dropped), so every other character,
    NUL and Unicode line separators included, stays inside its line; invalid bytes become U+FFFD;
    a leading byte-order mark is dropped."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not part of the first line
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        return [], []
    lines, bad = [], []
    for n, chunk in enumerate(raw.split(b"\n"), start=1):
        chunk = chunk.removesuffix(b"\r")
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(chunk.decode("utf-8", errors="replace"))
            bad.append(n)
    return lines, bad


def translate_lines(model, vocab: Vocab, lines: list[str], rt: Runtime, *, beam: int = BEAM, alpha: float = ALPHA,
                    warn: Callable[[str], None] = lambda msg: None) -> list[str]:
    """One translation per line (an empty or blank line gives an empty line); a line too long for
    the model is translated from its beginning, with a warning naming the line (1-based)."""
    keep = [i for i, line in enumerate(lines) if line.strip()]
    ids = vocab.encode([lines[i].strip() for i in keep])

    def truncated(j: int, length: int) -> None:
        warn(f"line {keep[j] + 1}: {length} tokens, more than the model takes; translating its first "
             f"{source_room(model.cfg.max_len)}")

    hyps = translate_ids(model, ids, rt, beam=beam, alpha=alpha, on_truncate=truncated)
    out = [""] * len(lines)
    for i, h in zip(keep, hyps):
        out[i] = " ".join(vocab.decode(h).split("\n"))  # an output line holds no line break
    return out


def _suffix(int8: bool, weights: str) -> str:
    """`.int8` for int8 decoding, then the weights file when it is not the final one, e.g.
    `.milestones-step-0008000` for `milestones/step-0008000.safetensors`."""
    tag = "" if weights == FINAL_WEIGHTS else "." + weights.removesuffix(".safetensors").replace("/", "-")
    return (".int8" if int8 else "") + tag


def result_path(run: Path, split: str, beam: int, int8: bool = False, weights: str = FINAL_WEIGHTS) -> Path:
    return Path(run) / f"eval.{split}.beam{beam}{_suffix(int8, weights)}.json"


def hyps_path(run: Path, split: str, beam: int, int8: bool = False, weights: str = FINAL_WEIGHTS) -> Path:
    """The hypotheses `score_run` writes, one line per sentence of the split."""
    return Path(run) / f"hyps.{split}.beam{beam}{_suffix(int8, weights)}.txt"


def score_run(run: Path, split: str, rt: Runtime, *, beam: int = BEAM, alpha: float = ALPHA, limit: int = 0,
              int8: bool = False, weights: str = FINAL_WEIGHTS, log=None,
              on_start: Callable[[int], None] | None = None,
              on_batch: Callable[[int], None] | None = None) -> dict:
    """BLEU and chrF (sacreBLEU) of the run's weights (the final ones by default) on `split` (first
    `limit` sentences if > 0), against the main reference and, where the corpus has one, a second
    reference. With `int8` the weights are quantized first (`encdec.quantize`) and the files get an
    `.int8` suffix; `weights` (a file in the run folder, e.g. a milestone) scores other weights,
    named in the files' suffix."""
    run = Path(run)
    cfg, model = load_run(run, weights=weights)
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

    def truncated(i: int, length: int) -> None:
        if log:
            log(f"{split} sentence {i + 1}: {length} tokens, more than the model takes; translating its first "
                f"{source_room(model.cfg.max_len)}")

    hyp_ids = translate_ids(model, vocab.encode([p.src for p in pairs]), rt, beam=beam, alpha=alpha,
                            on_batch=on_batch, on_truncate=truncated)
    seconds = time.time() - t0
    hyps = [vocab.decode(h) for h in hyp_ids]
    hyp_file = hyps_path(run, split, beam, int8, weights)
    hyp_file.write_text("".join(h + "\n" for h in hyps))
    refs = [p.tgt for p in pairs]
    result = {"split": split, "sentences": len(pairs), "beam": beam, "alpha": alpha, "int8": int8, "weights": weights,
              "seconds": round(seconds, 1),
              "sent_per_s": round(len(pairs) / max(seconds, 1e-9), 1),
              "hypotheses": hyp_file.name}  # beside this JSON, so a moved or archived run folder stays right
    b1, c1 = bleu(hyps, [refs]), chrf(hyps, [refs])
    result.update({"bleu": round(b1.score, 2), "chrf": round(c1.score, 2), "bleu_signature": b1.signature,
                   "chrf_signature": c1.signature})
    if any(p.extra_refs for p in pairs):
        second = [p.extra_refs[0] if p.extra_refs else p.tgt for p in pairs]
        b2, c2 = bleu(hyps, [refs, second]), chrf(hyps, [refs, second])
        result.update({"bleu_2refs": round(b2.score, 2), "chrf_2refs": round(c2.score, 2),
                       "bleu_2refs_signature": b2.signature})
    result_path(run, split, beam, int8, weights).write_text(json.dumps(result, indent=2) + "\n")
    return result


def compare(baseline: list[str], system: list[str], pairs: list, *, buckets: int = 3) -> dict:
    """Two systems' hypotheses of the same sentences (`pairs`, a corpus split): BLEU and chrF of
    each against the main reference, sacreBLEU's paired bootstrap (`metrics.paired_bootstrap`), and
    BLEU by source length: the sentences sorted by source words and cut into `buckets` groups of
    equal size (ties kept together), so "better on long sentences" is one look."""
    from encdec.metrics import paired_bootstrap

    if not (len(baseline) == len(system) == len(pairs)):
        raise ValueError(f"the baseline has {len(baseline)} lines, the system {len(system)}, the split "
                         f"{len(pairs)} sentences: hypotheses must be one line per sentence of the split")
    refs = [p.tgt for p in pairs]
    test = paired_bootstrap(baseline, system, [refs])
    result = {"sentences": len(pairs), "baseline_bleu": round(test["baseline_bleu"], 2),
              "bleu": round(test["bleu"], 2), "delta": round(test["delta"], 2), "p": round(test["p"], 4),
              "baseline_chrf": round(chrf(baseline, [refs]).score, 2), "chrf": round(chrf(system, [refs]).score, 2),
              "by_source_length": []}
    words = [len(p.src.split()) for p in pairs]
    order = sorted(range(len(pairs)), key=words.__getitem__)
    start = 0
    for k in range(1, buckets + 1):
        end = round(k * len(order) / buckets)
        while 0 < end < len(order) and words[order[end]] == words[order[end - 1]]:
            end += 1  # a length is never split between two buckets
        idx = order[start:end]
        if idx:
            ref = [[refs[i] for i in idx]]
            result["by_source_length"].append({
                "words": [words[idx[0]], words[idx[-1]]], "sentences": len(idx),
                "baseline_bleu": round(bleu([baseline[i] for i in idx], ref).score, 2),
                "bleu": round(bleu([system[i] for i in idx], ref).score, 2)})
        start = end
    return result
