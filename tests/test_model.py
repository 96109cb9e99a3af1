import pytest
import torch
import torch.nn.functional as F

from encdec.config import NORMS, WIRINGS
from encdec.data.vocab import PAD
from encdec.model import Transformer, _explicit_is_faster, attend

from conftest import random_batch, tiny


def incremental_logits(model, batch):
    cache, steps = model.start_decoding(batch.src, batch.src_mask), []
    for t in range(batch.tgt_in.size(1)):
        logits, cache = model.decode_step(batch.tgt_in[:, t : t + 1], cache)
        steps.append(logits)
    return torch.cat(steps, 1)


@pytest.mark.parametrize("capacity", [0, 1, 40])
@pytest.mark.parametrize("chunk", [1, 3])
def test_incremental_equals_full_across_cache_growth_and_chunks(capacity, chunk):
    """Preallocated, too-small (grown by doubling) and empty caches; one or several tokens per step."""
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    batch = random_batch(n=6)  # targets up to 17 tokens: a capacity of 1 grows to 16, then 32
    full = model(batch.src, batch.src_mask, batch.tgt_in).logits
    cache, steps = model.start_decoding(batch.src, batch.src_mask, capacity=capacity), []
    for t in range(0, batch.tgt_in.size(1), chunk):
        logits, cache = model.decode_step(batch.tgt_in[:, t : t + chunk], cache)
        steps.append(logits)
    assert cache.length == batch.tgt_in.size(1) and cache.capacity >= cache.length
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("depths", [(2, 2), (3, 2)])
def test_incremental_equals_full(wiring, norm, depths):
    torch.manual_seed(0)
    model = Transformer(tiny(wiring=wiring, norm=norm, n_enc_layers=depths[0], n_dec_layers=depths[1])).eval()
    batch = random_batch()
    full = model(batch.src, batch.src_mask, batch.tgt_in).logits  # (B, T, V)
    torch.testing.assert_close(incremental_logits(model, batch), full, atol=1e-5, rtol=1e-4)


def test_future_tokens_do_not_change_earlier_logits(model, batch):
    full = model(batch.src, batch.src_mask, batch.tgt_in).logits
    changed = batch.tgt_in.clone()
    changed[:, 3:] = torch.randint(4, 50, changed[:, 3:].shape)
    out = model(batch.src, batch.src_mask, changed).logits
    torch.testing.assert_close(out[:, :3], full[:, :3])
    assert not torch.allclose(out[:, 3:], full[:, 3:])


@pytest.mark.parametrize("wiring", WIRINGS)
def test_extra_source_padding_changes_nothing(wiring):
    torch.manual_seed(0)
    model = Transformer(tiny(wiring=wiring)).eval()
    batch = random_batch()
    base = model(batch.src, batch.src_mask, batch.tgt_in).logits
    src = torch.cat([batch.src, torch.full((batch.src.size(0), 5), PAD)], 1)
    padded = model(src, src != PAD, batch.tgt_in).logits
    torch.testing.assert_close(padded, base, atol=1e-5, rtol=1e-4)


def test_attention_weights_sum_to_one_and_respect_masks(model, batch):
    out = model(batch.src, batch.src_mask, batch.tgt_in, return_attn=True)
    S, T = batch.src.size(1), batch.tgt_in.size(1)
    for w in out.enc_self_attn + out.cross_attn + out.dec_self_attn:
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    pad_keys = ~batch.src_mask[:, None, None, :]  # (B, 1, 1, S)
    for w in out.enc_self_attn + out.cross_attn:
        assert w.masked_select(pad_keys.expand_as(w)).abs().max() == 0
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for w in out.dec_self_attn:
        assert w[..., future].abs().max() == 0
    assert out.cross_attn[0].shape == (batch.src.size(0), 4, T, S)


def test_weights_path_equals_fused_path(model, batch):
    plain = model(batch.src, batch.src_mask, batch.tgt_in).logits
    with_w = model(batch.src, batch.src_mask, batch.tgt_in, return_attn=True)
    torch.testing.assert_close(with_w.logits, plain, atol=1e-5, rtol=1e-4)
    assert model(batch.src, batch.src_mask, batch.tgt_in).cross_attn is None


def test_attend_causal_single_query_sees_all_keys():
    q, k, v = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    _, w = attend(q, k, v, None, causal=True, dropout=0.0, need_weights=True)
    assert (w > 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_attention_on_cpu_runs_the_explicit_path_and_matches_sdpa(causal):
    """In bf16 on a CPU, training-sized attention takes the explicit softmax path (faster there:
    `_explicit_is_faster`); it must compute what SDPA computes in fp32, forward and backward."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[1, ..., 4:] = False  # padded keys of the second sentence
    grad = torch.randn(2, 4, 6, 8, generator=g)
    full_mask = mask & torch.ones(6, 6, dtype=torch.bool).tril() if causal else mask
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_in, attn_mask=full_mask)
    ref.backward(grad)
    bf = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    assert _explicit_is_faster(bf[0], 6, 6) and not _explicit_is_faster(q, 6, 6)  # fp32 keeps SDPA
    out, w = attend(*bf, mask, causal=causal, dropout=0.0, need_weights=False)
    assert w is None and out.dtype == torch.bfloat16
    out.backward(grad.bfloat16())
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    for got, want in zip(bf, ref_in):
        torch.testing.assert_close(got.grad.float(), want.grad, atol=5e-2, rtol=5e-2)


def test_d_head_may_differ_from_d_model_over_heads(batch):
    model = Transformer(tiny(n_heads=2, d_head=8)).eval()
    assert model.decoder[0].cross_attn.q.out_features == 16
    full = model(batch.src, batch.src_mask, batch.tgt_in).logits
    torch.testing.assert_close(incremental_logits(model, batch), full, atol=1e-5, rtol=1e-4)


def test_sequence_longer_than_max_len_is_a_clear_error(batch):
    model = Transformer(tiny(max_len=4)).eval()
    with pytest.raises(ValueError, match="max_len"):
        model(batch.src, batch.src_mask, batch.tgt_in)
