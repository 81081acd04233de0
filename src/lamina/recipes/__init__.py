"""Named training recipes: partial configs shipped with lamina (``lamina train DATA --recipe fast``).

A recipe is a YAML file beside this module holding any subset of the config sections (``data``,
``model``, ``train``, ``adversarial``, ``energy``), plus an optional ``cuda:`` section of the same shape that is laid over the
rest only when the run's device resolves to a CUDA GPU: what is fastest on a GPU (``torch.compile``,
big batches) is often slower on a CPU. Precedence, lowest first::

    defaults < recipe (< its cuda overlay) < --config file < keyword arguments < a.b=c overrides

>>> sorted(names())
['demo', 'fast', 'fast-long', 'robust']
>>> recipe_dict("fast", "cuda")["train"]["compile"], recipe_dict("fast", "cpu")["train"]["compile"]
(True, False)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yaml

from lamina.errors import LaminaError, did_you_mean

RECIPE_DIR = Path(__file__).resolve().parent
SECTIONS = ("data", "model", "train", "adversarial", "energy", "out")
OVERLAYS = ("cuda",)


def names() -> list[str]:
    """The shipped recipes, by name (the YAML file names without ``.yaml``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def read(name: str) -> dict[str, Any]:
    """The raw mapping of recipe ``name``, overlays included; an unknown name is a LaminaError."""
    key = str(name).strip().lower()
    path = RECIPE_DIR / f"{key}.yaml"
    if key not in names():
        raise LaminaError(f"unknown recipe '{name}': {did_you_mean(key, names())}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not set(data) <= {*SECTIONS, *OVERLAYS}:
        raise LaminaError(f"recipe file {path} must map sections {', '.join(SECTIONS + OVERLAYS)}")
    return data


def device_kind(device: str | None) -> str:
    """``cpu``, ``cuda`` or ``mps`` for a device string as ``train.device`` takes it (``auto`` resolves
    to what this machine has). Never raises: a bad name is reported later, by ``validate``."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    try:
        return torch.device(name).type
    except RuntimeError:
        return "cpu"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``over`` laid on top, section by section."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def recipe_dict(name: str, device: str | None = None) -> dict[str, Any]:
    """Recipe ``name`` as a partial config dict for ``device`` (e.g. ``"cuda"``, ``"cpu"``, ``"auto"``):
    the ``cuda:`` overlay is applied when the device is a CUDA GPU; ``None`` gives the base only."""
    raw = read(name)
    base = {k: v for k, v in raw.items() if k not in OVERLAYS}
    if device is not None and device_kind(device) == "cuda":
        base = merge(base, raw.get("cuda") or {})
    return base


__all__ = ["device_kind", "merge", "names", "read", "recipe_dict"]
