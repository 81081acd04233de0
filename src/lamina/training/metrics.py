"""Streaming classification metrics: accumulate on the device, read once at the end."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ClassificationMetrics:
    """Sum of losses and a confusion matrix, updated per batch without host syncs.

    ``confusion[i, j]`` counts examples of true class ``i`` predicted as ``j``.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, logits: Tensor, targets: Tensor, loss_sum: Tensor) -> None:
        """``loss_sum``: the batch's summed (not mean) loss."""
        pred = logits.argmax(dim=1)
        k = self.num_classes
        self.confusion += torch.bincount(targets * k + pred, minlength=k * k).view(k, k)
        self.loss_sum += loss_sum.detach().double()

    def compute(self) -> dict[str, Any]:
        cm = self.confusion.cpu()
        n = int(cm.sum())
        per_class = (cm.diag().double() / cm.sum(1).clamp_min(1).double()).tolist()
        return {
            "loss": float(self.loss_sum) / max(n, 1),
            "accuracy": float(cm.diag().sum()) / max(n, 1),
            "per_class_accuracy": per_class,
            "confusion": cm.tolist(),
            "examples": n,
        }
