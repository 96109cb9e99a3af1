"""Encoder-only (BERT-like) and decoder-only (GPT-like) stacks built from the same model code."""

import pytest
import torch

from encdec.model import Transformer

from conftest import tiny


def test_encoder_only_stack():
    torch.manual_seed(0)
    cfg = tiny(n_dec_layers=0, positions="learned", activation="gelu", n_segments=2, embed_norm=True, pooler=True)
    model = Transformer(cfg).eval()
    assert len(model.decoder) == 0 and model.out_proj is None
    src = torch.randint(4, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    states, _ = model.encode(src, mask)
    assert len(states) == 3 and states[-1].shape == (2, 7, 32)
    assert model.pool(states[-1]).shape == (2, 32)
    other_segment, _ = model.encode(src, mask, segments=torch.ones_like(src))
    assert not torch.allclose(other_segment[-1], states[-1])  # segment embeddings are used
    with pytest.raises(ValueError, match="no decoder"):
        model(src, mask, src)


def test_decoder_only_stack_is_a_causal_language_model():
    torch.manual_seed(0)
    model = Transformer(tiny(n_enc_layers=0, norm="pre", positions="learned", tie_output=False)).eval()
    assert all(layer.cross_attn is None and layer.norm2 is None for layer in model.decoder)
    tokens = torch.randint(4, 50, (2, 8))
    logits = model(None, None, tokens).logits  # (B, T, V)
    assert logits.shape == (2, 8, 50)
    changed = tokens.clone()
    changed[:, 5:] = 4
    torch.testing.assert_close(model(None, None, changed).logits[:, :5], logits[:, :5])
    with pytest.raises(ValueError, match="no encoder"):
        model.encode(tokens, torch.ones_like(tokens, dtype=torch.bool))
    with pytest.raises(ValueError, match="encoder-decoder"):
        model.start_decoding(tokens, torch.ones_like(tokens, dtype=torch.bool))


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_enc_layers": 0, "n_dec_layers": 0}, "at least one stack"),
    ({"n_enc_layers": 0, "wiring": "mix"}, "needs both an encoder and a decoder"),
    ({"pooler": True}, "encoder-only"),
    ({"positions": "rotary"}, "positions"),
    ({"activation": "swish"}, "activation"),
])
def test_invalid_stack_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)
