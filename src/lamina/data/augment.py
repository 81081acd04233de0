"""Batched augmentations that run wherever the batch is (GPU or CPU), on raw uint8 or float.

Each op takes a whole batch ``(B, C, H, W)`` and an explicit ``torch.Generator`` living on the
batch's device, so a run is reproducible and a resumed epoch draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def random_translate(x: Tensor, pad: int, g: torch.Generator) -> Tensor:
    """Shift each image by up to ``pad`` pixels in each direction, filling with zeros.

    Equivalent to zero-padding by ``pad`` and taking a random crop of the original size. On a
    GPU it is one gather; on the CPU a loop over the (2·pad+1)² offsets copying each group of
    images at once is several times faster than the gather.
    """
    if pad <= 0:
        return x
    B, _, H, W = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (B, 1), device=x.device, generator=g)
    dx = torch.randint(0, 2 * pad + 1, (B, 1), device=x.device, generator=g)
    if x.device.type == "cpu":
        return _crop_grouped(xp, dy, dx, H, W)
    return _crop_gather(xp, dy, dx, H, W)


def _crop_grouped(xp: Tensor, dy: Tensor, dx: Tensor, H: int, W: int) -> Tensor:
    """Crop ``xp[i, :, dy[i]:dy[i]+H, dx[i]:dx[i]+W]`` for all i, one slice per distinct offset."""
    out = xp.new_empty(xp.shape[0], xp.shape[1], H, W)
    span = xp.shape[-1] - W + 1
    offset = (dy * span + dx).flatten()
    for o in torch.unique(offset).tolist():
        idx = torch.nonzero(offset == o).flatten()
        a, b = divmod(o, span)
        out[idx] = xp[idx, :, a : a + H, b : b + W]
    return out


def _crop_gather(xp: Tensor, dy: Tensor, dx: Tensor, H: int, W: int) -> Tensor:
    """The same crop as :func:`_crop_grouped` as a single gather (no host sync: GPU-friendly)."""
    B = xp.shape[0]
    rows = (torch.arange(H, device=xp.device)[None, :] + dy)[:, :, None]  # (B, H, 1)
    cols = (torch.arange(W, device=xp.device)[None, :] + dx)[:, None, :]  # (B, 1, W)
    b = torch.arange(B, device=xp.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[b, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, g: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], device=x.device, generator=g) < 0.5
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def cutout(x: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Set a random ``size``×``size`` square (clipped at the border) of each image to zero."""
    if size <= 0:
        return x
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B, 1, 1), device=x.device, generator=g)
    cx = torch.randint(0, W, (B, 1, 1), device=x.device, generator=g)
    ys = torch.arange(H, device=x.device).view(1, H, 1)
    xs = torch.arange(W, device=x.device).view(1, 1, W)
    lo = size // 2
    inside = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


@dataclass(frozen=True)
class Augment:
    """Which augmentations to apply to training batches of images."""

    translate: int = 0  # pixels
    flip: bool = False
    cutout: int = 0  # pixels

    @property
    def active(self) -> bool:
        return self.translate > 0 or self.flip or self.cutout > 0

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        if x.dim() != 4:  # only images are augmented here; signals and vectors pass through
            return x
        x = random_translate(x, self.translate, g)
        if self.flip:
            x = random_flip(x, g)
        return cutout(x, self.cutout, g)
