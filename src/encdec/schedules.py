"""Learning-rate schedules: pure functions of progress returning a multiplier of the peak LR."""

from __future__ import annotations


def inverse_sqrt(step: int, *, warmup: int) -> float:
    """Vaswani et al. eq. 3 normalised to peak 1.0 at step == warmup.

    The paper's lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) equals this times
    `paper_peak_lr(d_model, warmup)`; linear warm-up, then decay proportional to step^-0.5.
    """
    step = max(step, 1)
    if warmup <= 0:
        return step**-0.5
    return min(step / warmup, (warmup / step) ** 0.5)


def paper_peak_lr(d_model: int, warmup: int) -> float:
    """The peak of the paper's schedule: d_model^-0.5 * warmup^-0.5 (7.0e-4 for base, warmup 4000)."""
    return d_model**-0.5 * warmup**-0.5


def linear(step: int, *, warmup: int, progress: float) -> float:
    """A linear warm-up ramp over `warmup` steps times a linear decay to zero at progress == 1.

    `progress` is the fraction of the training budget used (steps or wall clock), so the LR
    reaches zero exactly when the budget ends even when the budget is time. The decay runs from
    the first step, not from the end of warm-up, so the highest factor, reached at step
    `warmup`, is 1 - warmup/total: 0.85 for the 1,000-step recipe's 150 warm-up steps, 0.5 for
    500 of 1,000 (a time budget's total is only known as it goes). Every run of this lab trained
    with this form; the peak LR it reports is `train.lr`, the factor's ceiling.
    """
    step = max(step, 1)
    warm = min(1.0, step / warmup) if warmup > 0 else 1.0
    return warm * max(0.0, 1.0 - progress)


def plateau(step: int, *, warmup: int, scale: float) -> float:
    """Linear warm-up over `warmup` steps, then flat at `scale`: the LR factor that the training
    loop lowers (scale *= train.lr_decay) each time the dev score stops improving. It needs no
    run length in advance, like `inverse_sqrt`, but decays only when the dev set says so."""
    step = max(step, 1)
    return (min(1.0, step / warmup) if warmup > 0 else 1.0) * scale
