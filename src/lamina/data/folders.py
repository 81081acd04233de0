"""Folders of class folders, the layout images and audio share: ``root/<class>/<files>``, or
``root/train/<class>/...`` beside ``test/`` and/or ``val/`` (``valid/``, ``validation/``) holding the
same class folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lamina.errors import LaminaError

SPLIT_NAMES = ("train", "val", "test")
_VAL_ALIASES = ("val", "valid", "validation")


def class_folders(root: Path, *, skip: tuple[str, ...] = (".",)) -> list[Path]:
    """The sub-folders of ``root`` whose names do not start with one of ``skip``, sorted."""
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(skip))


def split_folders(root: Path, *, skip: tuple[str, ...] = (".",)) -> dict[str, Path] | None:
    """``train/`` (+ ``val/``, ``test/``) sub-folders each holding class folders, else None."""
    folders = class_folders(root, skip=skip)
    names = {d.name.lower(): d for d in folders}
    if "train" not in names or not set(names) <= {*SPLIT_NAMES, *_VAL_ALIASES} or len(names) < 2:
        return None
    if not all(class_folders(d, skip=skip) for d in folders):
        return None
    out = {"train": names["train"], "test": names.get("test")}
    out["val"] = next((names[a] for a in _VAL_ALIASES if a in names), None)
    return {k: v for k, v in out.items() if v is not None}


Scanned = tuple[list[str], list[tuple[Path, int]]]


def scan_splits(root: Path, scan: Callable[[Path], Scanned], *, skip: tuple[str, ...] = (".",)
                ) -> tuple[dict[str, Path], dict[str, Any]]:
    """Each split's folder, and what ``scan`` (a folder -> class names and (file, label) pairs) finds
    in it; every split must have the training split's class folders."""
    dirs = split_folders(root, skip=skip) or {"train": root}
    scanned = {k: scan(d) for k, d in dirs.items()}
    classes = scanned["train"][0]
    for k, (names, _) in scanned.items():
        if names != classes:
            raise LaminaError(f"{dirs[k]} has classes {names} but {dirs['train']} has {classes}; "
                              "every split folder needs the same class folders")
    return dirs, scanned
