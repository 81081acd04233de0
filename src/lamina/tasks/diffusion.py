"""Denoising diffusion (DDPM, Ho et al. 2020) on images in [-1, 1], sampled by DDPM or DDIM.

The forward chain noises an image ``x0`` in ``T`` steps; its marginal is closed-form,

    q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I),

so training draws ``t`` uniformly and ``x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε`` in one step, and the
U-Net learns, by the plain MSE ("simple" loss), the noise ``ε`` or the velocity
``v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0`` (Salimans & Ho 2022; ``generate.prediction``).

- Schedules (``generate.noise_schedule``): ``cosine`` (Nichol & Dhariwal 2021: ᾱ from a squared
  cosine, each β clipped at 0.999) and ``linear`` (Ho et al.: β from 1e-4 to 0.02, scaled by 1000 / T).
- Sampling: ``steps = T`` runs the full ancestral chain (the posterior ``q(x_{t-1} | x_t, x̂0)``, its
  variance β̃_t); fewer steps run DDIM (Song et al. 2021, deterministic at ``eta = 0``) on an evenly
  spaced subsequence of the timesteps. Both clip the predicted ``x̂0`` to [-1, 1].
- Indices: timestep ``i`` in ``0..T-1`` is the paper's ``t = i + 1``; ``alpha_bar[i]`` its ᾱ.

The headline is the test split's loss, with one fixed timestep and noise per example (a local
generator), so epochs and runs compare.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.config import ModelConfig, RunConfig
from lamina.data.base import Dataset
from lamina.data.gpu_loader import _seed
from lamina.errors import LaminaError, did_you_mean
from lamina.models.unet import UNet
from lamina.tasks.base import Batch, Sums
from lamina.tasks.generative import ImageGenerator, generative_config
from lamina.utils import dist

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")
SAMPLE_BATCH = 256  # images denoised together when sampling (2,000 samples: 8 batches)

# What a diffusion run trains with where nothing else is set: AdamW at 2e-3 (5e-4 for the GPU's larger
# net) with a short warm-up and a cosine decay, no weight decay, gradients clipped at 1, and an EMA of
# the weights, its decay chosen for the steps a run takes: AveragedModel starts from the initial
# weights and a decay d keeps d**steps of them, so 0.995 keeps 1.2 % after the CPU recipe's 890
# steps where 0.999 would keep 41 % (noise); the GPU recipe's 13,000 steps take 0.9995 (0.1 %).
# CPU: a 16-wide U-Net (16/32/64 channels at 28/14/7, 0.62 M parameters, no attention), batches of
# 128, 2 epochs: 0.85 s a step on 2 idle cores, 6.3 minutes an epoch of Fashion-MNIST's 57,000
# training images, in fp32 and contiguous memory (GroupNorm's backward in channels_last was 2.7x
# slower on this CPU: 5.0 against 1.9 s a step of the 32-wide net). GPU: 64 wide (10.1 M parameters),
# 4-head attention in the middle, dropout 0.1, bf16, 30 epochs (not yet measured here: no GPU).
DEFAULTS: dict[str, Any] = {
    "train": {"optimizer": "adamw", "lr": 2e-3, "schedule": "cosine", "warmup": 0.05, "label_smoothing": 0.0,
              "weight_decay": 0.0, "grad_clip": 1.0, "epochs": 2, "ema": 0.995, "gradient_flow_every": 0},
    "model": {"name": "unet", "act": "silu", "norm": "group"},
    "cpu": {"train": {"precision": "fp32", "channels_last": False}, "data": {"batch_size": 128},
            "generate": {"fd_samples": 500},
            "model": {"width": 16}},
    "cuda": {"train": {"precision": "auto", "epochs": 30, "lr": 5e-4, "ema": 0.9995}, "data": {"batch_size": 128},
             "model": {"width": 64, "heads": 4, "dropout": 0.1}},
}


# -- schedules ---------------------------------------------------------------------------------------
def cosine_alpha_bar(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """ᾱ_1..ᾱ_T (T,) float64 of the cosine schedule: ``f(t) = cos((t/T + s) / (1 + s) · π/2)²``,
    ``ᾱ_t = f(t) / f(0)``, with each ``β_t = 1 - ᾱ_t / ᾱ_{t-1}`` clipped at ``max_beta``."""
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def linear_betas(T: int) -> Tensor:
    """β_1..β_T (T,) float64 of Ho et al.'s linear schedule: 1e-4 to 0.02 at T = 1000, scaled by 1000 / T."""
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def alpha_bar_of(schedule: str, T: int) -> Tensor:
    """ᾱ (T,) float64 of the schedule named ``schedule`` (cosine | linear)."""
    if schedule == "cosine":
        return cosine_alpha_bar(T)
    if schedule == "linear":
        return torch.cumprod(1 - linear_betas(T), dim=0)
    raise LaminaError(f"unknown noise schedule '{schedule}': {did_you_mean(schedule, SCHEDULES)}",
                      hint="generate.noise_schedule: cosine | linear")


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly spaced over 0..T-1, ascending, first 0 and last T-1."""
    return sorted({round(i * (T - 1) / max(steps - 1, 1)) for i in range(steps)})


# -- the forward process and the parameterisations (``a``: ᾱ_t, a float or broadcastable to x) ----------
def _bcast(a: Tensor | float, x: Tensor) -> Tensor | float:
    return a.reshape(-1, *([1] * (x.dim() - 1))) if isinstance(a, Tensor) and a.dim() == 1 else a


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """``x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise`` for timesteps ``t`` (B,) indexing ``alpha_bar`` (T,)."""
    a = _bcast(alpha_bar.to(x0.device, x0.dtype)[t], x0)
    return a**0.5 * x0 + (1 - a) ** 0.5 * noise


def v_of(x0: Tensor, eps: Tensor, a: Tensor | float) -> Tensor:
    """The velocity ``v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x0`` (Salimans & Ho 2022)."""
    a = _bcast(a, x0)
    return a**0.5 * eps - (1 - a) ** 0.5 * x0


def eps_to_x0(x_t: Tensor, eps: Tensor, a: Tensor | float) -> Tensor:
    """``x0 = (x_t - sqrt(1 - ᾱ) ε) / sqrt(ᾱ)``."""
    a = _bcast(a, x_t)
    return (x_t - (1 - a) ** 0.5 * eps) / a**0.5


def x0_to_eps(x_t: Tensor, x0: Tensor, a: Tensor | float) -> Tensor:
    """``ε = (x_t - sqrt(ᾱ) x0) / sqrt(1 - ᾱ)``."""
    a = _bcast(a, x_t)
    return (x_t - a**0.5 * x0) / (1 - a) ** 0.5


def v_to_x0(x_t: Tensor, v: Tensor, a: Tensor | float) -> Tensor:
    """``x0 = sqrt(ᾱ) x_t - sqrt(1 - ᾱ) v``."""
    a = _bcast(a, x_t)
    return a**0.5 * x_t - (1 - a) ** 0.5 * v


def v_to_eps(x_t: Tensor, v: Tensor, a: Tensor | float) -> Tensor:
    """``ε = sqrt(1 - ᾱ) x_t + sqrt(ᾱ) v``."""
    a = _bcast(a, x_t)
    return (1 - a) ** 0.5 * x_t + a**0.5 * v


def ddim_step(x_t: Tensor, eps: Tensor, a_t: float, a_prev: float, *, x0: Tensor | None = None,
              eta: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """One DDIM step from ᾱ ``a_t`` to ᾱ ``a_prev`` (> ``a_t``; 1: the clean image) given the predicted ε.

    ``x_prev = sqrt(a_prev) x̂0 + sqrt(1 - a_prev - σ²) ε + σ z``, ``σ = eta · sqrt((1 - a_prev) / (1 - a_t)
    · (1 - a_t / a_prev))``: deterministic at ``eta = 0``, DDPM-like at 1 (``noise`` then required).
    ``x0``: x̂0 where it is known (e.g. clipped); else ``(x_t - sqrt(1 - a_t) ε) / sqrt(a_t)``.
    """
    if x0 is None:
        x0 = eps_to_x0(x_t, eps, a_t)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) if eta else 0.0
    x = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise LaminaError("a stochastic DDIM step (eta > 0) needs noise")
        x = x + sigma * noise
    return x


def ddpm_step(x_t: Tensor, x0: Tensor, a_t: float, a_prev: float, noise: Tensor | None = None) -> Tensor:
    """One ancestral step: a draw of the posterior ``q(x_{t-1} | x_t, x̂0)`` (Ho et al. eq. 6-7).

    Mean ``sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) x̂0 + sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) x_t``, variance
    ``β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)`` (0 at the last step, ``a_prev = 1``); ``noise=None``: the mean.
    """
    alpha = a_t / a_prev
    beta = 1 - alpha
    mean = (a_prev**0.5 * beta / (1 - a_t)) * x0 + (alpha**0.5 * (1 - a_prev) / (1 - a_t)) * x_t
    var = beta * (1 - a_prev) / (1 - a_t)
    return mean + var**0.5 * noise if noise is not None and var > 0 else mean


# -- the task -----------------------------------------------------------------------------------------
class Diffusion(ImageGenerator):
    """DDPM on images (C, H, W) in [-1, 1] with a time-conditioned U-Net.

    Args:
        shape: the images' (C, H, W).
        timesteps: T, the steps of the noising chain.
        schedule: ``cosine`` | ``linear``.
        prediction: ``eps`` (the noise) | ``v`` (the velocity).
        samples: images of each sample grid written during training.
        sample_steps: sampler steps of those grids (and ``lamina generate``'s default); T: ancestral.
        eta: DDIM's noise (0: deterministic).
        eval_seed: seed of the fixed timesteps and noise the evaluation loss uses.
    """

    name: ClassVar[str] = "diffusion"
    headline: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = DEFAULTS
    pixel_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def __init__(self, shape: tuple[int, ...], *, timesteps: int = 1000, schedule: str = "cosine",
                 prediction: str = "eps", samples: int = 64, sample_steps: int = 50, eta: float = 0.0,
                 eval_seed: int = 0) -> None:
        super().__init__(shape, samples=samples, sample_steps=sample_steps)
        if int(timesteps) < 2:
            raise LaminaError(f"diffusion needs at least 2 timesteps (generate.timesteps), got {timesteps}")
        schedule, prediction = str(schedule).strip().lower(), str(prediction).strip().lower()
        if prediction not in PREDICTIONS:
            raise LaminaError(f"unknown prediction '{prediction}': {did_you_mean(prediction, PREDICTIONS)}",
                              hint="generate.prediction: eps (the noise) | v (the velocity)")
        self.T, self.schedule, self.prediction = int(timesteps), schedule, prediction
        self.eta, self.eval_seed = float(eta), int(eval_seed)
        self.alpha_bar = alpha_bar_of(schedule, self.T)  # (T,) float64, on the CPU
        self._abar: dict[torch.device, Tensor] = {}

    def alpha_bar_on(self, device: torch.device) -> Tensor:
        """ᾱ (T,) float32 on ``device`` (cached)."""
        if device not in self._abar:
            self._abar[device] = self.alpha_bar.to(device=device, dtype=torch.float32)
        return self._abar[device]

    # -- one step ------------------------------------------------------------------------------------
    def noised(self, model: nn.Module, x0: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """The model's prediction and its target for images ``x0`` noised to timesteps ``t`` by ``noise``."""
        a = self.alpha_bar_on(x0.device)[t]  # (B,)
        x_t = q_sample(x0, t, noise, self.alpha_bar_on(x0.device))
        target = noise if self.prediction == "eps" else v_of(x0, noise, a)
        return model(x_t, t), target

    def forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """(prediction, target) for a batch: timesteps uniform and noise standard normal, from the
        global RNG on the batch's device (seeded by the run: exact resume)."""
        t = torch.randint(0, self.T, (x.shape[0],), device=x.device)
        return self.noised(model, x, t, torch.randn_like(x))

    def loss(self, outputs: tuple[Tensor, Tensor], targets: Tensor) -> Tensor:  # type: ignore[override]
        pred, target = outputs
        return F.mse_loss(pred.float(), target.float())

    def sums(self, outputs: Any, targets: Tensor, loss: Tensor) -> Sums:
        n = len(targets)  # images
        return {"count": n, "loss_sum": loss.detach().double() * n}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[Batch], *,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                 ) -> dict[str, Any]:
        """The loss with the same timesteps and noise for each example every time (batch ``i`` draws
        them from a local generator seeded by ``(eval_seed, i)``; the global RNG does not move)."""
        was_training = model.training
        model.eval()
        total = torch.zeros((), dtype=torch.float64)
        count = 0
        for i, (x, _) in enumerate(loader):
            g = torch.Generator(device=x.device).manual_seed(_seed(self.eval_seed, i))
            t = torch.randint(0, self.T, (x.shape[0],), device=x.device, generator=g)
            noise = torch.randn(x.shape, device=x.device, generator=g).to(memory_format=_format(x))
            with autocast():
                pred, target = self.noised(model, x, t, noise)
            total = total + F.mse_loss(pred.float(), target.float(), reduction="sum").double().cpu() / x[0].numel()
            count += x.shape[0]
        model.train(was_training)
        if dist.sharded(loader):  # a job's ranks: their sums added
            r = dist.reduce_sums({"loss_sum": total, "count": count})
            total, count = r["loss_sum"], int(r["count"])
        return {"loss": float(total) / max(count, 1), "examples": count}

    def final_metrics(self, model: nn.Module, loaders: dict[str, Any], *,
                      autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                      ) -> dict[str, Any]:
        """The test split's loss (fixed timesteps and noise) first, then what it was measured with."""
        split = "test" if "test" in loaders else "val"
        m = self.evaluate(model, loaders[split], autocast=autocast)
        return {f"{split}_loss": m["loss"], f"{split}_examples": m["examples"], "timesteps": self.T,
                "noise_schedule": self.schedule, "prediction": self.prediction}

    # -- what a saved model needs ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "timesteps": self.T, "noise_schedule": self.schedule,
                "prediction": self.prediction, "sample_steps": self.sample_steps, "eta": self.eta}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Diffusion:
        if list(meta.get("pixel_range", cls.pixel_range)) != list(cls.pixel_range):
            raise LaminaError(f"this model.json's pixel range {meta.get('pixel_range')} is not diffusion's [-1, 1]")
        return cls(tuple(meta["shape"]), timesteps=int(meta["timesteps"]), schedule=meta["noise_schedule"],
                   prediction=meta["prediction"], sample_steps=int(meta.get("sample_steps", 50)),
                   eta=float(meta.get("eta", 0.0)))

    @classmethod
    def from_data(cls, ds: Dataset, cfg: RunConfig) -> Diffusion:
        cls.check_data(ds)
        g = cfg.generate
        return cls(ds.input_shape, timesteps=g.timesteps, schedule=g.noise_schedule, prediction=g.prediction,
                   eta=float(getattr(g, "eta", 0.0)), **generative_config(cfg))

    def build_model(self, m: ModelConfig, ds: Dataset | None = None) -> UNet:
        if m.name not in ("auto", "unet"):
            raise LaminaError(f"--task diffusion trains a U-Net, not model '{m.name}'", hint="use model.name=unet")
        return UNet(self.shape, 1, **m.given("width", "depth", "act", "norm", "dropout", "heads"))  # the rest: the U-Net's

    # -- sampling ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, *, steps: int = 0, generator: torch.Generator | None = None
               ) -> Tensor:
        """``n`` images (n, C, H, W) in [0, 1]: the ancestral chain where ``steps`` >= T, else DDIM on
        ``steps`` timesteps (0: ``sample_steps``). All noise comes from ``generator`` (on its device;
        None: the global RNG), in batches of ``SAMPLE_BATCH``; the model's mode is restored after."""
        steps = int(steps) or self.sample_steps
        if steps < 1:
            raise LaminaError(f"sampling needs at least 1 step, got {steps}")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            out = [self._sample_batch(model, min(SAMPLE_BATCH, n - i), steps, device, generator)
                   for i in range(0, n, SAMPLE_BATCH)]
        finally:
            model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, *self.shape, device=device)

    def _noise(self, n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        where = generator.device if generator is not None else device
        return torch.randn(n, *self.shape, generator=generator, device=where).to(device)

    def _predict(self, model: nn.Module, x: Tensor, i: int, a: float) -> tuple[Tensor, Tensor]:
        """(x̂0 clipped to [-1, 1], the ε consistent with it) at timestep index ``i`` (ᾱ = ``a``)."""
        out = model(x, torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)).float()
        x0 = eps_to_x0(x, out, a) if self.prediction == "eps" else v_to_x0(x, out, a)
        x0 = x0.clamp(-1.0, 1.0)
        return x0, x0_to_eps(x, x0, a)

    def _sample_batch(self, model: nn.Module, n: int, steps: int, device: torch.device,
                      generator: torch.Generator | None) -> Tensor:
        abar = self.alpha_bar.tolist()
        x = self._noise(n, device, generator)  # x_T ~ N(0, I)
        if steps >= self.T:  # the full ancestral chain
            for i in reversed(range(self.T)):
                a, a_prev = abar[i], abar[i - 1] if i > 0 else 1.0
                x0, _ = self._predict(model, x, i, a)
                x = ddpm_step(x, x0, a, a_prev, self._noise(n, device, generator) if i > 0 else None)
        else:  # DDIM on a subsequence
            ts = ddim_timesteps(self.T, steps)
            for k in reversed(range(len(ts))):
                a, a_prev = abar[ts[k]], abar[ts[k - 1]] if k > 0 else 1.0
                x0, eps = self._predict(model, x, ts[k], a)
                noise = self._noise(n, device, generator) if self.eta > 0 and k > 0 else None
                x = ddim_step(x, eps, a, a_prev, x0=x0, eta=self.eta if k > 0 else 0.0, noise=noise)
        return self.to_pixels(x)


def _format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
