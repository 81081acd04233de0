"""The Trainer: the loop, in one screen. Everything else is a callback, the engine or the task."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lamina.errors import LaminaError
from lamina.tasks.base import Sums, Task, add_sums, to_floats
from lamina.training import checkpoint
from lamina.training.callbacks import Callback, CancelFit
from lamina.training.distributed import shard_like, shard_optimizer_state
from lamina.training.engine import Engine, rng_state, set_rng_state
from lamina.training.nan_guard import NanGuard
from lamina.utils import dist as dist_utils


class Trainer:
    """Fits a model to a task. ``fit`` emits fit_start, epoch_start, batch_end, epoch_end, fit_end.

    Args:
        model: the network (any ``nn.Module`` the task can call).
        engine: device/precision/compile (see :class:`Engine`).
        optimizer, scheduler: built for ``model``; the scheduler steps once per batch.
        task: the loss, the running metrics and the evaluation (see :class:`lamina.tasks.base.Task`).
        grad_clip: the max global gradient norm (0: off).
        ema_decay: keep an exponential moving average of the weights and evaluate with it (0: off).
        on_nan: what a non-finite loss or gradient does: stop | skip | rollback | off (see :class:`NanGuard`).
        rollback: returns the newest checkpoint's state for ``on_nan="rollback"`` (e.g. the
            checkpoint callback's ``newest_state``).
        callbacks: progress, logging, early stopping, checkpoints...
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        engine: Engine,
        optimizer: torch.optim.Optimizer,
        task: Task,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        grad_clip: float = 0.0,
        ema_decay: float = 0.0,
        on_nan: str = "stop",
        rollback: Callable[[], dict[str, Any] | None] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.module = model.to(engine.device)  # the original module: state_dict, EMA, saving
        self.model = engine.setup(self.module)  # what is called: maybe compiled, maybe DDP-wrapped
        self.eval_model = engine.eval_module(self.module, self.model)  # what evaluation calls
        self.engine, self.optimizer, self.scheduler, self.task = engine, optimizer, scheduler, task
        self.grad_clip = grad_clip
        self.nan_guard = NanGuard(on_nan, rollback_source=rollback)
        if ema_decay > 0 and engine.dist.strategy == "fsdp":
            raise LaminaError("train.ema under fsdp is not supported: drop train.ema or use train.strategy=ddp")
        self.ema = AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) if ema_decay > 0 else None
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.step = self.epoch = self.samples = 0
        self.epochs = self.total_steps = self.batch_size = 0
        self.train_seconds = 0.0
        self.stop_reason = ""
        self.last_epoch: dict[str, Any] = {}
        self.train_loader: Any = None
        self._resume_data: dict[str, Any] | None = None
        self._next_exchange, self._exchanged_at = 0, (0.0, 0)  # several processes: see _exchange
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
        self._sums: Sums = {k: v.to(self.engine.device) if isinstance(v, Tensor) else v
                            for k, v in (self._resume_sums or {}).items()}
        self._resume_sums = None
        self._t0 = time.perf_counter()
        try:
            world = self.engine.dist.world_size  # every rank steps on an equal part of the global batch
            for x, y in loader:
                add_sums(self._sums, self.train_step(x, y))
                self.samples += len(y) * world
                self.step += 1
                if world > 1:
                    self._exchange()
                self._emit("batch_end")
                dist_utils.settle()
        finally:  # a run stopped inside an epoch (time limit, signal) still counts that time
            self.engine.synchronize()
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    def train_step(self, x: Tensor, y: Tensor) -> Sums:
        """One optimisation step; returns what it adds to the running metrics (the task's sums)."""
        self.engine.dist.reseed(self.step)  # several processes: torch's draws from (seed, step, rank)
        if self.nan_guard.policy == "skip":  # a skipped step must not leave NaN in BatchNorm statistics
            self.nan_guard.snapshot_buffers(self.module)
        x = self.task.train_inputs(self.model, x, y, autocast=self.engine.autocast)
        with self.engine.autocast():
            out = self.task.forward(self.model, x)
        loss = self.task.loss(out, y)
        if self.engine.dist.world_size > 1 and self.nan_guard.policy != "off":
            # A non-finite loss on one rank turns its gradients, and so every rank's all-reduced ones, into
            # NaN: all ranks see the same non-finite gradients and take the same branch, with no message.
            loss = loss * torch.where(torch.isfinite(loss.detach()), 1.0, torch.nan)
        self.optimizer.zero_grad(set_to_none=True)
        self.engine.backward(loss)
        if self.nan_guard.policy != "off" and not self.nan_guard.finite(loss, self.module):  # one host sync
            self.nan_guard.handle(self, loss, x)  # raises (stop/rollback) or returns to skip the update
            self.optimizer.zero_grad(set_to_none=True)
            return {}
        if self.grad_clip > 0:
            self.engine.clip_grad(self.module.parameters(), self.grad_clip, self.optimizer)
        self.engine.step(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        return self.task.sums(out, y, loss)

    def _exchange(self) -> None:
        """Several processes: the callbacks' votes (a signal, a clock) agreed over the ranks, about every
        0.1 s (a collective costs milliseconds on a busy CPU): the ranks also agree on the next step to do
        it at, from the slowest one's pace, so that they always meet at the same step."""
        if self.step < self._next_exchange:
            return
        now = time.perf_counter()
        per_step = (now - self._exchanged_at[0]) / max(1, self.step - self._exchanged_at[1])
        wanted = max(1, min(100, int(0.1 / max(per_step, 1e-6)))) if self._exchanged_at[1] else 1
        gap = dist_utils.exchange(gap=-wanted)["gap"]  # max of -wanted: the smallest gap any rank wants
        self._next_exchange = self.step + int(-gap)
        self._exchanged_at = (now, self.step)

    def evaluate(self, loader: Iterable[tuple[Tensor, Tensor]]) -> dict[str, Any]:
        """The task's metrics over ``loader`` (with the EMA weights if any; summed over the ranks
        when the loader is sharded)."""
        model = self.ema.module if self.ema is not None else self.eval_model
        with self.engine.gathered(self.module):  # fsdp: the ranks' shards may differ in batches
            return self.task.evaluate(model, loader, autocast=self.engine.autocast)

    # -- state read by callbacks -------------------------------------------------------------
    def _emit(self, event: str) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self)

    def _epoch_record(self, val: Iterable[tuple[Tensor, Tensor]] | None) -> dict[str, Any]:
        record: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.step}
        record |= {f"train_{k}": v for k, v in self.running().items()}
        record |= {"lr": self.lr, "seconds": self.train_seconds}
        if val is not None:
            record |= {f"val_{k}": v for k, v in self.task.scalars(self.evaluate(val)).items()}
        return record

    def running(self, reduce: bool = True) -> dict[str, float]:
        """The task's metrics of the current epoch so far (``loss``, ...; one host sync).

        Several processes: summed over every rank (a collective: every rank must call it at the same
        step), or with ``reduce=False`` this rank's own (the progress bar's, which only rank 0 has).
        """
        sums: Sums = getattr(self, "_sums", None) or {}
        if reduce and self.engine.dist.world_size > 1:
            sums = dist_utils.reduce_sums(sums)
        return self.task.summarize(to_floats(sums) if sums else {"count": 0.0, "loss_sum": 0.0})

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
        state: dict[str, Any] = {  # fsdp: each rank's shards (DTensors), saved by every rank together
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"step": self.step, "epoch": self.epoch, "train_seconds": self.elapsed,
                         "samples": self.samples, "skipped_steps": self.nan_guard.skipped},
            "epoch_sums": self._epoch_sums() if getattr(self, "_t0", None) else None,
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
        # the epoch's sums so far are every rank's together: one rank carries them on
        self._resume_sums = state.get("epoch_sums") if self.engine.dist.is_main else None
        saved = state.get("callbacks") or {}
        for cb in self.callbacks:
            if hasattr(cb, "load_state_dict") and type(cb).__name__ in saved:
                cb.load_state_dict(saved[type(cb).__name__])
        set_rng_state(state["rng"])
        self._resume_data = state.get("data")

    def _epoch_sums(self) -> Sums:
        """The current epoch's sums, over every rank (what a checkpoint holds, for any number of ranks)."""
        sums = dict(self._sums)
        return dist_utils.reduce_sums(sums) if self.engine.dist.world_size > 1 else sums

    def load_weights(self, state: dict[str, Any]) -> None:
        """Model, optimizer, scheduler, grad scaler and EMA from a checkpoint (not data or RNG)."""
        state = checkpoint.read_shards(state, self._own_tensors())  # a sharded checkpoint, laid out for this job
        model, optimizer = state["model"], state["optimizer"]
        if self.engine.dist.strategy == "fsdp":  # full tensors (a checkpoint of one process) cut into shards
            own = self.module.state_dict()
            model = {k: shard_like(v, own.get(k)) for k, v in model.items()}
            optimizer = shard_optimizer_state(optimizer, self.optimizer)
        try:
            self.module.load_state_dict(model)
            self.optimizer.load_state_dict(optimizer)
        except (RuntimeError, ValueError, KeyError) as e:  # another architecture, width or optimizer
            why = " ".join(str(e).split())[:160]
            raise LaminaError(f"the checkpoint holds another model than this run builds ({why}): resume a checkpoint "
                              "only into the run folder (and config.yaml) that wrote it, or train again") from None
        match_param_layout(self.optimizer)
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.engine.scaler is not None and "scaler" in state:
            self.engine.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])

    def _own_tensors(self) -> Callable[[str], Tensor | None]:
        """The tensor of this run that a checkpoint's path (``/model/<name>``,
        ``/optimizer/state/<i>/<name>``) is read into: its layout (the shards under fsdp)."""
        model = self.module.state_dict()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]

        def own(key: str) -> Tensor | None:
            parts = key.strip("/").split("/")
            if parts[0] == "model" and len(parts) == 2:
                return model.get(parts[1])
            if parts[:2] == ["optimizer", "state"] and len(parts) == 4 and parts[2].isdigit():
                return params[int(parts[2])] if int(parts[2]) < len(params) else None
            return None

        return own


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments, SGD's momentum) its parameter's memory
    layout again. Checkpoints store tensors contiguous; a channels_last parameter's moments loaded that
    way hold the same values in another order, which the fused AdamW kernel reads element by element
    as if the layouts matched: the resumed run would silently diverge."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for k, v in st.items():
                if isinstance(v, Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
