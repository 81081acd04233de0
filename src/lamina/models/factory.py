"""The model registry and ``create_model``: name + input shape + class count -> ``Model``.

Builders are registered by name in ``MODELS`` (the classes themselves: calling one with
``(input_shape, num_classes, **kwargs)`` builds the model). Tests iterate over
``MODELS.names()``, so a newly registered model is tested automatically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lamina.errors import LaminaError, did_you_mean
from lamina.models.base import Model
from lamina.models.cnn import CNN, ResNet
from lamina.models.mlp import MLP
from lamina.registry import Registry

MODELS: Registry[Callable[..., Model]] = Registry("model")
for _cls in (MLP, CNN, ResNet):
    MODELS.register(_cls.name, _cls)

# The keyword arguments every builder accepts (the fields of ModelConfig besides the name).
MODEL_KWARGS: tuple[str, ...] = ("width", "depth", "act", "norm", "dropout")


def auto_model_name(input_shape: Sequence[int]) -> str:
    """``cnn`` for images (C, H, W) and signals (C, L), ``mlp`` for everything else."""
    return "cnn" if len(input_shape) in (2, 3) else "mlp"


def create_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> Model:
    """Build a registered model; ``create_model(**model.arch)`` rebuilds the same architecture.

    Args:
        name: a name in ``MODELS`` or ``"auto"`` (chosen from the rank of ``input_shape``).
        input_shape: shape of one example, without the batch dimension.
        num_classes: number of logits, at least 2.
        **kwargs: any of ``width``, ``depth``, ``act``, ``norm``, ``dropout``; 0, ``""`` or
            ``None`` means the model's default.

    >>> m = create_model("auto", (1, 28, 28), 10, width=8, depth=0)
    >>> m.arch["name"], m.arch["width"], m.arch["depth"]
    ('cnn', 8, 1)
    """
    unknown = [k for k in kwargs if k not in MODEL_KWARGS]
    if unknown:
        raise LaminaError(
            f"unknown model argument '{unknown[0]}': {did_you_mean(unknown[0], MODEL_KWARGS)}",
            hint="valid arguments: " + ", ".join(MODEL_KWARGS),
        )
    if num_classes is None or int(num_classes) < 2:
        raise LaminaError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
    shape = tuple(int(s) for s in input_shape)
    key = str(name).strip().lower()
    if key == "auto":
        key = auto_model_name(shape)
    builder = MODELS.get(key)
    given = {
        k: v for k, v in kwargs.items() if v is not None and not (isinstance(v, str | int | float) and not v)
    }
    model = builder(shape, int(num_classes), **given)
    model.arch["name"] = key
    return model
