"""Audio data: WAV reading, polyphase resampling, folders, augmentation, the codec, end to end."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from lamina.config import DataConfig
from lamina.data.audio import (
    AudioAugment,
    AudioCodec,
    codec_from_dict,
    fit_length,
    load_audio_folder,
    read_wav,
    resample,
)
from lamina.errors import LaminaError


def write_wav(path: Path, x: np.ndarray, rate: int, width: int = 2) -> Path:
    """Float samples (C, L) in [-1, 1] -> a PCM WAV of ``width`` bytes per sample (stdlib wave)."""
    x = np.atleast_2d(x)
    inter = x.T.reshape(-1)
    if width == 1:
        data = np.clip(np.round(inter * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 3:
        v = np.clip(np.round(inter * 8388608), -8388608, 8388607).astype("<i4")
        data = b"".join(int(s).to_bytes(3, "little", signed=True) for s in v)
    else:
        scale, dtype = {2: (32768, "<i2"), 4: (2147483648, "<i4")}[width]
        data = np.clip(np.round(inter * scale), -scale, scale - 1).astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()])


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("width,tol", [(1, 1 / 64), (2, 1e-4), (3, 1e-6), (4, 1e-6)])
def test_pcm_widths_read_back_in_unit_range(tmp_path: Path, width: int, tol: float) -> None:
    x = tone(440, 8000, 0.1, amp=0.9)
    got, rate = read_wav(write_wav(tmp_path / "a.wav", x, 8000, width))
    assert rate == 8000 and got.dtype == torch.float32 and got.shape == (1, len(x))
    assert float((got[0] - torch.from_numpy(x)).abs().max()) < tol


def test_stereo_keeps_channels(tmp_path: Path) -> None:
    x = np.stack([tone(300, 8000, 0.05), -tone(300, 8000, 0.05)])
    got, _ = read_wav(write_wav(tmp_path / "s.wav", x, 8000))
    assert got.shape == (2, 400)
    assert torch.allclose(got[0], -got[1], atol=1e-4)


def test_extensible_24_bit_pcm_is_read(tmp_path: Path) -> None:
    """WAVE_FORMAT_EXTENSIBLE (sox's 24-bit output), which Python 3.11's wave refuses."""
    v = np.array([0, 4194304, -4194304, 8388607], dtype=np.int64)
    data = b"".join(int(s).to_bytes(3, "little", signed=True) for s in v)
    guid = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # KSDATAFORMAT_SUBTYPE_PCM
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 16000, 48000, 3, 24, 22, 24, 4) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    got, rate = read_wav(path)
    assert rate == 16000
    torch.testing.assert_close(got[0], torch.tensor([0.0, 0.5, -0.5, 8388607 / 8388608]))


def test_float_wav_through_soundfile(tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    x = tone(500, 8000, 0.05)
    sf.write(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    got, rate = read_wav(tmp_path / "f.wav")
    assert rate == 8000 and torch.allclose(got[0], torch.from_numpy(x))


def test_float_wav_without_soundfile_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sf = pytest.importorskip("soundfile")
    sf.write(tmp_path / "f.wav", tone(500, 8000, 0.05), 8000, subtype="FLOAT")
    monkeypatch.setitem(__import__("sys").modules, "soundfile", None)
    with pytest.raises(LaminaError, match=r"f\.wav.*pip install .lamina\[audio\]. \(soundfile\)"):
        read_wav(tmp_path / "f.wav")


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "truncated"),
    (b"hello, this is not audio at all" * 4, "not a WAV file"),
])  # fmt: skip
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(LaminaError, match=match) as e:
        read_wav(path)
    assert "bad.wav" in str(e.value) and "\n" not in str(e.value)


def test_truncated_data_is_an_error(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "t.wav", tone(440, 8000, 0.5), 8000)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(LaminaError, match=r"t\.wav: the WAV file is truncated"):
        read_wav(path)


# -- resampling --------------------------------------------------------------------------------


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (48000, 16000), (16000, 8000)])
def test_resampled_tone_keeps_frequency_and_amplitude(orig: int, new: int) -> None:
    x = tone(1000, orig, 0.5, amp=0.5)
    y = resample(torch.from_numpy(x), orig, new).numpy()
    assert len(y) == math.ceil(len(x) * new / orig)
    assert abs(peak_hz(y, new) - 1000) <= new / len(y)
    mid = y[len(y) // 10 : -len(y) // 10]  # away from the edges' ramps
    assert abs(np.sqrt(2 * np.mean(mid**2)) - 0.5) < 0.005


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (22050, 16000), (16000, 11025)])
def test_resample_matches_scipy_resample_poly(orig: int, new: int) -> None:
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(0).standard_normal(orig // 10).astype(np.float32)
    g = math.gcd(orig, new)
    ref = signal.resample_poly(x.astype(np.float64), new // g, orig // g)
    got = resample(torch.from_numpy(x), orig, new).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_resample_is_batched_over_leading_dims() -> None:
    x = torch.randn(3, 2, 441)
    y = resample(x, 44100, 16000)
    assert y.shape == (3, 2, 160)
    torch.testing.assert_close(y[1, 0], resample(x[1, 0], 44100, 16000))


def test_fit_length_pads_at_the_end_and_cuts_the_loudest_window() -> None:
    x = torch.zeros(1, 100)
    x[0, 60:70] = 1.0
    cut, what = fit_length(x, 20)
    assert what == "cut" and cut.shape == (1, 20) and float(cut.sum()) == 10.0
    padded, what = fit_length(x[:, :30], 50)
    assert what == "padded" and padded.shape == (1, 50) and torch.equal(padded[:, :30], x[:, :30])


# -- the folder --------------------------------------------------------------------------------

RATE = 8000
CFG = DataConfig(sample_rate=RATE, clip_seconds=0.25)
PITCHES = {"low": 300.0, "mid": 700.0, "high": 1500.0}


def tone_folder(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """Class folders of 0.25-s tones of a pitch per class, jittered, with noise; odd rates and
    lengths, one stereo file."""
    rng = np.random.default_rng(seed)
    for c, f in PITCHES.items():
        for i in range(per_class):
            rate = (RATE, 16000, 11025)[i % 3]
            x = tone(f * rng.uniform(0.95, 1.05), rate, rng.uniform(0.15, 0.35), amp=rng.uniform(0.2, 0.8))
            x = x + 0.02 * rng.standard_normal(len(x)).astype(np.float32)
            write_wav(root / c / f"{i}.wav", np.stack([x, x]) if i == 0 else x, rate)
    return root


def test_folder_loads_classes_shapes_and_notes(tmp_path: Path) -> None:
    ds = load_audio_folder(tone_folder(tmp_path / "tones"), CFG)
    assert ds.classes == ["high", "low", "mid"] and ds.modality == "audio" and ds.task == "classify"
    assert ds.train.x.shape == (36, 1, 2000) and ds.train.x.dtype == torch.float32
    assert ds.train.y.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    assert ds.test is None and ds.default_model == "melcnn"
    assert ds.model_kwargs == {"sample_rate": RATE, "spec_masks": CFG.spec_masks}
    notes = " ".join(ds.notes)
    assert "24 clips resampled" in notes and "3 clips mixed to mono" in notes and "synthetic" in notes
    assert "36 clips" in ds.summary and "3 classes" in ds.summary
    assert isinstance(ds.codec, AudioCodec) and ds.codec.length == 2000


def test_split_folders_and_background_noise(tmp_path: Path) -> None:
    root = tmp_path / "kws"
    tone_folder(root / "train", 6)
    tone_folder(root / "test", 3, seed=1)
    write_wav(root / "_background_noise_" / "hum.wav", 0.3 * np.random.default_rng(0).standard_normal(4000), RATE)
    ds = load_audio_folder(root, CFG)
    assert ds.classes == ["high", "low", "mid"]  # the noise folder is not a class
    assert len(ds.train) == 18 and len(ds.test) == 9
    assert ds.augment.bank is not None and any("hum.wav" in n for n in ds.notes)


def test_folder_errors(tmp_path: Path) -> None:
    write_wav(tmp_path / "one" / "yes" / "a.wav", tone(300, RATE, 0.1), RATE)
    with pytest.raises(LaminaError, match="at least 2"):
        load_audio_folder(tmp_path / "one", CFG)
    (tmp_path / "one" / "no").mkdir()
    with pytest.raises(LaminaError, match=r"has no \.wav files"):
        load_audio_folder(tmp_path / "one", CFG)
    (tmp_path / "one" / "no" / "b.wav").write_bytes(b"")
    with pytest.raises(LaminaError, match=r"b\.wav: the file is empty"):
        load_audio_folder(tmp_path / "one", CFG)


# -- augmentation ------------------------------------------------------------------------------


def test_augment_shapes_determinism_and_off() -> None:
    x = 0.3 * torch.randn(8, 1, 1000)
    aug = AudioAugment(time_shift=0.1, noise=0.5)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(4)))
    assert not AudioAugment().active and AudioAugment(noise=0.1).active


def test_time_shift_is_circular_and_bounded() -> None:
    x = torch.arange(100.0).repeat(16, 1, 1)
    y = AudioAugment(time_shift=0.1)(x, torch.Generator().manual_seed(0))
    for row in y[:, 0]:
        shift = int((row == 0).nonzero()[0])  # where sample 0 went
        s = shift if shift <= 50 else shift - 100
        assert abs(s) <= 10 and torch.equal(row, torch.roll(x[0, 0], s))


@pytest.mark.parametrize("bank", [False, True])
def test_noise_is_mixed_at_the_drawn_snr(bank: bool) -> None:
    x = torch.from_numpy(tone(440, RATE, 0.25))[None, None].repeat(64, 1, 1)
    noise = None
    if bank:
        n = torch.randn(3 * 4000)
        noise = (n, torch.tensor([[0, 4000], [4000, 4000], [8000, 4000]]))
    aug = AudioAugment(noise=1.0, snr_min=5.0, snr_max=5.0, bank=noise)
    y = aug(x, torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(x.square().mean(dim=(1, 2)) / (y - x).square().mean(dim=(1, 2)))
    torch.testing.assert_close(snr, torch.full((64,), 5.0), atol=1e-3, rtol=0)
    half = AudioAugment(noise=0.5, snr_min=10, snr_max=20)(x, torch.Generator().manual_seed(1))
    noisy = ((half - x).abs().amax(dim=(1, 2)) > 0).float().mean()
    assert 0.25 < float(noisy) < 0.75
    snr = 10 * torch.log10(x.square().mean(dim=(1, 2)) / (half - x).square().mean(dim=(1, 2)).clamp_min(1e-20))
    mixed = snr[snr < 100]
    assert float(mixed.min()) >= 10 - 1e-3 and float(mixed.max()) <= 20 + 1e-3


# -- the codec ---------------------------------------------------------------------------------


def test_codec_round_trip_reads_a_wav_the_same(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", tone(440, 16000, 0.4), 16000)
    codec = AudioCodec(RATE, 2000)
    again = codec_from_dict(codec.to_dict())
    a, names = codec.read(str(path))
    b, _ = again.read([path])
    assert a.shape == (1, 1, 2000) and names == [str(path)] and torch.equal(a, b)
    arrays, names = codec.read(np.zeros((3, 1500), dtype=np.float32))
    assert arrays.shape == (3, 1, 2000) and names == ["[0]", "[1]", "[2]"]
    one, _ = codec.read(torch.ones(2500))
    assert one.shape == (1, 1, 2000)
    with pytest.raises(LaminaError, match="waveforms must have shape"):
        codec.read(np.zeros((2, 2, 10)))


# -- end to end --------------------------------------------------------------------------------


def test_train_on_tone_folder_then_predict_wavs(tmp_path: Path) -> None:
    import lamina

    root = tone_folder(tmp_path / "tones", per_class=30)
    run = lamina.train(str(root), out=str(tmp_path / "run"), quiet=True, overrides=[
        "data.sample_rate=8000", "data.clip_seconds=0.25", "train.epochs=6", "model.width=8",
        "data.batch_size=16", "train.lr=0.05"])
    assert run.summary["test_accuracy"] >= 0.9
    model = lamina.load(tmp_path / "run")
    files = [str(root / c / "3.wav") for c in ("high", "low", "mid")]
    assert model.predict(files) == ["high", "low", "mid"]
