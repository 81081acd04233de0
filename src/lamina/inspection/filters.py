"""What the first layer looks for, and which examples excite a stage's channels most."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.features import Batches, iter_stage_outputs
from lamina.inspection.hooks import model_stages

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def first_conv(model: nn.Module) -> nn.Module | None:
    """The first convolution in stages order (depth-first inside each stage), or None."""
    for _, stage in model_stages(model):
        for m in stage.modules():
            if isinstance(m, _CONVS):
                return m
    return None


def first_layer_filters(model: nn.Module) -> Tensor:
    """The weights of the first convolution, (C_out, C_in, k, k) for images ((C_out, C_in, k) for signals), on the CPU.

    Raises ``LaminaError`` for a model without convolutions (an MLP).
    """
    conv = first_conv(model)
    if conv is None:
        raise LaminaError(f"{type(model).__name__} has no convolution in its stages: first-layer filters need a conv model")
    weight = conv.weight
    assert isinstance(weight, Tensor)
    return weight.detach().float().cpu().clone()


def top_activating(
    model: nn.Module,
    batches: Batches,
    stage: str,
    *,
    k: int = 8,
    channels: int = 8,
    max_examples: int,
    device: str | torch.device = "cpu",
) -> dict[int, list[int]]:
    """The ``k`` examples with the highest mean activation of each of the first ``channels`` channels of ``stage``.

    Examples are numbered 0, 1, ... in the order ``batches`` yields them; a running top-k keeps
    memory at O(k · channels). Returns ``{channel: [example indices, highest first]}``.
    """
    if k < 1 or channels < 1:
        raise LaminaError(f"top_activating needs k >= 1 and channels >= 1, got k={k}, channels={channels}")
    best_vals: Tensor | None = None  # (k', C)
    best_idx: Tensor | None = None
    seen = 0
    for feats, y in iter_stage_outputs(model, batches, max_examples=max_examples, device=device, stages=[stage]):
        f = feats[stage][:, :channels].cpu()  # (n, C) mean activation per channel
        idx = torch.arange(seen, seen + len(y)).unsqueeze(1).expand_as(f)
        seen += len(y)
        if best_vals is not None and best_idx is not None:
            f, idx = torch.cat([best_vals, f]), torch.cat([best_idx, idx])
        top = f.topk(min(k, len(f)), dim=0)
        best_vals, best_idx = top.values, idx.gather(0, top.indices)
    if best_idx is None:
        return {}
    return {c: best_idx[:, c].tolist() for c in range(best_idx.shape[1])}
