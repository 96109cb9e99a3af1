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


def test_cross_attention_flops_by_hand():
    from dataclasses import replace

    from encdec.analysis.params import cross_attention_flops

    small = preset("small")  # D = I = 256, 3 decoder layers, 3 encoder layers
    final = cross_attention_flops(small, 30)
    # per layer and target token: q and out projections 2 * 2*256*256, scores and values 2 * 2*30*256
    assert final["per_target_token"] == 3 * (4 * 256 * 256 + 4 * 30 * 256)
    assert final["per_source_sentence"] == 3 * 2 * 30 * 256 * 512  # each layer's K/V of its memory, once
    dense = cross_attention_flops(replace(small, wiring="dense"), 30)
    assert dense["memory_positions"] == 90
    assert dense["per_target_token"] == 3 * (4 * 256 * 256 + 4 * 90 * 256)
    assert cross_attention_flops(replace(small, wiring="layerwise"), 30) == final
