"""The task contract: what is specific to one kind of learning, behind one small interface.

How the best tools draw this line, and the choice made here:

- **Lightning** puts the whole step in the model (``training_step`` returns the loss): flexible,
  but the loop, the model and the loss become one object, and a model cannot be reused by
  another kind of learning without a new subclass.
- **Keras** ``compile(loss, metrics)`` and **fastai** ``Learner(loss_func, metrics)`` keep the
  loss and the metrics beside the model, and let ``train_step`` be overridden for anything
  more: the split we want, but their metrics are objects with hidden state per batch.
- The **HF Trainer** has one seam, ``compute_loss(model, inputs)``, and everything else is fixed
  around a classifier or a language model.
- **Ludwig** and **AutoGluon** name a problem type (binary, multiclass, regression, text
  generation), read it from the data, and let it pick the loss, metrics, head and output.

lamina takes the problem-type idea (a task is declared by the data, ``Dataset.task``) with the
Keras/fastai split of responsibilities, and HF's single-call seam for the step:

- a :class:`Task` maps a model and a batch to a **loss** and to **sums** (``count``,
  ``loss_sum``, ``correct``...: plain tensors added batch after batch on the device, so they
  cost no host sync, are exact, and reduce across processes with one ``all_reduce``);
- it turns sums into **metrics** (:meth:`Task.summarize`), names the **headline** metric of a
  run, **evaluates** a model over a loader, builds the **model** and the **loaders** for its
  data, and says what the saved model needs (``model.json``) to be used again.

The Trainer, the engine, checkpoints, callbacks and the run folder know nothing else of the task,
so a reinforcement-learning loop can reuse all of them with a task of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lamina.utils import dist

Batch = tuple[Tensor, Tensor]
Sums = dict[str, Tensor | int]  # device tensors, or plain ints for counts known on the host


class Task:
    """Base class of lamina's tasks (override what differs; a leaf class is final).

    ``name`` is the task's registry name; ``headline`` the metric (a key of :meth:`summarize`'s
    result) that a run is judged by, ``higher_is_better`` its direction; ``defaults`` the config
    values it trains with where the run's config keeps lamina's defaults (e.g. AdamW for a
    language model where an image classifier's default is SGD).
    """

    name: ClassVar[str] = ""
    headline: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    # config values this task trains with where the run's config keeps lamina's defaults
    defaults: ClassVar[dict[str, Any]] = {}

    # -- one step ------------------------------------------------------------------------------
    def train_inputs(self, model: nn.Module, x: Tensor, y: Tensor, *,
                     autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                     ) -> Tensor:
        """The inputs a training step learns from (default: the batch as it is). Adversarial
        training (:mod:`lamina.robustness`) returns adversarial examples of ``model`` here;
        ``autocast`` is the engine's (the model's precision)."""
        return x

    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        """The model's outputs for inputs ``x`` (called under the engine's autocast)."""
        return model(x)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The mean loss of a batch, in fp32: what is differentiated."""
        raise NotImplementedError

    def sums(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> Sums:
        """What the batch adds to the running metrics: at least ``count`` (the number of items the
        mean ``loss`` averages over: examples, or tokens) and ``loss_sum``; all detached tensors."""
        n = targets.numel()
        return {"count": n, "loss_sum": loss.detach() * n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from accumulated sums: ``{"loss": loss_sum / count, ...}``."""
        return {"loss": sums["loss_sum"] / max(sums["count"], 1)}

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[Batch], *,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                 ) -> dict[str, Any]:
        """Metrics of ``model`` over every batch of ``loader`` (in eval mode, restored after).

        The default streams the same sums as training, with the loss summed exactly per item; a
        loader sharded over a job's ranks has its sums added over them (every rank gets the same).
        """
        was_training = model.training
        model.eval()
        total: Sums = {}
        for x, y in loader:
            with autocast():
                out = self.forward(model, x)
            add_sums(total, self.sums(out, y, self.loss(out, y)))
        model.train(was_training)
        total = dist.reduce_sums(total) if dist.sharded(loader) else total
        sums = to_floats(total) if total else {"count": 0.0, "loss_sum": 0.0}
        return {**self.summarize(sums), "examples": int(sums["count"])}  # items scored: examples or tokens

    def scalars(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The scalar metrics of an evaluation, as logged per epoch (``val_<name>``)."""
        return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and k != "examples"}

    def describe(self) -> dict[str, Any]:
        """What ``model.json`` records of the task, so the saved model can be used alone."""
        return {"task": self.name}

    # -- what a run of this task is made of (the session calls these) ------------------------------
    @classmethod
    def from_data(cls, ds: Any, cfg: Any) -> Task:
        """The task for a :class:`~lamina.data.base.Dataset` and a :class:`~lamina.config.RunConfig`."""
        raise NotImplementedError

    def build_model(self, m: Any, ds: Any) -> nn.Module:
        """The network for this task and data, from a :class:`~lamina.config.ModelConfig`."""
        raise NotImplementedError

    def loaders(self, ds: Any, d: Any, *, device: torch.device, seed: int, channels_last: bool) -> dict[str, Any]:
        """``{"train": ..., "val": ..., "test": ...}``: iterables of (inputs, targets) on ``device``;
        the training loader has ``state_dict``/``load_state_dict``/``set_epoch`` for exact resume."""
        raise NotImplementedError

    def eval_loader(self, split: Any, ds: Any, d: Any, *, device: torch.device) -> Any:
        """Batches of one split for evaluation: in order, not augmented."""
        raise NotImplementedError

    def callbacks(self, run_dir: Path) -> list[Any]:
        """Callbacks the task adds to a run (e.g. text samples written during training)."""
        return []

    def final_metrics(self, model: nn.Module, loaders: dict[str, Any], *,
                      autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                      ) -> dict[str, Any]:
        """The task's fields of ``summary.json``, headline first (``test_accuracy``, ``val_bpc``...)."""
        raise NotImplementedError


def add_sums(total: Sums, new: Sums) -> None:
    """``total += new``, key by key: tensors in place on the device (no host sync), ints on the host."""
    for k, v in new.items():
        if k not in total:
            total[k] = v.clone() if isinstance(v, Tensor) else v
        elif isinstance(v, Tensor):
            total[k] += v  # type: ignore[operator]
        else:
            total[k] = total[k] + v


def to_floats(sums: Sums) -> dict[str, float]:
    """Read the sums once (one host sync per tensor)."""
    return {k: float(v) for k, v in sums.items()}
