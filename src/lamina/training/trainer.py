"""The Trainer: the loop, in one screen. Everything else is a callback or the engine."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lamina.errors import LaminaError
from lamina.training.callbacks import Callback, CancelFit
from lamina.training.engine import Engine, rng_state, set_rng_state
from lamina.training.metrics import ClassificationMetrics

LossFn = Callable[[Tensor, Tensor], Tensor]


class Trainer:
    """Fits a classifier. ``fit`` emits fit_start, epoch_start, batch_end, epoch_end, fit_end.

    Args:
        model: the network (any ``nn.Module`` mapping inputs to logits).
        engine: device/precision/compile (see :class:`Engine`).
        optimizer, scheduler: built for ``model``; the scheduler steps once per batch.
        num_classes: for the metrics.
        label_smoothing, grad_clip: the loss and the max global gradient norm (0: off).
        ema_decay: keep an exponential moving average of the weights and evaluate with it (0: off).
        on_nan: what a non-finite loss or gradient does: stop | skip | rollback (see :class:`NanGuard`).
        tta_flip: evaluate with test-time flips (see :func:`evaluate`).
        callbacks: progress, logging, early stopping, checkpoints...
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        engine: Engine,
        optimizer: torch.optim.Optimizer,
        num_classes: int,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        label_smoothing: float = 0.0,
        grad_clip: float = 0.0,
        ema_decay: float = 0.0,
        on_nan: str = "stop",
        tta_flip: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.module = model.to(engine.device)  # the original module: state_dict, EMA, saving
        self.model = engine.setup(self.module)  # what is called: maybe compiled
        self.engine, self.optimizer, self.scheduler = engine, optimizer, scheduler
        self.num_classes = num_classes
        self.loss_fn: LossFn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.grad_clip = grad_clip
        self.nan_guard = NanGuard(on_nan)
        self.tta_flip = tta_flip
        self.ema = AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) if ema_decay > 0 else None
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.step = self.epoch = self.samples = 0
        self.epochs = self.total_steps = self.batch_size = 0
        self.train_seconds = 0.0
        self.stop_reason = ""
        self.last_epoch: dict[str, Any] = {}
        self.train_loader: Any = None
        self._resume_data: dict[str, Any] | None = None
        self._resume_sums: dict[str, Any] | None = None

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, train: Any, val: Iterable[tuple[Tensor, Tensor]] | None = None, *, epochs: int) -> None:
        self.train_loader, self.epochs, self.batch_size = train, epochs, train.batch_size
        self.total_steps = epochs * len(train)
        self._emit("fit_start")
        try:
            while self.epoch < epochs:
                self._emit("epoch_start")
                self._train_epoch(train)
                self.last_epoch = self._epoch_record(val)
                self.epoch += 1
                self._emit("epoch_end")
        except CancelFit as stop:
            self.stop_reason = str(stop)
        finally:
            self._emit("fit_end")

    def _train_epoch(self, loader: Any) -> None:
        # The trainer owns the epoch count; a loader resumed inside this epoch goes on from its position
        # (which may be its end, when the checkpoint was taken after the last batch but before epoch_end).
        resume = self._resume_data
        self._resume_data = None
        if resume is not None and int(resume["epoch"]) == self.epoch and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(resume)
        elif hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        self.model.train()
        sums = self._resume_sums or {"loss_sum": 0.0, "correct": 0, "seen": 0}
        self._resume_sums = None
        self._loss_sum = torch.tensor(float(sums["loss_sum"]), device=self.engine.device)
        self._correct = torch.tensor(int(sums["correct"]), dtype=torch.long, device=self.engine.device)
        self._seen = int(sums["seen"])
        self._t0 = time.perf_counter()
        try:
            for x, y in loader:
                loss, correct = self.train_step(x, y)
                self._loss_sum += loss * len(y)
                self._correct += correct
                self._seen += len(y)
                self.samples += len(y)
                self.step += 1
                self._emit("batch_end")
        finally:  # a run stopped inside an epoch (time limit, signal) still counts that time
            self.engine.synchronize()
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One optimisation step; returns the (detached) mean loss and the number correct."""
        if self.nan_guard.policy == "skip":  # a skipped step must not leave NaN in BatchNorm statistics
            self.nan_guard.snapshot_buffers(self.module)
        with self.engine.autocast():
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.engine.backward(loss)
        if self.nan_guard.policy != "off" and not self.nan_guard.finite(loss, self.module):  # one host sync
            self.nan_guard.handle(self, loss, x)  # raises (stop/rollback) or returns to skip the update
            self.optimizer.zero_grad(set_to_none=True)
            return torch.zeros((), device=loss.device), torch.zeros((), dtype=torch.long, device=loss.device)
        if self.grad_clip > 0:
            self.engine.clip_grad(self.module.parameters(), self.grad_clip, self.optimizer)
        self.engine.step(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        return loss.detach(), (logits.argmax(dim=1) == y).sum()

    def evaluate(self, loader: Iterable[tuple[Tensor, Tensor]], *, tta_flip: bool | None = None) -> dict[str, Any]:
        """Loss, accuracy, per-class accuracy and confusion matrix (with the EMA weights if any);
        ``tta_flip``: test-time flips (None: the trainer's setting)."""
        model = self.ema.module if self.ema is not None else self.model
        tta = self.tta_flip if tta_flip is None else tta_flip
        return evaluate(model, loader, engine=self.engine, num_classes=self.num_classes, tta_flip=tta)

    # -- state read by callbacks -------------------------------------------------------------
    def _emit(self, event: str) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self)

    def _epoch_record(self, val: Iterable[tuple[Tensor, Tensor]] | None) -> dict[str, Any]:
        loss, acc = self.running()
        record = {"epoch": self.epoch + 1, "step": self.step, "train_loss": loss, "train_accuracy": acc,
                  "lr": self.lr, "seconds": self.train_seconds}
        if val is not None:
            m = self.evaluate(val)
            record |= {"val_loss": m["loss"], "val_accuracy": m["accuracy"]}
        return record

    def running(self) -> tuple[float, float]:
        """Mean loss and accuracy of the current epoch so far (one host sync)."""
        n = max(self._seen, 1)
        return float(self._loss_sum) / n, float(self._correct) / n

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def elapsed(self) -> float:
        """Training seconds so far, including the current epoch."""
        now = time.perf_counter() - self._t0 if getattr(self, "_t0", None) else 0.0
        return self.train_seconds + now

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"step": self.step, "epoch": self.epoch, "train_seconds": self.elapsed,
                         "samples": self.samples, "skipped_steps": self.nan_guard.skipped},
            "epoch_sums": {"loss_sum": float(self._loss_sum), "correct": int(self._correct), "seen": self._seen}
            if getattr(self, "_t0", None) else None,
            "rng": rng_state(),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.engine.scaler is not None:
            state["scaler"] = self.engine.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.train_loader is not None and hasattr(self.train_loader, "state_dict"):
            state["data"] = self.train_loader.state_dict()
        state["callbacks"] = {type(cb).__name__: cb.state_dict() for cb in self.callbacks if hasattr(cb, "state_dict")}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Everything :meth:`state_dict` saved: continue exactly where that checkpoint was taken."""
        self.load_weights(state)
        c = state["counters"]
        self.step, self.epoch, self.train_seconds = int(c["step"]), int(c["epoch"]), float(c["train_seconds"])
        self.samples = int(c.get("samples", 0))
        self.nan_guard.skipped = int(c.get("skipped_steps", 0))
        self._resume_sums = state.get("epoch_sums")
        saved = state.get("callbacks") or {}
        for cb in self.callbacks:
            if hasattr(cb, "load_state_dict") and type(cb).__name__ in saved:
                cb.load_state_dict(saved[type(cb).__name__])
        set_rng_state(state["rng"])
        self._resume_data = state.get("data")

    def load_weights(self, state: dict[str, Any]) -> None:
        """Model, optimizer, scheduler, grad scaler and EMA from a checkpoint (not data or RNG)."""
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.engine.scaler is not None and "scaler" in state:
            self.engine.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])


def flip_tta_log_probs(model: nn.Module, x: Tensor) -> Tensor:
    """Test-time flip augmentation: log of the mean of the class probabilities of the images ``x``
    (B, C, H, W) and of their mirror images ``x.flip(-1)``, (B, K) in fp32.

    Computed as ``logaddexp(log_softmax(a), log_softmax(b)) - log 2``: exact where a probability
    underflows, and ``exp`` of it is the averaged softmax.
    """
    a = model(x).float().log_softmax(dim=1)
    b = model(x.flip(-1)).float().log_softmax(dim=1)
    return torch.logaddexp(a, b) - math.log(2.0)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], *, engine: Engine, num_classes: int,
             tta_flip: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on every batch of ``loader``: see :class:`ClassificationMetrics`.

    With ``tta_flip`` an image batch (B, C, H, W) is scored by the mean of the softmax of ``x`` and of
    ``x.flip(-1)`` (:func:`flip_tta_log_probs`; the loss is the NLL of that mean); other batches as they are.
    """
    was_training = model.training
    model.eval()
    metrics = ClassificationMetrics(num_classes, engine.device)
    for x, y in loader:
        with engine.autocast():
            logits = flip_tta_log_probs(model, x) if tta_flip and x.dim() == 4 else model(x)
        loss = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        metrics.update(logits, y, loss)
    model.train(was_training)
    return metrics.compute()


