"""Attributions with captum: which input pixels a prediction depends on.

Saliency (|∂logit/∂x|, Simonyan et al. 2014) and integrated gradients (Sundararajan et al. 2017,
from an all-zero baseline, i.e. the mean input after normalisation) on the inputs, reduced by the
max of the absolute value over channels; Grad-CAM (Selvaraju et al. 2017) on the last stage that
holds a convolution, upsampled to the input size. captum is imported only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.features import eval_mode
from lamina.inspection.filters import _CONVS
from lamina.inspection.hooks import model_stages

METHODS = ("saliency", "integrated_gradients", "grad_cam")


def _captum_attr() -> Any:
    try:
        import captum.attr
    except ImportError:
        raise LaminaError("attributions need captum: pip install captum (or lamina[inspect])") from None
    return captum.attr


def last_conv_stage(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The deepest stage that contains a convolution, or None (an MLP)."""
    found = None
    for name, stage in model_stages(model):
        if any(isinstance(m, _CONVS) for m in stage.modules()):
            found = (name, stage)
    return found


def _reduce_channels(a: Tensor) -> Tensor:
    """(B, C, *S) -> (B, *S) by the max over channels of |a|; vectors (B, D) stay (B, D)."""
    a = a.detach().abs().float()
    return a.amax(dim=1) if a.ndim > 2 else a


def attributions(
    model: nn.Module,
    x: Tensor,
    target: Tensor | int,
    *,
    methods: Sequence[str] = METHODS,
    steps: int = 32,
) -> dict[str, Tensor]:
    """Attribution maps of ``model``'s logit ``target`` for the inputs ``x``.

    Args:
        model: a model with ``stages()``; it runs in eval mode (its mode is restored afterwards).
        x: model inputs (B, C, H, W) (or (B, C, L) signals, (B, D) vectors), already normalised.
        target: the class per example (B,), or one class for all.
        methods: any of ``saliency``, ``integrated_gradients``, ``grad_cam``; ``grad_cam`` is
            skipped for models without a convolutional stage.
        steps: integration steps of integrated gradients.

    Returns:
        ``{method: (B, H, W) float32 on the CPU}`` (``(B, L)`` for signals, ``(B, D)`` for vectors).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LaminaError(f"unknown attribution method '{unknown[0]}': use {', '.join(METHODS)}")
    attr = _captum_attr()
    model_stages(model)  # a model without the contract fails here, before captum runs
    device = next((p.device for p in model.parameters()), x.device)
    x = x.detach().float().to(device)
    tgt: Tensor | int = target.to(device) if isinstance(target, Tensor) else int(target)
    out: dict[str, Tensor] = {}

    def inputs() -> Tensor:  # captum warns (an error in our tests) unless inputs already require grad
        return x.clone().requires_grad_(True)

    with eval_mode(model), torch.enable_grad():
        if "saliency" in methods:
            out["saliency"] = _reduce_channels(attr.Saliency(model).attribute(inputs(), target=tgt, abs=True)).cpu()
        if "integrated_gradients" in methods:
            ig = attr.IntegratedGradients(model)
            a = ig.attribute(inputs(), baselines=torch.zeros_like(x), target=tgt, n_steps=steps,
                             internal_batch_size=max(len(x), 1) * 8)
            out["integrated_gradients"] = _reduce_channels(a).cpu()
        conv = last_conv_stage(model) if "grad_cam" in methods else None
        if conv is not None and x.ndim >= 3:
            cam = attr.LayerGradCam(model, conv[1]).attribute(inputs(), target=tgt, relu_attributions=True)
            mode = {3: "linear", 4: "bilinear"}.get(x.ndim, "nearest")
            cam = attr.LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=mode)
            out["grad_cam"] = cam.detach().float()[:, 0].cpu()  # (B, 1, *S) -> (B, *S)
    return out
