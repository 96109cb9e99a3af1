"""DeepNorm (Wang et al. 2022): its constants, its initialisation, and what it does to the
gradients of a deep post-LN stack at initialisation."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from encdec.config import ModelConfig
from encdec.data.batching import collate
from encdec.export import export_hf, exportable
from encdec.model import Transformer, deepnorm_coefficients


@pytest.mark.parametrize("n, m", [(6, 6), (12, 12), (18, 6), (6, 1)])
def test_encoder_decoder_constants(n, m):
    (a_enc, b_enc), (a_dec, b_dec) = deepnorm_coefficients(n, m)
    assert a_enc == pytest.approx(0.81 * (n**4 * m) ** (1 / 16))
    assert b_enc == pytest.approx(0.87 * (n**4 * m) ** (-1 / 16))
    assert a_dec == pytest.approx((3 * m) ** 0.25)
    assert b_dec == pytest.approx((12 * m) ** -0.25)


def test_constants_by_hand_and_for_one_stack():
    (a_enc, b_enc), (a_dec, b_dec) = deepnorm_coefficients(6, 6)
    assert (round(a_enc, 4), round(b_enc, 4), round(a_dec, 4), round(b_dec, 4)) == (1.4179, 0.497, 2.0598, 0.3433)
    assert deepnorm_coefficients(12, 0) == ((24**0.25, 96**-0.25), None)  # encoder-only: (2N)^1/4, (8N)^-1/4
    assert deepnorm_coefficients(0, 12) == (None, (24**0.25, 96**-0.25))  # decoder-only: (2M)^1/4, (8M)^-1/4


def test_init_scales_value_output_and_ffn_by_beta_and_leaves_queries_and_keys():
    base = ModelConfig(vocab_size=100, d_model=32, n_heads=4, d_ff=64, n_enc_layers=2, n_dec_layers=2)
    torch.manual_seed(0)
    post = Transformer(base)
    torch.manual_seed(0)
    deep = Transformer(replace(base, norm="deepnorm"))
    (_, b_enc), (_, b_dec) = deepnorm_coefficients(2, 2)
    inner = base.inner_dim
    for stack, beta in (("encoder", b_enc), ("decoder", b_dec)):
        p, d = getattr(post, stack)[1], getattr(deep, stack)[1]
        torch.testing.assert_close(d.self_attn.qkv.weight[: 2 * inner], p.self_attn.qkv.weight[: 2 * inner])
        torch.testing.assert_close(d.self_attn.qkv.weight[2 * inner :], beta * p.self_attn.qkv.weight[2 * inner :])
        for name in ("self_attn.out", "ffn.w1", "ffn.w2"):
            torch.testing.assert_close(d.get_submodule(name).weight, beta * p.get_submodule(name).weight)
    cross_post, cross_deep = post.decoder[0].cross_attn, deep.decoder[0].cross_attn
    torch.testing.assert_close(cross_deep.kv.weight[inner:], b_dec * cross_post.kv.weight[inner:])
    torch.testing.assert_close(cross_deep.kv.weight[:inner], cross_post.kv.weight[:inner])
    torch.testing.assert_close(cross_deep.q.weight, cross_post.q.weight)


def test_ablations_take_one_part_of_deepnorm_each():
    """deepnorm-alpha: DeepNorm's residual weight on post-LN's initialisation; deepnorm-beta:
    DeepNorm's initialisation on post-LN's plain residual. Same seed, same parameters as the
    model each one borrows its initialisation from; the alpha of each stack as DeepNorm's or 1."""
    base = ModelConfig(vocab_size=100, d_model=32, n_heads=4, d_ff=64, n_enc_layers=2, n_dec_layers=3)
    models = {}
    for norm in ("post", "deepnorm", "deepnorm-alpha", "deepnorm-beta"):
        torch.manual_seed(0)
        models[norm] = Transformer(replace(base, norm=norm))
    (a_enc, _), (a_dec, _) = deepnorm_coefficients(2, 3)
    for norm, init_like, alphas in (("deepnorm-alpha", "post", (a_enc, a_dec)), ("deepnorm-beta", "deepnorm", (1, 1))):
        model, ref = models[norm], models[init_like]
        for (name, p), (ref_name, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
            assert name == ref_name
            torch.testing.assert_close(p, q, msg=f"{norm}: {name} differs from {init_like}'s")
        assert [layer.alpha for layer in model.encoder] == pytest.approx([alphas[0]] * 2)
        assert [layer.alpha for layer in model.decoder] == pytest.approx([alphas[1]] * 3)
    assert models["post"].decoder[0].alpha == 1 and models["deepnorm"].decoder[0].alpha == pytest.approx(a_dec)
    x, mask = torch.randint(4, 100, (2, 5)), torch.ones(2, 5, dtype=torch.bool)
    z_alpha, z_post = (models[n].eval().encode(x, mask)[0][-1] for n in ("deepnorm-alpha", "post"))
    assert not torch.allclose(z_alpha, z_post)  # same weights, the residual weight alone changes Z


def layer_gradient_norms(norm: str, n: int) -> tuple[list[float], list[float]]:
    """Per-layer gradient L2 norms of an n+n model at initialisation, one batch of random data."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=500, d_model=64, n_heads=4, d_ff=128, n_enc_layers=n, n_dec_layers=n, dropout=0.0,
                      norm=norm)
    model = Transformer(cfg)
    g = torch.Generator().manual_seed(1)
    pairs = [(torch.randint(4, 500, (12,), generator=g).tolist(), torch.randint(4, 500, (14,), generator=g).tolist())
             for _ in range(8)]
    batch = collate(pairs)
    logits = model(batch.src, batch.src_mask, batch.tgt_in).logits
    F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=0).backward()

    def norms(layers):
        return [math.sqrt(sum(float(p.grad.pow(2).sum()) for p in layer.parameters())) for layer in layers]

    return norms(model.encoder), norms(model.decoder)


@pytest.mark.parametrize("n", [6, 12])
def test_deepnorm_keeps_each_stacks_gradients_level_where_post_ln_fans_out(n):
    """Post-LN's decoder gradient grows from its first layer to its last (the fan-out that stalls
    deep post-LN training, docs/findings.md section 6); DeepNorm keeps every layer of a stack
    within 1.5x of the others."""
    enc, dec = layer_gradient_norms("deepnorm", n)
    assert max(dec) / min(dec) < 1.5 and max(enc) / min(enc) < 1.5
    _, post_dec = layer_gradient_norms("post", n)
    assert max(post_dec) / min(post_dec) > 2.5 * max(dec) / min(dec)


def test_export_refuses_deepnorm_with_the_reason(tmp_path):
    from encdec import checkpoint as ckpt
    from encdec.config import DataConfig, RunConfig, TrainConfig

    cfg = RunConfig(model=ModelConfig(vocab_size=64, d_model=32, n_heads=4, d_ff=64, n_enc_layers=1, n_dec_layers=1,
                                      norm="deepnorm"),
                    data=DataConfig(source="synthetic:copy", vocab_size=64), train=TrainConfig(max_steps=1))
    ckpt.write_config(tmp_path, cfg)
    ckpt.save_weights(Transformer(cfg.model), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="norm=deepnorm"):
        export_hf(tmp_path, tmp_path / "hf")
    # the ablations: the residual weight has no MarianMT equivalent; the initialisation alone is plain post-LN
    with pytest.raises(ValueError, match="norm=deepnorm-alpha"):
        exportable(replace(cfg, model=replace(cfg.model, norm="deepnorm-alpha")))
    exportable(replace(cfg, model=replace(cfg.model, norm="deepnorm-beta")))
