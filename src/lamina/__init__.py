"""lamina: raw data in, a trained deep network out.

The public API is exported lazily, so ``import lamina.models`` (or any lower layer) does not
import the whole stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "train": "lamina.api", "resume": "lamina.api", "load": "lamina.api", "evaluate": "lamina.api",
    "inspect": "lamina.api", "report": "lamina.api", "generate": "lamina.api", "RunResult": "lamina.api",
    "attack": "lamina.api", "curve": "lamina.api", "sample": "lamina.api", "play": "lamina.api",
    "Predictor": "lamina.artifacts", "Classifier": "lamina.artifacts", "TextGenerator": "lamina.artifacts",
    "ImageSampler": "lamina.artifacts",
    "RunConfig": "lamina.config", "LaminaError": "lamina.errors",
}

if TYPE_CHECKING:
    from lamina.api import (
        RunResult,
        attack,
        curve,
        evaluate,
        generate,
        inspect,
        load,
        play,
        report,
        resume,
        sample,
        train,
    )
    from lamina.artifacts import Classifier, ImageSampler, Predictor, TextGenerator
    from lamina.config import RunConfig
    from lamina.errors import LaminaError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lamina' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["Classifier", "ImageSampler", "LaminaError", "Predictor", "RunConfig", "RunResult", "TextGenerator",
           "__version__", "attack", "curve", "evaluate", "generate", "inspect", "load", "play", "report", "resume",
           "sample", "train"]
