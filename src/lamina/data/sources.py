"""Resolve ``data.name``: a registered dataset, or a path whose files say what they hold (:func:`detect`)."""

from __future__ import annotations

import os
from pathlib import Path

from lamina.config import DataConfig
from lamina.data import builtin
from lamina.data.base import DATASETS, Dataset
from lamina.data.images import IMAGE_SUFFIXES, load_image_folder, load_npz
from lamina.data.text import load_text_path
from lamina.errors import LaminaError, did_you_mean

AUDIO_SUFFIXES = (".wav",)
SEQUENCE_SUFFIXES = (".fasta", ".fa", ".fna", ".faa", ".ffn", ".frn", ".fas")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
# the modality of a folder's files, by suffix (a folder of class folders: the files inside them)
_FOLDER_KINDS = {**{s: "image" for s in IMAGE_SUFFIXES}, **{s: "audio" for s in AUDIO_SUFFIXES}, ".txt": "text"}
OVERRIDE = "override with data.modality=image|audio|text|sequence|table"
_METADATA = (".json", ".md", ".yaml", ".yml", ".csv")  # beside the class folders: a manifest, not an example


def load(cfg: DataConfig) -> Dataset:
    """Load the examples ``cfg.name`` points at (no splitting; see ``build_dataset``).

    A path's modality is detected (:func:`detect`) unless ``data.modality`` names it; what was
    decided, and why, leads the dataset's ``notes``.
    """
    name = cfg.name
    if not name or not name.strip():
        raise LaminaError("data.name is empty: give a dataset name (e.g. fashion-mnist), a folder of class "
                          "folders, or a .npz, .txt, .fasta or .csv file")
    if name in DATASETS:
        return DATASETS.get(name).load(cfg)
    path = Path(name).expanduser()
    if not path.exists():
        if "/" in name or os.sep in name or path.suffix:
            raise LaminaError(f"path '{name}' does not exist; check the path")
        raise LaminaError(f"unknown dataset '{name}': {did_you_mean(name, DATASETS.names())} (or give a folder "
                          "of class folders, or a .npz, .txt, .fasta or .csv file)")
    modality, why = detect(path, cfg)
    ds = _LOADERS[modality](path, cfg)
    ds.notes.insert(0, f"{modality}: {why} ({OVERRIDE})")
    return ds


