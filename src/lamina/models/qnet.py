"""Q-networks for game playing: observations (C, H, W) in, one value per action out.

Both follow lamina's model contract (named stages, then the head), so probes and per-layer
inspection see "what the conv layers respond to" without special cases:

    minatar-dqn  (C, 10, 10) ─ conv (16 3×3, stride 1, ReLU) ─ fc (128, ReLU) ─ head ─▶ Q (B, A)
    nature-dqn   (4, 84, 84) ─ conv1 (32 8×8 /4) ─ conv2 (64 4×4 /2) ─ conv3 (64 3×3) ─ fc (512) ─ head

``num_classes`` is the number of actions. The inputs are floats in [0, 1] (MinAtar's bool
channels as 0/1; Atari's uint8 frames divided by 255 by the agent, see ``model.json``'s
``obs_scale``). The head has no global pooling: the last stage is the flat hidden layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from lamina.errors import LaminaError
from lamina.models.base import Model, check_hparams
from lamina.models.layers import ActLayer, act_name, get_act, get_norm, norm_name


def _conv_block(c_in: int, c_out: int, k: int, stride: int, *, act: ActLayer, norm: str) -> nn.Sequential:
    """Conv (no padding, as the references) → norm → activation; the conv has a bias without a norm."""
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(c_in, c_out, k, stride=stride, bias=norm == "none"))
    block.add_module("norm", get_norm(norm, c_out, 2))
    block.add_module("act", get_act(act)())
    return block


def _fc_block(c_in: int, c_out: int, *, act: ActLayer, norm: str) -> nn.Sequential:
    block = nn.Sequential()
    block.add_module("flatten", nn.Flatten())
    block.add_module("linear", nn.Linear(c_in, c_out, bias=norm == "none"))
    block.add_module("norm", get_norm(norm, c_out, 0))
    block.add_module("act", get_act(act)())
    return block


def _out_size(size: int, k: int, stride: int) -> int:
    return (size - k) // stride + 1


def _image_shape(name: str, input_shape: Sequence[int]) -> None:
    if len(input_shape) != 3:
        raise LaminaError(f"model '{name}' needs observations (C, H, W), got shape {tuple(input_shape)}")


class MinAtarDQN(Model):
    """The MinAtar reference DQN (Young & Tian 2019): ``depth`` 3×3 convs of ``width`` channels
    (stride 1, no padding), a hidden layer of 128 units, one Q-value per action.

    Args:
        input_shape: (C, H, W), e.g. (4, 10, 10) for MinAtar Breakout.
        num_classes: the number of actions.
        width: channels of each conv (the reference: 16).
        depth: convs (the reference: 1).
        act, norm: activation and norm (the reference: relu, none).
        dropout: before the output layer.
    """

    name = "minatar-dqn"
    example_shape: ClassVar[tuple[int, ...]] = (4, 10, 10)
    example_kwargs: ClassVar[dict[str, Any]] = {}
    hidden = 128

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, width: int = 16, depth: int = 1,
                 act: ActLayer = "relu", norm: str = "none", dropout: float = 0.0) -> None:
        _image_shape(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm = norm_name(norm)
        c, h, w = self.input_shape
        if min(h, w) < 2 * depth + 1:
            raise LaminaError(f"model '{self.name}' with depth {depth} needs observations of at least "
                              f"{2 * depth + 1}×{2 * depth + 1}, got {h}×{w}")
        for i in range(depth):
            self.add_stage(f"conv{i + 1}" if depth > 1 else "conv",
                           _conv_block(c if i == 0 else width, width, 3, 1, act=act, norm=norm))
            h, w = h - 2, w - 2  # (B, width, H - 2(i+1), W - 2(i+1))
        self.add_stage("fc", _fc_block(width * h * w, self.hidden, act=act, norm=norm))  # (B, 128)
        self.set_head(self.hidden, dropout)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout))


class NatureDQN(Model):
    """The DQN of Mnih et al. (2015) for 84×84×4 Atari frames: conv 32 8×8/4, conv 64 4×4/2,
    conv 64 3×3/1 (ReLU each), a hidden layer of 512 units, one Q-value per action.

    Args:
        input_shape: (4, 84, 84) for stacked Atari frames (at least 36×36).
        num_classes: the number of actions.
        width: channels of the first conv (the paper: 32; the others are twice this).
        depth: must be 1 (the paper's three convs); kept for the shared hyperparameters.
        act, norm: activation and norm (the paper: relu, none).
        dropout: before the output layer.
    """

    name = "nature-dqn"
    example_shape: ClassVar[tuple[int, ...]] = (4, 36, 36)
    example_kwargs: ClassVar[dict[str, Any]] = {}
    hidden = 512

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, width: int = 32, depth: int = 1,
                 act: ActLayer = "relu", norm: str = "none", dropout: float = 0.0) -> None:
        _image_shape(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        if depth != 1:
            raise LaminaError(f"model '{self.name}' has the paper's three convs: depth must be 1, got {depth}")
        norm = norm_name(norm)
        c, h, w = self.input_shape
        layers = [(width, 8, 4), (2 * width, 4, 2), (2 * width, 3, 1)]
        for k_, s in ((8, 4), (4, 2), (3, 1)):
            h, w = _out_size(h, k_, s), _out_size(w, k_, s)
        if min(h, w) < 1:
            raise LaminaError(f"model '{self.name}' needs observations of at least 36×36 (Atari: 84×84), "
                              f"got {self.input_shape[1]}×{self.input_shape[2]}")
        c_in = c
        for i, (c_out, k_, s) in enumerate(layers):
            self.add_stage(f"conv{i + 1}", _conv_block(c_in, c_out, k_, s, act=act, norm=norm))
            c_in = c_out  # (B, 32|64|64, 20|9|7, 20|9|7) for 84×84
        self.add_stage("fc", _fc_block(c_in * h * w, self.hidden, act=act, norm=norm))  # (B, 512)
        self.set_head(self.hidden, dropout)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout))


REGISTERED: tuple[type[Model], ...] = (MinAtarDQN, NatureDQN)
