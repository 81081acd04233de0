"""Adversarial training as a task wrapper: the Trainer learns from adversarial examples.

:class:`AdversarialTraining` wraps a :class:`~lamina.tasks.classify.Classify` task and changes one
thing: :meth:`~lamina.tasks.base.Task.train_inputs`, which the Trainer calls before every training
forward pass, returns adversarial examples of the current model (PGD, Madry et al. 2018; or
FGSM from a random start, Wong et al. 2020) in place of the batch. Everything else is the inner
task's, delegated explicitly, so the saved model and its loading do not change (the task is
still ``classify``; ``model.json`` gains an ``adversarial`` entry).

- The loader's batch is normalised (maybe channels_last); it is mapped back to raw units
  (``u = x * std + mean``), attacked there at ``cfg.eps`` under ``cfg.norm`` inside the input
  range, and normalised again, detached, in the batch's memory format.
- The model stays in **train mode** during the attack, as Madry et al. and Wong et al. train:
  the attack sees the network the step will update (BatchNorm on batch statistics, dropout on;
  BatchNorm's running statistics also see the attack's forward passes).
- Training metrics are over the adversarial batch: ``metrics.jsonl`` logs ``train_loss`` (the
  adversarial loss) and ``train_robust_accuracy``.
- Evaluation is the inner task's (clean: ``loss``, ``accuracy``, per class, confusion) plus
  ``robust_accuracy`` under a cheap PGD (``cfg.eval_steps`` steps at ``cfg.eps``) on the first
  ``cfg.eval_examples`` examples: each epoch logs ``val_accuracy`` and ``val_robust_accuracy``,
  and ``summary.json`` gets ``test_robust_accuracy``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lamina.config import AdversarialConfig
from lamina.data.base import Preprocess
from lamina.errors import LaminaError, did_you_mean
from lamina.robustness.attacks import NORMS, RawModel, attack, attack_batches, max_eps, model_device
from lamina.tasks.base import Batch, Sums, Task
from lamina.tasks.classify import Classify
from lamina.utils import dist

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]
TRAINING_METHODS = ("pgd", "fgsm-rs")
EVAL_SEED = 0  # the per-epoch robust evaluation's random starts: the same every epoch, apart from training's RNG


def check_config(cfg: AdversarialConfig, *, lower: float | None = None, upper: float | None = None,
                 dims: int | None = None) -> None:
    """One-line errors for a bad ``adversarial`` config section (``method ""``: off, nothing to check).

    Args:
        cfg: the section.
        lower, upper: the input range, when known: ε may not exceed it (L∞) or, with ``dims``
            (numbers per example), the range box's diameter (L2).
        dims: the numbers per example (L2's bound), when known.
    """
    if not cfg.method:
        return
    if cfg.method not in TRAINING_METHODS:
        raise LaminaError(f"unknown adversarial.method '{cfg.method}': {did_you_mean(cfg.method, TRAINING_METHODS)}"
                          " (or '' for none)")
    if cfg.norm not in NORMS:
        raise LaminaError(f"unknown adversarial.norm '{cfg.norm}': {did_you_mean(cfg.norm, NORMS)}")
    if not (math.isfinite(cfg.eps) and cfg.eps > 0):
        raise LaminaError(f"adversarial.eps must be positive (raw input units, pixels in [0, 1]), got {cfg.eps}")
    if lower is not None and upper is not None and (cfg.norm == "linf" or dims is not None):
        top = max_eps(cfg.norm, lower, upper, dims or 1)
        if cfg.eps > top:
            raise LaminaError(f"adversarial.eps {cfg.eps:g} is larger than the whole input range under {cfg.norm} "
                              f"({top:g}): give it in raw input units (pixels in [0, 1]), e.g. 0.1")
    checks = [(cfg.steps >= 1, f"adversarial.steps must be at least 1, got {cfg.steps}"),
              (math.isfinite(cfg.step_size) and cfg.step_size >= 0,
               f"adversarial.step_size is a fraction of eps, 0 (the default) or more, got {cfg.step_size}"),
              (cfg.eval_examples >= 0, f"adversarial.eval_examples must be 0 (off) or more, got {cfg.eval_examples}"),
              (cfg.eval_steps >= 1, f"adversarial.eval_steps must be at least 1, got {cfg.eval_steps}")]
    for ok, message in checks:
        if not ok:
            raise LaminaError(message)


def _dims(preprocess: Preprocess) -> int | None:
    if preprocess.channels and preprocess.size:
        return preprocess.channels * preprocess.size[0] * preprocess.size[1]
    return None


class AdversarialTraining(Task):
    """A classification task whose training batches are adversarial examples of the model.

    Args:
        inner: the classification task (loss, metrics, model, loaders are its own).
        cfg: the ``adversarial`` config section (``method`` must be set).
        preprocess: the data's, to map normalised batches to raw units and back.
        lower, upper: the raw input range (images: 0 and 1; see
            :func:`~lamina.robustness.attacks.input_bounds`).
    """

    name: ClassVar[str] = "classify"  # the saved model is a classifier like any other
    headline: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = Classify.defaults

    def __init__(self, inner: Classify, cfg: AdversarialConfig, preprocess: Preprocess, *, lower: float = 0.0,
                 upper: float = 1.0) -> None:
        if not isinstance(inner, Classify):
            raise LaminaError(f"adversarial training wraps a classifier's task, not {type(inner).__name__}")
        if not cfg.method:
            raise LaminaError("adversarial.method is '' (off): set pgd or fgsm-rs to train adversarially")
        if preprocess.kind == "tokens":
            raise LaminaError("adversarial training needs continuous inputs; this data is token ids (text)")
        check_config(cfg, lower=lower, upper=upper, dims=_dims(preprocess))
        self.inner, self.cfg, self.preprocess = inner, cfg, preprocess
        self.lower, self.upper = float(lower), float(upper)
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._raw: RawModel | None = None

    # -- the inner classifier's attributes --------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    @property
    def classes(self) -> list[str]:
        return self.inner.classes

    @property
    def tta_flip(self) -> bool:
        return self.inner.tta_flip

    # -- one step ------------------------------------------------------------------------------
    def _mean_std(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.device not in self._stats:
            self._stats[x.device] = (torch.tensor(self.preprocess.mean, device=x.device),
                                     torch.tensor(self.preprocess.std, device=x.device))
        mean, std = self._stats[x.device]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return mean.view(shape), std.view(shape)

    def to_raw(self, x: Tensor) -> Tensor:
        """Normalised inputs -> raw units, in the input range (undoing the normalisation's rounding)."""
        mean, std = self._mean_std(x)
        return (x.float() * std + mean).clamp(self.lower, self.upper)

    def train_inputs(self, model: nn.Module, x: Tensor, y: Tensor, *,
                     autocast: Autocast = contextlib.nullcontext) -> Tensor:
        """Adversarial examples of ``model`` (in its current mode: train) for the normalised batch ``x``,
        normalised, detached, in ``x``'s memory format."""
        c = self.cfg
        if c.method == "pgd":
            step = c.step_size or 2.5 / c.steps
        else:
            step = c.step_size or 1.25
        raw_model = self._raw_model(model, x.device)
        # DDP: the attack's passes must not arm the gradient all-reduce (only the step's backward does)
        sync = model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()
        with sync:
            adv = attack(c.method, raw_model, self.to_raw(x), y, eps=c.eps, norm=c.norm, lower=self.lower,
                         upper=self.upper, steps=c.steps, step_size=step, autocast=autocast)
        mean, std = self._mean_std(adv)
        out = ((adv - mean) / std).to(x.dtype)
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out.detach()

    def _raw_model(self, model: nn.Module, device: torch.device) -> RawModel:
        """The training model in raw units (no test-time flips: training's forward has none), built once."""
        if self._raw is None or self._raw.model is not model:
            self._raw = RawModel(model, self.preprocess)
            self._raw.mean, self._raw.std = self._raw.mean.to(device), self._raw.std.to(device)
        return self._raw

    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        return self.inner.forward(model, x)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.inner.loss(outputs, targets)

    def sums(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> Sums:
        return self.inner.sums(outputs, targets, loss)

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Training metrics of adversarial batches: ``loss`` (adversarial) and ``robust_accuracy``."""
        n = max(sums["count"], 1)
        return {"loss": sums["loss_sum"] / n, "robust_accuracy": sums.get("correct", 0.0) / n}

    # -- evaluation ----------------------------------------------------------------------------
    def robust_evaluate(self, model: nn.Module, loader: Iterable[Batch], *,
                        autocast: Autocast = contextlib.nullcontext) -> tuple[float, int]:
        """Robust accuracy under PGD-``eval_steps`` at ``cfg.eps`` on the first ``cfg.eval_examples``
        examples of ``loader`` (eval mode, restored after), and how many examples that was."""
        c = self.cfg
        was_training = model.training
        model.eval()
        raw_model = RawModel(model, self.preprocess, tta_flip=self.inner.tta_flip)
        g = torch.Generator(device=model_device(model)).manual_seed(EVAL_SEED)
        correct = n = 0
        shards = dist.world_size() if dist.sharded(loader) else 1  # each rank attacks its share of the examples
        # the loader is left part-way through: put its position back, or its next pass starts there
        state = loader.state_dict() if hasattr(loader, "state_dict") else None
        try:
            with torch.enable_grad():
                batches = ((self.to_raw(x), y) for x, y in loader)
                for _, yb, pred in attack_batches(raw_model, batches, method="pgd", eps=c.eps, norm=c.norm,
                                                  lower=self.lower, upper=self.upper, steps=c.eval_steps,
                                                  step_size=2.5 / c.eval_steps, autocast=autocast, generator=g,
                                                  max_examples=-(-c.eval_examples // shards)):
                    correct += int((pred == yb).sum())
                    n += len(yb)
        finally:
            model.train(was_training)
            if state is not None:
                loader.load_state_dict(state)  # type: ignore[attr-defined]
        if shards > 1:
            r = dist.reduce_sums({"correct": correct, "n": n})
            correct, n = int(r["correct"]), int(r["n"])
        return correct / max(n, 1), n

    def evaluate(self, model: nn.Module, loader: Iterable[Batch], *,
                 autocast: Autocast = contextlib.nullcontext) -> dict[str, Any]:
        """The inner task's clean metrics, plus ``robust_accuracy``/``robust_examples`` (unless
        ``cfg.eval_examples`` is 0)."""
        m = self.inner.evaluate(model, loader, autocast=autocast)
        if self.cfg.eval_examples > 0:
            m["robust_accuracy"], m["robust_examples"] = self.robust_evaluate(model, loader, autocast=autocast)
        return m

    def scalars(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {k: v for k, v in self.inner.scalars(metrics).items() if k != "robust_examples"}

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "adversarial": asdict(self.cfg)}

    # -- what a run is made of: the inner task's ------------------------------------------------
    @classmethod
    def from_data(cls, ds: Any, cfg: Any) -> Task:
        raise LaminaError("AdversarialTraining wraps a task: AdversarialTraining(Classify.from_data(ds, cfg), "
                          "cfg.adversarial, ds.preprocess)")

    def build_model(self, m: Any, ds: Any) -> nn.Module:
        return self.inner.build_model(m, ds)

    def loaders(self, ds: Any, d: Any, *, device: torch.device, seed: int, channels_last: bool) -> dict[str, Any]:
        return self.inner.loaders(ds, d, device=device, seed=seed, channels_last=channels_last)

    def eval_loader(self, split: Any, ds: Any, d: Any, *, device: torch.device, channels_last: bool = False) -> Any:
        return self.inner.eval_loader(split, ds, d, device=device, channels_last=channels_last)

    def callbacks(self, run_dir: Path) -> list[Any]:
        return self.inner.callbacks(run_dir)

    def final_metrics(self, model: nn.Module, loaders: dict[str, Any], *,
                      autocast: Autocast = contextlib.nullcontext) -> dict[str, Any]:
        """The inner task's ``summary.json`` fields, ``test_robust_accuracy`` after ``test_accuracy``
        (unless ``cfg.eval_examples`` is 0), and the ``adversarial`` config."""
        inner = self.inner.final_metrics(model, loaders, autocast=autocast)
        out: dict[str, Any] = {}
        for k, v in inner.items():
            out[k] = v
            if k == "test_accuracy" and self.cfg.eval_examples > 0:
                out["test_robust_accuracy"], out["test_robust_examples"] = self.robust_evaluate(
                    model, loaders["test"], autocast=autocast)
        out["adversarial"] = asdict(self.cfg)
        return out
