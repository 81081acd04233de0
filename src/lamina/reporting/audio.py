"""The audio section of the report: the log-mel inputs of a few test clips, and what the model
listened to (attributions over time and frequency), from ``inspection/attributions.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lamina.reporting.figures import _figure, _label, _png
from lamina.reporting.html import (
    RunFolder,
    Section,
    class_names,
    figures_block,
    image,
    para,
    register_section,
)

ROWS = 6


def audio_attributions(attr: Mapping[str, Any], *, classes: Sequence[str] | None = None) -> bytes:
    """One row per clip: its log-mel (frequency up, time right), then the attribution (red: towards
    the predicted word, blue: against it), over the same axes or as a curve over time."""
    mels = [np.asarray(m, dtype=float) for m in attr["mel"]][:ROWS]
    maps = [np.asarray(a, dtype=float) for a in attr["attribution"]][:ROWS]
    seconds = attr["hop"] / attr["sample_rate"]
    fig = _figure(1.35 * len(mels) + 0.3)
    axes = fig.subplots(len(mels), 2, squeeze=False)
    for i, (mel, a) in enumerate(zip(mels, maps, strict=True)):
        extent = (0.0, mel.shape[1] * seconds, 0.0, float(mel.shape[0]))
        left, right = axes[i]
        left.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=extent)
        left.set_ylabel("mel bin", fontsize=9)
        true, pred = _label(attr["labels"][i], classes), _label(attr["predicted"][i], classes)
        left.set_title(f"{true} → {pred}", fontsize=10, loc="left")
        top = float(np.abs(a).max()) or 1.0
        if a.ndim == 2:
            right.imshow(a, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-top, vmax=top, extent=extent)
        else:
            t = (np.arange(len(a)) + 0.5) * seconds
            right.fill_between(t, a, 0, where=a >= 0, color="#c0392b", step="mid")
            right.fill_between(t, a, 0, where=a < 0, color="#2e6da4", step="mid")
            right.set_xlim(extent[0], extent[1])
            right.set_yticks([])
        for ax in (left, right):
            ax.tick_params(labelsize=8)
            if i < len(mels) - 1:
                ax.set_xticklabels([])
        if i == len(mels) - 1:
            left.set_xlabel("seconds", fontsize=9)
            right.set_xlabel("seconds", fontsize=9)
    return _png(fig)


@register_section
def section_audio(run: RunFolder) -> Section | None:
    attr = run.json("inspection/attributions.json")
    if not isinstance(attr, dict) or attr.get("kind") != "audio" or not attr.get("mel"):
        return None
    over = ("each (mel bin, frame) of the model's own log-mel input" if attr.get("axes") == "time-frequency"
            else "each frame of the waveform (a waveform model has no spectrogram: the log-mel is shown beside it)")
    fig = image(audio_attributions(attr, classes=class_names(run)), "log-mel inputs and attributions",
                "Left: the log-mel spectrogram of a test clip (true → predicted). Right: gradient × input of the "
                "predicted word's score; red pushes towards it, blue away.", wide=True)
    return Section("audio", "What the model listens to",
                   para(f"Attributions over {over}, for the first test clips.") + figures_block(fig))
