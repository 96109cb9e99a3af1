"""encdec.dropout: the fast mask keeps the drop rate, the expectation and the gradient of nn.Dropout."""

import pytest
import torch

from encdec.dropout import Dropout, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([600, 1000]), p, torch.device("cpu"))
    rate = 1 - keep.float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / keep.numel()) ** 0.5 + 1 / 65536
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)
    # no structure across the three 16-bit slices of one draw: neighbours are independent
    k = keep.flatten()[: 3 * (keep.numel() // 3)].view(-1, 3).float()
    both = (k[:, 0] * k[:, 1]).mean().item()
    assert both == pytest.approx((1 - p) ** 2, abs=0.005)


def test_expectation_gradient_and_eval_identity():
    torch.manual_seed(1)
    drop = Dropout(0.1).train()
    x = torch.randn(300, 256, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] * (1 / (1 - 6554 / 65536)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - 6554 / 65536))
    assert drop(torch.ones(1000, 1000)).mean().item() == pytest.approx(1.0, abs=0.003)
    assert drop.eval()(x) is x and Dropout(0.0).train()(x) is x


def test_seeded_masks_repeat():
    a = (torch.manual_seed(3), Dropout(0.2).train()(torch.ones(50, 50)))[1]
    b = (torch.manual_seed(3), Dropout(0.2).train()(torch.ones(50, 50)))[1]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="must be in"):
        Dropout(1.0)
