from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamina.config import DataConfig
from lamina.data import builtin, sources
from lamina.data.base import DATASETS, Dataset, DatasetEntry, Split, build_dataset
from lamina.errors import LaminaError


def toy(cfg: DataConfig) -> Dataset:
    return Dataset("toy", ["a", "b"], Split(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])), modality="vector")


@pytest.fixture
def registered_toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DATASETS._items, "toy", DatasetEntry("toy", toy, "a toy"))


def image_folder(root: Path) -> Path:
    for c in ("a", "b"):
        for i in range(5):
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((10, 10), i * 20 + (c == "b") * 100, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_registered_name(registered_toy: None) -> None:
    assert sources.load(DataConfig(name="toy")).name == "toy"


def test_folder_uses_image_size(tmp_path: Path) -> None:
    ds = sources.load(DataConfig(name=str(image_folder(tmp_path / "imgs")), image_size=4))
    assert ds.input_shape == (1, 4, 4) and ds.classes == ["a", "b"]


def test_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.random.rand(8, 3), y=np.arange(8) % 2)
    ds = sources.load(DataConfig(name=str(tmp_path / "d.npz")))
    assert ds.modality == "vector" and ds.input_shape == (3,)


@pytest.mark.parametrize("name", ["data/nope", "nope.png", "./x"])
def test_missing_path(name: str) -> None:
    with pytest.raises(LaminaError, match=f"path '{name}' does not exist"):
        sources.load(DataConfig(name=name))


def test_missing_npz(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="does not exist"):
        sources.load(DataConfig(name=str(tmp_path / "gone.npz")))


def test_unsupported_file(tmp_path: Path) -> None:
    (tmp_path / "arrays.h5").write_bytes(b"\x89HDF")
    with pytest.raises(LaminaError, match="don't know how to load"):
        sources.load(DataConfig(name=str(tmp_path / "arrays.h5")))


def test_unknown_name() -> None:
    with pytest.raises(LaminaError, match="did you mean 'fashion-mnist'"):
        sources.load(DataConfig(name="fashon-mnist"))
    with pytest.raises(LaminaError, match="unknown dataset 'zzzqqq'"):
        sources.load(DataConfig(name="zzzqqq"))


def test_empty_name() -> None:
    with pytest.raises(LaminaError, match="empty"):
        sources.load(DataConfig(name=" "))


def test_build_dataset_on_folder(tmp_path: Path) -> None:
    ds = build_dataset(DataConfig(name=str(image_folder(tmp_path / "imgs")), val_fraction=0.25, test_fraction=0.2))
    assert ds.test is not None and ds.val is not None
    assert len(ds.train) + len(ds.val) + len(ds.test) == 10
    assert ds.preprocess.mean != (0.0,) and ds.preprocess.channels == 1


def test_build_dataset_on_npz_with_test(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 255, (20, 6, 6, 3), dtype=np.uint8)
    y = np.arange(20) % 2
    np.savez(tmp_path / "rgb.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    ds = build_dataset(DataConfig(name=str(tmp_path / "rgb.npz"), flip=False))
    assert ds.input_shape == (3, 6, 6) and len(ds.test) == 4 and len(ds.preprocess.mean) == 3
    assert ds.flip is False


def test_dataset_status(registered_toy: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("LAMINA_DATA", raising=False)
    monkeypatch.setattr(builtin, "DEBIAN_ROOT", tmp_path / "debian")
    assert sources.dataset_status("toy") == "registered"
    assert sources.dataset_status("mnist") == "not downloaded (lamina data fetch mnist)"
    assert "scikit-learn" in sources.dataset_status("digits")
    assert "generated" in sources.dataset_status("mnist1d")
    with pytest.raises(LaminaError, match="unknown dataset"):
        sources.dataset_status("nope")


def test_fetch_without_download(registered_toy: None) -> None:
    assert sources.fetch("toy") == "toy needs no download: registered"
    assert "needs no download" in sources.fetch("digits")
    with pytest.raises(LaminaError, match="unknown dataset"):
        sources.fetch("nope")
