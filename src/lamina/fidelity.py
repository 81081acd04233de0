"""FD-lamina: how close generated images are to real ones, measured offline.

Inception-based FID needs weights that cannot be had offline, so lamina measures the Fréchet
distance (Heusel et al. 2017) in the feature space of a **classifier lamina trained on the same
dataset** (its pooled features before the linear head), and the improved precision and recall of
Kynkäänniemi et al. (2019) in the same space. Every score is written beside its calibration: the
distance between *real* test images and the real training images, on as many images as were
generated (the Fréchet distance is biased upwards for small samples, so only equal sizes compare).

These numbers compare runs scored by the **same classifier** (its run folder is recorded with
each score). They are not Inception FIDs and must never be compared with published FIDs.

``generate.fd_classifier``: a classifier run folder; ``auto``: one trained once per dataset with
the ``fast`` recipe and kept in ``~/.cache/lamina/fd-classifiers/``; ``off``: no scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor, nn

from lamina.artifacts import read_model
from lamina.config import DataConfig, RunConfig
from lamina.data.base import Dataset, Preprocess
from lamina.errors import LaminaError
from lamina.inspection.fidelity import frechet_distance, gaussian_stats, precision_recall


class Features:
    """A trained classifier as a feature map: images (N, C, H, W) in [0, 1] -> pooled features (N, D)."""

    def __init__(self, run: Path, device: torch.device) -> None:
        model, meta = read_model(run)
        if meta.get("task") != "classify" or meta.get("modality") != "image":
            raise LaminaError(f"generate.fd_classifier={run} is a {meta.get('task')} run of {meta.get('modality')} "
                              "data: FD-lamina needs an image classifier of the same dataset")
        self.run, self.device = run, device
        self.model: nn.Module = model.to(device).eval()
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.shape = tuple(int(v) for v in meta["arch"]["input_shape"])

    @torch.no_grad()
    def __call__(self, images: Tensor, batch_size: int = 500) -> Tensor:
        if tuple(images.shape[1:]) != self.shape:
            raise LaminaError(f"FD-lamina's classifier {self.run} takes images {self.shape}, these are "
                              f"{tuple(images.shape[1:])}: train it on the same dataset")
        out = []
        for i in range(0, len(images), batch_size):
            x = self.preprocess.apply(images[i:i + batch_size].to(self.device).float() * self.preprocess.scale)
            out.append(self.model.forward_head(self.model.forward_features(x), pre_logits=True).double().cpu())
        return torch.cat(out)


@dataclass
class Reference:
    """Real images' features: the training split (the distribution to match) and the test split (the
    calibration: a perfect generator's score is about ``fd_train_test``)."""

    features: Features
    train: Tensor  # (N_train, D)
    test: Tensor  # (N_test, D)
    train_stats: tuple[Tensor, Tensor]

    @classmethod
    def build(cls, features: Features, ds: Dataset, *, max_train: int = 10_000, seed: int = 0) -> Reference:
        g = torch.Generator().manual_seed(seed)
        splits = ds.splits()
        if "test" not in splits:
            raise LaminaError(f"{ds.name} has no test split to calibrate FD-lamina with")
        train_x = splits["train"].x
        idx = torch.randperm(len(train_x), generator=g)[:max_train].sort().values
        train = features(_pixels(train_x[idx]))
        test = features(_pixels(splits["test"].x))
        return cls(features, train, test, gaussian_stats(train))

    def score(self, generated: Tensor, *, seed: int = 0) -> dict[str, Any]:
        """FD-lamina and precision/recall of ``generated`` images (N, C, H, W) in [0, 1], with the
        real test images' scores on as many images as the calibration."""
        n = len(generated)
        fake = self.features(generated)
        g = torch.Generator().manual_seed(seed)
        test = self.test[torch.randperm(len(self.test), generator=g)[:n]]
        real = self.train[torch.randperm(len(self.train), generator=g)[:n]]
        mu, sigma = self.train_stats
        p, r = precision_recall(real, fake)
        tp, tr = precision_recall(real, test)
        return {"fd_lamina": frechet_distance(*gaussian_stats(fake), mu, sigma),
                "fd_train_test": frechet_distance(*gaussian_stats(test), mu, sigma),
                "fd_precision": p, "fd_recall": r, "fd_precision_test": tp, "fd_recall_test": tr,
                "fd_samples": n, "fd_classifier": str(self.features.run)}


