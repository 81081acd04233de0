"""Multi-layer perceptron on flattened inputs of any shape."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import nn

from lamina.models.base import Model, check_hparams
from lamina.models.layers import ActLayer, act_name, get_act, get_norm, norm_name


class MLP(Model):
    """Flatten, then ``depth`` hidden layers Linear → norm → act, then dropout + Linear.

    Each hidden layer is a stage (``layer1`` ... ``layerN``); ``layer1`` also flattens, so
    any input shape works. Dropout sits between hidden layers and before the classifier.

    Args:
        input_shape: shape of one example; flattened to ``prod(input_shape)`` features.
        num_classes: number of logits.
        width: units per hidden layer.
        depth: number of hidden layers.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none`` over the hidden units.
        dropout: drop probability between hidden layers and before the classifier.

    >>> MLP((1, 28, 28), 10, width=64, depth=1).num_params()
    50954
    """

    name = "mlp"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 256,
        depth: int = 2,
        act: ActLayer = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_shape, num_classes)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm = norm_name(norm)
        act_cls = get_act(act)
        d_in = prod(self.input_shape)
        for i in range(1, depth + 1):
            layer = nn.Sequential()
            if i == 1:
                layer.append(nn.Flatten())  # (B, *input_shape) -> (B, D_in)
            layer.append(nn.Linear(d_in if i == 1 else width, width, bias=norm == "none"))
            layer.append(get_norm(norm, width, dims=0))
            layer.append(act_cls())
            if dropout > 0 and i < depth:
                layer.append(nn.Dropout(dropout))
            self.add_stage(f"layer{i}", layer)  # (B, width)
        self.set_head(width, dropout)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout))
