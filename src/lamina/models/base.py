"""The contract every lamina model meets (timm's ``forward_features`` / ``forward_head``).

A model is a list of named stages applied in order, then a head:

    x ─ stage1 ─ stage2 ─ ... ─ stageN ─▶ feats ─ pool ─ dropout ─ linear ─▶ logits

``forward_features`` is exactly that sequence, so a forward hook on a stage module sees the
stage's output; probes, Grad-CAM and attacks rely on this and never special-case a model.
``arch`` is a JSON-able dict from which ``create_model(**arch)`` rebuilds the same network.

Three class attributes say what a model eats and gives, so generic code (tests, probes, the run)
needs no list of model names: ``input_kind`` ("values": float tensors (B, *input_shape);
"tokens": int64 ids (B, T)), ``feature_layout`` ("channels": features (B, C, *S) or (B, D);
"tokens": (B, T, C)) and ``output_kind`` ("logits": (B, K); "token_logits": (B, T, V)).
``example_input`` makes a random batch of the right kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError


class Model(nn.Module):
    """Base class of lamina's models: named stages, then pool → dropout → linear.

    Subclasses call ``add_stage`` for each stage in depth order, then ``set_head``, and
    record their resolved hyperparameters in ``arch``.

    Args:
        input_shape: shape of one example, without the batch dimension.
        num_classes: number of outputs: the classes of a classifier (at least 2), 1 for a regression.
    """

    name: ClassVar[str] = ""  # the registry name of the leaf class
    # The create_model keywords the builder takes; any other one, when set, is a LaminaError.
    hparams: ClassVar[tuple[str, ...]] = ("width", "depth", "act", "norm", "dropout")
    input_kind: ClassVar[str] = "values"  # "values": float (B, *input_shape); "tokens": int64 ids (B, T)
    feature_layout: ClassVar[str] = "channels"  # forward_features: (B, C, *S) or (B, D); "tokens": (B, T, C)
    output_kind: ClassVar[str] = "logits"  # forward: (B, K); "token_logits": (B, T, V)

    input_shape: tuple[int, ...]
    num_classes: int
    num_features: int  # length of the pooled vector the linear head reads
    pool: str = "avg"  # global pooling of the last feature map: "avg" or "max"
    arch: dict[str, Any]

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s < 1 for s in shape):
            raise LaminaError(f"input shape must be positive sizes, got {tuple(input_shape)}")
        if int(num_classes) < 1:
            raise LaminaError(f"a model needs at least 1 output (a classifier 2 classes), got num_classes={num_classes}")
        self.input_shape = shape
        self.num_classes = int(num_classes)
        self.num_features = 0
        self.arch = {"name": self.name, "input_shape": list(shape), "num_classes": self.num_classes}
        self._stage_names: list[str] = []

    # -- building ------------------------------------------------------------------------

    def add_stage(self, name: str, module: nn.Module) -> None:
        """Register ``module`` as the next stage (a direct child, so ``get_submodule(name)`` works)."""
        self.add_module(name, module)
        self._stage_names.append(name)

    def set_head(self, num_features: int, dropout: float) -> None:
        """Create the classifier: dropout then a linear layer on the pooled features."""
        self.num_features = num_features
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, self.num_classes)

    # -- the contract --------------------------------------------------------------------

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The named feature-producing submodules, in the order ``forward_features`` applies them."""
        return [(name, getattr(self, name)) for name in self._stage_names]

    def forward_features(self, x: Tensor) -> Tensor:
        """Apply the stages in order: (B, *input_shape) -> (B, C, *S) for conv nets, (B, D) for MLPs."""
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Global pool (``self.pool``), dropout and linear: (B, C, *S) -> (B, K); ``pre_logits``: (B, C)."""
        if feats.ndim > 2:
            dims = tuple(range(2, feats.ndim))
            feats = feats.amax(dim=dims) if self.pool == "max" else feats.mean(dim=dims)  # (B, C)
        x = feats
        if pre_logits:
            return x
        return self.head(self.head_drop(x))  # (B, K)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for a batch (B, *input_shape)."""
        return self.forward_head(self.forward_features(x))

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """A random batch of ``n`` inputs the model takes: here standard normal (n, *input_shape).

        Args:
            n: batch size.
            generator: source of randomness (the default generator when ``None``).
        """
        return torch.randn(n, *self.input_shape, generator=generator)

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def check_hparams(model: str, *, width: int, depth: int, dropout: float) -> None:
    """Raise ``LaminaError`` for sizes a model cannot be built with."""
    if int(width) < 1:
        raise LaminaError(f"model '{model}' needs width >= 1, got {width}")
    if int(depth) < 1:
        raise LaminaError(f"model '{model}' needs depth >= 1, got {depth}")
    if not 0.0 <= float(dropout) < 1.0:
        raise LaminaError(f"model '{model}' needs 0 <= dropout < 1, got {dropout}")
