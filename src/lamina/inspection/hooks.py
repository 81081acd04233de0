"""Forward hooks on a model's named stages, as a context manager that always cleans up.

>>> from lamina.models import create_model
>>> model = create_model("mlp", (4,), 3, width=8, depth=2)
>>> with capture(model, ["layer2"]) as out:
...     _ = model(torch.zeros(5, 4))
>>> tuple(out["layer2"].shape)
(5, 8)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError


def model_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model.stages()``, or a one-line ``LaminaError`` when the model does not meet the contract."""
    stages = getattr(model, "stages", None)
    if not callable(stages):
        raise LaminaError(f"{type(model).__name__} has no stages(): inspection needs a lamina model "
                          "(named stages in depth order, see lamina.models.base.Model)")
    found = list(stages())
    if not found:
        raise LaminaError(f"{type(model).__name__}.stages() is empty: inspection needs at least one stage")
    return found


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, list | tuple):
        for item in output:
            if isinstance(item, Tensor):
                return item
    return None


@contextlib.contextmanager
def capture(model: nn.Module, names: Sequence[str] | None = None, *, detach: bool = True) -> Iterator[dict[str, Tensor]]:
    """Record the latest output of each named stage while the block runs.

    Args:
        model: a model with ``stages()``.
        names: stage names to hook (None: every stage).
        detach: store detached outputs (True) or keep them in the autograd graph.

    Yields:
        a dict ``name -> latest output``, filled in as forward passes run. The hooks are removed
        on exit, also when the block raises.
    """
    stages = dict(model_stages(model))
    wanted = list(stages) if names is None else list(names)
    unknown = [n for n in wanted if n not in stages]
    if unknown:
        raise LaminaError(f"model has no stage '{unknown[0]}': its stages are {', '.join(stages)}")
    outputs: dict[str, Tensor] = {}

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            t = _first_tensor(output)
            if t is not None:
                outputs[name] = t.detach() if detach else t
        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name in wanted:
            handles.append(stages[name].register_forward_hook(hook_for(name)))
        yield outputs
    finally:
        for h in handles:
            h.remove()
