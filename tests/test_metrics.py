import math

import sacrebleu
import torch
import torch.nn.functional as F

from encdec.metrics import bleu, chrf, perplexity, sequence_loss

HYPS = ["the cat sat on the mat .", "a quick brown fox", "Yahweh spoke to Moses, saying,"]
REFS = ["the cat is on the mat .", "the quick brown fox jumps", "Yahweh spoke to Moses, saying,"]
REFS2 = ["there is a cat on the mat .", "a fast brown fox", "And the LORD spake unto Moses, saying,"]


def test_bleu_and_chrf_equal_sacrebleu():
    assert bleu(HYPS, [REFS]).score == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert bleu(HYPS, [REFS, REFS2]).score == sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score
    assert chrf(HYPS, [REFS]).score == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    assert "nrefs:2" in bleu(HYPS, [REFS, REFS2]).signature


def test_sequence_loss_matches_cross_entropy_with_label_smoothing():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    target = torch.randint(1, 11, (2, 5))
    target[1, 3:] = 0  # padding
    loss, nll, n = sequence_loss(logits, target, pad_id=0, smoothing=0.1)
    ref = F.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=0, label_smoothing=0.1, reduction="sum")
    ref_nll = F.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=0, reduction="sum")
    assert n == 8
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, ref_nll)
    assert perplexity(nll.item(), n) == math.exp(nll.item() / n)
