"""Audio in: WAV files, resampling, folders of class folders of clips, augmentation, the codec.

A clip is read as float32 in [-1, 1] (:func:`read_wav`), mixed to mono, resampled to
``data.sample_rate`` by a polyphase Kaiser-windowed-sinc filter (:func:`resample`), then padded
with zeros at the end or cut to ``data.clip_seconds``. A cut keeps the **loudest** window of the
clip's length (the highest sum of squares): a keyword recorded with a long silence around it
keeps the word, wherever it is.

A folder holds one sub-folder of ``.wav`` files per class, or ``train/`` and ``test/`` (or
``val/``) folders of the same class folders (as image folders do). A ``_background_noise_``
folder (the Speech Commands convention), at the top or in ``train/``, holds noise for mixing
into training clips (:class:`AudioAugment`), not a class.
"""

from __future__ import annotations

import contextlib
import math
import struct
import sys
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lamina.config import DataConfig
from lamina.data.base import Dataset, Preprocess, Split
from lamina.data.folders import class_folders, scan_splits
from lamina.errors import LaminaError

NOISE_FOLDER = "_background_noise_"
PROGRESS_MIN_FILES = 300  # a progress bar when decoding more files than this
KAISER_BETA = 5.0  # the resampling filter's window (scipy.signal.resample_poly's default)
HALF_TAPS = 10  # filter half-length, in periods of the lower of the two rates
SKIP = (".", "_")  # folders that are not classes: hidden ones, and _background_noise_ (Speech Commands)

# -- reading WAV files ------------------------------------------------------------------------


def _bad(path: Path | str, what: str) -> LaminaError:
    return LaminaError(f"{path}: {what}")


