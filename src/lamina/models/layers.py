"""Building blocks shared by lamina's models: activations and norms by name, conv blocks.

Activations and norms are resolved here and nowhere else (timm's ``get_act_layer``), so a
config string like ``act: gelu`` or ``norm: group`` means the same thing in every model.
``dims`` picks the geometry: 0 = feature vectors (B, D), 1 = signals (B, C, L),
2 = images (B, C, H, W).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError, did_you_mean

ActLayer = str | type[nn.Module] | Callable[[], nn.Module]

# The one list of activation names. Every class here is built with no arguments, and its
# defaults match torch.nn.functional (LeakyReLU slope 0.01, exact GELU).
ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

# The one list of norm names; see get_norm for what each means per geometry.
NORMS: tuple[str, ...] = ("batch", "layer", "group", "none")

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d}
_MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_BATCH_NORM: dict[int, type[nn.Module]] = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def get_act(act: ActLayer) -> Callable[[], nn.Module]:
    """Resolve an activation name or class to a no-argument factory of ``nn.Module``.

    Args:
        act: one of ``ACTS`` (case-insensitive, ``-`` allowed for ``_``), the name of a
            ``torch.nn`` activation class (e.g. ``"Mish"``), or a module class / factory.

    >>> get_act("gelu")
    <class 'torch.nn.modules.activation.GELU'>
    """
    if not isinstance(act, str):
        if callable(act):
            return act
        raise LaminaError(f"activation must be a name or an nn.Module class, got {act!r}")
    key = act.strip().lower().replace("-", "_")
    if key in ACTS:
        return ACTS[key]
    # Names as `act_name` writes them for torch.nn classes outside ACTS (e.g. "Mish").
    cls = getattr(nn.modules.activation, act.strip(), None)
    if isinstance(cls, type) and issubclass(cls, nn.Module) and cls is not nn.Module:
        return cls
    raise LaminaError(f"unknown activation '{act}': {did_you_mean(key, ACTS)}")


def act_name(act: ActLayer) -> str:
    """The name under which ``get_act`` finds ``act`` again (for JSON-able ``arch`` dicts)."""
    if isinstance(act, str):
        key = act.strip().lower().replace("-", "_")
        return key if key in ACTS else act.strip()
    for name, cls in ACTS.items():
        if act is cls:
            return name
    return getattr(act, "__name__", repr(act))


def norm_name(norm: str | None) -> str:
    """Canonical norm name; unknown names raise ``LaminaError`` with a suggestion."""
    key = "none" if norm is None else norm.strip().lower()
    if key not in NORMS:
        raise LaminaError(f"unknown norm '{norm}': {did_you_mean(key, NORMS)}")
    return key


def group_count(channels: int, max_groups: int = 32) -> int:
    """Largest number of groups <= ``max_groups`` that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def get_norm(name: str | None, channels: int, dims: int) -> nn.Module:
    """Build a norm layer by name for ``channels`` features of geometry ``dims``.

    Args:
        name: ``batch`` (BatchNorm1d/2d), ``layer`` (LayerNorm over features for ``dims=0``;
            GroupNorm(1, C), i.e. over C and all positions, for conv maps), ``group``
            (GroupNorm with ``group_count(C)`` groups) or ``none`` (Identity).
        channels: features (MLP) or channels (conv nets).
        dims: 0 for (B, D) features, 1 for (B, C, L) signals, 2 for (B, C, H, W) images.
    """
    key = norm_name(name)
    if dims not in _BATCH_NORM:
        raise LaminaError(f"norm dims must be 0, 1 or 2, got {dims}")
    if key == "batch":
        return _BATCH_NORM[dims](channels)
    if key == "layer":
        return nn.LayerNorm(channels) if dims == 0 else nn.GroupNorm(1, channels)
    if key == "group":
        return nn.GroupNorm(group_count(channels), channels)
    return nn.Identity()


def _check_dims(dims: int) -> None:
    if dims not in _CONV:
        raise LaminaError(f"conv dims must be 1 (signals) or 2 (images), got {dims}")


def max_pool(dims: int, kernel: int = 2) -> nn.Module:
    """MaxPool1d or MaxPool2d with ``kernel`` as both size and stride."""
    _check_dims(dims)
    return _MAX_POOL[dims](kernel)


class ConvNormAct(nn.Sequential):
    """Conv → (max pool) → norm → activation; the conv has a bias only when there is no norm.

    Pooling right after the conv, before the norm and the activation (as airbench does), gives the
    same maxima as pooling last when the norm's scale is positive (max pooling commutes with a
    monotone map), and the norm and activation then work on a quarter of the positions: on a CPU
    that made the demo's epochs 18 % shorter (benchmarks/results/demo_cpu.json, before and after).

    Args:
        c_in: input channels.
        c_out: output channels.
        k: kernel size (odd; padding ``k // 2`` keeps the size at stride 1).
        stride: conv stride.
        dims: 1 for Conv1d, 2 for Conv2d.
        act: activation name or class; ``None`` leaves it out (e.g. before a residual add).
        norm: norm name, see ``get_norm``.
        pool: max-pool kernel and stride after the conv; 1: no pooling.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int = 3,
        stride: int = 1,
        *,
        dims: int = 2,
        act: ActLayer | None = "relu",
        norm: str = "batch",
        pool: int = 1,
    ) -> None:
        _check_dims(dims)
        key = norm_name(norm)
        super().__init__()
        self.conv = _CONV[dims](c_in, c_out, k, stride=stride, padding=k // 2, bias=key == "none")
        if pool > 1:
            self.pool = max_pool(dims, pool)
        self.norm = get_norm(key, c_out, dims)
        if act is not None:
            self.act = get_act(act)()


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 ConvNormActs plus a shortcut, then the activation.

    The shortcut is the identity when stride is 1 and channels match, else a 1×1 ConvNorm.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first conv (and of the projection shortcut).
        dims: 1 for signals, 2 for images.
        act: activation name or class.
        norm: norm name, see ``get_norm``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int = 1,
        *,
        dims: int = 2,
        act: ActLayer = "relu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(c_in, c_out, 3, stride, dims=dims, act=act, norm=norm)
        self.conv2 = ConvNormAct(c_out, c_out, 3, 1, dims=dims, act=None, norm=norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = ConvNormAct(c_in, c_out, 1, stride, dims=dims, act=None, norm=norm)
        self.act = get_act(act)()

    def zero_init_last(self) -> None:
        """Zero the last norm's scale so the block starts as (act of) its shortcut."""
        weight = getattr(self.conv2.norm, "weight", None)
        if isinstance(weight, torch.Tensor):
            nn.init.zeros_(weight)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C_in, *S)
        out = self.conv2(self.conv1(x))  # (B, C_out, *S / stride)
        return self.act(out + self.shortcut(x))  # (B, C_out, *S / stride)
