"""Attention maps of a Transformer's blocks, recomputed beside the forward pass.

``scaled_dot_product_attention`` returns no weights (its flash kernels never form them), so a
forward pre-hook on each :class:`~lamina.models.transformer.SelfAttention` takes the module's
input and replays its scores: ``softmax(q kᵀ / √D + mask)`` with the module's own ``qkv`` layer,
rotary positions and causal or padding mask. The model's forward path and speed are untouched;
a test checks that ``weights @ v`` is exactly what the module feeds its output projection.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.features import eval_mode, run_features
from lamina.inspection.hooks import model_stages
from lamina.models.transformer import SelfAttention, apply_rope


def attention_replay(attn: SelfAttention, x: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The attention weights and values of ``attn`` on its input ``x`` (B, T, C), without a cache.

    Args:
        attn: the attention module.
        x: what the module receives (the block's normed residual stream), (B, T, C).
        key_mask: (B, T) bool, False for padding keys, as the module receives it (None: none).

    Returns:
        ``(weights (B, H, T, T) with rows summing to 1, values (B, H, T, D))``, float32.
    """
    B, T, C = x.shape
    H = attn.heads
    q, k, v = attn.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)  # (B, H, T, D) each
    if attn.rotary:
        q, k = apply_rope(q, attn.cos[:T], attn.sin[:T]), apply_rope(k, attn.cos[:T], attn.sin[:T])
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(C // H)  # (B, H, T, T)
    if key_mask is not None:  # as the module: a row of padding only attends everywhere
        keep = key_mask | ~key_mask.any(dim=1, keepdim=True)  # (B, T)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    elif attn.causal:
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # (T, T): keys after the query
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1), v.float()


def attention_modules(model: nn.Module) -> list[tuple[str, SelfAttention]]:
    """``(stage name, attention module)`` for every stage that holds one, in depth order."""
    return [(name, m) for name, stage in model_stages(model) for m in stage.modules() if isinstance(m, SelfAttention)]


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """While the block runs, record the attention weights (B, H, T, T) of each attention stage.

    Forward pre-hooks on the attention modules replay the scores from the module's input (calls
    with a KV cache, i.e. generation, are left alone); the hooks are removed on exit.
    """
    found = attention_modules(model)
    if not found:
        raise LaminaError(f"{type(model).__name__} has no attention layer in its stages: attention maps need a Transformer")
    weights: dict[str, Tensor] = {}

    def hook_for(name: str) -> Any:
        def hook(module: SelfAttention, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0]
            cache = args[1] if len(args) > 1 else kwargs.get("cache")
            key_mask = args[2] if len(args) > 2 else kwargs.get("key_mask")
            if cache is None:
                with torch.no_grad():
                    weights[name] = attention_replay(module, x.detach(), key_mask)[0]
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name), with_kwargs=True) for name, m in found]
    try:
        yield weights
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def attention_maps(model: nn.Module, idx: Tensor) -> dict[str, Tensor]:
    """``{stage: (B, H, T, T)}`` attention weights of every attention stage on the token ids ``idx`` (B, T), on the CPU."""
    with eval_mode(model), capture_attention(model) as weights:
        run_features(model, idx)
    return {name: w.cpu() for name, w in weights.items()}