def _pcm_to_float(data: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM -> float32 (channels, frames) in [-1, 1]."""
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        a = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        a = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    elif width == 3:  # three bytes per sample: place them in the top of an int32, then shift back
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        a = ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float32) / 8388608.0
    elif width == 4:
        a = np.frombuffer(data, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"{8 * width}-bit PCM")
    return np.ascontiguousarray(a.reshape(-1, channels).T)


def _riff_chunks(raw: bytes) -> dict[bytes, bytes]:
    """The chunks of a RIFF/WAVE file's bytes (a truncated last chunk keeps what is there)."""
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(raw):
        cid, size = struct.unpack("<4sI", raw[pos : pos + 8])
        chunks.setdefault(cid, raw[pos + 8 : pos + 8 + size])
        pos += 8 + size + (size & 1)
    return chunks


def _read_extensible(path: Path) -> tuple[np.ndarray, int] | None:
    """PCM in a WAVE_FORMAT_EXTENSIBLE file (which Python 3.11's ``wave`` refuses; sox writes
    them for 24-bit and multichannel files); None if the file is not extensible PCM."""
    raw = path.read_bytes()
    chunks = _riff_chunks(raw)
    fmt, data = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or data is None or len(fmt) < 40:
        return None
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag != 0xFFFE or fmt[24:26] != b"\x01\x00" or bits % 8 or not 1 <= bits // 8 <= 4:  # PCM sub-format
        return None
    width = bits // 8
    usable = len(data) - len(data) % (width * channels)
    return _pcm_to_float(data[:usable], width, channels), rate


def _read_soundfile(path: Path, why: str) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise _bad(path, f"{why}; Python's wave module reads only PCM WAVs: pip install 'lamina[audio]' (soundfile) "
                         "(or convert it: sox IN -b 16 OUT.wav)") from None
    try:
        a, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (RuntimeError, OSError, ValueError) as e:
        raise _bad(path, f"not a readable audio file ({' '.join(str(e).split())})") from None
    return np.ascontiguousarray(a.T), int(rate)


def read_wav(path: str | Path) -> tuple[Tensor, int]:
    """Read a WAV file: float32 samples (channels, frames) in [-1, 1] and the sample rate.

    8-bit (unsigned), 16-, 24- and 32-bit PCM through the standard library's ``wave`` (and
    extensible-format PCM, which it refuses in Python 3.11); other encodings (IEEE float) through
    ``soundfile`` when it is installed. Empty, truncated and non-WAV files are one-line
    LaminaErrors naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise _bad(path, f"cannot read it ({e.strerror or e})") from None
    if size == 0:
        raise _bad(path, "the file is empty (0 bytes); remove it or record it again")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            data = w.readframes(frames)
    except wave.Error as e:
        msg = str(e)
        if msg.startswith("unknown format"):
            got = _read_extensible(path)
            if got is not None:
                return torch.from_numpy(got[0]), got[1]
            a, rate = _read_soundfile(path, f"a WAV of an encoding other than PCM ({msg})")
            return torch.from_numpy(a), rate
        with path.open("rb") as fh:
            head = fh.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":  # a WAV header, but the chunks are cut off
            raise _bad(path, f"the WAV file is truncated ({msg}); record or copy it again") from None
        raise _bad(path, f"not a WAV file ({msg}); give .wav files (RIFF/WAVE PCM)") from None
    except EOFError:
        raise _bad(path, "the WAV file is truncated (its header is incomplete); record or copy it again") from None
    if channels < 1 or rate < 1:
        raise _bad(path, f"the WAV header is corrupt ({channels} channels at {rate} Hz)")
    if len(data) < frames * width * channels:
        raise _bad(path, f"the WAV file is truncated: its header says {frames:,} frames, it holds "
                         f"{len(data) // max(width * channels, 1):,}; record or copy it again")
    if frames == 0:
        raise _bad(path, "the WAV file has no samples; remove it or record it again")
    try:
        a = _pcm_to_float(data, width, channels)
    except ValueError as e:
        raise _bad(path, f"{e} WAVs are not supported; convert it: sox IN -b 16 OUT.wav") from None
    return torch.from_numpy(a), rate


# -- resampling, mono, length -------------------------------------------------------------------


def _kaiser_lowpass(up: int, down: int) -> np.ndarray:
    """The polyphase filter at the up-sampled rate: a Kaiser-windowed sinc with its cut-off at
    the lower Nyquist frequency, DC gain ``up`` (scipy's ``resample_poly`` design)."""
    top = max(up, down)
    half = HALF_TAPS * top
    n = np.arange(-half, half + 1, dtype=np.float64)
    h = np.sinc(n / top) * np.kaiser(2 * half + 1, KAISER_BETA)
    return h * (up / h.sum())


@lru_cache(maxsize=32)
def _polyphase_weights(up: int, down: int) -> tuple[Tensor, int]:
    """The filter as conv1d weights (up, 1, K) applied with stride ``down``, and the left padding.

    Output ``n = q + up·t`` (phase ``q``) is ``sum_i h[q·down + half - up·i] · x[t·down + i]``;
    output channel ``q`` holds that phase's taps, so one strided conv1d gives every phase and the
    up-sampled signal is never built.
    """
    h = _kaiser_lowpass(up, down)
    half = (len(h) - 1) // 2
    lo = -(half // up)  # the smallest input offset any phase reads: ceil(-half / up)
    hi = ((up - 1) * down + half) // up  # the largest
    k = np.arange(up)[:, None] * down + half - up * np.arange(lo, hi + 1)[None, :]  # (up, K) tap of each weight
    w = np.where((k >= 0) & (k < len(h)), h[np.clip(k, 0, len(h) - 1)], 0.0)
    return torch.from_numpy(w).float().unsqueeze(1), -lo


def resample(x: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Resample ``x`` (..., L) from ``orig_rate`` to ``new_rate`` Hz: (..., ceil(L·new/orig)).

    Polyphase filtering: the rates' ratio is reduced by their gcd to up/down; a Kaiser-windowed
    (beta 5) sinc low-pass at the lower Nyquist frequency, 10 periods each side, is split into
    its ``up`` phases and applied as one strided conv1d, so the ``up``-times longer signal is
    never formed. Zero delay: output ``n`` is at input time ``n · orig / new`` (the same output
    as ``scipy.signal.resample_poly(x, up, down)``, to float32 rounding).
    """
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate < 1 or new_rate < 1:
        raise LaminaError(f"sample rates must be positive, got {orig_rate} -> {new_rate} Hz")
    if orig_rate == new_rate:
        return x
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    w, pad = _polyphase_weights(up, down)
    lead, n = x.shape[:-1], x.shape[-1]
    n_out = -(-n * up // down)
    steps = -(-n_out // up)  # conv outputs per phase
    right = max(0, (steps - 1) * down + w.shape[-1] - pad - n)
    flat = torch.nn.functional.pad(x.reshape(-1, 1, n).float(), (pad, right))  # (B, 1, pad + L + right)
    y = torch.nn.functional.conv1d(flat, w.to(x.device), stride=down)  # (B, up, steps)
    y = y.transpose(1, 2).reshape(-1, steps * up)[:, :n_out]  # phases interleaved: (B, n_out)
    return y.reshape(*lead, n_out)


def fit_length(x: Tensor, length: int) -> tuple[Tensor, str]:
    """Pad (zeros at the end) or cut ``x`` (..., L) to ``length``; a cut keeps the loudest window.

    Returns the clip and what was done: ``""``, ``"padded"`` or ``"cut"``.
    """
    n = x.shape[-1]
    if n == length:
        return x, ""
    if n < length:
        return torch.nn.functional.pad(x, (0, length - n)), "padded"
    energy = x.reshape(-1, n).square().sum(0).double()  # (L,) over the channels
    window = torch.nn.functional.pad(energy.cumsum(0), (1, 0))
    start = int((window[length:] - window[: n - length + 1]).argmax())
    return x[..., start : start + length], "cut"


def load_clip(path: str | Path, sample_rate: int, length: int, counts: dict[str, int] | None = None) -> Tensor:
    """One WAV file as a mono clip (1, length) at ``sample_rate``; ``counts`` tallies what was done."""
    x, rate = read_wav(path)
    return fit_clip(x, rate, sample_rate, length, counts)


def fit_clip(x: Tensor, rate: int, sample_rate: int, length: int, counts: dict[str, int] | None = None) -> Tensor:
    """A waveform (C, L) at ``rate`` -> mono (1, length) at ``sample_rate`` (mixed, resampled, fitted)."""
    done = []
    if x.shape[0] > 1:
        x, _ = x.mean(0, keepdim=True), done.append("mixed to mono")
    if rate != sample_rate:
        x, _ = resample(x, rate, sample_rate), done.append("resampled")
    x, fit = fit_length(x, length)
    if fit:
        done.append(fit)
    if counts is not None:
        for d in done:
            counts[d] = counts.get(d, 0) + 1
    return x.float()


# -- the folder ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(total: int, what: str) -> Iterator[Any]:
    """Yield ``advance()``; a transient rich bar on stderr for many files on a terminal."""
    if total <= PROGRESS_MIN_FILES or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)


def _wavs(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() == ".wav" and f.is_file()
                  and not any(p.startswith(".") for p in f.relative_to(folder).parts))


def _scan(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = class_folders(folder, skip=SKIP)
    if len(classes) < 2:
        have = f"only '{classes[0].name}'" if classes else "none"
        raise LaminaError(f"audio folder {folder} needs a sub-folder of .wav files per class, at least 2 "
                          f"(has {have}), e.g. {folder}/yes/1.wav and {folder}/no/2.wav")
    items: list[tuple[Path, int]] = []
    for label, d in enumerate(classes):
        files = _wavs(d)
        if not files:
            raise LaminaError(f"class folder {d} has no .wav files; add some or remove the folder")
        items += [(f, label) for f in files]
    return [d.name for d in classes], items


def _decode(items: list[tuple[Path, int]], sample_rate: int, length: int, counts: dict[str, int],
            what: str) -> Split:
    x = torch.empty(len(items), 1, length)
    with _progress(len(items), what) as advance:
        for i, (f, _) in enumerate(items):
            x[i] = load_clip(f, sample_rate, length, counts)
            advance()
    return Split(x, torch.tensor([label for _, label in items], dtype=torch.int64))


def _noise_bank(files: Sequence[Path], sample_rate: int, length: int) -> tuple[Tensor, Tensor] | None:
    """The noise clips back to back (1-D, each mono at ``sample_rate``, unit RMS, tiled to at least
    ``length``) and each one's (start, length) as an int64 (K, 2); None without usable clips."""
    clips = []
    for f in files:
        x, rate = read_wav(f)
        x = resample(x.mean(0), rate, sample_rate)
        rms = float(x.square().mean().sqrt())
        if rms < 1e-6:  # digital silence is no noise
            continue
        x = x / rms
        if len(x) < length:
            x = x.repeat(-(-length // len(x)))
        clips.append(x)
    if not clips:
        return None
    lengths = torch.tensor([len(c) for c in clips])
    starts = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)[:-1]])
    return torch.cat(clips), torch.stack([starts, lengths], dim=1)


def load_audio_folder(path: Path, cfg: DataConfig) -> Dataset:
    """A folder of class folders of ``.wav`` clips (or ``train/`` + ``test/``/``val/`` of them).

    Every clip becomes mono float32 (1, L) at ``data.sample_rate``, L = ``data.clip_seconds``
    · rate (see the module's docstring). ``_background_noise_`` WAVs feed :class:`AudioAugment`.
    """
    root = Path(path)
    if not root.is_dir():
        raise LaminaError(f"{root} is not a folder: give a folder with one sub-folder of .wav files per class")
    if cfg.sample_rate < 1000:
        raise LaminaError(f"data.sample_rate must be at least 1000 Hz, got {cfg.sample_rate}")
    length = round(cfg.clip_seconds * cfg.sample_rate)
    if length < 1:
        raise LaminaError(f"data.clip_seconds={cfg.clip_seconds} gives no samples at {cfg.sample_rate} Hz; raise it")
    dirs, scanned = scan_splits(root, _scan, skip=SKIP)
    classes = scanned["train"][0]
    counts: dict[str, int] = {}
    splits = {k: _decode(items, cfg.sample_rate, length, counts, f"decoding {k} clips")
              for k, (_, items) in scanned.items()}
    noise_files = sorted({f for d in {root, dirs["train"]} if (d / NOISE_FOLDER).is_dir()
                          for f in _wavs(d / NOISE_FOLDER)})
    bank = _noise_bank(noise_files, cfg.sample_rate, length) if noise_files else None
    n = sum(len(s) for s in splits.values())
    notes = [f"{n:,} clips of {cfg.clip_seconds:g} s at {cfg.sample_rate:,} Hz ({length:,} samples)"
             + (f"; split folders: {', '.join(dirs)}" if len(dirs) > 1 else "")]
    notes += [f"{v:,} clips {k}" for k, v in sorted(counts.items())]
    if bank is not None:
        notes.append(f"background noise: {len(noise_files)} file(s) in {NOISE_FOLDER} "
                     f"({', '.join(f.name for f in noise_files[:5])}{' ...' if len(noise_files) > 5 else ''})")
    elif cfg.noise > 0:
        notes.append(f"background noise: synthetic white/pink noise (no {NOISE_FOLDER} folder)")
    augment = AudioAugment(time_shift=cfg.time_shift, noise=cfg.noise, snr_min=cfg.noise_snr_min,
                           snr_max=cfg.noise_snr_max, bank=bank)
    return Dataset(
        name=root.resolve().name,
        classes=classes,
        train=splits["train"],
        test=splits.get("test"),
        val=splits.get("val"),
        modality="audio",
        preprocess=Preprocess(kind="array"),
        source=str(root),
        default_model="melcnn",
        model_kwargs={"sample_rate": cfg.sample_rate, "spec_masks": cfg.spec_masks},
        augment=augment,
        codec=AudioCodec(cfg.sample_rate, length),
        summary=f"{n:,} clips, {len(classes)} classes, {cfg.clip_seconds:g} s at {cfg.sample_rate:,} Hz",
        notes=notes,
    )


# -- augmentation -------------------------------------------------------------------------------


def synthetic_noise(b: int, length: int, g: torch.Generator, device: torch.device) -> Tensor:
    """(b, length) unit-variance noise, each row white or pink (1/f power) with probability 1/2."""
    white = torch.randn(b, length, generator=g, device=device)
    spec = torch.fft.rfft(white)
    f = torch.arange(spec.shape[-1], device=device).clamp_min(1).float()
    pink = torch.fft.irfft(spec / f.sqrt(), n=length)
    pink = pink / pink.std(dim=1, keepdim=True).clamp_min(1e-8)
    is_pink = torch.rand(b, 1, generator=g, device=device) < 0.5
    return torch.where(is_pink, pink, white)


@dataclass(frozen=True, eq=False)
class AudioAugment:
    """Training augmentation of raw waveform batches (B, 1, L), on their device.

    A random circular shift of up to ``time_shift`` of the clip each way, then with probability
    ``noise`` background noise at an SNR drawn uniformly in ``[snr_min, snr_max]`` dB: a random
    crop of a ``bank`` clip (from ``_background_noise_``), or white/pink noise without one.
    """

    time_shift: float = 0.0  # fraction of the clip
    noise: float = 0.0  # probability per clip
    snr_min: float = 5.0  # dB
    snr_max: float = 20.0
    bank: tuple[Tensor, Tensor] | None = None  # (noise samples, (K, 2) start and length of each clip)

    @property
    def active(self) -> bool:
        return self.time_shift > 0 or self.noise > 0

    def _noise(self, b: int, length: int, g: torch.Generator, device: torch.device) -> Tensor:
        if self.bank is None:
            return synthetic_noise(b, length, g, device)
        samples, spans = self.bank[0].to(device), self.bank[1].to(device)
        k = torch.randint(0, len(spans), (b,), generator=g, device=device)
        room = (spans[k, 1] - length + 1).float()  # (b,) crop positions in each chosen clip
        start = spans[k, 0] + (torch.rand(b, generator=g, device=device) * room).long()
        return samples[start[:, None] + torch.arange(length, device=device)]  # (b, length)

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:  # x: (B, 1, L)
        B, _, L = x.shape
        if self.time_shift > 0:
            most = int(self.time_shift * L)
            shift = torch.randint(-most, most + 1, (B, 1), generator=g, device=x.device)
            idx = (torch.arange(L, device=x.device) - shift) % L  # (B, L)
            x = x.gather(-1, idx[:, None, :].expand(-1, x.shape[1], -1))
        if self.noise > 0:
            noise = self._noise(B, L, g, x.device)[:, None, :]  # (B, 1, L)
            snr = self.snr_min + (self.snr_max - self.snr_min) * torch.rand(B, 1, 1, generator=g, device=x.device)
            p_signal = x.float().square().mean(dim=(1, 2), keepdim=True)
            p_noise = noise.square().mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)
            gain = torch.sqrt(p_signal / (p_noise * 10 ** (snr / 10)))
            mix = torch.rand(B, 1, 1, generator=g, device=x.device) < self.noise
            x = x + torch.where(mix, gain, torch.zeros_like(gain)) * noise
        return x


# -- the codec ----------------------------------------------------------------------------------


class AudioCodec:
    """WAV files or waveforms -> raw clips (N, 1, length) at ``sample_rate``, as training read them.

    Saved in ``model.json`` (``to_dict``); :func:`codec_from_dict` rebuilds it for ``predict``.
    """

    kind = "audio"

    def __init__(self, sample_rate: int, length: int) -> None:
        self.sample_rate, self.length = int(sample_rate), int(length)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sample_rate": self.sample_rate, "length": self.length}

    def read(self, inputs: Any) -> tuple[Tensor, list[str]]:
        """A WAV path, a list of them, or waveforms at the model's rate (an array/tensor (L,),
        (N, L) or (N, 1, L), or a list of 1-D ones) -> (N, 1, length) float32 and a name each."""
        if isinstance(inputs, str | Path):
            inputs = [inputs]
        if isinstance(inputs, list | tuple) and inputs and all(isinstance(i, str | Path) for i in inputs):
            clips = [load_clip(p, self.sample_rate, self.length) for p in inputs]
            return torch.stack(clips), [str(p) for p in inputs]
        if isinstance(inputs, list | tuple):
            waves = [self._as_tensor(i).reshape(-1) for i in inputs]
        else:
            t = self._as_tensor(inputs)
            if t.dim() > 3 or (t.dim() == 3 and t.shape[1] != 1):
                raise LaminaError(f"waveforms must have shape (L,), (N, L) or (N, 1, L), got {tuple(t.shape)}")
            waves = [t.reshape(-1)] if t.dim() == 1 else list(t.reshape(t.shape[0], -1))
        if not waves:
            raise LaminaError("no inputs: give WAV paths or waveforms")
        clips = [fit_length(w.float()[None], self.length)[0] for w in waves]
        return torch.stack(clips), [f"[{i}]" for i in range(len(clips))]

    @staticmethod
    def _as_tensor(a: Any) -> Tensor:
        try:
            t = torch.as_tensor(np.asarray(a, dtype=np.float32)) if not isinstance(a, Tensor) else a
        except (TypeError, ValueError) as e:
            raise LaminaError(f"cannot read these inputs as waveforms ({e}): give WAV paths or float arrays") from None
        if t.numel() == 0:
            raise LaminaError("an input waveform is empty")
        return t.float()


def codec_from_dict(d: dict[str, Any]) -> AudioCodec:
    """The :class:`AudioCodec` ``d`` (its ``to_dict()``) describes."""
    return AudioCodec(int(d["sample_rate"]), int(d["length"]))
