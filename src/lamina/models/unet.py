"""A small U-Net for denoising diffusion on images (Ho et al. 2020, trimmed for a CPU).

    x (B, C, H, W), t (B,) ─ enc1 ─ enc2 ─ ... ─ encL ─ mid ─ decL ─ ... ─ dec1 ─▶ feats ─ head ─▶ (B, C, H, W)
                               └──────── skip connections (concatenated) ────────┘

- ``t`` (the timestep, int64 or float) becomes a sinusoidal embedding (Vaswani et al. 2017) and an
  MLP; every residual block adds a projection of it to each channel.
- A residual block is GroupNorm → SiLU → conv3×3 → (+ time) → GroupNorm → SiLU → dropout → conv3×3,
  plus a 1×1 shortcut where the channels change.
- Level ``i`` has ``width · mults[i]`` channels and ``depth`` blocks; a strided conv halves the map
  between levels (28 → 14 → 7 with the default three levels), nearest upsampling + conv doubles it.
- The middle is block → self-attention (``heads`` > 0) → block, at the lowest resolution.
- The decoder's levels take one more block than the encoder's, each reading one skip (as Ho et al.).
- The last conv of each residual branch, of the attention and of the output start at zero: the
  network starts as the identity on its skips and predicts 0.

The stages (``enc1``..., ``mid``, ``dec<L>``... ``dec1``) are named so the report's per-layer
sections and probes see every level; ``forward_head`` is the output block (norm, SiLU, conv), and
``forward_head(feats, pre_logits=True)`` the pooled (B, C) features of the contract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.models.base import Model, check_hparams
from lamina.models.layers import ActLayer, act_name, get_act, get_norm, norm_name

DEFAULT_MULTS = (1, 2, 4)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding (B, dim) of timesteps ``t`` (B,) (int or float): sin and cos of ``t``
    at ``dim // 2`` frequencies from 1 down to ``1 / max_period``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))  # (B, dim)


def _parse_mults(mults: Sequence[int] | str | None) -> tuple[int, ...]:
    if mults is None or (isinstance(mults, str) and not mults.strip()):
        return DEFAULT_MULTS
    try:
        out = tuple(int(m) for m in (mults.replace(" ", "").split(",") if isinstance(mults, str) else mults))
    except (TypeError, ValueError):
        raise LaminaError(f"model 'unet' needs mults as integers like 1,2,2, got {mults!r}") from None
    if not out or any(m < 1 for m in out):
        raise LaminaError(f"model 'unet' needs one or more channel multipliers >= 1, got {mults!r}")
    return out


class ResBlock(nn.Module):
    """Norm → act → conv → + time embedding (per channel) → norm → act → dropout → conv, + shortcut."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, *, act: ActLayer, norm: str, dropout: float) -> None:
        super().__init__()
        Act = get_act(act)
        self.norm1, self.act1 = get_norm(norm, c_in, 2), Act()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Sequential(Act(), nn.Linear(t_dim, c_out))
        self.norm2, self.act2 = get_norm(norm, c_out, 2), Act()
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:  # x: (B, c_in, H, W), temb: (B, t_dim)
        h = self.conv1(self.act1(self.norm1(x)))  # (B, c_out, H, W)
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(self.drop(self.act2(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions of a map, residual (output projection zero)."""

    def __init__(self, channels: int, heads: int, *, norm: str) -> None:
        super().__init__()
        if channels % heads:
            raise LaminaError(f"model 'unet' needs heads dividing the {channels} channels of its attention, got {heads}")
        self.heads = heads
        self.norm = get_norm(norm, channels, 2)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, C/heads) each
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class Down(nn.Module):
    """A strided 3×3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Up(nn.Module):
    """Nearest 2× upsampling then a 3×3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EncoderLevel(nn.Module):
    """(optional downsampling or stem) then ``depth`` blocks; pushes every output onto ``skips``."""

    def __init__(self, first: nn.Module, blocks: list[ResBlock]) -> None:
        super().__init__()
        self.first, self.blocks = first, nn.ModuleList(blocks)

    def forward(self, h: Tensor, temb: Tensor, skips: Skips) -> Tensor:
        h = self.first(h)
        skips.push(h)
        for block in self.blocks:
            h = block(h, temb)
            skips.push(h)
        return h


class Skips:
    """The encoder's maps, pushed by its levels and popped by the decoder's: a stack the stages share.

    An object of its own rather than a list: wrappers that rebuild a module's container arguments
    on the way in (FSDP moves and casts them) would hand each stage a copy, and the pushes would be lost.
    """

    __slots__ = ("maps",)

    def __init__(self) -> None:
        self.maps: list[Tensor] = []

    def push(self, h: Tensor) -> None:
        self.maps.append(h)

    def pop(self) -> Tensor:
        return self.maps.pop()


class Middle(nn.Module):
    """Block → self-attention (or nothing) → block, at the lowest resolution."""

    def __init__(self, block1: ResBlock, attn: nn.Module, block2: ResBlock) -> None:
        super().__init__()
        self.block1, self.attn, self.block2 = block1, attn, block2

    def forward(self, h: Tensor, temb: Tensor, skips: Skips) -> Tensor:
        return self.block2(self.attn(self.block1(h, temb)), temb)


class DecoderLevel(nn.Module):
    """``depth + 1`` blocks, each on the concatenation of the map and the last skip; then (optionally)
    upsampling to the next level's size."""

    def __init__(self, blocks: list[ResBlock], up: nn.Module) -> None:
        super().__init__()
        self.blocks, self.up = nn.ModuleList(blocks), up

    def forward(self, h: Tensor, temb: Tensor, skips: Skips) -> Tensor:
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        return self.up(h)


class UNet(Model):
    """A time-conditioned U-Net that maps noisy images and timesteps to images of the same shape.

    Args:
        input_shape: (C, H, W), H and W divisible by ``2 ** (len(mults) - 1)`` (4 by default).
        num_classes: unused by the network (it outputs C channels); recorded for the registry.
        width: channels of the first level.
        depth: residual blocks per encoder level (the decoder's levels have one more).
        act: activation (SiLU by default).
        norm: ``group`` (default) | ``layer`` | ``batch`` | ``none``.
        dropout: in every residual block.
        heads: heads of the self-attention in the middle; 0: no attention.
        mults: channel multiplier of each level (``width · m``), e.g. ``(1, 2, 4)`` (the default) or ``"1,2,4"``.

    >>> net = UNet((1, 28, 28), 1, width=8, mults=(1, 2))
    >>> net(torch.randn(2, 1, 28, 28), torch.tensor([0, 999])).shape
    torch.Size([2, 1, 28, 28])
    """

    name = "unet"
    hparams: ClassVar[tuple[str, ...]] = ("width", "depth", "act", "norm", "dropout", "heads", "mults")
    output_kind: ClassVar[str] = "image"  # forward: (B, C, H, W), the input's shape
    example_shape: ClassVar[tuple[int, ...]] = (1, 8, 8)
    example_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int = 1,
        *,
        width: int = 32,
        depth: int = 1,
        act: ActLayer = "silu",
        norm: str = "group",
        dropout: float = 0.0,
        heads: int = 0,
        mults: Sequence[int] | str | None = DEFAULT_MULTS,
    ) -> None:
        if len(input_shape) != 3:
            raise LaminaError(f"model 'unet' needs images (C, H, W), got shape {tuple(input_shape)}")
        super().__init__(input_shape, num_classes)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm, mults = norm_name(norm), _parse_mults(mults)
        C, H, W = self.input_shape
        f = 2 ** (len(mults) - 1)
        if H % f or W % f:
            raise LaminaError(f"model 'unet' with {len(mults)} levels needs H and W divisible by {f}, got {H}×{W}",
                              hint="pad or resize the images, or give fewer mults (model.mults)")
        if heads < 0:
            raise LaminaError(f"model 'unet' needs heads >= 0 (0: no attention), got {heads}")
        t_dim = 4 * width
        self.t_width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, t_dim), get_act(act)(), nn.Linear(t_dim, t_dim))
        kw: dict[str, Any] = dict(act=act, norm=norm, dropout=dropout)
        chans = [width * m for m in mults]
        skip_chans: list[int] = []
        c = width
        for i, c_out in enumerate(chans):  # the encoder: (B, chans[i], H / 2**i, W / 2**i)
            first: nn.Module = nn.Conv2d(C, width, 3, padding=1) if i == 0 else Down(c)
            skip_chans.append(c)
            blocks = []
            for _ in range(depth):
                blocks.append(ResBlock(c, c_out, t_dim, **kw))
                c = c_out
                skip_chans.append(c)
            self.add_stage(f"enc{i + 1}", EncoderLevel(first, blocks))
        attn: nn.Module = SelfAttention(c, heads, norm=norm) if heads else nn.Identity()
        self.add_stage("mid", Middle(ResBlock(c, c, t_dim, **kw), attn, ResBlock(c, c, t_dim, **kw)))
        for i in reversed(range(len(chans))):  # the decoder, back up
            blocks = []
            for _ in range(depth + 1):
                blocks.append(ResBlock(c + skip_chans.pop(), chans[i], t_dim, **kw))
                c = chans[i]
            self.add_stage(f"dec{i + 1}", DecoderLevel(blocks, Up(c) if i > 0 else nn.Identity()))
        # the head: norm → act → conv to C channels, zero at the start
        self.num_features = c
        self.out_norm, self.out_act = get_norm(norm, c, 2), get_act(act)()
        self.out_conv = nn.Conv2d(c, C, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout),
                         heads=int(heads), mults=list(mults))

    # -- the contract (with the timestep) ------------------------------------------------------------
    def _timesteps(self, x: Tensor, t: Tensor | float | int | None) -> Tensor:
        if t is None:  # the clean end of the chain: what probes and the model contract tests see
            t = 0
        if not isinstance(t, Tensor):
            t = torch.full((x.shape[0],), float(t), device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise LaminaError(f"model 'unet' needs one timestep per image: t of shape {tuple(t.shape)} "
                              f"for {x.shape[0]} images")
        return t

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise LaminaError(f"model 'unet' was built for images {self.input_shape}, got a batch {tuple(x.shape)}")

    def forward_features(self, x: Tensor, t: Tensor | float | int | None = None) -> Tensor:  # type: ignore[override]
        """The decoder's last map (B, width · mults[0], H, W) for images ``x`` at timesteps ``t``."""
        self._check(x)
        temb = self.time_mlp(timestep_embedding(self._timesteps(x, t), self.t_width))  # (B, 4·width)
        skips = Skips()
        h = x
        for _, stage in self.stages():
            h = stage(h, temb, skips)
        return h

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """The output block: (B, c, H, W) -> (B, C, H, W); ``pre_logits``: the pooled (B, c) features."""
        if pre_logits:
            return feats.mean(dim=(2, 3))
        return self.out_conv(self.out_act(self.out_norm(feats)))

    def forward(self, x: Tensor, t: Tensor | float | int | None = None) -> Tensor:  # type: ignore[override]
        """The prediction (B, C, H, W) (the noise, or v) for noisy images ``x`` at timesteps ``t`` (B,);
        ``t=None``: timestep 0."""
        return self.forward_head(self.forward_features(x, t))


REGISTERED: tuple[type[Model], ...] = (UNet,)
