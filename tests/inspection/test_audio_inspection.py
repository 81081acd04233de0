"""Audio attributions: over (mel bin, frame) at a log-mel model's own spectrogram, over frames for a
waveform model; and the report section drawn from them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lamina.inspection.audio import audio_attributions, find_logmel
from lamina.models import create_model
from lamina.reporting.audio import section_audio
from lamina.reporting.html import RunFolder

RATE, LENGTH = 8000, 2000


def _clips(n: int = 3) -> torch.Tensor:
    t = torch.arange(LENGTH) / RATE
    return torch.stack([torch.sin(2 * torch.pi * f * t)[None] for f in (300.0, 700.0, 1500.0)[:n]])


def test_a_log_mel_model_gets_attributions_over_time_and_frequency() -> None:
    torch.manual_seed(0)
    model = create_model("melcnn", (1, LENGTH), 3, sample_rate=RATE, width=8)
    x, target = _clips(), torch.tensor([0, 1, 2])
    found = audio_attributions(model, x, target, sample_rate=RATE)
    logmel = find_logmel(model)
    assert logmel is not None and found["axes"] == "time-frequency"
    frames = logmel.frames(LENGTH)
    assert found["mel"].shape == found["attribution"].shape == (3, logmel.n_mels, frames)
    with torch.no_grad():  # the mel shown is the model's own input spectrogram
        torch.testing.assert_close(found["mel"], logmel(x).squeeze(1))
    # gradient x input sums (to first order) to the logit's change from the per-clip mean spectrogram
    assert torch.isfinite(found["attribution"]).all() and found["attribution"].abs().sum() > 0
    assert model.training  # the model's mode is restored


def test_a_waveform_model_gets_attributions_over_time_only() -> None:
    torch.manual_seed(0)
    model = create_model("wavecnn", (1, LENGTH), 3, sample_rate=RATE, width=8)
    x = _clips()
    found = audio_attributions(model, x, torch.tensor([0, 1, 2]), sample_rate=RATE)
    assert found["axes"] == "time" and found["attribution"].shape == (3, found["mel"].shape[-1])
    wave = x.clone().requires_grad_(True)  # the frames' sums add up to the whole gradient x input
    model.eval()
    model(wave).gather(1, torch.tensor([[0], [1], [2]])).sum().backward()
    torch.testing.assert_close(found["attribution"].sum(1), (wave.grad * x).sum((1, 2)), rtol=1e-4, atol=1e-5)


def test_the_report_draws_the_audio_section(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("melcnn", (1, LENGTH), 3, sample_rate=RATE, width=8)
    found = audio_attributions(model, _clips(), torch.tensor([0, 1, 2]), sample_rate=RATE)
    (tmp_path / "inspection").mkdir()
    (tmp_path / "inspection" / "attributions.json").write_text(json.dumps({
        "kind": "audio", "axes": found["axes"], "labels": [0, 1, 2], "predicted": [0, 2, 2], "hop": found["hop"],
        "sample_rate": found["sample_rate"], "mel": found["mel"].tolist(), "attribution": found["attribution"].tolist()}))
    (tmp_path / "summary.json").write_text(json.dumps({"task": "classify"}))
    (tmp_path / "config.yaml").write_text("data: {name: clips}\n")
    section = section_audio(RunFolder(tmp_path))
    assert section is not None and "data:image/png;base64," in section.body and "log-mel" in section.body
