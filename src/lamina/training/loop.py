"""The loop protocol: what callbacks may read of a training loop.

The :class:`~lamina.training.trainer.Trainer` satisfies it, and so can any other loop (a
reinforcement-learning agent's loop over an environment): every callback (progress bar, metrics
log, TensorBoard, time limit, checkpoints) is typed against this protocol, not the Trainer.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Loop(Protocol):
    """A loop's public state. Counters count from 0; ``epoch`` is the number of finished epochs."""

    step: int  # optimisation steps done
    epoch: int  # epochs finished
    epochs: int  # epochs planned
    total_steps: int  # steps planned
    batch_size: int  # items per step (for throughput)
    stop_reason: str
    last_epoch: dict[str, Any]  # the record of the last finished epoch (epoch, step, train_*, val_*, lr, seconds)

    @property
    def elapsed(self) -> float:
        """Training seconds so far, including the current epoch."""
        ...

    @property
    def lr(self) -> float:
        """The current learning rate."""
        ...

    def running(self, reduce: bool = True) -> dict[str, float]:
        """The current epoch's metrics so far (``loss`` at least), read with one host sync;
        ``reduce``: over every process of the job (a collective), else this process's own."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly here (for checkpoints)."""
        ...
