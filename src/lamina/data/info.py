"""Summaries of a dataset: a dict for ``lamina data info`` and a PNG grid of examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lamina.data.base import Dataset, Split

MAX_ROWS = 40  # classes drawn in a sample grid


def _per_class(split: Split, classes: list[str]) -> dict[str, int]:
    counts = torch.bincount(split.y.long().clamp_min(0), minlength=len(classes)).tolist()
    return {c: int(n) for c, n in zip(classes, counts, strict=False)}


def describe(ds: Dataset) -> dict[str, Any]:
    """Name, source, modality, input shape, classes and per-split (per-class) sizes of ``ds``."""
    return {
        "name": ds.name,
        "source": ds.source,
        "modality": ds.modality,
        "input_shape": list(ds.input_shape),
        "dtype": str(ds.train.x.dtype).removeprefix("torch."),
        "num_classes": ds.num_classes,
        "classes": list(ds.classes),
        "flip": ds.flip,
        "preprocess": _short_preprocess(ds.preprocess.to_dict()),
        "splits": {
            name: {"size": len(s), "per_class": _per_class(s, ds.classes)} for name, s in ds.splits().items()
        },
    }


def _pick(split: Split, label: int, k: int, g: torch.Generator) -> torch.Tensor:
    idx = torch.nonzero(split.y == label).flatten()
    return idx[torch.randperm(len(idx), generator=g)[:k]].sort().values


def sample_grid(ds: Dataset, path: str | Path, per_class: int = 8, *, split: str = "train", seed: int = 0) -> Path:
    """Save a PNG of random examples: one labelled row per class (images), or curves (signals).

    Uses matplotlib's Agg canvas directly, so it works headless and leaves pyplot's state alone.
    """
    from matplotlib.figure import Figure

    s = ds.splits().get(split) or ds.train
    g = torch.Generator().manual_seed(seed)
    rows = list(range(min(ds.num_classes, MAX_ROWS)))
    picks = [_pick(s, c, per_class, g) for c in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    is_image = ds.modality == "image" and s.x.dim() == 4
    if is_image:
        fig = Figure(figsize=(0.9 * per_class + 1.5, 0.9 * len(rows) + 0.5), layout="constrained")
        axes = fig.subplots(len(rows), per_class, squeeze=False)
        vmax = ds.preprocess.scale
        for r, c in enumerate(rows):
            for j in range(per_class):
                ax = axes[r][j]
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
                if j < len(picks[r]):
                    img = s.x[picks[r][j]].float()  # (C, H, W)
                    if img.shape[0] == 1:
                        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=vmax)
                    else:
                        ax.imshow((img[:3].permute(1, 2, 0) / vmax).clamp(0, 1).numpy())
            axes[r][0].set_ylabel(ds.classes[c], rotation=0, ha="right", va="center", fontsize=9)
    else:
        fig = Figure(figsize=(8, 1.4 * len(rows) + 0.5), layout="constrained")
        axes = fig.subplots(len(rows), 1, squeeze=False, sharex=True)
        for r, c in enumerate(rows):
            ax = axes[r][0]
            for i in picks[r].tolist():
                x = s.x[i].float()
                ax.plot(x.reshape(x.shape[0], -1)[0].numpy() if x.dim() > 1 else x.numpy(), lw=0.8, alpha=0.8)
            ax.set_ylabel(ds.classes[c], rotation=0, ha="right", va="center", fontsize=9)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"{ds.name}: {split} examples per class")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _short_preprocess(d: dict[str, Any]) -> dict[str, Any]:
    """Per-channel statistics of wide inputs (a table's columns, k-mer frequencies) as a count and a range."""
    out = dict(d)
    for key in ("mean", "std"):
        values = d.get(key) or []
        if len(values) > 8:
            out[key] = f"{len(values)} values in [{min(values):.4g}, {max(values):.4g}]"
    return out
