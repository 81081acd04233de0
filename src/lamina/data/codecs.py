"""A saved model's codec (``model.json``'s ``codec``) back to the object that reads new inputs.

Each modality with a codec keeps it in its own module, which has ``codec_from_dict(d)``; this
table names the module by the codec's ``kind``, so reading a model imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from lamina.data.base import Codec
from lamina.errors import LaminaError

CODEC_MODULES = {"audio": "lamina.data.audio", "sequence": "lamina.data.fasta", "table": "lamina.data.tabular"}


def codec_from_dict(d: Any) -> Codec:
    """The codec ``d`` (a ``Codec.to_dict()``) describes; a one-line error for a corrupt one."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in CODEC_MODULES:
        raise LaminaError(f"model.json is corrupt: its codec kind {kind!r} is not one of {', '.join(CODEC_MODULES)}")
    module = importlib.import_module(CODEC_MODULES[kind])
    try:
        return module.codec_from_dict(d)  # type: ignore[no-any-return]
    except (KeyError, TypeError, ValueError) as e:
        raise LaminaError(f"model.json is corrupt: its {kind} codec does not read ({type(e).__name__}: {e})") from None
