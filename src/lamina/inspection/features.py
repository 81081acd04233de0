"""Per-stage features streamed over batches, capped at a number of examples.

Every stage's output is either globally average-pooled to (N, C) (the features a linear probe
reads) or flattened to (N, C·S) (what CKA compares); MLP stages are already (N, D). Which dims
are pooled follows the model's ``feature_layout``: "channels" maps (N, C, *S) are averaged over
the spatial dims S, "tokens" sequences (N, T, C) over the positions T (never over the channels,
whatever the rank). The model runs in eval mode under ``no_grad`` and gets its mode back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.hooks import capture, model_stages
from lamina.utils.modules import eval_mode as eval_mode

Batches = Iterable[tuple[Tensor, Tensor]]


LAYOUTS = ("channels", "tokens")


def stage_layout(model: nn.Module) -> str:
    """The model's ``feature_layout`` ("channels" where it declares none): how its stages lay out features."""
    layout = getattr(model, "feature_layout", "channels")
    return layout if layout in LAYOUTS else "channels"


def channel_dim(t: Tensor, layout: str) -> int:
    """The dim of ``t`` that holds the channels: the last one of a (N, T, C) token sequence, else dim 1."""
    return t.ndim - 1 if layout == "tokens" and t.ndim > 2 else 1


def pool(t: Tensor, layout: str = "channels") -> Tensor:
    """(N, C, *S) -> (N, C) by the mean over the spatial dims; with ``layout="tokens"``, (N, T, C) ->
    (N, C) by the mean over the positions; (N, D) stays; float32."""
    t = t.float()
    if t.ndim <= 2:
        return t.reshape(len(t), -1)
    if layout == "tokens":
        return t.mean(dim=tuple(range(1, t.ndim - 1)))
    return t.mean(dim=tuple(range(2, t.ndim)))


def per_position(t: Tensor, layout: str) -> Tensor:
    """A sequence's features per position: (N, T, C) as they are for "tokens", (N, C, T) transposed."""
    if t.ndim != 3:
        raise LaminaError(f"per-position features need a (N, T, C) or (N, C, T) output, got {tuple(t.shape)}")
    return t if layout == "tokens" else t.transpose(1, 2)




def capped(batches: Batches, max_examples: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of ``batches`` until ``max_examples`` examples were seen (the last one cut)."""
    seen = 0
    for x, y in batches:
        if seen >= max_examples:
            break
        take = min(len(y), max_examples - seen)
        seen += take
        yield (x[:take], y[:take]) if take < len(y) else (x, y)


def run_features(model: nn.Module, x: Tensor) -> None:
    """The feature part of a forward pass (``forward_features`` where the model has it)."""
    forward = getattr(model, "forward_features", None)
    (forward if callable(forward) else model)(x)


def iter_stage_outputs(
    model: nn.Module,
    batches: Batches,
    *,
    max_examples: int,
    device: str | torch.device = "cpu",
    stages: Sequence[str] | None = None,
    pooled: bool = True,
) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
    """Yield ``({stage: (n, D)}, labels (n,))`` per batch, on ``device``; pooled or flattened."""
    names = [n for n, _ in model_stages(model)] if stages is None else list(stages)
    layout = stage_layout(model)
    with eval_mode(model), torch.no_grad(), capture(model, names) as out:
        for x, y in capped(batches, max_examples):
            out.clear()
            run_features(model, x.to(device))
            feats = {n: pool(out[n], layout) if pooled else out[n].float().reshape(len(y), -1) for n in names}
            yield feats, y.to(device)


def stage_features(
    model: nn.Module,
    batches: Batches,
    *,
    max_examples: int,
    device: str | torch.device = "cpu",
    stages: Sequence[str] | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Pooled features of every stage for at most ``max_examples`` examples.

    Args:
        model: a model with ``stages()``.
        batches: an iterable of ``(inputs, labels)``, inputs ready for the model.
        max_examples: stop after this many examples.
        device: where the model is and the features are computed.
        stages: the stages to collect (None: all).

    Returns:
        ``({stage: (N, D) float32 on the CPU}, labels (N,))``.
    """
    parts: dict[str, list[Tensor]] = {}
    labels: list[Tensor] = []
    for feats, y in iter_stage_outputs(model, batches, max_examples=max_examples, device=device, stages=stages):
        for name, f in feats.items():
            parts.setdefault(name, []).append(f.cpu())
        labels.append(y.cpu())
    if not labels:
        names = [n for n, _ in model_stages(model)] if stages is None else list(stages)
        return {n: torch.zeros(0, 0) for n in names}, torch.zeros(0, dtype=torch.long)
    return {n: torch.cat(p) for n, p in parts.items()}, torch.cat(labels)
