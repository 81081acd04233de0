"""A convolutional variational auto-encoder (Kingma & Welling 2014) for images (C, H, W).

    x ─ stage1 (H/2) ─ stage2 (H/4) ─ posterior ─▶ [mu, logvar] (B, 2L)      the encoder: forward_features
    z = mu + exp(logvar / 2) · eps ─ decoder ─▶ logits (B, C, H, W)

The encoder is the model's feature path (``stages()`` / ``forward_features``), so the report's
per-layer sections (probes, CKA, activations) read it as they read a classifier's stages; its last
stage is the linear map to the posterior's mean and log-variance. The decoder mirrors it: a linear
map back to the (2·width, H/4, W/4) map, then two transposed convolutions that double the size.

``forward(x)`` returns a :class:`VAEOutput` (``output_kind = "vae"``), not class logits: the
reconstruction logits (a Bernoulli decoder's, or a Gaussian decoder's means), and ``mu`` and
``logvar`` of the posterior, which is what the ELBO of :mod:`lamina.tasks.vae` needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.models.base import Model, check_hparams
from lamina.models.cnn import init_conv_weights
from lamina.models.layers import ActLayer, ConvNormAct, act_name, get_act, get_norm, norm_name


class VAEOutput(NamedTuple):
    """What a VAE's forward pass gives: the decoder's output and the posterior q(z | x) = N(mu, exp(logvar))."""

    logits: Tensor  # (B, C, H, W): Bernoulli logits, or a Gaussian decoder's means
    mu: Tensor  # (B, L)
    logvar: Tensor  # (B, L)


class ConvVAE(Model):
    """Gaussian encoder and convolutional decoder; 28×28 → 14×14 → 7×7 and back (any H, W divisible by 4).

    Encoder stage ``i`` (``stage1``, ``stage2``) is a stride-2 3×3 ConvNormAct of ``width · 2**(i-1)``
    channels, then ``depth - 1`` more at that size; ``posterior`` flattens the (2·width, H/4, W/4)
    map and maps it linearly to ``[mu, logvar]`` (B, 2·latent). The decoder: linear to the map,
    activation, then per level a 4×4 stride-2 transposed conv (norm, activation; ``depth - 1`` 3×3
    ConvNormActs after the first) and a final one to ``C`` channels of logits.

    Args:
        input_shape: (C, H, W) with H and W divisible by 4.
        num_classes: not used (a VAE has no classifier head); kept for the registry's signature.
        width: channels of the first encoder stage (the second has twice as many).
        depth: convolutions per level of the encoder and of the decoder.
        latent: dimensions of z.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none``.
        dropout: dropout on the flattened encoder features, before the posterior's linear map.
    """

    name = "vae"
    hparams: ClassVar[tuple[str, ...]] = ("width", "depth", "latent", "act", "norm", "dropout")
    output_kind: ClassVar[str] = "vae"  # forward -> VAEOutput(logits (B, C, H, W), mu (B, L), logvar (B, L))
    example_shape: ClassVar[tuple[int, ...]] = (1, 8, 8)
    example_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int = 1,
        *,
        width: int = 32,
        depth: int = 1,
        latent: int = 16,
        act: ActLayer = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4 or min(shape) < 1:
            raise LaminaError(f"model 'vae' needs images (C, H, W) with H and W divisible by 4, got shape {shape}: "
                              "resize the images (data.image_size=28) or pad them")
        super().__init__(shape, num_classes)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        if int(latent) < 1:
            raise LaminaError(f"model 'vae' needs latent >= 1, got {latent} (generate.latent)")
        norm = norm_name(norm)
        c, h, w = shape
        self.latent = int(latent)
        self.map_shape = (2 * width, h // 4, w // 4)  # the encoder's last map, the decoder's first
        flat = self.map_shape[0] * self.map_shape[1] * self.map_shape[2]
        c_in = c
        for i in range(2):
            c_out = width * 2**i
            stage = nn.Sequential(ConvNormAct(c_in, c_out, 3, 2, act=act, norm=norm))
            for _ in range(depth - 1):
                stage.append(ConvNormAct(c_out, c_out, 3, act=act, norm=norm))
            self.add_stage(f"stage{i + 1}", stage)  # (B, c_out, H / 2**(i+1), W / 2**(i+1))
            c_in = c_out
        self.add_stage("posterior", nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, 2 * self.latent)))
        self.num_features = 2 * self.latent  # forward_features: [mu, logvar] (B, 2L)
        self.decoder_in = nn.Sequential(nn.Linear(self.latent, flat), get_act(act)())
        self.decoder = nn.Sequential(
            _up(2 * width, width, act=act, norm=norm, depth=depth),  # (B, width, H/2, W/2)
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),  # (B, C, H, W): logits
        )
        init_conv_weights(self)
        self.arch.update(width=width, depth=depth, latent=self.latent, act=act_name(act), norm=norm,
                         dropout=float(dropout))

    # -- the VAE -----------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's ``(mu, logvar)``, each (B, L), of images (B, C, H, W)."""
        return self.forward_features(x).chunk(2, dim=1)  # type: ignore[return-value]

    def decode(self, z: Tensor) -> Tensor:
        """Logits (B, C, H, W) of latents (B, L) (a Gaussian decoder's means)."""
        h = self.decoder_in(z).reshape(len(z), *self.map_shape)  # (B, 2w, H/4, W/4)
        return self.decoder(h)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> VAEOutput:  # type: ignore[override]
        """Encode, draw z = mu + sigma · noise, decode.

        Args:
            x: images (B, C, H, W).
            noise: (B, L) standard normal noise of the reparameterisation; None: drawn from the
                global RNG in training mode, and zero (z = mu) in eval mode.
        """
        mu, logvar = self.encode(x)  # (B, L) each
        if noise is None:
            noise = torch.randn_like(mu) if self.training else None
        elif noise.shape != mu.shape:
            raise LaminaError(f"VAE noise must have shape {tuple(mu.shape)}, got {tuple(noise.shape)}")
        z = mu if noise is None else mu + torch.exp(0.5 * logvar) * noise.to(mu.dtype)
        return VAEOutput(self.decode(z), mu, logvar)

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """The encoder's output as it is: ``[mu, logvar]`` (B, 2L) (the VAE has no classifier head)."""
        return feats

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Uniform pixels in [0, 1] (n, C, H, W): what a Bernoulli decoder reconstructs."""
        return torch.rand(n, *self.input_shape, generator=generator)


def _up(c_in: int, c_out: int, *, act: ActLayer, norm: str, depth: int) -> nn.Sequential:
    """A 4×4 stride-2 transposed conv (size × 2), norm and activation, then ``depth - 1`` ConvNormActs."""
    block = nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=norm == "none"),
                          get_norm(norm, c_out, 2), get_act(act)())
    for _ in range(depth - 1):
        block.append(ConvNormAct(c_out, c_out, 3, act=act, norm=norm))
    return block


REGISTERED: tuple[type[Model], ...] = (ConvVAE,)