def _pixels(x: Tensor) -> Tensor:
    """Raw images (uint8 or float in [0, 1]) -> float [0, 1]."""
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def classifier_run(cfg: RunConfig, console: Console) -> Path | None:
    """The classifier FD-lamina is measured with (``generate.fd_classifier``): a run folder, or the
    cached ``auto`` one (trained now, once, if missing), or None for ``off``."""
    choice = cfg.generate.fd_classifier.strip()
    if choice == "off":
        return None
    if choice != "auto":
        path = Path(choice).expanduser()
        if not (path / "model.json").is_file():
            raise LaminaError(f"generate.fd_classifier={choice} is not a finished run folder (no model.json): "
                              "give a classifier run of the same dataset, auto or off")
        return path
    from lamina.data.builtin import cache_dir

    d = cfg.data
    key = json.dumps({"name": d.name, "image_size": d.image_size, "split_seed": d.split_seed,
                      "test_fraction": d.test_fraction, "seed": cfg.train.seed}, sort_keys=True)
    folder = cache_dir() / "fd-classifiers" / f"{Path(d.name).name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    if (folder / "model.json").is_file():
        return folder
    _train_classifier(d, folder, cfg.train.seed, cfg.train.device, console)
    return folder


def _train_classifier(d: DataConfig, folder: Path, seed: int, device: str, console: Console) -> None:
    from lamina.session import Session, resolve_config, validate
    from lamina.utils import dist

    if dist.active():  # a nested single-process run inside a job would leave the other ranks waiting
        raise LaminaError(f"FD-lamina's feature classifier of {d.name} is not cached yet, and a job of several "
                          "processes cannot train it: train this model once in one process (it caches the "
                          "classifier), or set generate.fd_classifier=off or a classifier run folder")

    console.print(f"FD-lamina: training its feature classifier of {d.name} once (the fast recipe), cached in {folder}")
    if folder.exists():  # an unfinished earlier attempt
        import shutil

        shutil.rmtree(folder)
    data = replace(d, task="classify", batch_size=0)
    cfg = resolve_config(config=RunConfig(data=data), recipe="fast", seed=seed, device=device, out=str(folder))
    cfg = replace(cfg, energy=replace(cfg.energy, meter="off"))
    validate(cfg)
    summary = Session(cfg, console, quiet=True).run()
    console.print(f"FD-lamina: the feature classifier reached {summary['test_accuracy']:.2%} test accuracy")


class FidelityScores:
    """A callback: FD-lamina and precision/recall of ``n`` samples at the epochs the sample grids are
    written (see :class:`lamina.tasks.generative.SampleGrids`), logged to ``RUN/fidelity.jsonl``."""

    order = 56

    def __init__(self, reference: Reference, path: Path, *, n: int, steps: int, epochs: Callable[[int], set[int]],
                 seed: int = 0) -> None:
        self.reference, self.path, self.n, self.steps, self.seed = reference, path, n, steps, seed
        self.epochs = epochs
        self.last: dict[str, Any] = {}  # the newest record: the final model's score when training ended there

    def fit_start(self, trainer: Any) -> None: ...
    def epoch_start(self, trainer: Any) -> None: ...
    def batch_end(self, trainer: Any) -> None: ...
    def fit_end(self, trainer: Any) -> None: ...

    def epoch_end(self, trainer: Any) -> None:
        if trainer.epoch not in self.epochs(trainer.epochs):
            return
        model = trainer.ema.module if trainer.ema is not None else trainer.module
        record = {"epoch": trainer.epoch, "step": trainer.step,
                  **score_model(trainer.task, model, self.reference, n=self.n, steps=self.steps, seed=self.seed)}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.last = record


def score_model(task: Any, model: nn.Module, reference: Reference, *, n: int, steps: int, seed: int = 0
                ) -> dict[str, Any]:
    """FD-lamina of ``n`` images sampled from ``model`` (its own generator, seeded: the training RNG
    does not move)."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed + 1)
    images = task.sample(model, n, steps=steps, generator=g)
    return reference.score(images.cpu(), seed=seed) | {"sample_steps": steps}
