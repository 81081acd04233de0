"""Resolve ``data.name``: a registered dataset, an image folder, an ``.npz`` file or text."""

from __future__ import annotations

import os
from pathlib import Path

from lamina.config import DataConfig
from lamina.data import builtin
from lamina.data.base import DATASETS, Dataset
from lamina.data.images import load_image_folder, load_npz
from lamina.data.text import is_text_path, load_text_path
from lamina.errors import LaminaError, did_you_mean


def load(cfg: DataConfig) -> Dataset:
    """Load the examples ``cfg.name`` points at (no splitting; see ``build_dataset``)."""
    name = cfg.name
    if not name or not name.strip():
        raise LaminaError("data.name is empty: give a dataset name (e.g. fashion-mnist), an image folder or a .npz file")
    if name in DATASETS:
        return DATASETS.get(name).load(cfg)
    path = Path(name).expanduser()
    if path.exists() and is_text_path(path):
        return load_text_path(path, cfg)
    if path.is_dir():
        lazy = {"torch": True, "device": False}.get(cfg.loader)  # auto: lazy only when too large to decode
        return load_image_folder(path, cfg.image_size, lazy=lazy)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    if path.exists():
        raise LaminaError(f"don't know how to load '{name}': give an image folder (one sub-folder per class), a .npz "
                          "file, a .txt/.csv file or a folder of .txt files")
    if "/" in name or os.sep in name or path.suffix:
        raise LaminaError(f"path '{name}' does not exist; check the path")
    raise LaminaError(
        f"unknown dataset '{name}': {did_you_mean(name, DATASETS.names())} (or give an image folder or a .npz file)"
    )


def declared_task(cfg: DataConfig) -> str:
    """The task ``cfg``'s data declares, found without loading it: ``data.task`` when set, a
    registered dataset's own, ``language-model`` for one text (a ``.txt`` file, a folder of them)
    and ``classify`` for everything else (class folders, tables, arrays)."""
    if cfg.task != "auto":
        return cfg.task
    if cfg.name in DATASETS:
        return DATASETS.get(cfg.name).task
    path = Path(cfg.name).expanduser()
    if path.exists() and is_text_path(path) and path.suffix.lower() not in (".csv", ".tsv"):
        one_text = path.is_file() or not any(d.is_dir() for d in path.iterdir())
        return "language-model" if one_text else "classify"
    return "classify"


def dataset_status(name: str) -> str:
    """Where a registered dataset's data is, or how to get it (for ``lamina data list``)."""
    DATASETS.get(name)  # unknown names: a LaminaError with a suggestion
    status = builtin.STATUS.get(name)
    return status() if status else "registered"


def fetch(name: str) -> str:
    """Download (or locate) a registered dataset; returns a one-line report of where it is."""
    entry = DATASETS.get(name)
    if entry.fetch is None:
        return f"{name} needs no download: {dataset_status(name)}"
    return entry.fetch()
