import torch

from encdec.cache import DecoderCache, LayerCache


def test_reorder_selects_rows_element_by_element():
    B, H, t, S, Dh = 4, 2, 3, 5, 6
    g = torch.Generator().manual_seed(0)
    layers = [LayerCache(*(torch.randn(B, H, n, Dh, generator=g) for n in (t, t, S, S))) for _ in range(2)]
    mask = torch.rand(B, S, generator=g) > 0.3
    cache = DecoderCache(layers, mask, length=t)
    rows = torch.tensor([2, 0, 0, 3])
    out = cache.reorder(rows)
    for r, src_row in enumerate(rows.tolist()):
        assert torch.equal(out.memory_mask[r], mask[src_row])
        for new, old in zip(out.layers, layers):
            for name in ("k", "v", "cross_k", "cross_v"):
                assert torch.equal(getattr(new, name)[r], getattr(old, name)[src_row])
    assert out.length == t and out.batch_size == 4
    assert cache.layers[0].k.size(0) == B  # the original is untouched


def test_reserve_grows_the_buffers_and_keeps_the_filled_positions():
    B, H, cap, S, Dh = 2, 2, 4, 3, 5
    g = torch.Generator().manual_seed(1)
    layers = [LayerCache(*(torch.randn(B, H, n, Dh, generator=g) for n in (cap, cap, S, S)))]
    cache = DecoderCache(layers, torch.ones(B, S, dtype=torch.bool), length=3)
    assert cache.reserve(1) is cache  # room for one more: nothing to do
    grown = cache.reserve(2)
    assert grown.capacity == 16 and grown.length == 3
    assert torch.equal(grown.layers[0].k[:, :, :3], layers[0].k[:, :, :3])
    assert grown.layers[0].cross_k is layers[0].cross_k


def test_reorder_within_sentences_can_keep_the_memory_and_copies_only_filled_positions():
    B, H, cap, S, Dh = 4, 2, 6, 5, 3
    g = torch.Generator().manual_seed(2)
    layers = [LayerCache(*(torch.randn(B, H, n, Dh, generator=g) for n in (cap, cap, S, S)))]
    cache = DecoderCache(layers, torch.ones(B, S, dtype=torch.bool), length=2)
    out = cache.reorder(torch.tensor([1, 1, 3, 2]), memory=False)
    assert out.layers[0].cross_k is layers[0].cross_k and out.memory_mask is cache.memory_mask
    assert out.capacity == cap and out.length == 2
    assert torch.equal(out.layers[0].k[:, :, :2], layers[0].k[[1, 1, 3, 2], :, :2])
