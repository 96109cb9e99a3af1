"""Loss, perplexity and corpus BLEU/chrF (a thin wrapper over sacrebleu)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import sacrebleu
import torch
from torch import Tensor


def sequence_loss(logits: Tensor, target: Tensor, *, pad_id: int, smoothing: float) -> tuple[Tensor, Tensor, int]:
    """logits (B, T, V), target (B, T) -> (smoothed loss sum, NLL sum, number of real tokens).

    Label smoothing as in the paper (epsilon spread uniformly over the vocabulary); one
    log-softmax serves both sums. The log-softmax runs in fp32 even under autocast.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    keep = target != pad_id  # (B, T)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    nll_sum = nll.masked_select(keep).sum()
    if smoothing > 0:
        uniform = -logp.mean(dim=-1).masked_select(keep).sum()
        loss = (1 - smoothing) * nll_sum + smoothing * uniform
    else:
        loss = nll_sum
    return loss, nll_sum.detach(), int(keep.sum())


def seed_std(values: list[float]) -> float:
    """Sample standard deviation over seeds; 0 for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def perplexity(nll_sum: float, n_tokens: int) -> float:
    return math.exp(min(nll_sum / max(n_tokens, 1), 50.0))


@dataclass(frozen=True)
class Score:
    score: float
    signature: str

    def __str__(self) -> str:
        return f"{self.score:.2f}"


def bleu(hyps: list[str], refs: list[list[str]]) -> Score:
    """Corpus BLEU. refs is a list of reference streams, each as long as hyps (sacrebleu's layout)."""
    metric = sacrebleu.BLEU()
    result = metric.corpus_score(hyps, refs)
    return Score(result.score, str(metric.get_signature()))


def chrf(hyps: list[str], refs: list[list[str]]) -> Score:
    metric = sacrebleu.CHRF()
    result = metric.corpus_score(hyps, refs)
    return Score(result.score, str(metric.get_signature()))


def paired_bootstrap(baseline: list[str], system: list[str], refs: list[list[str]], *,
                     resamples: int = 1000) -> dict[str, float]:
    """Is `system` better than `baseline` on the same sentences? sacreBLEU's paired bootstrap
    resampling (Koehn 2004) of corpus BLEU, with its fixed seed (SACREBLEU_SEED, 12345).

    Returns both BLEU scores, their difference, and `p`, sacreBLEU's two-sided p-value: the share
    (+1 smoothed) of 1,000 resampled test sets whose |BLEU difference|, centred on its bootstrap
    mean, exceeds the observed |difference|. A small p says the difference is unlikely to be an
    accident of which sentences the test set holds; it says nothing of seed-to-seed variation,
    which `encdec study` reports separately (mean ± std over seeds, a test per seed)."""
    from sacrebleu.significance import PairedTest

    if len(baseline) != len(system):
        raise ValueError(f"paired test of {len(system)} against {len(baseline)} hypotheses: not the same sentences")
    if baseline == system:  # every resample differs by 0; sacreBLEU's counting reports p 0.001 for that
        score = bleu(system, refs).score
        return {"baseline_bleu": score, "bleu": score, "delta": 0.0, "p": 1.0}
    test = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": sacrebleu.BLEU()}, refs,
                      test_type="bs", n_samples=resamples)
    _, scores = test()
    base, other = scores["BLEU"]
    return {"baseline_bleu": base.score, "bleu": other.score, "delta": other.score - base.score, "p": other.p_value}
