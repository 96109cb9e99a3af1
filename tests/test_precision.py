"""The bf16 training path (autocast, fp32 master weights) against fp32, and how `auto` picks."""

import copy

import pytest
import torch

from encdec import runtime
from encdec.config import TrainConfig
from encdec.decode import translate_ids
from encdec.model import Transformer
from encdec.optim import make_optimizer, train_step
from encdec.runtime import Runtime

from conftest import random_batch, tiny

TC = TrainConfig(max_steps=1, lr=1e-3, label_smoothing=0.1)


def one_step(model, rt: Runtime) -> dict:
    batch = random_batch(seed=3, n=6)
    return train_step(model, [batch], make_optimizer(model, TC), TC.lr, TC, rt)


@pytest.mark.parametrize("wiring", ["final", "dense"])
def test_bf16_loss_is_close_to_fp32_and_master_weights_stay_fp32(wiring):
    torch.manual_seed(0)
    fp32 = Transformer(tiny(wiring=wiring))
    bf16 = copy.deepcopy(fp32)
    ref = one_step(fp32, Runtime.create("cpu", "fp32"))
    got = one_step(bf16, Runtime.create("cpu", "bf16"))
    # bf16 keeps 8 bits of mantissa: a relative error of ~4e-3 per op, much less on a mean loss
    assert got["loss"] == pytest.approx(ref["loss"], rel=5e-3)  # measured: 1e-4 to 3e-4
    assert got["loss"] != ref["loss"]  # autocast really ran in bf16
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    # the gradients (kept in fp32, on the fp32 master weights) point the same way
    g_ref = torch.cat([p.grad.flatten() for p in fp32.parameters()])
    g_got = torch.cat([p.grad.flatten() for p in bf16.parameters()])
    assert g_got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(g_ref, g_got, dim=0) > 0.995  # measured: 0.9997


def test_auto_precision_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert Runtime.create("cpu", "auto").amp_dtype is None
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert Runtime.create("cpu", "auto").amp_dtype is torch.bfloat16
    assert Runtime.create("cpu", "fp32").amp_dtype is None
    assert "bfloat16 autocast" in Runtime.create("cpu", "bf16").describe()


def test_auto_precision_on_a_gpu_is_tf32_without_cudnn_attention(monkeypatch):
    """On an H200, bf16 autocast ran 0.88-0.97x TF32's speed at 3,000-token batches once cuDNN
    attention was off (README "Scale out"): auto picks TF32. cuDNN attention's per-shape plans
    made bf16 13-20x slower, so a GPU Runtime switches it off."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(runtime.FORCE_PRECISION, raising=False)
    was = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)  # torch's default
        assert Runtime.create("cuda", "auto").amp_dtype is None  # fp32 storage, TF32 products
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert Runtime.create("cuda", "bf16").amp_dtype is torch.bfloat16  # still there when asked for
        torch.backends.cuda.enable_cudnn_sdp(True)
        Runtime.create("cpu", "auto")
        assert torch.backends.cuda.cudnn_sdp_enabled()  # a CPU Runtime leaves the GPU flags alone
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was)


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="choose auto, fp32 or bf16"):
        Runtime.create("cpu", "fp16")


def test_auto_decodes_in_fp32_where_it_trains_in_bf16(monkeypatch):
    """On a CPU the fp32 decoding path (weights laid out for few rows) beats bf16 autocast, so auto
    decodes in fp32 even on a bf16 CPU: the same tokens as an fp32 runtime. bf16 asked for (or
    forced) decodes in bf16."""
    monkeypatch.delenv(runtime.FORCE_PRECISION, raising=False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    auto = Runtime.create("cpu", "auto")
    assert auto.amp_dtype is torch.bfloat16 and auto.decode_amp_dtype is None
    assert "(decoding fp32)" in auto.describe()
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    sources = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    dtypes = set()
    model.decoder[0].self_attn.qkv.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's context (training): decoding sets its own
        got = translate_ids(model, sources, auto, beam=2)
    assert dtypes == {torch.float32}
    assert got == translate_ids(model, sources, Runtime.create("cpu", "fp32"), beam=2)
    translate_ids(model, sources, Runtime.create("cpu", "bf16"), beam=2)
    assert dtypes == {torch.float32, torch.bfloat16}
    assert Runtime.create("cpu", "bf16").decode_amp_dtype is torch.bfloat16
    monkeypatch.setenv(runtime.FORCE_PRECISION, "bf16")
    assert Runtime.create("cpu", "auto").decode_amp_dtype is torch.bfloat16
