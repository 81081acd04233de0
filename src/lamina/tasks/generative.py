"""What the image generators (``vae``, ``diffusion``) share: images in a fixed pixel range, loaders
of them, sampling, and the sample grids a run writes as it trains.

A generative task still speaks the Task contract the Trainer calls (``forward`` -> ``loss`` ->
``sums``); on top of it, :class:`ImageGenerator` adds what ``lamina generate`` and the report use:

- ``sample(model, n, steps=..., generator=...)`` -> ``(n, C, H, W)`` images in [0, 1];
- ``from_meta(meta)`` rebuilds the task from a saved ``model.json`` (its :meth:`describe`), so a
  saved model samples without its training config;
- ``to_pixels`` / ``preprocess``: the model's input range (``[0, 1]`` for a Bernoulli VAE,
  ``[-1, 1]`` for diffusion) to and from raw pixels.

Class labels are kept in the batches (they colour the VAE's latent map); the losses never read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lamina.config import DataConfig, RunConfig
from lamina.data.base import Dataset, Preprocess, Split
from lamina.data.gpu_loader import make_loader
from lamina.errors import LaminaError
from lamina.tasks.base import Task
from lamina.utils.grid import save_grid

GENERATIVE_TASKS = ("vae", "diffusion")


class ImageGenerator(Task):
    """Base class of tasks that learn to generate images of shape ``shape`` (C, H, W).

    Args:
        shape: the images' (C, H, W).
        cfg: the run's config (its ``generate`` section configures the task).
    """

    # the model's input range: raw pixels / 255 mapped linearly onto it
    pixel_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, shape: tuple[int, ...], *, samples: int = 64, sample_steps: int = 50) -> None:
        if len(shape) != 3:
            raise LaminaError(f"a generative image model needs images (C, H, W), got examples of shape {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.samples, self.sample_steps = samples, sample_steps

    # -- pixels ------------------------------------------------------------------------------------
    @property
    def preprocess(self) -> Preprocess:
        """uint8 pixels -> the model's range: ``(x / 255 - mean) / std``."""
        lo, hi = self.pixel_range
        return Preprocess(kind="array", scale=255.0, mean=(-lo / (hi - lo),) * self.shape[0],
                          std=(1.0 / (hi - lo),) * self.shape[0], channels=self.shape[0])

    def to_pixels(self, x: Tensor) -> Tensor:
        """The model's range -> [0, 1] (clamped)."""
        lo, hi = self.pixel_range
        return ((x.float() - lo) / (hi - lo)).clamp(0, 1)

    # -- what ``lamina generate`` calls --------------------------------------------------------------
    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, *, steps: int = 0, generator: torch.Generator | None = None
               ) -> Tensor:
        """``n`` new images (n, C, H, W) in [0, 1]; ``steps``: the sampler's steps where it has any."""
        raise NotImplementedError

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ImageGenerator:
        """The task as a saved model's ``model.json`` describes it (see :meth:`describe`)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "shape": list(self.shape), "pixel_range": list(self.pixel_range)}

    # -- the run ---------------------------------------------------------------------------------------
    @classmethod
    def check_data(cls, ds: Dataset) -> None:
        """Generative tasks take images; anything else is a one-line error."""
        if ds.modality != "image" or len(ds.input_shape) != 3:
            raise LaminaError(f"--task {cls.name} generates images, but {ds.name} is {ds.modality or 'not images'} "
                              "data: give an image dataset (e.g. fashion-mnist) or a folder of class folders of images")

    def loaders(self, ds: Dataset, d: DataConfig, *, device: torch.device, seed: int,
                channels_last: bool) -> dict[str, Any]:
        """Training batches shuffled (no augmentation: it would be learnt as part of the data);
        evaluation batches in order."""
        out: dict[str, Any] = {"train": make_loader(ds.train, kind=d.loader, batch_size=d.batch_size, device=device,
                                                    preprocess=self.preprocess, train=True, seed=seed,
                                                    channels_last=channels_last, workers=d.workers)}
        for name, split in ds.splits().items():
            if name != "train":
                out[name] = self.eval_loader(split, ds, d, device=device, channels_last=channels_last)
        return out

    def eval_loader(self, split: Split, ds: Dataset, d: DataConfig, *, device: torch.device,
                    channels_last: bool = False) -> Any:
        return make_loader(split, kind=d.loader, batch_size=max(d.batch_size, 512), device=device,
                           preprocess=self.preprocess, train=False, channels_last=channels_last, workers=d.workers)

    def callbacks(self, run_dir: Path) -> list[Any]:
        return [SampleGrids(run_dir / "samples", n=self.samples, steps=self.sample_steps)]


def generative_config(cfg: RunConfig) -> dict[str, Any]:
    """The ``generate`` section's values a task's constructor takes."""
    g = cfg.generate
    return {"samples": g.samples, "sample_steps": g.sample_steps}


class SampleGrids:
    """Sample grids written at a few points of training: after the first epoch, at a quarter, half and
    three quarters of the epochs, and after the last (``RUN/samples/epoch_NNN.png``, indexed in
    ``RUN/samples/samples.jsonl``). The same seed every time, so the grids show one set of starting
    noises being turned into images better and better. ``scorers`` (e.g. FD-lamina) get the
    samples and return metrics recorded beside each grid."""

    order = 55

    def __init__(self, folder: Path, *, n: int = 64, steps: int = 50, seed: int = 0,
                 scorers: list[Any] | None = None) -> None:
        self.folder, self.n, self.steps, self.seed = folder, n, steps, seed
        self.scorers = list(scorers or [])

    def fit_start(self, trainer: Any) -> None: ...
    def epoch_start(self, trainer: Any) -> None: ...
    def batch_end(self, trainer: Any) -> None: ...
    def fit_end(self, trainer: Any) -> None: ...

    @staticmethod
    def epochs_to_sample(epochs: int) -> set[int]:
        return {1, epochs} | {max(1, round(epochs * f)) for f in (0.25, 0.5, 0.75)}

    def epoch_end(self, trainer: Any) -> None:
        if self.n <= 0 or trainer.epoch not in self.epochs_to_sample(trainer.epochs):
            return
        model = trainer.ema.module if trainer.ema is not None else trainer.module
        g = torch.Generator(device=trainer.engine.device).manual_seed(self.seed)
        rng = torch.get_rng_state()  # sampling must not move the training RNG (exact resume)
        images = trainer.task.sample(model, self.n, steps=self.steps, generator=g)
        torch.set_rng_state(rng)
        path = save_grid(images, self.folder / f"epoch_{trainer.epoch:03d}.png")
        record: dict[str, Any] = {"epoch": trainer.epoch, "step": trainer.step, "png": path.name}
        for score in self.scorers:
            record |= score(model, trainer.task)
        with (self.folder / "samples.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
