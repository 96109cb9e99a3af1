import pytest

from encdec.analysis.params import count
from encdec.config import preset


def test_transformer_base_with_37k_shared_vocab():
    total = count(preset("transformer-base"))["total"]
    assert total == pytest.approx(63.1e6, rel=0.002)  # the honest count
    assert total == pytest.approx(65e6, rel=0.03)  # the paper's rounded 65M


def test_transformer_big():
    assert count(preset("transformer-big"))["total"] == pytest.approx(213e6, rel=0.03)


def test_breakdown_adds_up_and_one_base_encoder_layer_is_3_15m():
    c = count(preset("transformer-base"))
    assert sum(c["parts"].values()) == c["total"]
    assert c["per_layer"]["encoder layer"] == 3_152_384  # 4*(512^2+512) + 2*512*2048 + 2048 + 512 + 4*512
    assert c["parts"]["embeddings (shared src/tgt/output)"] == 37000 * 512
