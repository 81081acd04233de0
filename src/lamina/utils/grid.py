"""Image grids: a batch of images in [0, 1] as one PNG (sample grids, interpolations)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from lamina.utils.io import atomic_path


def image_grid(images: Tensor, *, nrow: int = 0, pad: int = 2, scale: int = 1) -> Tensor:
    """``images`` (N, C, H, W) in [0, 1] (C = 1 or 3) -> one uint8 image (rows*(H+pad)+pad, ..., C').

    ``nrow``: images per row (0: the nearest square); ``scale``: nearest-neighbour upscaling.
    Padding is white (0 pads would read as black borders on Fashion-MNIST's black background).

    >>> image_grid(torch.zeros(4, 1, 2, 2), pad=1).shape
    torch.Size([7, 7, 1])
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid takes (N, 1|3, H, W) images, got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if scale > 1:
        images = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        h, w = h * scale, w * scale
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i].detach().float().cpu().clamp(0, 1)
    return (grid * 255).round().to(torch.uint8).permute(1, 2, 0)  # (H', W', C)


def save_grid(images: Tensor, path: Path, *, nrow: int = 0, scale: int = 1) -> Path:
    """Write :func:`image_grid` of ``images`` to ``path`` as a PNG (atomically); returns ``path``."""
    from PIL import Image

    grid = image_grid(images, nrow=nrow, scale=scale).numpy()
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