def _suffix(path: Path) -> str:
    """The suffix that says what a file holds: ``reads.fa.gz`` -> ``.fa``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def detect(path: Path, cfg: DataConfig) -> tuple[str, str]:
    """The modality of the data at ``path``, and why: ``data.modality`` when set, else the files'
    suffixes. A folder whose files are of mixed kinds is an error naming those that do not fit."""
    if cfg.modality != "auto":
        if cfg.modality not in _LOADERS:
            raise LaminaError(f"unknown data.modality '{cfg.modality}': {did_you_mean(cfg.modality, _LOADERS)}")
        return cfg.modality, "set by data.modality"
    if path.is_file():
        suffix = _suffix(path)
        if suffix in SEQUENCE_SUFFIXES:
            return "sequence", f"a FASTA file ({suffix})"
        if suffix in (".csv", ".tsv"):
            if cfg.text_column in _csv_header(path):
                return "text", f"a table with a '{cfg.text_column}' column (data.text_column): text classification"
            if cfg.text_column != DataConfig.text_column:  # a text column was named: the user means text
                return "text", f"data.text_column={cfg.text_column} was set: text classification"
            return "table", f"a table ({suffix}) without a '{cfg.text_column}' column"
        if suffix == ".parquet":
            return "table", "a Parquet table"
        if suffix == ".txt":
            return "text", "one .txt file"
        if suffix == ".npz":
            return "array", "a .npz file of arrays"
        raise LaminaError(f"don't know how to load '{path}': give a folder of class folders (images, .wav or .txt "
                          "files), or a .npz, .txt, .fasta/.fa/.fna (optionally .gz), .csv/.tsv or .parquet file")
    return _detect_folder(path)


def _detect_folder(path: Path) -> tuple[str, str]:
    files = [f for f in sorted(path.rglob("*")) if f.is_file() and not any(
        part.startswith((".", "_")) for part in f.relative_to(path).parts)
        and not (f.parent == path and f.suffix.lower() in _METADATA)][:20_000]
    kinds: dict[str, list[Path]] = {}
    for f in files:
        kinds.setdefault(_FOLDER_KINDS.get(f.suffix.lower(), "other"), []).append(f)
    known = {k: v for k, v in kinds.items() if k != "other"}
    if not known:
        shown = ", ".join(str(f) for f in files[:3]) or "nothing"
        raise LaminaError(f"folder {path} holds no images, .wav or .txt files (found {shown}); give a folder "
                          "with one sub-folder of files per class")
    modality = max(known, key=lambda k: len(known[k]))
    odd = [f for k, fs in kinds.items() if k != modality for f in fs]
    if odd:
        names = ", ".join(str(f.relative_to(path)) for f in odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
        raise LaminaError(f"folder {path} mixes kinds of files: most are {modality} files, but these do not fit: "
                          f"{names}; move them out (or set data.modality)")
    classes = sorted({f.relative_to(path).parts[0] for f in known[modality] if len(f.relative_to(path).parts) > 1})
    what = f"{len(known[modality]):,} {modality} files" + (f" in {len(classes)} folders" if classes else "")
    return modality, what


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV/TSV file (its first row), or [] if it cannot be read."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            row = next(csv.reader(f, delimiter="\t" if _suffix(path) == ".tsv" else ","), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [c.strip() for c in row]


def _load_image(path: Path, cfg: DataConfig) -> Dataset:
    if path.is_file():
        raise LaminaError(f"{path} is one file: give a folder with one sub-folder of images per class")
    lazy = {"torch": True, "device": False}.get(cfg.loader)  # auto: lazy only when too large to decode
    return load_image_folder(path, cfg.image_size, lazy=lazy)


def _load_audio(path: Path, cfg: DataConfig) -> Dataset:
    from lamina.data.audio import load_audio_folder

    return load_audio_folder(path, cfg)


def _load_sequence(path: Path, cfg: DataConfig) -> Dataset:
    from lamina.data.fasta import load_fasta

    return load_fasta(path, cfg)


def _load_table(path: Path, cfg: DataConfig) -> Dataset:
    from lamina.data.tabular import load_table

    return load_table(path, cfg)


def _load_array(path: Path, cfg: DataConfig) -> Dataset:
    return load_npz(path)


_LOADERS = {"image": _load_image, "audio": _load_audio, "text": load_text_path, "sequence": _load_sequence,
            "table": _load_table, "array": _load_array}


def declared(cfg: DataConfig) -> tuple[str, str]:
    """The task and the modality ``cfg``'s data declares, found without loading it (one look at the
    files). The task: ``data.task`` when set, a registered dataset's own, ``language-model`` for one
    text (a ``.txt`` file, a folder of them), what a table's label column holds, else ``classify``.
    The modality: ``data.modality`` when set, a registered dataset's, else :func:`detect`'s; ""
    when unknown (the path is missing or unreadable: reported when the data is loaded)."""
    if cfg.name in DATASETS:
        entry = DATASETS.get(cfg.name)
        return (cfg.task if cfg.task != "auto" else entry.task,
                cfg.modality if cfg.modality != "auto" else entry.modality)
    path = Path(cfg.name).expanduser()
    modality = ""
    if path.exists():
        try:
            modality = detect(path, cfg)[0]
        except LaminaError:  # reported when the data is loaded
            pass
    if cfg.task != "auto":
        return cfg.task, modality
    if modality == "text" and (path.is_dir() or _suffix(path) == ".txt"):
        one_text = path.is_file() or not any(d.is_dir() for d in path.iterdir())
        return ("language-model" if one_text else "classify"), modality
    if modality == "table":  # classify or regress: what the label column holds
        from lamina.data.tabular import table_task

        try:
            return table_task(path, cfg), modality
        except LaminaError:  # reported when the data is loaded
            pass
    return "classify", modality


def declared_task(cfg: DataConfig) -> str:
    """The task ``cfg``'s data declares, found without loading it (see :func:`declared`)."""
    return declared(cfg)[0]


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
