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
    assert c["parts"]["embeddings"] == 37000 * 512


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


# Exact counts of the reference implementations (Hugging Face BertModel with pooler, GPT2LMHeadModel
# with tied head), and the published sizes they round to.
@pytest.mark.parametrize(("name", "exact", "published", "rel"), [
    ("bert-base", 109_482_240, 110e6, 0.02),
    ("bert-large", 335_141_888, 340e6, 0.02),
    ("gpt2-xl", 1_557_611_200, 1542e6, 0.02),
    ("gpt3", None, 175e9, 0.02),
])
def test_famous_models(name, exact, published, rel):
    c = count(preset(name))
    if exact is not None:
        assert c["total"] == exact
    assert c["total"] == pytest.approx(published, rel=rel)
    assert sum(c["kinds"].values()) == c["total"] == sum(c["parts"].values())


def test_gpt3_by_the_formula():
    # 12 L d^2 (attention 4d^2 + FFN 8d^2) + 13 L d (biases and norms) + (V + ctx) d + 2d (final norm)
    L, d, V, ctx = 96, 12288, 50257, 2048
    assert count(preset("gpt3"))["total"] == 12 * L * d * d + 13 * L * d + (V + ctx) * d + 2 * d


def test_kinds_of_transformer_base():
    k = count(preset("transformer-base"))["kinds"]
    assert k["attention"] == 18 * (4 * 512 * 512 + 4 * 512)  # 6 enc self + 6 dec self + 6 cross
    assert k["feed-forward"] == 12 * (2 * 512 * 2048 + 2048 + 512)
    assert k["norms"] == (6 * 2 + 6 * 3) * 2 * 512
    assert k["other"] == 0


def test_wiring_parameters_count_as_other():
    from dataclasses import replace

    small = preset("small")
    assert count(replace(small, wiring="mix"))["kinds"]["other"] == 3 * 4  # one logit per (dec layer, state 0..3)
    assert count(replace(small, wiring="dense"))["kinds"]["other"] == 3 * 256  # a layer embedding per enc layer
