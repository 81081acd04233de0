"""Inspection of a generative run (``vae``, ``diffusion``): per-stage activation statistics over
the test images as training fed them (a diffusion model at random noise levels), and for a VAE
its latent space of the test set projected on two principal components (``latent.json``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lamina.config import load_config
from lamina.data.base import Split, build_dataset
from lamina.data.gpu_loader import make_loader
from lamina.errors import LaminaError
from lamina.inspection.activations import activation_stats


class TaskForward(nn.Module):
    """A generative model seen through its task's training forward pass (a diffusion model needs a
    noise level besides the image): the inspection's stage hooks fire on the model's own stages."""

    def __init__(self, model: nn.Module, task: Any) -> None:
        super().__init__()
        self.net, self.task = model, task
        self.arch = getattr(model, "arch", {})
        self.feature_layout = getattr(model, "feature_layout", "channels")

    def stages(self) -> list[tuple[str, nn.Module]]:
        return list(self.net.stages())  # type: ignore[operator]

    def forward_features(self, x: Tensor) -> Any:
        return self.task.forward(self.net, x)


def latent_pca(mu: Tensor) -> tuple[Tensor, list[float]]:
    """The rows of ``mu`` (N, D) projected on their first two principal components, and the fraction
    of the total variance each of the first (up to 10) components holds.

    >>> pts, ev = latent_pca(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1], [0.0, -0.1]]))
    >>> round(ev[0], 3), pts.shape
    (0.99, torch.Size([4, 2]))
    """
    x = mu.double() - mu.double().mean(0)
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    var = s**2
    pts = x @ vt[:2].T
    if pts.shape[1] < 2:  # a 1-D latent: a zero second axis
        pts = torch.cat([pts, torch.zeros_like(pts)], dim=1)
    return pts.float(), (var / var.sum().clamp_min(1e-12))[:10].tolist()


class GenerativeInspection:
    """One generative run folder, its model and a seeded sample of its test split."""

    def __init__(self, folder: Path, predictor: Any, *, max_examples: int, seed: int, batch_size: int,
                 write: Callable[[Path, Any], None]) -> None:
        self.folder, self.seed, self.batch_size, self.write = folder, seed, batch_size, write
        self.task, self.model, self.device = predictor.generator_task, predictor.model, predictor.device
        cfg = load_config(folder / "config.yaml")
        ds = build_dataset(cfg.data, seed=cfg.train.seed)
        if ds.test is None or tuple(ds.input_shape) != tuple(self.task.shape):
            raise LaminaError(f"{folder}: the data rebuilt from config.yaml no longer matches the model "
                              f"(images {ds.input_shape}, model {tuple(self.task.shape)})")
        idx = torch.arange(len(ds.test))
        if len(idx) > max_examples:
            idx = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:max_examples].sort().values
        self.test = ds.test.take(idx)
        self.skipped: dict[str, str] = {}
        self.out = folder / "inspection"
        self.out.mkdir(exist_ok=True)

    def parts(self, compare_with: Any = None, top_stage: Any = None) -> list[tuple[str, Callable[[], None]]]:
        parts = [("activations", self.activations)]
        if hasattr(self.task, "encode_means"):
            parts.append(("latent", self.latent))
        return parts

    def examples(self) -> dict[str, int]:
        return {"test": len(self.test)}

    def batches(self, split: Split) -> Any:
        return make_loader(split, kind="device", batch_size=self.batch_size, device=self.device,
                           preprocess=self.task.preprocess, train=False)

    def activations(self) -> None:
        with torch.random.fork_rng(devices=[]):  # a diffusion model's noise levels: seeded, the caller's RNG kept
            torch.manual_seed(self.seed)
            stats = activation_stats(TaskForward(self.model, self.task), self.batches(self.test),
                                     max_examples=len(self.test), device=self.device)
        self.write(self.out / "activations.json", stats)

    def latent(self) -> None:
        mu, y = self.task.encode_means(self.model, self.batches(self.test))
        pts, explained = latent_pca(mu.cpu())
        self.write(self.out / "latent.json", {
            "latent": int(mu.shape[1]), "points": [[round(float(a), 4), round(float(b), 4)] for a, b in pts],
            "labels": y.cpu().tolist(), "explained": [round(v, 5) for v in explained], "split": "test"})
