"""Regression: one real number per example; RMSE (in the target's units) as the headline.

The model predicts the **standardised** target ``(y - mean) / std`` (mean and std of the training
split, recorded in ``model.json`` so that :class:`lamina.artifacts.Regressor` maps predictions
back). The loss is the MSE on standardised targets: the headline is the RMSE, and MSE is exactly
its square, so the loss optimises what the run is judged by; a target's scale never changes the
learning rate that works. ``loss="huber"`` (δ = 1 standard deviation) is the option for targets with
heavy-tailed noise, where a few outliers would dominate the MSE.

Running sums (on the device, float64 where the device has it): ``count``, ``loss_sum``,
``se_sum``/``ae_sum`` (squared and absolute errors in the target's units) and ``yc_sum``/``yc2_sum``
(targets centred on the training mean, for the total sum of squares of R² without cancellation).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.config import DataConfig, ModelConfig, RunConfig
from lamina.data.base import Dataset, Split
from lamina.errors import LaminaError
from lamina.models import Model
from lamina.tasks.base import Sums, Task
from lamina.tasks.classify import build_model_for, eval_split_loader, split_loaders

LOSSES = ("mse", "huber")


class Regress(Task):
    """One real-valued target per example.

    Args:
        target_mean, target_std: of the training targets (the model predicts ``(y - mean) / std``).
        target: the target's name (a table's label column).
        loss: ``mse`` (default) or ``huber`` on standardised targets.
    """

    name: ClassVar[str] = "regress"
    headline: ClassVar[str] = "rmse"
    higher_is_better: ClassVar[bool] = False
    # Where the run's config keeps lamina's defaults (applies when the data declares regression
    # before loading: data.task=regress). Label smoothing means nothing for a regression.
    defaults: ClassVar[dict[str, Any]] = {"train": {"label_smoothing": 0.0}}

    def __init__(self, target_mean: float, target_std: float, *, target: str = "target", loss: str = "mse") -> None:
        if loss not in LOSSES:
            raise LaminaError(f"unknown regression loss '{loss}': use {' or '.join(LOSSES)}")
        if not (math.isfinite(target_mean) and math.isfinite(target_std)):
            raise LaminaError("regression targets must be finite numbers")
        self.mean = float(target_mean)
        self.std = float(target_std) if target_std > 0 else 1.0  # one value only: predictions are that value
        self.target, self.loss_name = target, loss

    # -- one step ------------------------------------------------------------------------------
    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        """Standardised predictions (B,)."""
        return model(x).reshape(len(x))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        z = (targets.float() - self.mean) / self.std
        if self.loss_name == "huber":
            return F.huber_loss(outputs.float(), z, delta=1.0)
        return F.mse_loss(outputs.float(), z)

    def sums(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> Sums:
        dtype = torch.float32 if outputs.device.type == "mps" else torch.float64
        pred = outputs.detach().to(dtype) * self.std + self.mean
        y = targets.to(dtype)
        err = pred - y
        yc = y - self.mean
        n = len(targets)
        return {"count": n, "loss_sum": loss.detach().to(dtype) * n, "se_sum": (err * err).sum(),
                "ae_sum": err.abs().sum(), "yc_sum": yc.sum(), "yc2_sum": (yc * yc).sum()}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return regression_metrics(sums)

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "target": self.target, "target_mean": self.mean, "target_std": self.std}

    # -- what a run of this task is made of ------------------------------------------------------
    @classmethod
    def from_data(cls, ds: Dataset, cfg: RunConfig) -> Regress:
        y = ds.train.y
        if y is None or not y.dtype.is_floating_point or len(y) == 0:
            raise LaminaError(f"{ds.name}: a regression needs real-valued training targets")
        y64 = y.double()
        std = float(y64.std(correction=0)) if len(y64) > 1 else 1.0
        return cls(float(y64.mean()), std, target=ds.target_name or "target")

    def build_model(self, m: ModelConfig, ds: Dataset) -> Model:
        return build_model_for(m, ds, 1)

    def loaders(self, ds: Dataset, d: DataConfig, *, device: torch.device, seed: int,
                channels_last: bool) -> dict[str, Any]:
        """Training batches shuffled (never augmented: a transformed input may change its target);
        evaluation batches of at least 1,024 examples, in order."""
        return split_loaders(ds, d, device=device, seed=seed, channels_last=channels_last)

    def eval_loader(self, split: Split, ds: Dataset, d: DataConfig, *, device: torch.device,
                    channels_last: bool = False) -> Any:
        return eval_split_loader(split, ds, d, device=device, channels_last=channels_last)

    def final_metrics(self, model: nn.Module, loaders: dict[str, Any], *,
                      autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                      ) -> dict[str, Any]:
        """The run's ``summary.json`` metrics: the test split's RMSE first (the headline)."""
        m = self.evaluate(model, loaders["test"], autocast=autocast)
        return {"test_rmse": m["rmse"], "test_mae": m["mae"], "test_r2": m["r2"], "test_loss": m["loss"],
                "test_examples": m["examples"], "target": self.target}


def regression_metrics(sums: dict[str, float]) -> dict[str, float]:
    """``loss`` (standardised), ``rmse``, ``mae`` and ``r2`` from the running sums.

    R² = 1 - SSE / SST with SST = Σ(y - ȳ)² of the scored targets (computed from targets centred on
    the training mean: Σyc² - (Σyc)² / n); a constant target has R² 0 when predicted exactly, else -inf.
    """
    n = max(sums["count"], 1)
    se, ae = sums.get("se_sum", 0.0), sums.get("ae_sum", 0.0)
    sst = sums.get("yc2_sum", 0.0) - sums.get("yc_sum", 0.0) ** 2 / n
    if sst > 1e-12 * max(sums.get("yc2_sum", 0.0), 1e-300):
        r2 = 1.0 - se / sst
    else:
        r2 = 0.0 if se == 0 else -math.inf
    return {"loss": sums["loss_sum"] / n, "rmse": math.sqrt(max(se, 0.0) / n), "mae": ae / n, "r2": r2}


REGISTERED = (Regress,)
