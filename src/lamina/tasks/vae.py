"""Variational auto-encoders (Kingma & Welling 2014): the ELBO, with its two terms kept apart.

For an image x of D = C·H·W pixels in [0, 1] and a Gaussian posterior q(z | x) = N(mu, diag(sigma²)),

    -ELBO(x) = rec(x) + KL(q(z | x) || N(0, I)),
    rec(x)   = -log p(x | z),  z = mu + sigma · eps (one sample),
    KL       = 0.5 · Σ_j (mu_j² + sigma_j² - 1 - log sigma_j²)   (closed form),

in nats per image; the training loss is ``rec + beta · KL`` (beta-VAE, Higgins et al. 2017; beta = 1
is the true ELBO). The decoder (``generate.decoder``) is

- ``bernoulli``: rec = binary cross-entropy with logits, summed over the pixels, on the **continuous**
  pixels in [0, 1] (the usual practice on MNIST and Fashion-MNIST). A Bernoulli density of
  non-binary values is not a normalised likelihood of them, so the ``nelbo`` and ``bpd`` of such
  a run compare with other continuous-pixel BCE runs, not with the likelihoods of binarised MNIST
  or of dequantised density models;
- ``gaussian``: rec = -log N(x; mean, I) = 0.5 · Σ (x - mean)² + 0.5 · D · log(2π) (unit variance,
  its constant included: a density of continuous x, in nats).

Running sums per batch: ``count`` (images), ``loss_sum``, ``rec_sum``, ``kl_sum``; the metrics are
``loss``, ``rec``, ``kl``, ``elbo`` (= -(rec + kl)), ``nelbo`` (the headline, lower is better)
and ``bpd`` = nelbo / (D · ln 2). Evaluation draws one posterior sample per image from a local
generator with a fixed seed, so the validation ELBO of every epoch uses the same noises and the
training RNG is not moved.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.config import ModelConfig, RunConfig
from lamina.data.base import Dataset
from lamina.errors import LaminaError, did_you_mean
from lamina.models import Model, create_model
from lamina.tasks.base import Batch, Sums, add_sums, to_floats
from lamina.tasks.generative import ImageGenerator, generative_config
from lamina.utils import dist
from lamina.utils.modules import eval_mode

DECODERS = ("bernoulli", "gaussian")
EVAL_SEED = 0  # the posterior noises of every evaluation
SAMPLE_BATCH = 500  # images decoded at once by sample()

# What a VAE trains with where nothing else is set: AdamW at 1e-3 (the usual VAE setting), batches
# of 128, a cosine decay after a short warm-up, no label smoothing, EMA or gradient-flow records
# (a per-image ELBO needs none of them), no weight decay (the KL term regularises the encoder).
# CPU: the default ConvVAE (width 32, depth 1, 16 latents) for 10 epochs of Fashion-MNIST in fp32.
# GPU: a wider one (64) for longer (30 epochs).
DEFAULTS: dict[str, Any] = {
    "train": {"optimizer": "adamw", "lr": 1e-3, "schedule": "cosine", "warmup": 0.02, "weight_decay": 0.0,
              "label_smoothing": 0.0, "ema": 0.0, "gradient_flow_every": 0, "epochs": 10},
    "data": {"batch_size": 128},
    "model": {"name": "vae"},
    "cpu": {"train": {"precision": "fp32"}},
    "cuda": {"train": {"epochs": 30, "precision": "auto"}, "model": {"width": 64}},
}


class VAEStep(NamedTuple):
    """A forward pass of the task: the model's outputs and the images they reconstruct."""

    logits: Tensor  # (B, C, H, W): Bernoulli logits, or the Gaussian decoder's means
    mu: Tensor  # (B, L)
    logvar: Tensor  # (B, L)
    x: Tensor  # (B, C, H, W): the images, in [0, 1]


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in nats: (B, L) -> (B,), fp32.

    >>> float(kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))[0])
    0.0
    """
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction(logits: Tensor, x: Tensor, decoder: str = "bernoulli") -> Tensor:
    """-log p(x | z) per image, in nats: (B, C, H, W) -> (B,), fp32.

    ``bernoulli``: binary cross-entropy with logits summed over the pixels; ``gaussian``: the
    negative log-density of N(logits, I), its 0.5 · log(2π) per pixel included.
    """
    logits, x = logits.float(), x.float()
    if decoder == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
    return 0.5 * ((x - logits) ** 2 + math.log(2 * math.pi)).flatten(1).sum(dim=1)


class VAE(ImageGenerator):
    """A variational auto-encoder of images in [0, 1].

    Args:
        shape: the images' (C, H, W).
        latent: dimensions of z (``generate.latent``).
        beta: weight of the KL term in the training loss (``generate.beta``; 1: the ELBO).
        decoder: ``bernoulli`` | ``gaussian`` (``generate.decoder``).
        samples, sample_steps: of the sample grids written during training (see the base class).

    >>> from lamina.models.vae import ConvVAE
    >>> VAE((1, 8, 8), latent=2).sample(ConvVAE((1, 8, 8), width=4, latent=2), 3).shape
    torch.Size([3, 1, 8, 8])
    """

    name: ClassVar[str] = "vae"
    headline: ClassVar[str] = "nelbo"
    higher_is_better: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = DEFAULTS
    default_batch_size = 128
    pixel_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, shape: tuple[int, ...], *, latent: int = 16, beta: float = 1.0, decoder: str = "bernoulli",
                 samples: int = 64, sample_steps: int = 50) -> None:
        super().__init__(shape, samples=samples, sample_steps=sample_steps)
        key = str(decoder).strip().lower()
        if key not in DECODERS:
            raise LaminaError(f"unknown VAE decoder '{decoder}' (generate.decoder): {did_you_mean(key, DECODERS)}")
        if int(latent) < 1:
            raise LaminaError(f"a VAE needs generate.latent >= 1, got {latent}")
        if not (math.isfinite(float(beta)) and float(beta) >= 0):
            raise LaminaError(f"generate.beta must be a number >= 0 (1: the ELBO), got {beta}")
        self.latent, self.beta, self.decoder = int(latent), float(beta), key
        self.dims = math.prod(self.shape)  # D = C·H·W

    # -- one step --------------------------------------------------------------------------------
    def forward(self, model: nn.Module, x: Tensor, noise: Tensor | None = None) -> VAEStep:  # type: ignore[override]
        """The model's reconstruction of ``x`` and its posterior (``noise``: see ``ConvVAE.forward``)."""
        out = model(x) if noise is None else model(x, noise)
        return VAEStep(out.logits, out.mu, out.logvar, x)

    def terms(self, out: VAEStep) -> tuple[Tensor, Tensor]:
        """``(rec, kl)`` per image (B,), in nats, fp32."""
        return reconstruction(out.logits, out.x, self.decoder), kl_divergence(out.mu, out.logvar)

    def loss(self, outputs: VAEStep, targets: Tensor) -> Tensor:  # type: ignore[override]
        """``rec + beta · kl``, the mean over the batch's images (the labels are not read)."""
        rec, kl = self.terms(outputs)
        return (rec + self.beta * kl).mean()

    def sums(self, outputs: VAEStep, targets: Tensor, loss: Tensor) -> Sums:  # type: ignore[override]
        rec, kl = (t.detach().to(_sum_dtype(t)) for t in self.terms(outputs))
        return {"count": len(rec), "loss_sum": (rec + self.beta * kl).sum(), "rec_sum": rec.sum(), "kl_sum": kl.sum()}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["count"], 1)
        rec, kl = sums.get("rec_sum", 0.0) / n, sums.get("kl_sum", 0.0) / n
        nelbo = rec + kl
        return {"loss": sums["loss_sum"] / n, "rec": rec, "kl": kl, "elbo": -nelbo, "nelbo": nelbo,
                "bpd": nelbo / (self.dims * math.log(2))}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[Batch], *,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                 ) -> dict[str, Any]:
        """The metrics over ``loader``, one posterior sample per image from a local generator seeded
        with ``EVAL_SEED`` (the same noises every time; the global RNG is not moved)."""
        was_training = model.training
        model.eval()
        total: Sums = {}
        g: torch.Generator | None = None
        try:
            for x, y in loader:
                if g is None:
                    g = torch.Generator(device=x.device).manual_seed(EVAL_SEED)
                noise = torch.randn(len(x), self.latent, generator=g, device=x.device)
                with autocast():
                    out = self.forward(model, x, noise)
                add_sums(total, self.sums(out, y, self.loss(out, y)))
        finally:
            model.train(was_training)
        total = dist.reduce_sums(total) if dist.sharded(loader) else total  # a job's ranks: their sums added
        sums = to_floats(total) if total else {"count": 0.0, "loss_sum": 0.0}
        return {**self.summarize(sums), "examples": int(sums["count"])}

    # -- what a run of this task is made of ------------------------------------------------------
    @classmethod
    def from_data(cls, ds: Dataset, cfg: RunConfig) -> VAE:
        cls.check_data(ds)
        g = cfg.generate
        return cls(ds.input_shape, latent=g.latent, beta=g.beta, decoder=g.decoder, **generative_config(cfg))

    def build_model(self, m: ModelConfig, ds: Dataset | None = None) -> Model:
        """The ``vae`` model (``model.name`` auto or vae) with ``generate.latent`` latents."""
        name = "vae" if m.name in ("auto", "") else m.name
        if name != "vae":
            raise LaminaError(f"--task vae trains the 'vae' model, not '{m.name}': drop --model or use --model vae")
        return create_model("vae", self.shape, 1, latent=self.latent, **m.given("width", "depth", "act", "norm", "dropout"))

    def final_metrics(self, model: nn.Module, loaders: dict[str, Any], *,
                      autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                      ) -> dict[str, Any]:
        """The test split's negative ELBO (nats per image) first, then its bits per dimension and terms."""
        split = "test" if "test" in loaders else "val"
        m = self.evaluate(model, loaders[split], autocast=autocast)
        return {f"{split}_nelbo": m["nelbo"], f"{split}_bpd": m["bpd"], f"{split}_rec": m["rec"],
                f"{split}_kl": m["kl"], f"{split}_elbo": m["elbo"], f"{split}_examples": m["examples"],
                "latent": self.latent, "beta": self.beta, "decoder": self.decoder}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "latent": self.latent, "beta": self.beta, "decoder": self.decoder}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> VAE:
        return cls(tuple(meta["shape"]), latent=int(meta["latent"]), beta=float(meta.get("beta", 1.0)),
                   decoder=str(meta.get("decoder", "bernoulli")))

    # -- generating --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, *, steps: int = 0, generator: torch.Generator | None = None
               ) -> Tensor:
        """``n`` images (n, C, H, W) in [0, 1]: z ~ N(0, I) decoded to the decoder's means (a Bernoulli
        decoder's probabilities, not binarised; a Gaussian one's means, clamped). ``steps`` is unused;
        z comes from ``generator`` (the global RNG when None), in batches of ``SAMPLE_BATCH``."""
        device = _device(model)
        parts = []
        with eval_mode(model):
            for start in range(0, n, SAMPLE_BATCH):
                z = torch.randn(min(SAMPLE_BATCH, n - start), self.latent, generator=generator, device=device)
                parts.append(self._means(model.decode(z)))
        return torch.cat(parts) if parts else torch.zeros(0, *self.shape, device=device)

    @torch.no_grad()
    def interpolate(self, model: nn.Module, x_a: Tensor, x_b: Tensor, n_steps: int = 8) -> Tensor:
        """Images decoded along the straight line between the posterior means of ``x_a`` and ``x_b``.

        Args:
            model: the VAE.
            x_a, x_b: images (C, H, W), or batches (B, C, H, W) of pairs, in [0, 1] (the model's range).
            n_steps: points on each line, both ends included.

        Returns:
            (B · n_steps, C, H, W) in [0, 1] (B = 1 for single images): pair i's line is rows
            i · n_steps ... (i + 1) · n_steps - 1, so ``save_grid(images, nrow=n_steps)`` draws a line a row.
        """
        if n_steps < 2:
            raise LaminaError(f"an interpolation needs n_steps >= 2 (both ends), got {n_steps}")
        xa, xb = (x.unsqueeze(0) if x.dim() == 3 else x for x in (x_a, x_b))
        if xa.shape != xb.shape or tuple(xa.shape[1:]) != self.shape:
            raise LaminaError(f"interpolate takes two images (or batches) of shape {self.shape}, got "
                              f"{tuple(x_a.shape)} and {tuple(x_b.shape)}")
        device = _device(model)
        with eval_mode(model):
            mu_a, _ = model.encode(xa.to(device).float())  # (B, L)
            mu_b, _ = model.encode(xb.to(device).float())
            t = torch.linspace(0, 1, n_steps, device=device)[None, :, None]  # (1, S, 1)
            z = (1 - t) * mu_a[:, None] + t * mu_b[:, None]  # (B, S, L)
            return self._means(model.decode(z.flatten(0, 1)))  # (B·S, C, H, W)

    @torch.no_grad()
    def encode_means(self, model: nn.Module, loader: Iterable[Batch]) -> tuple[Tensor, Tensor]:
        """The posterior means of every image of ``loader``: ``(mu (N, L), labels (N,))`` on the CPU."""
        mus, ys = [], []
        with eval_mode(model):
            for x, y in loader:
                mu, _ = model.encode(x)
                mus.append(mu.float().cpu())
                ys.append(y.cpu())
        if not mus:
            return torch.zeros(0, self.latent), torch.zeros(0, dtype=torch.long)
        return torch.cat(mus), torch.cat(ys)

    def _means(self, logits: Tensor) -> Tensor:
        """The decoder's mean image in [0, 1]: sigmoid of Bernoulli logits, clamped Gaussian means."""
        return torch.sigmoid(logits.float()) if self.decoder == "bernoulli" else logits.float().clamp(0, 1)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sum_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64


