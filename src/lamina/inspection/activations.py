"""Per-stage activation statistics, streamed with running sums (memory independent of N).

``dead_fraction`` is the fraction of channels (dim 1; the last dim of a model whose
``feature_layout`` is "tokens") never above 0 on the whole sample: after a ReLU these units pass
no gradient at all. ``saturation`` is the fraction of values in the flat
tails of a squashing activation (|a| > 0.99 for tanh; a < 0.01 or a > 0.99 for sigmoid), where
the gradient vanishes; it is None for other activations.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lamina.inspection.features import Batches, capped, channel_dim, eval_mode, run_features, stage_layout
from lamina.inspection.hooks import capture, model_stages


def saturated(a: Tensor, act: str | None) -> Tensor | None:
    """Boolean mask of the saturated values of ``a`` for activation ``act``; None where it has no tails."""
    if act == "tanh":
        return a.abs() > 0.99
    if act == "sigmoid":
        return (a < 0.01) | (a > 0.99)
    return None


class _Running:
    """Running sum, sum of squares, count, per-channel max and saturated count of one stage."""

    def __init__(self) -> None:
        self.total = self.sq = 0.0
        self.count = 0
        self.sat = 0
        self.channel_max: Tensor | None = None

    def update(self, a: Tensor, act: str | None, layout: str = "channels") -> None:
        a = a.detach().double()
        self.total += float(a.sum())
        self.sq += float((a * a).sum())
        self.count += a.numel()
        if a.ndim > 1:
            c = channel_dim(a, layout)
            per_channel = a.movedim(c, 0).reshape(a.shape[c], -1).amax(1)  # (C,)
        else:
            per_channel = a.amax().reshape(1)
        self.channel_max = per_channel if self.channel_max is None else torch.maximum(self.channel_max, per_channel)
        mask = saturated(a, act)
        if mask is not None:
            self.sat += int(mask.sum())

    def result(self, act: str | None) -> dict[str, float | None]:
        n = max(self.count, 1)
        mean = self.total / n
        std = math.sqrt(max(self.sq / n - mean * mean, 0.0))
        dead = float((self.channel_max <= 0).double().mean()) if self.channel_max is not None else None
        sat = self.sat / n if saturated(torch.zeros(1), act) is not None and self.count else None
        return {"mean": mean, "std": std, "dead_fraction": dead, "saturation": sat}


def activation_stats(
    model: nn.Module,
    batches: Batches,
    *,
    max_examples: int,
    device: str | torch.device = "cpu",
    act: str | None = None,
) -> dict[str, dict[str, Any]]:
    """``{stage: {"mean", "std", "dead_fraction", "saturation"}}`` over at most ``max_examples`` examples.

    Args:
        model: a model with ``stages()``.
        batches: ``(inputs, labels)`` batches.
        max_examples: cap on the examples read.
        device: where the model runs.
        act: the activation that decides saturation (None: ``model.arch["act"]`` when present).
    """
    names = [n for n, _ in model_stages(model)]
    if act is None:
        act = (getattr(model, "arch", None) or {}).get("act")
    layout = stage_layout(model)
    running = {n: _Running() for n in names}
    with eval_mode(model), torch.no_grad(), capture(model, names) as out:
        for x, _ in capped(batches, max_examples):
            out.clear()
            run_features(model, x.to(device))
            for n in names:
                running[n].update(out[n], act, layout)
    return {n: running[n].result(act) for n in names}
