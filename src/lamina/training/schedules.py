"""Learning-rate schedules as pure functions ``(step, total, warmup) -> multiplier of the peak``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lamina.registry import Registry

Schedule = Callable[[int, int, int], float]
SCHEDULES: Registry[Schedule] = Registry("schedule")


def _warm(step: int, warmup: int) -> float:
    return (step + 1) / warmup


@SCHEDULES.register("onecycle")
def onecycle(step: int, total: int, warmup: int) -> float:
    """Smith's 1cycle, step for step as ``torch.optim.lr_scheduler.OneCycleLR``: cosine from
    peak/25 up to the peak at step ``warmup - 1``, then cosine down to peak/(25·10^4) at the end."""
    start, end = 1 / 25, 1 / 25e4
    up = warmup - 1
    if step <= up and up > 0:
        return 1.0 + (start - 1.0) * 0.5 * (1.0 + math.cos(math.pi * step / up))
    t = min(1.0, (step - up) / max(1, total - 1 - up))
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@SCHEDULES.register("cosine")
def cosine(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then half a cosine down to zero."""
    if step < warmup:
        return _warm(step, warmup)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * t))


@SCHEDULES.register("linear")
def linear(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then linear decay to zero."""
    if step < warmup:
        return _warm(step, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


@SCHEDULES.register("constant")
def constant(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then the peak learning rate until the end."""
    return _warm(step, warmup) if step < warmup else 1.0


def create_scheduler(
    name: str, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    fn = SCHEDULES.get(name)
    warmup = max(0, round(warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: fn(s, total_steps, warmup))
