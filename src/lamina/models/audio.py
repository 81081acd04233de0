"""Keyword-spotting models of raw waveforms (1, L): a log-mel CNN and an M5-style 1-D CNN.

The log-mel front end is part of the model (``frontend`` stage), so whatever feeds the model a
waveform (training, ``predict``, attacks, a GPU) gets the spectrogram computed on the batch's
device, the same way every time:

    wave (B, 1, L) ─ STFT ─ |·|² ─ @ mel filterbank ─ log ─ per-bin norm ─ SpecAugment ─▶ (B, 1, M, T)

The STFT's sizes scale with the sample rate: a 25 ms Hann window every 10 ms, the FFT the next
power of two (512, 160 and 400 samples at 16 kHz). The filterbank is Slaney's (librosa's
``filters.mel`` defaults ``htk=False, norm="slaney"``).

``sample_rate`` and ``spec_masks`` come from the data (``Dataset.model_kwargs``). ``spec_masks``
defaults to 0 here (no SpecAugment) because create_model reads a 0 as "the default": the audio
loader passes ``data.spec_masks`` (2 unless set), so ``data.spec_masks=0`` turns it off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.models.base import Model, check_hparams
from lamina.models.cnn import init_conv_weights
from lamina.models.layers import ActLayer, ConvNormAct, act_name, get_act, get_norm, norm_name

N_MELS = 40  # mel bins of the log-mel front end
F_MIN = 20.0  # Hz: the lowest mel band's lower edge (below it: DC and hum)
LOG_EPS = 1e-6  # log(mel + eps): floor of the log-mel power


# -- the mel scale (Slaney, as librosa's htk=False) -------------------------------------------

_F_SP = 200.0 / 3  # Hz per mel below 1 kHz (linear part)
_MIN_LOG_HZ, _MIN_LOG_MEL = 1000.0, 15.0  # where the log part starts
_LOGSTEP = math.log(6.4) / 27.0  # log-part step per mel


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, f / _F_SP)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, m * _F_SP)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), float32: Slaney's scale and area norm.

    The same matrix as ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels,
    fmin=fmin, fmax=fmax)`` (``htk=False, norm="slaney"``): each triangle spans two neighbouring
    band edges and is scaled by ``2 / (upper - lower edge in Hz)``, so every filter has the same area.
    Computed in float64 with numpy (so it also builds under ``torch.device("meta")``).

    Args:
        sample_rate: Hz.
        n_fft: FFT size (its ``n_fft // 2 + 1`` bins run from 0 to ``sample_rate / 2``).
        n_mels: number of filters.
        fmin: lowest edge in Hz.
        fmax: highest edge in Hz; None: ``sample_rate / 2``.

    >>> tuple(mel_filterbank(16000, 512, 40).shape)
    (40, 257)
    """
    fmax = sample_rate / 2 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sample_rate / 2 + 1e-9:
        raise LaminaError(f"mel filterbank needs 0 <= fmin < fmax <= sample_rate/2, got {fmin}, {fmax}, {sample_rate}")
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)  # (F,)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,) band edges, Hz
    fdiff = np.diff(edges)  # (n_mels + 1,)
    ramps = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / fdiff[:-1, None]  # rising slope of each triangle
    upper = ramps[2:] / fdiff[1:, None]  # falling slope
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, F)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: equal area
    return torch.from_numpy(weights.astype(np.float32))


def stft_sizes(sample_rate: int) -> tuple[int, int, int]:
    """(n_fft, hop, win) for a sample rate: a 25 ms window every 10 ms, the FFT a power of two."""
    hop = max(1, round(0.010 * sample_rate))
    win = max(2, round(0.025 * sample_rate))
    return 1 << (win - 1).bit_length(), hop, win


class LogMel(nn.Module):
    """Waveforms (B, 1, L) -> log-mel spectrograms (B, 1, n_mels, 1 + L // hop), in fp32.

    ``torch.stft`` (Hann window, centred frames, zero padding: librosa's ``melspectrogram``
    defaults), power spectrum, @ :func:`mel_filterbank`, ``log(mel + 1e-6)``. Autocast is
    turned off inside: a bf16 power spectrum would lose the quiet bands.
    """

    def __init__(self, sample_rate: int, *, n_mels: int = N_MELS, fmin: float = F_MIN) -> None:
        super().__init__()
        self.sample_rate, self.n_mels = int(sample_rate), int(n_mels)
        self.n_fft, self.hop, self.win = stft_sizes(self.sample_rate)
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer("fbank", mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, fmin),
                             persistent=False)  # (M, F)

    def frames(self, length: int) -> int:
        return 1 + length // self.hop

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 1, L)
        with torch.autocast(device_type=x.device.type, enabled=False):
            wave = x.float().flatten(0, 1)  # (B, L)
            spec = torch.stft(wave, self.n_fft, self.hop, self.win, self.window, center=True,
                              pad_mode="constant", return_complex=True)  # (B, F, T)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.fbank, power)  # (B, M, T)
            return torch.log(mel + LOG_EPS).unsqueeze(1)  # (B, 1, M, T)


