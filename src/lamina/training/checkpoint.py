"""Atomic checkpoints: tensors in safetensors, everything else in JSON, never pickle.

A checkpoint is a folder ``<name>/`` holding ``tensors.safetensors`` (every tensor of the state
tree, keyed by its path), ``state.json`` (the tree with tensors replaced by references) and
``manifest.json`` (SHA-256 of both). It is written into a temporary folder, fsynced and renamed,
so a crash or a full disk leaves either the old checkpoints or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lamina.errors import LaminaError
from lamina.utils.io import fsync_path, sha256_file

FORMAT = "lamina-checkpoint/1"
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
FILES = ("tensors.safetensors", "state.json")  # the files the manifest checksums


def flatten(tree: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """Replace each tensor in a nested dict/list/tuple by a reference, collecting it in ``tensors``."""
    if isinstance(tree, torch.Tensor):
        key = path or "root"
        tensors[key] = tree.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if not isinstance(k, str | int):
                raise TypeError(f"checkpoint keys must be str or int, got {type(k).__name__} at {path}")
            # JSON keys are strings: remember int keys (optimizer state is keyed by param index)
            key = f"{_TUPLE}int:{k}" if isinstance(k, int) else k
            out[key] = flatten(v, tensors, f"{path}/{k}")
        return out
    if isinstance(tree, tuple):
        return {_TUPLE: [flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(tree)]
    if tree is None or isinstance(tree, bool | int | float | str):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} at '{path}' in a checkpoint")


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR}:
            return tensors[tree[_TENSOR]]
        if set(tree) == {_TUPLE}:
            return tuple(unflatten(v, tensors) for v in tree[_TUPLE])
        out: dict[Any, Any] = {}
        for k, v in tree.items():
            key: Any = int(k[len(_TUPLE) + 4 :]) if k.startswith(f"{_TUPLE}int:") else k
            out[key] = unflatten(v, tensors)
        return out
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    return tree


def save(state: dict[str, Any], folder: str | Path) -> Path:
    """Write ``state`` atomically to ``folder`` (replacing an older checkpoint of that name)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        tensors: dict[str, torch.Tensor] = {}
        tree = flatten(state, tensors)
        save_file(tensors, str(tmp / "tensors.safetensors"))
        (tmp / "state.json").write_text(json.dumps(tree))
        files = {name: sha256_file(tmp / name) for name in ("tensors.safetensors", "state.json")}
        (tmp / "manifest.json").write_text(json.dumps({"format": FORMAT, "sha256": files}))
        for name in (*files, "manifest.json"):
            fsync_path(tmp / name)
        fsync_path(tmp)
        if folder.exists():
            old = folder.parent / f".old-{folder.name}-{os.getpid()}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
        fsync_path(folder.parent)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error type
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise LaminaError(
            f"could not write checkpoint {folder}: {reason}; earlier checkpoints are intact "
            "(free disk space or choose another --out)"
        ) from None
    return folder


def verify(folder: str | Path) -> None:
    """Raise :class:`LaminaError` unless every file of the checkpoint matches its manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise LaminaError(f"checkpoint {folder} has no readable manifest.json: it is incomplete or corrupt") from None
    if not isinstance(manifest, dict):
        raise LaminaError(f"checkpoint {folder}: manifest.json is not a JSON object (corrupt)")
    if manifest.get("format") != FORMAT:
        raise LaminaError(f"checkpoint {folder} has format {manifest.get('format')!r}, this lamina reads {FORMAT}")
    digests = manifest.get("sha256")
    # Only the checkpoint's own files are checked: a manifest naming others ("/dev/zero") is not followed,
    # and one that leaves a file out does not let that file pass unchecked.
    if not isinstance(digests, dict) or not all(isinstance(digests.get(name), str) for name in FILES):
        raise LaminaError(f"checkpoint {folder}: manifest.json lacks the checksums of {' and '.join(FILES)} (corrupt)")
    for name in FILES:
        path = folder / name
        if not path.is_file() or sha256_file(path) != digests[name]:
            raise LaminaError(f"checkpoint {folder}: {name} is missing or does not match its checksum (corrupt)")


def load(folder: str | Path) -> dict[str, Any]:
    """Verify and read a checkpoint written by :func:`save` (no pickle involved)."""
    folder = Path(folder)
    verify(folder)
    try:
        tensors = load_file(str(folder / "tensors.safetensors"))
        return unflatten(json.loads((folder / "state.json").read_text()), tensors)
    except (SafetensorError, OSError, ValueError, LookupError, TypeError, AttributeError, RecursionError) as e:
        # checksums match, yet a file does not parse (or refers to a tensor that is not there)
        why = (str(e).splitlines() or [""])[0][:200]
        raise LaminaError(f"checkpoint {folder} is corrupt: {type(e).__name__}: {why}") from None


def prune(parent: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (by name order) in ``parent``."""
    folders = sorted(p for p in Path(parent).iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def latest(parent: str | Path, on_skip: Callable[[Path, LaminaError], None] | None = None) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint in ``parent`` that verifies, with its folder; older ones are tried
    when a newer one is corrupt (``on_skip`` hears about each one passed over)."""
    parent = Path(parent)
    if not parent.is_dir():
        return None
    for folder in sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
        try:
            return load(folder), folder
        except LaminaError as e:
            if on_skip:
                on_skip(folder, e)
    return None
