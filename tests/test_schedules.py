import pytest

from encdec.schedules import inverse_sqrt, linear, paper_peak_lr, plateau


def test_inverse_sqrt_at_the_warmup_boundary():
    assert inverse_sqrt(1, warmup=4000) == pytest.approx(1 / 4000)
    assert inverse_sqrt(3999, warmup=4000) == pytest.approx(3999 / 4000)
    assert inverse_sqrt(4000, warmup=4000) == 1.0
    assert inverse_sqrt(4001, warmup=4000) == pytest.approx((4000 / 4001) ** 0.5)
    assert inverse_sqrt(16000, warmup=4000) == pytest.approx(0.5)


def test_inverse_sqrt_times_peak_is_the_papers_formula():
    d, w = 512, 4000
    for step in (1, 100, 4000, 10000, 100000):
        paper = d**-0.5 * min(step**-0.5, step * w**-1.5)
        assert paper_peak_lr(d, w) * inverse_sqrt(step, warmup=w) == pytest.approx(paper)
    assert paper_peak_lr(512, 4000) == pytest.approx(6.988e-4, rel=1e-3)


def test_linear_warmup_then_decay_to_zero():
    assert linear(50, warmup=100, progress=0.0) == 0.5
    assert linear(100, warmup=100, progress=0.0) == 1.0
    assert linear(101, warmup=100, progress=0.25) == 0.75
    assert linear(5000, warmup=100, progress=1.0) == 0.0
    assert linear(5000, warmup=100, progress=1.2) == 0.0
    # the decay runs from the first step: a 1,000-step run with 500 warm-up steps peaks at half
    assert linear(250, warmup=500, progress=0.25) == 0.5 * 0.75
    assert max(linear(t, warmup=500, progress=t / 1000) for t in range(1, 1001)) == 0.5


def test_plateau_warms_up_then_holds_its_scale():
    assert plateau(50, warmup=100, scale=1.0) == 0.5
    assert plateau(100, warmup=100, scale=1.0) == plateau(10**6, warmup=100, scale=1.0) == 1.0
    assert plateau(5000, warmup=100, scale=0.25) == 0.25
    assert plateau(5, warmup=0, scale=0.5) == 0.5
