"""What an audio classifier listens to: its log-mel inputs and attributions over time and frequency.

A log-mel model (``melcnn``) computes its spectrogram inside the network (a
:class:`~lamina.models.audio.LogMel` module), so the attribution is taken **at that module's
output**: gradient × input of the predicted logit with respect to the log-mel bins, one value per
(mel bin, frame). A waveform model (``wavecnn``) has no spectrogram: its gradient × input on the
waveform is summed over each frame's samples (time only), and the log-mel is computed beside it
for display with the same settings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lamina.inspection.features import eval_mode
from lamina.models.audio import LogMel


def find_logmel(model: nn.Module) -> LogMel | None:
    """The model's own log-mel front end, if it has one."""
    return next((m for m in model.modules() if isinstance(m, LogMel)), None)


def audio_attributions(model: nn.Module, x: Tensor, target: Tensor, *, sample_rate: int) -> dict[str, Any]:
    """Log-mel inputs ``(n, M, T)`` and gradient × input attributions of logit ``target`` for the
    normalised waveforms ``x`` (n, 1, L): ``(n, M, T)`` over time and frequency for a log-mel
    model, ``(n, T)`` over time for a waveform model (``axes`` says which)."""
    logmel = find_logmel(model)
    with eval_mode(model):
        if logmel is not None:
            held: dict[str, Tensor] = {}

            def keep(_m: nn.Module, _i: Any, out: Tensor) -> Tensor:
                held["mel"] = out.detach().requires_grad_(True)  # a leaf: the gradient stops here
                return held["mel"]

            handle = logmel.register_forward_hook(keep)
            try:
                logits = model(x)
            finally:
                handle.remove()
            logits.gather(1, target.view(-1, 1)).sum().backward()
            mel = held["mel"]
            assert mel.grad is not None
            grad_x_input = (mel.grad * (mel - mel.mean(dim=(2, 3), keepdim=True))).squeeze(1)  # (n, M, T)
            return {"axes": "time-frequency", "mel": mel.detach().squeeze(1), "attribution": grad_x_input.detach(),
                    "hop": logmel.hop, "sample_rate": logmel.sample_rate}
        wave = x.detach().clone().requires_grad_(True)
        model(wave).gather(1, target.view(-1, 1)).sum().backward()
        assert wave.grad is not None
        display = LogMel(sample_rate).to(x.device)
        per_sample = (wave.grad * wave).detach().squeeze(1)  # (n, L)
        frames = display.frames(x.shape[-1])
        pad = frames * display.hop - per_sample.shape[-1]
        per_frame = torch.nn.functional.pad(per_sample, (display.hop // 2, max(pad - display.hop // 2, 0)))
        per_frame = per_frame[:, : frames * display.hop].reshape(len(x), frames, display.hop).sum(-1)  # (n, T)
        with torch.no_grad():
            mel = display(x).squeeze(1)
        return {"axes": "time", "mel": mel, "attribution": per_frame, "hop": display.hop,
                "sample_rate": display.sample_rate}
