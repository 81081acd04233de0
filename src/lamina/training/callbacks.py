"""Callbacks: everything that is not the loop itself listens to a handful of events.

Events, in order: ``fit_start``, ``epoch_start``, ``batch_end`` (every step), ``epoch_end``,
``fit_end``. A callback reads the loop's state (:class:`lamina.training.loop.Loop`: the Trainer,
or any other loop that has the same counters) and may raise :class:`CancelFit` to stop training
cleanly; it does not reach into the loop to change it. Metrics are read by the names the task
gives them (``loss`` always; ``accuracy``, ``bpc``... where the task has them).

In a job of several processes every rank has the same callbacks (but the progress bar, rank 0's
alone) and sees the same events at the same steps; only rank 0 writes files. A decision made from
this process's own state (a signal, a clock) is agreed over the ranks first, in the step's one
control message (:func:`lamina.utils.dist.vote`), so that all stop, or save, at the same step.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lamina.errors import LaminaError
from lamina.training import checkpoint
from lamina.utils import dist
from lamina.utils.io import JsonLines

if TYPE_CHECKING:
    from lamina.training.loop import Loop as Trainer  # callbacks read only the loop protocol


class CancelFit(Exception):
    """Raised by a callback to end training after the current step; the run is still saved."""


class Callback:
    """Base class: override the events you need. ``order`` sorts callbacks (low runs first)."""

    order = 0

    def fit_start(self, trainer: Trainer) -> None: ...
    def epoch_start(self, trainer: Trainer) -> None: ...
    def batch_end(self, trainer: Trainer) -> None: ...
    def epoch_end(self, trainer: Trainer) -> None: ...
    def fit_end(self, trainer: Trainer) -> None: ...


class OnMain(Callback):
    """``inner`` (a callback that samples from the model and writes: text, image grids, a fidelity
    score) run by rank 0 alone, every rank joining in. Under ``fsdp`` each rank's model holds only
    its shards, so at every epoch's end the ranks gather the whole model together
    (``trainer.engine.gathered``) and rank 0 runs ``inner`` inside; the other ranks pass ``None``.
    In one process, or under ``ddp``, it is ``inner`` on rank 0 and nothing elsewhere."""

    def __init__(self, inner: Any | None, order: int) -> None:
        self.inner, self.order = inner, order

    def _forward(self, event: str, trainer: Trainer) -> None:
        if self.inner is not None:
            getattr(self.inner, event)(trainer)

    def fit_start(self, trainer: Trainer) -> None:
        self._forward("fit_start", trainer)

    def epoch_start(self, trainer: Trainer) -> None:
        self._forward("epoch_start", trainer)

    def batch_end(self, trainer: Trainer) -> None:
        self._forward("batch_end", trainer)

    def epoch_end(self, trainer: Trainer) -> None:
        engine = getattr(trainer, "engine", None)
        if engine is None or engine.dist.strategy != "fsdp":
            self._forward("epoch_end", trainer)
            return
        with engine.gathered(trainer.module):  # type: ignore[attr-defined]
            self._forward("epoch_end", trainer)

    def fit_end(self, trainer: Trainer) -> None:
        self._forward("fit_end", trainer)


class ProgressBar(Callback):
    """A rich bar: epoch, step, loss, accuracy, samples/s and ETA; refreshed at most 5×/s."""

    order = 100

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._last = 0.0

    def fit_start(self, trainer: Trainer) -> None:
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}  {task.fields[speed]} samples/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=trainer.total_steps, completed=trainer.step, epoch="-", metrics="loss -", speed="-"
        )
        self._t0, self._s0 = time.perf_counter(), trainer.step

    def epoch_start(self, trainer: Trainer) -> None:
        self.progress.update(self.task, epoch=f"{trainer.epoch + 1}/{trainer.epochs}")

    def batch_end(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        if now - self._last < 0.2:
            return
        self._last = now
        # this rank's own running metrics: rank 0 alone has a bar, so it cannot wait for the others here
        metrics = "  ".join(f"{_short(k)} {v:.3f}" for k, v in trainer.running(reduce=False).items())
        speed = (trainer.step - self._s0) * trainer.batch_size / max(now - self._t0, 1e-9)
        self.progress.update(self.task, completed=trainer.step, metrics=metrics, speed=f"{speed:,.0f}")

    def epoch_end(self, trainer: Trainer) -> None:
        m = trainer.last_epoch
        shown = "  ".join(f"{_short(k)} {v:.4f}" for k, v in m.items()
                          if k.startswith(("train_", "val_")) and isinstance(v, int | float))
        self.progress.update(self.task, completed=trainer.step)
        self.progress.console.print(f"epoch {m['epoch']:>3}/{trainer.epochs}  {shown}  {m['seconds']:.1f}s")

    def fit_end(self, trainer: Trainer) -> None:
        self.progress.stop()


def _short(name: str) -> str:
    return name.replace("accuracy", "acc")


class MetricsLogger(Callback):
    """Appends one JSON object per logged step and per epoch to ``metrics.jsonl``.

    Both kinds number epochs from 1: a step record's ``epoch`` is the epoch it belongs to.
    """

    order = 50

    def __init__(self, path: str | Path, every: int = 50) -> None:
        self.path = Path(path)
        self.every = every

    def fit_start(self, trainer: Trainer) -> None:
        self.file = JsonLines(self.path) if dist.is_main() else None

    def batch_end(self, trainer: Trainer) -> None:
        if trainer.step % self.every == 0:
            record = {"kind": "step", "step": trainer.step, "epoch": trainer.epoch + 1, **trainer.running(),
                      "lr": trainer.lr, "time": trainer.elapsed}  # running(): summed over the ranks
            if self.file is not None:
                self.file.write(record)

    def epoch_end(self, trainer: Trainer) -> None:
        if self.file is not None:
            self.file.write({"kind": "epoch", **trainer.last_epoch})

    def fit_end(self, trainer: Trainer) -> None:
        if self.file is not None:
            self.file.close()


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved for ``patience`` epochs."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = math.inf, 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best if math.isfinite(self.best) else None, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.bad = int(state["bad"])

    def epoch_end(self, trainer: Trainer) -> None:
        loss = trainer.last_epoch.get("val_loss")
        if loss is None:
            raise LaminaError("early stopping needs a validation split: set data.val_fraction > 0")
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            raise CancelFit(f"early stopping: no better val_loss for {self.patience} epochs")


class TimeLimit(Callback):
    """Stop training once ``seconds`` of training time have passed (checked every step)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def fit_start(self, trainer: Trainer) -> None:
        dist.vote("elapsed", lambda: trainer.elapsed)  # several processes: the slowest rank's clock

    def fit_end(self, trainer: Trainer) -> None:
        dist.vote("elapsed", None)

    def batch_end(self, trainer: Trainer) -> None:
        if dist.agreed("elapsed", trainer.elapsed) >= self.seconds:
            raise CancelFit(f"time limit of {self.seconds / 60:g} min reached")


