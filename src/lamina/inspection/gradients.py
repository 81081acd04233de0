"""Gradient flow during training: per-layer gradient norm, weight norm and update-to-weight ratio.

A vanishing gradient shows as norms shrinking towards the input; a learning rate too high or
too low as update ratios far from the usual ~1e-3 (Karpathy's rule of thumb).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from lamina.errors import LaminaError
from lamina.training.callbacks import Callback
from lamina.utils import dist as dist_utils
from lamina.utils.io import JsonLines

if TYPE_CHECKING:
    from lamina.training.trainer import Trainer


def weight_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weight matrices and kernels (ndim > 1) of ``model`` in model order: no biases or norm scales."""
    return [(n, p) for n, p in model.named_parameters() if p.ndim > 1]


class GradientFlow(Callback):
    """Every ``every`` steps, append one JSON line to ``path`` (``gradients.jsonl``)::

        {"step": s, "layers": [{"name", "grad_norm", "weight_norm", "update_ratio"}, ...]}

    for every weight parameter with ndim > 1, in model order. ``update_ratio`` is
    ``||w_s - w_{s-1}|| / ||w_s||``: the weights of step ``s - 1`` are copied at its batch_end
    (only before a recorded step, so the copy costs one model's weights every ``every`` steps).
    The gradients are those of step ``s`` as the optimizer used them (still in ``p.grad`` at batch_end:
    unscaled under fp16, after clipping when ``train.grad_clip`` is set).
    ``grad_norm`` is None for a parameter without a gradient (e.g. a step skipped by the NaN guard);
    non-finite values are written as None, so every line is strict JSON.
    """

    order = 60  # after the metrics logger, before the progress bar

    def __init__(self, path: str | Path, every: int = 10) -> None:
        if int(every) < 1:
            raise LaminaError(f"GradientFlow needs every >= 1, got {every}")
        self.path, self.every = Path(path), int(every)
        self._file: JsonLines | None = None
        self._previous: list[Tensor] | None = None

    def _snapshot_if_due(self, trainer: Trainer) -> None:
        # the next step is recorded: keep its "before" weights
        if (trainer.step + 1) % self.every == 0:
            self._previous = [p.detach().clone() for _, p in weight_params(trainer.module)]

    def fit_start(self, trainer: Trainer) -> None:
        self._file = JsonLines(self.path, allow_nan=False) if dist_utils.is_main() else None
        self._previous = None
        self._snapshot_if_due(trainer)

    def batch_end(self, trainer: Trainer) -> None:
        if trainer.step % self.every == 0:
            self._write({"step": trainer.step, "layers": self.record(trainer.module, self._previous)})
            self._previous = None
        self._snapshot_if_due(trainer)

    def fit_end(self, trainer: Trainer) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @staticmethod
    @torch.no_grad()
    def record(model: nn.Module, previous: list[Tensor] | None) -> list[dict[str, Any]]:
        """The per-layer entries for the current weights and gradients (one host sync)."""
        params = weight_params(model)
        if not params:
            return []
        nan = torch.tensor(float("nan"))
        if any(isinstance(p, DTensor) for _, p in params):
            values = _sharded_norms(params, previous)
        else:
            rows = []
            for i, (_, p) in enumerate(params):
                w = p.detach().float()
                g = p.grad.detach().float().norm() if p.grad is not None else nan.to(w.device)
                upd = (w - previous[i].float()).norm() if previous is not None else nan.to(w.device)
                rows.append(torch.stack([g, w.norm(), upd]))
            values = torch.stack(rows).cpu().tolist()  # (P, 3)

        def finite(v: float) -> float | None:
            return v if v == v and abs(v) != float("inf") else None

        out = []
        for (name, _), (g, wn, upd) in zip(params, values, strict=True):
            ratio = upd / wn if finite(wn) is not None and wn > 0 and finite(upd) is not None else None
            out.append({"name": name, "grad_norm": finite(g), "weight_norm": finite(wn), "update_ratio": ratio})
        return out

    def _write(self, record: dict[str, Any]) -> None:  # rank 0's file (fsdp: every rank computes)
        if self._file is not None:
            self._file.write(record)


def _sharded_norms(params: list[tuple[str, Tensor]], previous: list[Tensor] | None) -> list[list[float]]:
    """Gradient, weight and update norms of sharded parameters (FSDP's ``DTensor`` s): each rank's
    squared sums of its shards, added over the ranks (a collective: every rank records), then roots."""
    def local(t: Tensor) -> Tensor:
        return (t.to_local() if isinstance(t, DTensor) else t).detach().float()

    rows = []
    for i, (_, p) in enumerate(params):
        w = local(p)
        nan = torch.tensor(float("nan"), device=w.device)
        g = local(p.grad).square().sum() if p.grad is not None else nan
        upd = (w - local(previous[i])).square().sum() if previous is not None else nan
        rows.append(torch.stack([g, w.square().sum(), upd]))
    squares = dist_utils.reduce_sums({"squares": torch.stack(rows)})["squares"]  # (P, 3)
    return squares.sqrt().cpu().tolist()  # type: ignore[union-attr]
