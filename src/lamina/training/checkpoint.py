"""Atomic checkpoints: tensors in safetensors, everything else in JSON, never pickle.

A checkpoint is a folder ``<name>/`` holding ``tensors.safetensors`` (every tensor of the state
tree, keyed by its path), ``state.json`` (the tree with tensors replaced by references) and
``manifest.json`` (SHA-256 of both). It is written into a temporary folder, fsynced and renamed,
so a crash or a full disk leaves either the old checkpoints or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lamina.errors import LaminaError

FORMAT = "lamina-checkpoint/1"
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            _fsync(tmp / name)
        _fsync(tmp)
        if folder.exists():
            old = folder.parent / f".old-{folder.name}-{os.getpid()}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
        _fsync(folder.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LaminaError(
            f"could not write checkpoint {folder}: {e.strerror or e}; earlier checkpoints are intact "
            "(free disk space or choose another --out)"
        ) from None
    return folder


def verify(folder: str | Path) -> None:
    """Raise :class:`LaminaError` unless every file of the checkpoint matches its manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        raise LaminaError(f"checkpoint {folder} has no readable manifest.json: it is incomplete or corrupt") from None
    if manifest.get("format") != FORMAT:
        raise LaminaError(f"checkpoint {folder} has format {manifest.get('format')!r}, this lamina reads {FORMAT}")
    for name, digest in manifest["sha256"].items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            raise LaminaError(f"checkpoint {folder}: {name} is missing or does not match its checksum (corrupt)")


def load(folder: str | Path) -> dict[str, Any]:
    """Verify and read a checkpoint written by :func:`save` (no pickle involved)."""
    folder = Path(folder)
    verify(folder)
    tensors = load_file(str(folder / "tensors.safetensors"))
    return unflatten(json.loads((folder / "state.json").read_text()), tensors)


def prune(parent: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (by name order) in ``parent``."""
    folders = sorted(p for p in Path(parent).iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