class Interrupted(Exception):
    """Training was stopped by SIGINT/SIGTERM after a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")


class Checkpoint(Callback):
    """Saves the whole training state atomically, keeping the newest ``keep``.

    It saves at the end of every epoch, every ``every_steps`` steps and every ``every_minutes``
    minutes (0 turns either off), and, when ``handle_signals``, on SIGINT/SIGTERM: the signal only
    sets a flag, the current step finishes, a checkpoint is written and :class:`Interrupted` is
    raised. A second Ctrl-C aborts at once. :meth:`newest_state` is what a NaN guard rolls back
    to (the session hands it to the Trainer).
    """

    order = 80

    def __init__(self, folder: str | Path, config: dict[str, Any], *, keep: int = 2, every_steps: int = 0,
                 every_minutes: float = 0.0, handle_signals: bool = True) -> None:
        self.folder, self.config, self.keep = Path(folder), config, max(1, keep)
        self.every_steps, self.every_seconds = every_steps, every_minutes * 60
        self.handle_signals = handle_signals
        self.last_step = -1
        self.last_path: Path | None = None
        self._signal: int | None = None
        self._previous: dict[int, Any] = {}

    def save(self, trainer: Trainer, *, force: bool = False) -> Path:
        """Checkpoint the trainer (once per step; ``force``: again, when callbacks' state moved on)."""
        if force or trainer.step != self.last_step or self.last_path is None:
            path = self.folder / f"step-{trainer.step:09d}"
            state = trainer.state_dict()  # on every rank: the epoch's sums are gathered from all of them
            if checkpoint.is_sharded(state):  # fsdp: every rank writes its shards, rank 0 the rest
                checkpoint.save({**state, "config": self.config}, path)
            elif dist.is_main():  # the state is the same on every rank (ddp); rank 0 writes it
                checkpoint.save({**state, "config": self.config}, path)
            if dist.is_main():
                checkpoint.prune(self.folder, self.keep)
            self.last_step, self.last_path, self._last_time = trainer.step, path, time.monotonic()
        return self.last_path

    def _clock(self) -> float:
        return time.monotonic() - self._last_time

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # a second signal acts at once

    def fit_start(self, trainer: Trainer) -> None:
        self._last_time = time.monotonic()
        dist.vote("signal", lambda: float(self._signal or 0))
        dist.vote("checkpoint_clock", self._clock if self.every_seconds > 0 else None)
        if self.folder.is_dir() and dist.is_main():  # half-written checkpoints of a process that was killed
            for stale in self.folder.glob(".*"):
                shutil.rmtree(stale, ignore_errors=True)
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(s) is signal.SIG_IGN:  # nohup, a background job: an ignored signal stays ignored
                    continue
                self._previous[s] = signal.signal(s, self._on_signal)

    def batch_end(self, trainer: Trainer) -> None:
        signum = int(dist.agreed("signal", self._signal or 0))  # several processes: a signal to any rank stops all
        if signum:
            path = self.save(trainer)
            raise Interrupted(signum, trainer.step, path)
        due_steps = self.every_steps > 0 and trainer.step % self.every_steps == 0
        due_time = self.every_seconds > 0 and dist.agreed("checkpoint_clock", self._clock()) >= self.every_seconds
        if due_steps or due_time:
            self.save(trainer)

    def epoch_end(self, trainer: Trainer) -> None:
        self.save(trainer)

    def fit_end(self, trainer: Trainer) -> None:
        if trainer.stop_reason:  # stopped by a limit (time, energy, early stopping): its state is kept too
            # forced: a limit reached at an epoch's end comes after that epoch's checkpoint of the same step,
            # and the callback that stopped the run (e.g. the energy meter's total) has moved on since
            self.save(trainer, force=True)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        dist.vote("signal", None)
        dist.vote("checkpoint_clock", None)

    def newest_state(self) -> dict[str, Any] | None:
        found = checkpoint.latest(self.folder)
        return found[0] if found else None


class TensorBoard(Callback):
    """Writes TensorBoard event files to ``folder`` (``tensorboard --logdir RUN/tensorboard``):
    step loss, accuracy and learning rate every ``every`` steps, and every epoch's metrics."""

    order = 60

    def __init__(self, folder: str | Path, every: int = 50) -> None:
        self.folder, self.every = Path(folder), every

    def fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LaminaError("--tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or lamina[tensorboard])") from None
        self.writer = SummaryWriter(log_dir=str(self.folder)) if dist.is_main() else None

    def batch_end(self, trainer: Trainer) -> None:
        if trainer.step % self.every == 0:
            running = trainer.running()  # on every rank: summed over them
            if self.writer is None:
                return
            for key, value in running.items():
                self.writer.add_scalar(f"step/{key}", value, trainer.step)
            self.writer.add_scalar("step/lr", trainer.lr, trainer.step)

    def epoch_end(self, trainer: Trainer) -> None:
        if self.writer is None:
            return
        for key, value in trainer.last_epoch.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self.writer.add_scalar(f"epoch/{key}", value, trainer.last_epoch["epoch"])
        self.writer.flush()

    def fit_end(self, trainer: Trainer) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()