class SpecAugment(nn.Module):
    """Training only: per example ``masks`` time masks (up to 10 % of the frames each) and
    ``masks`` frequency masks (up to ``max_bins`` mel bins each), set to 0 (the normalised mean).

    Batched: the masks of all examples are drawn at once from the global RNG, like dropout.
    """

    def __init__(self, masks: int, *, max_time: float = 0.1, max_bins: int = 8) -> None:
        super().__init__()
        self.masks, self.max_time, self.max_bins = int(masks), float(max_time), int(max_bins)

    def _mask(self, b: int, size: int, max_width: int, device: torch.device) -> Tensor:
        """(b, size) bool: True inside any of ``masks`` random intervals of width 0..max_width."""
        width = (torch.rand(b, self.masks, 1, device=device) * (max_width + 1)).floor()  # (b, m, 1)
        start = (torch.rand(b, self.masks, 1, device=device) * (size - width + 1)).floor()
        pos = torch.arange(size, device=device)  # (size,)
        return ((pos >= start) & (pos < start + width)).any(dim=1)  # (b, size)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 1, M, T)
        if not self.training or self.masks <= 0:
            return x
        B, _, M, T = x.shape
        t = self._mask(B, T, max(1, int(self.max_time * T)), x.device)  # (B, T)
        f = self._mask(B, M, min(self.max_bins, max(1, M // 5)), x.device)  # (B, M)
        drop = t[:, None, None, :] | f[:, None, :, None]  # (B, 1, M, T)
        return x.masked_fill(drop, 0.0)

    def extra_repr(self) -> str:
        return f"masks={self.masks}, max_time={self.max_time}, max_bins={self.max_bins}"


class MelNorm(nn.Module):
    """Per-mel-bin normalisation of (B, 1, M, T): BatchNorm over the bins (``batch``), one
    GroupNorm over the whole spectrogram of each example (``layer``/``group``), or nothing."""

    def __init__(self, norm: str, n_mels: int) -> None:
        super().__init__()
        self.per_bin = norm == "batch"
        self.norm = nn.BatchNorm1d(n_mels) if self.per_bin else get_norm(norm, 1, 2)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 1, M, T)
        if self.per_bin:
            return self.norm(x.squeeze(1)).unsqueeze(1)  # BatchNorm1d over (B, M, T)
        return self.norm(x)


class MelFrontend(nn.Sequential):
    """LogMel -> MelNorm -> SpecAugment: (B, 1, L) -> (B, 1, M, T)."""

    def __init__(self, sample_rate: int, norm: str, spec_masks: int) -> None:
        super().__init__()
        self.logmel = LogMel(sample_rate)
        self.norm = MelNorm(norm, self.logmel.n_mels)
        self.specaug = SpecAugment(spec_masks)


def _waveform_length(model: str, input_shape: Sequence[int], min_length: int) -> int:
    """The L of a mono waveform shape (1, L); anything else raises LaminaError."""
    shape = tuple(input_shape)
    if len(shape) != 2 or shape[0] != 1:
        raise LaminaError(f"model '{model}' needs mono waveforms of shape (1, L), got {shape}; "
                          "load a folder of .wav files (data.modality=audio)")
    if shape[1] < min_length:
        raise LaminaError(f"model '{model}' needs clips of at least {min_length} samples, got {shape[1]}; "
                          "raise data.clip_seconds")
    return int(shape[1])


def _check(model: str, width: int, depth: int, dropout: float, act: ActLayer, norm: str, sample_rate: int) -> str:
    """Hyperparameter checks first (before the input shape's): LaminaErrors naming the bad value."""
    check_hparams(model, width=width, depth=depth, dropout=dropout)
    get_act(act)
    if int(sample_rate) < 1000:
        raise LaminaError(f"model '{model}' needs sample_rate >= 1000 Hz, got {sample_rate}")
    return norm_name(norm)


class MelCNN(Model):
    """Log-mel CNN: ``frontend`` (LogMel, per-bin norm, SpecAugment), 3 stages of ``depth``
    3×3 ConvNormActs (width, 2·width, 4·width; each stage's last conv halves the map by max
    pooling while it is at least 2 wide), ``fold``, then average pooling over time, dropout, linear.

    The last stage folds the remaining mel bins into channels (:class:`FoldFrequency`), so the
    head pools over time only. At 16 kHz a 1-s clip is a 40 × 101 log-mel image, (64·5, 12)
    features at the end; the default (width 16, depth 1: 98 % on unheard speakers of the synthetic
    keyword set, benchmarks/keywords.py) has about 27 k parameters.

    Args:
        input_shape: (1, L) waveforms.
        num_classes: number of logits.
        width: channels of the first conv stage.
        depth: convs per stage.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none`` (the front end's too: see MelNorm).
        dropout: before the classifier.
        sample_rate: Hz of the waveforms (sets the STFT sizes and the filterbank).
        spec_masks: SpecAugment time and frequency masks per clip in training; 0: off.
    """

    name = "melcnn"
    hparams: ClassVar[tuple[str, ...]] = ("width", "depth", "act", "norm", "dropout", "sample_rate", "spec_masks")
    example_shape: ClassVar[tuple[int, ...]] = (1, 4000)
    example_kwargs: ClassVar[dict[str, Any]] = {"sample_rate": 8000}

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, width: int = 16, depth: int = 1,
                 act: ActLayer = "relu", norm: str = "batch", dropout: float = 0.0, sample_rate: int = 16000,
                 spec_masks: int = 0) -> None:
        norm = _check(self.name, width, depth, dropout, act, norm, sample_rate)
        if int(spec_masks) < 0:
            raise LaminaError(f"model '{self.name}' needs spec_masks >= 0, got {spec_masks}")
        _waveform_length(self.name, input_shape, stft_sizes(int(sample_rate))[2])
        super().__init__(input_shape, num_classes)
        front = MelFrontend(int(sample_rate), norm, int(spec_masks))
        self.add_stage("frontend", front)  # (B, 1, M, T)
        size = min(front.logmel.n_mels, front.logmel.frames(self.input_shape[1]))
        bins, c_in = front.logmel.n_mels, 1
        for i in range(3):
            c_out = width * 2**i
            stage = nn.Sequential()
            for j in range(depth):
                pool = 2 if j == depth - 1 and size >= 2 else 1
                stage.append(ConvNormAct(c_in if j == 0 else c_out, c_out, 3, dims=2, act=act, norm=norm, pool=pool))
            bins //= 2 if size >= 2 else 1  # a 2x2 max pool halves both axes (floor)
            size //= 2 if size >= 2 else 1
            self.add_stage(f"stage{i + 1}", stage)  # (B, c_out, M / 2**(i+1), T / 2**(i+1))
            c_in = c_out
        self.add_stage("fold", FoldFrequency())  # (B, c_out · bins, T'): the head pools over time only
        self.set_head(c_in * bins, dropout)
        init_conv_weights(self)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout),
                         sample_rate=int(sample_rate), spec_masks=int(spec_masks))

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random waveforms (n, 1, L) at about the loudness of speech (std 0.1)."""
        return 0.1 * torch.randn(n, *self.input_shape, generator=generator)


class FoldFrequency(nn.Module):
    """(B, C, F, T) -> (B, C·F, T): the frequency bins become channels, so the head's global
    pooling (over time only) keeps *where* in the spectrum a pattern is, not just that it is there:
    pitch and formant positions tell words apart, and pooling over frequency would lose them."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1, 2)


