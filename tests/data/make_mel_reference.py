"""Write tests/data/mel_reference.npz: librosa's mel filterbanks and a log-mel spectrogram, so the
tests of lamina's own (lamina.models.audio) run where librosa is not installed.

    python tests/data/make_mel_reference.py     # needs librosa (not a lamina dependency)
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np

# (sample_rate, n_fft, n_mels, fmin, fmax): lamina's defaults at 16 and 8 kHz, and odd settings
SETTINGS = [(16000, 512, 40, 20.0, 8000.0), (8000, 256, 40, 20.0, 4000.0), (22050, 1024, 64, 0.0, 11025.0),
            (16000, 400, 80, 300.0, 7000.0)]


def main() -> None:
    out: dict[str, np.ndarray] = {"settings": np.array(SETTINGS)}
    for i, (sr, n_fft, n_mels, fmin, fmax) in enumerate(SETTINGS):
        out[f"fbank{i}"] = librosa.filters.mel(sr=int(sr), n_fft=int(n_fft), n_mels=int(n_mels), fmin=fmin, fmax=fmax)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(8000) + 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=512, hop_length=160, win_length=400, window="hann",
                                         center=True, pad_mode="constant", power=2.0, n_mels=40, fmin=20.0)
    out["wave"], out["logmel"] = wave, np.log(mel + 1e-6).astype(np.float32)
    np.savez_compressed(Path(__file__).with_name("mel_reference.npz"), **out)


if __name__ == "__main__":
    main()
