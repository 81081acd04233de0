"""What ``lamina train PATH`` decides a path holds (sources.detect), and that it says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.config import DataConfig
from lamina.data.sources import declared_task, detect
from lamina.errors import LaminaError


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cfg(path: Path, **kw: object) -> DataConfig:
    return DataConfig(name=str(path), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name,modality", [
    ("reads.fasta", "sequence"), ("reads.fa", "sequence"), ("reads.fna.gz", "sequence"), ("prot.faa", "sequence"),
    ("table.parquet", "table"), ("book.txt", "text"), ("arrays.npz", "array"),
])
def test_a_file_is_detected_by_its_suffix(tmp_path: Path, name: str, modality: str) -> None:
    found, why = detect(_touch(tmp_path / name), cfg(tmp_path / name))
    assert found == modality and why


def test_a_csv_is_text_with_a_text_column_and_a_table_without(tmp_path: Path) -> None:
    texts = _touch(tmp_path / "texts.csv", b"text,label\nhello,a\n")
    table = _touch(tmp_path / "table.csv", b"x1,x2,label\n1,2,a\n")
    assert detect(texts, cfg(texts))[0] == "text"
    assert detect(table, cfg(table))[0] == "table"
    assert detect(table, cfg(table, text_column="x1"))[0] == "text"  # naming a text column means text


def test_folders_are_detected_by_the_files_in_their_class_folders(tmp_path: Path) -> None:
    for kind, suffix in (("image", ".png"), ("audio", ".wav"), ("text", ".txt")):
        root = tmp_path / kind
        for c in ("a", "b"):
            _touch(root / c / f"1{suffix}")
        found, why = detect(root, cfg(root))
        assert found == kind and "2 folders" in why


def test_background_noise_and_hidden_files_do_not_count(tmp_path: Path) -> None:
    root = tmp_path / "kw"
    _touch(root / "yes" / "1.wav")
    _touch(root / "no" / "1.wav")
    _touch(root / "_background_noise_" / "README.md")
    _touch(root / ".DS_Store")
    assert detect(root, cfg(root))[0] == "audio"


def test_a_mixed_folder_is_an_error_naming_the_files_that_do_not_fit(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for i in range(3):
        _touch(root / "a" / f"{i}.wav")
    _touch(root / "b" / "odd.png")
    with pytest.raises(LaminaError, match=r"most are audio files.*b/odd\.png"):
        detect(root, cfg(root))


def test_data_modality_overrides_detection_and_unknown_names_are_errors(tmp_path: Path) -> None:
    f = _touch(tmp_path / "odd.csv", b"text,label\nx,a\n")
    assert detect(f, cfg(f, modality="table")) == ("table", "set by data.modality")
    with pytest.raises(LaminaError, match=r"unknown data\.modality .tabel.*table"):
        detect(f, cfg(f, modality="tabel"))


def test_unknown_files_and_empty_folders_are_one_line_errors(tmp_path: Path) -> None:
    f = _touch(tmp_path / "song.mp3")
    with pytest.raises(LaminaError, match="don't know how to load"):
        detect(f, cfg(f))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaminaError, match=r"holds no images, \.wav or \.txt files"):
        detect(tmp_path / "empty", cfg(tmp_path / "empty"))


def test_declared_task_of_each_kind_of_path(tmp_path: Path) -> None:
    book = _touch(tmp_path / "book.txt")
    assert declared_task(cfg(book)) == "language-model"
    fasta = _touch(tmp_path / "r.fa")
    assert declared_task(cfg(fasta)) == "classify"
    assert declared_task(cfg(fasta, task="regress")) == "regress"