class WaveCNN(Model):
    """M5-style 1-D CNN on the raw waveform (Dai et al. 2017): a wide strided conv (5 ms kernel,
    1/5 of it as the stride), then 3 stages of ``depth`` 3-tap ConvNormActs (width, 2·width,
    4·width), each followed by a 4× max pool while the signal is long enough; global average
    pooling, dropout, linear. About 37 k parameters by default.

    Args:
        input_shape: (1, L) waveforms.
        num_classes: number of logits.
        width: channels of the first conv and first stage.
        depth: convs per stage.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none``.
        dropout: before the classifier.
        sample_rate: Hz (sets the first conv's kernel and stride).
    """

    name = "wavecnn"
    hparams: ClassVar[tuple[str, ...]] = ("width", "depth", "act", "norm", "dropout", "sample_rate")
    example_shape: ClassVar[tuple[int, ...]] = (1, 4000)
    example_kwargs: ClassVar[dict[str, Any]] = {"sample_rate": 8000}

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, width: int = 32, depth: int = 1,
                 act: ActLayer = "relu", norm: str = "batch", dropout: float = 0.0,
                 sample_rate: int = 16000) -> None:
        norm = _check(self.name, width, depth, dropout, act, norm, sample_rate)
        kernel = max(4, round(0.005 * int(sample_rate)))  # 80 taps at 16 kHz
        stride = max(1, kernel // 5)
        length = _waveform_length(self.name, input_shape, kernel)
        super().__init__(input_shape, num_classes)
        stem = ConvNormAct(1, width, kernel, stride, dims=1, act=act, norm=norm)
        stem.conv.padding = (kernel // 2 - stride // 2,)  # roughly centred frames
        self.add_stage("stem", stem)  # (B, width, ~L / stride)
        size = (length + 2 * stem.conv.padding[0] - kernel) // stride + 1
        c_in = width
        for i in range(3):
            c_out = width * 2**i
            stage = nn.Sequential()
            for j in range(depth):
                stage.append(ConvNormAct(c_in if j == 0 else c_out, c_out, 3, dims=1, act=act, norm=norm))
            if size >= 8:
                stage.append(nn.MaxPool1d(4))
                size //= 4
            self.add_stage(f"stage{i + 1}", stage)  # (B, c_out, ~L / (stride · 4**(i+1)))
            c_in = c_out
        self.set_head(c_in, dropout)
        init_conv_weights(self)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout),
                         sample_rate=int(sample_rate))

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random waveforms (n, 1, L) at about the loudness of speech (std 0.1)."""
        return 0.1 * torch.randn(n, *self.input_shape, generator=generator)


REGISTERED: tuple[type[Model], ...] = (MelCNN, WaveCNN)