class NonFiniteError(LaminaError):
    """A NaN or inf in the loss or the gradients (``--on-nan stop``)."""


class NanGuard:
    """Catches a non-finite loss or gradient in the step it happens, before the weights change.

    Policies: ``stop`` raises :class:`NonFiniteError` naming the step and the first parameter (in
    depth order) whose gradient is non-finite; ``skip`` drops that update and goes on; ``rollback``
    reloads the weights and optimizer of the newest checkpoint (the data goes on from where it is)
    and stops after ``max_rollbacks``; ``off`` checks nothing (no per-step host sync).
    """

    POLICIES = ("stop", "skip", "rollback", "off")

    def __init__(self, policy: str = "stop", max_rollbacks: int = 3) -> None:
        if policy not in self.POLICIES:
            raise LaminaError(f"unknown on_nan policy '{policy}': use one of {', '.join(self.POLICIES)}")
        self.policy, self.max_rollbacks = policy, max_rollbacks
        self.skipped = self.rollbacks = 0
        self.rollback_source: Callable[[], dict[str, Any] | None] | None = None  # set by the checkpoint callback

    @staticmethod
    def finite(loss: Tensor, model: nn.Module) -> bool:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        # the largest |gradient| (fused foreach kernels; NaN and inf propagate, large finite values don't overflow)
        peak = torch.nn.utils.get_total_norm(grads, norm_type=math.inf) if grads else loss.new_zeros(())
        return bool(torch.isfinite(loss).all() & torch.isfinite(peak))

    def snapshot_buffers(self, model: nn.Module) -> None:
        self._buffers = [b.detach().clone() for b in model.buffers()]

    def restore_buffers(self, model: nn.Module) -> None:
        with torch.no_grad():
            for b, saved in zip(model.buffers(), self._buffers, strict=True):
                b.copy_(saved)

    @staticmethod
    def first_bad_output(trainer: Trainer, x: Tensor) -> str | None:
        """Re-run the forward pass with hooks and name the first module whose output is non-finite.

        Buffers (BatchNorm statistics) and RNG states are restored afterwards, so diagnosing
        changes nothing about the run.
        """
        model = trainer.module
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        rng = rng_state()
        found: list[str] = []

        def check(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, inputs: Any, output: Any) -> None:
                if not found and isinstance(output, Tensor) and not torch.isfinite(output).all():
                    found.append(name)
            return hook

        hooks = [m.register_forward_hook(check(name)) for name, m in model.named_modules() if name]
        try:
            with torch.no_grad(), trainer.engine.autocast():
                model(x)
        finally:
            for h in hooks:
                h.remove()
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            set_rng_state(rng)
        return found[0] if found else None

    @staticmethod
    def first_bad_gradient(model: nn.Module) -> str | None:
        """The deepest parameter with a non-finite gradient: the first one backward reached."""
        for name, p in reversed(list(model.named_parameters())):
            if p.grad is not None and not torch.isfinite(p.grad).all():
                return name
        return None

    def handle(self, trainer: Trainer, loss: Tensor, x: Tensor) -> None:
        step = trainer.step + 1
        value = float(loss.detach())
        layer = self.first_bad_output(trainer, x) if not torch.isfinite(loss.detach()) else None
        if layer is not None:
            where = f"non-finite loss ({value:g}) at step {step}: the first non-finite output is layer '{layer}'"
        else:
            where = (f"non-finite gradient at step {step} (loss {value:g}): the first non-finite gradient is "
                     f"'{self.first_bad_gradient(trainer.module)}'")
        if self.policy == "skip":
            self.skipped += 1
            self.restore_buffers(trainer.module)
            return
        if self.policy == "rollback" and self.rollbacks < self.max_rollbacks:
            state = self.rollback_source() if self.rollback_source else None
            if state is not None:
                self.rollbacks += 1
                trainer.load_weights(state)
                return
            where += "; no checkpoint to roll back to"
        raise NonFiniteError(f"{where}; the last good checkpoint is kept (lower train.lr, set train.grad_clip, "
                             "or use --on-nan skip|rollback)")
