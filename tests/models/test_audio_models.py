"""Audio models: the mel filterbank and log-mel front end against librosa, SpecAugment, and the
model contract of melcnn and wavecnn on waveforms (forward, backward, arch round trip, norms, bf16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lamina.errors import LaminaError
from lamina.models import MODELS, NORMS, create_model
from lamina.models.audio import LogMel, MelCNN, SpecAugment, WaveCNN, mel_filterbank, stft_sizes

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "mel_reference.npz"
AUDIO = ["melcnn", "wavecnn"]


def build(name: str, **kw: object) -> torch.nn.Module:
    cls = MODELS.get(name)
    torch.manual_seed(0)
    return create_model(name, cls.example_shape, 5, **{**cls.example_kwargs, **kw})  # type: ignore[attr-defined]


def waves(model: torch.nn.Module, n: int = 4, seed: int = 1) -> torch.Tensor:
    return model.example_input(n, torch.Generator().manual_seed(seed))  # type: ignore[operator]


# -- the front end -------------------------------------------------------------------------------


def test_filterbank_matches_committed_librosa_reference() -> None:
    ref = np.load(REFERENCE)
    for i, (sr, n_fft, n_mels, fmin, fmax) in enumerate(ref["settings"]):
        got = mel_filterbank(int(sr), int(n_fft), int(n_mels), fmin, fmax).numpy()
        np.testing.assert_allclose(got, ref[f"fbank{i}"], rtol=1e-5, atol=1e-8)


def test_logmel_matches_committed_librosa_reference() -> None:
    ref = np.load(REFERENCE)
    got = LogMel(16000)(torch.from_numpy(ref["wave"])[None, None])[0, 0].numpy()
    assert got.shape == ref["logmel"].shape == (40, 51)
    np.testing.assert_allclose(got, ref["logmel"], atol=1e-3)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 512, 40, 20.0, None), (44100, 2048, 128, 0.0, 16000.0)])
def test_filterbank_matches_librosa(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> None:
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy(), ref, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("sr", [16000, 8000])
def test_logmel_matches_librosa_melspectrogram(sr: int) -> None:
    librosa = pytest.importorskip("librosa")
    y = (0.1 * np.random.default_rng(0).standard_normal(sr // 2)).astype(np.float32)
    n_fft, hop, win = stft_sizes(sr)
    assert (sr != 16000) or (n_fft, hop, win) == (512, 160, 400)
    ref = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, win_length=win, window="hann",
                                         center=True, pad_mode="constant", power=2.0, n_mels=40, fmin=20.0)
    got = LogMel(sr)(torch.from_numpy(y)[None, None])[0, 0].exp().numpy() - 1e-6
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_specaugment_masks_only_in_training() -> None:
    spec = torch.randn(16, 1, 40, 101) + 5
    aug = SpecAugment(2)
    assert torch.equal(aug.eval()(spec), spec)
    torch.manual_seed(0)
    out = aug.train()(spec)
    zeroed = out == 0
    assert zeroed.any() and not zeroed.all()
    assert torch.equal(out[~zeroed], spec[~zeroed])
    # masks are whole time frames or whole mel bins of each example
    for b in range(16):
        z = zeroed[b, 0]
        rows, cols = z.all(dim=1), z.all(dim=0)
        assert torch.equal(z, rows[:, None] | cols[None, :])
        assert int(rows.sum()) <= 2 * 8 and int(cols.sum()) <= 2 * 10
    assert torch.equal(SpecAugment(0).train()(spec), spec)


# -- the models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUDIO)
def test_forward_backward_and_features(name: str) -> None:
    model = build(name).train()
    x = waves(model)
    y = model(x)
    assert y.shape == (4, 5) and torch.isfinite(y).all()
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    feats = model.eval().forward_features(x)
    assert feats.shape[:2] == (4, model.num_features)


@pytest.mark.parametrize("name", AUDIO)
def test_arch_rebuilds_the_model(name: str) -> None:
    model = build(name, spec_masks=2) if name == "melcnn" else build(name)
    model.train()
    with torch.no_grad():
        model(waves(model, seed=2))
    model.eval()
    arch = json.loads(json.dumps(model.arch))
    assert arch["sample_rate"] == 8000 and arch["name"] == name
    fresh = create_model(**arch)
    assert fresh.arch == model.arch
    fresh.load_state_dict(model.state_dict())
    x = waves(model)
    assert torch.equal(fresh.eval()(x), model(x))


@pytest.mark.parametrize("name", AUDIO)
def test_stage_hooks_and_registry_attributes(name: str) -> None:
    model = build(name).eval()
    assert (model.input_kind, model.feature_layout, model.output_kind) == ("values", "channels", "logits")
    seen: list[str] = []
    handles = [m.register_forward_hook(lambda *_a, n=n: seen.append(n)) for n, m in model.stages()]
    model(waves(model))
    for h in handles:
        h.remove()
    assert seen == [n for n, _ in model.stages()]
    assert seen[0] == ("frontend" if name == "melcnn" else "stem")


@pytest.mark.parametrize("name", AUDIO)
@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_trains(name: str, norm: str) -> None:
    model = build(name, norm=norm, width=8).train()
    model(waves(model)).sum().backward()
    assert model.arch["norm"] == norm and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", AUDIO)
def test_bf16_autocast(name: str) -> None:
    model = build(name, width=8)
    x = waves(model)
    model.eval()
    y32 = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = model(x)
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("name", AUDIO)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (2, 4000), (1, 10)])
def test_other_shapes_are_errors(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(LaminaError, match=f"model '{name}' needs"):
        create_model(name, shape, 3, sample_rate=8000)


def test_hyperparameter_errors_come_before_shape_errors() -> None:
    for name in AUDIO:
        with pytest.raises(LaminaError, match="width >= 1"):
            create_model(name, (1, 8, 8), 3, width=-1)
        with pytest.raises(LaminaError, match="did you mean 'relu'"):
            create_model(name, (1, 8, 8), 3, act="relux")


def test_default_sizes_are_small() -> None:
    assert 20_000 < MelCNN((1, 16000), 10).num_params() < 300_000
    assert 20_000 < WaveCNN((1, 16000), 10).num_params() < 300_000
    with pytest.raises(LaminaError, match="takes no 'spec_masks'"):
        create_model("wavecnn", (1, 16000), 10, spec_masks=2)


def test_builds_on_the_meta_device() -> None:
    with torch.device("meta"):
        m = create_model("melcnn", (1, 16000), 10, sample_rate=16000, spec_masks=2)
    assert m.frontend.logmel.fbank.shape == (40, 257)
