"""The NaN guard: a non-finite loss or gradient is caught in the step it happens, before the weights change."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.training.engine import rng_state, set_rng_state
from lamina.utils import dist as dist_utils

if TYPE_CHECKING:
    from lamina.training.trainer import Trainer


class NonFiniteError(LaminaError):
    """A NaN or inf in the loss or the gradients (``--on-nan stop``)."""


class NanGuard:
    """Catches a non-finite loss or gradient in the step it happens, before the weights change.

    Policies: ``stop`` raises :class:`NonFiniteError` naming the step and the first parameter (in
    depth order) whose gradient is non-finite; ``skip`` drops that update and goes on, but stops
    like ``stop`` once more than ``max_skip_fraction`` of the steps so far (and more than
    ``min_skips``) were skipped, since such a run has diverged; ``rollback`` reloads the weights
    and optimizer of the newest checkpoint that ``rollback_source`` returns (the data goes on from
    where it is) and stops after ``max_rollbacks``; ``off`` checks nothing (no per-step host sync).
    """

    POLICIES = ("stop", "skip", "rollback", "off")

    def __init__(self, policy: str = "stop", max_rollbacks: int = 3, *,
                 rollback_source: Callable[[], dict[str, Any] | None] | None = None,
                 max_skip_fraction: float = 0.05, min_skips: int = 3) -> None:
        if policy not in self.POLICIES:
            raise LaminaError(f"unknown on_nan policy '{policy}': use one of {', '.join(self.POLICIES)}")
        self.policy, self.max_rollbacks = policy, max_rollbacks
        self.max_skip_fraction, self.min_skips = max_skip_fraction, min_skips
        self.skipped = self.rollbacks = 0
        self.rollback_source = rollback_source

    @staticmethod
    def finite(loss: Tensor, model: nn.Module) -> bool:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        from torch.distributed.tensor import DTensor

        if grads and isinstance(grads[0], DTensor):  # sharded (fsdp): this rank's parts, then every rank's verdict
            local = [g for g in (g.to_local() for g in grads) if g.numel()]  # a small tensor's shard may be empty
            peak = torch.nn.utils.get_total_norm(local, norm_type=math.inf) if local else loss.new_zeros(())
            ok = bool(torch.isfinite(loss).all() & torch.isfinite(peak))
            return dist_utils.agree(0.0 if ok else 1.0, "sum") == 0
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
            if self.skipped <= max(self.min_skips, self.max_skip_fraction * step):
                return
            where += (f"; {self.skipped} of {step} steps were skipped (more than "
                      f"{self.max_skip_fraction:.0%}): the run diverged")
        if self.policy == "rollback" and self.rollbacks < self.max_rollbacks:
            state = self.rollback_source() if self.rollback_source else None
            if state is not None:
                self.rollbacks += 1
                trainer.load_weights(state)
                return
            where += "; no checkpoint to roll back to"
        raise NonFiniteError(f"{where}; the last good checkpoint is kept (lower train.lr, set train.grad_clip, "
                             "or use --on-nan skip|rollback)")
