"""DeepNorm (Wang et al. 2022) and Admin (Liu et al. 2020): their constants and initialisations,
and what they do to the gradients of a deep post-LN stack at initialisation."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from encdec.config import ModelConfig
from encdec.data.batching import collate
from encdec.export import export_hf, exportable
from encdec.model import Transformer, admin_init, deepnorm_coefficients


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


def random_pairs(vocab: int, n: int = 8):
    g = torch.Generator().manual_seed(1)
    return collate([(torch.randint(4, vocab, (12,), generator=g).tolist(),
                     torch.randint(4, vocab, (14,), generator=g).tolist()) for _ in range(n)])


def layer_gradient_norms(norm: str, n: int) -> tuple[list[float], list[float]]:
    """Per-layer gradient L2 norms of an n+n model at initialisation, one batch of random data."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=500, d_model=64, n_heads=4, d_ff=128, n_enc_layers=n, n_dec_layers=n, dropout=0.0,
                      norm=norm)
    model = Transformer(cfg)
    batch = random_pairs(500)
    if norm == "admin":
        admin_init(model, batch.src, batch.src_mask, batch.tgt_in)
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


def test_admin_init_gives_each_residual_the_variance_summed_into_it():
    """After profiling, every stack's first omega is 1 and each next one satisfies Admin's
    recurrence omega_i^2 = omega_(i-1)^2 Var[x_(i-1)] + Var[f_(i-1)(x_(i-1))], measured on a fresh
    pass with the final omegas (so the repeated passes have settled); omega is one value per
    sublayer across the dimensions, and it grows with depth."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=300, d_model=32, n_heads=4, d_ff=64, n_enc_layers=3, n_dec_layers=4,
                                    dropout=0.1, norm="admin"))
    batch = random_pairs(300)
    omegas = admin_init(model, batch.src, batch.src_mask, batch.tgt_in)
    assert model.training  # restored after the dropout-free profiling pass
    assert [len(omegas["encoder"]), len(omegas["decoder"])] == [6, 12]
    for layer in [*model.encoder, *model.decoder]:
        assert torch.equal(layer.omega, layer.omega[:, :1].expand_as(layer.omega))
    seen = {}

    def record(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        seen[module] = (args[0].var().item(), out.var().item())

    subs = {"encoder": [m for layer in model.encoder for m in (layer.self_attn, layer.ffn)],
            "decoder": [m for layer in model.decoder for m in (layer.self_attn, layer.cross_attn, layer.ffn)]}
    hooks = [m.register_forward_hook(record) for ms in subs.values() for m in ms]
    model.eval()(batch.src, batch.src_mask, batch.tgt_in)
    for h in hooks:
        h.remove()
    for stack, ms in subs.items():
        w = omegas[stack]
        assert w[0] == 1.0 and w[-1] > 1.5
        for i in range(1, len(w)):
            var_in, var_out = seen[ms[i - 1]]
            assert w[i] ** 2 == pytest.approx(w[i - 1] ** 2 * var_in + var_out, rel=1e-4), (stack, i)
    with pytest.raises(ValueError, match="model.norm=admin"):
        admin_init(Transformer(replace(model.cfg, norm="post")), batch.src, batch.src_mask, batch.tgt_in)


@pytest.mark.parametrize("n", [6, 12])
def test_admin_keeps_the_decoder_gradients_level_where_post_ln_fans_out(n):
    """Admin's profiled residual weights remove the decoder's fan-out (post-LN 6+6: 4.8x from its
    first layer to its last on this batch, 12+12: 8.1x) at initialisation."""
    _, dec = layer_gradient_norms("admin", n)
    _, post_dec = layer_gradient_norms("post", n)
    assert max(dec) / min(dec) < 1.8
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
    with pytest.raises(ValueError, match="norm=admin"):
        exportable(replace(cfg, model=replace(cfg.model, norm="admin")))
