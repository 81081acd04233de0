import gzip
import hashlib
import struct
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lamina.config import DataConfig
from lamina.data import builtin
from lamina.data.base import DATASETS, build_dataset
from lamina.data.idx import read_idx
from lamina.errors import LaminaError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_gz(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def write_set(folder: Path, n_train: int = 6, n_test: int = 4, fill: int = 0, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": np.full((n_train, 28, 28), fill),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": np.full((n_test, 28, 28), fill),
        "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10,
    }
    for name, arr in arrays.items():
        data = idx_gz(arr)
        if gz:
            (folder / name).write_bytes(data)
        else:
            (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    return folder


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point every source at tmp_path so that no test sees the machine's real data."""
    p = {"data": tmp_path / "data", "cache": tmp_path / "xdg" / "lamina", "debian": tmp_path / "debian"}
    monkeypatch.setenv("LAMINA_DATA", str(p["data"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(builtin, "DEBIAN_ROOT", p["debian"])
    return p


def test_registered() -> None:
    assert {"fashion-mnist", "mnist", "digits", "mnist1d"} <= set(DATASETS.names())
    assert DATASETS.get("mnist").fetch is not None and DATASETS.get("digits").fetch is None


def test_cache_dir_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert builtin.cache_dir() == tmp_path / "lamina"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert builtin.cache_dir() == Path.home() / ".cache" / "lamina"


def test_load_fashion(places: dict[str, Path]) -> None:
    write_set(places["debian"] / "fashion-mnist", fill=7)
    ds = DATASETS.get("fashion-mnist").load(DataConfig())
    assert ds.train.x.shape == (6, 1, 28, 28) and ds.train.x.dtype == torch.uint8 and len(ds.test) == 4
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    assert ds.flip is True and ds.modality == "image" and ds.train.y.dtype == torch.int64
    p = ds.preprocess
    assert (p.kind, p.scale, p.channels, p.size) == ("image", 255.0, 1, (28, 28))
    assert ds.source == str(places["debian"] / "fashion-mnist")


def test_source_order(places: dict[str, Path]) -> None:
    write_set(places["debian"] / "mnist")
    write_set(places["cache"] / "mnist", gz=False)
    ds = DATASETS.get("mnist").load(DataConfig(name="mnist"))
    assert ds.source == str(places["cache"] / "mnist") and ds.flip is False
    assert ds.classes == [str(i) for i in range(10)]
    write_set(places["data"] / "mnist")
    assert builtin.find_idx("mnist") == places["data"] / "mnist"


def test_not_found_lists_places(places: dict[str, Path]) -> None:
    with pytest.raises(LaminaError) as e:
        DATASETS.get("fashion-mnist").load(DataConfig())
    msg = str(e.value)
    for where in places.values():
        assert str(where) in msg or str(where / "fashion-mnist") in msg
    assert "lamina data fetch fashion-mnist" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "LAMINA_DATA" in msg and "\n" not in msg
    with pytest.raises(LaminaError, match="lamina data fetch mnist") as e2:
        DATASETS.get("mnist").load(DataConfig(name="mnist"))
    assert "apt-get" not in str(e2.value)


def test_incomplete_set_is_not_found(places: dict[str, Path]) -> None:
    folder = write_set(places["cache"] / "mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(LaminaError, match="not found"):
        builtin.load_idx_set("mnist")


def test_corrupt_file_names_it(places: dict[str, Path]) -> None:
    folder = write_set(places["cache"] / "mnist")
    f = folder / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:30])
    with pytest.raises(LaminaError, match="fetch it again") as e:
        builtin.load_idx_set("mnist")
    assert str(f) in str(e.value)


def test_mismatched_files(places: dict[str, Path]) -> None:
    folder = write_set(places["cache"] / "mnist")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.zeros(3)))
    with pytest.raises(LaminaError, match="fetch them again"):
        builtin.load_idx_set("mnist")


def _serve_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_set(tmp_path / "server")
    digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in src.iterdir()}
    spec = replace(builtin.IDX_SETS["mnist"], base_url=src.as_uri() + "/", sha256=digests)
    monkeypatch.setitem(builtin.IDX_SETS, "mnist", spec)


def test_fetch_downloads_into_cache(places: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve_set(tmp_path, monkeypatch)
    assert builtin.idx_status("mnist").startswith("not downloaded")
    msg = DATASETS.get("mnist").fetch()
    assert str(places["cache"] / "mnist") in msg
    assert builtin.load_idx_set("mnist").source == str(places["cache"] / "mnist")
    assert builtin.idx_status("mnist") == str(places["cache"] / "mnist")
    assert "already available" in builtin.fetch_idx("mnist")


def test_fetch_reports_existing_source(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write_set(places["debian"] / "fashion-mnist")

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(builtin, "download", boom)
    msg = builtin.fetch_idx("fashion-mnist")
    assert "already available" in msg and str(places["debian"] / "fashion-mnist") in msg


def test_fetch_offline(places: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = replace(builtin.IDX_SETS["fashion-mnist"], base_url=(tmp_path / "nowhere").as_uri() + "/")
    monkeypatch.setitem(builtin.IDX_SETS, "fashion-mnist", spec)
    with pytest.raises(LaminaError, match="no internet") as e:
        builtin.fetch_idx("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(e.value) and "LAMINA_DATA" in str(e.value)


def test_fetch_checksum_mismatch(places: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve_set(tmp_path, monkeypatch)
    spec = builtin.IDX_SETS["mnist"]
    bad = dict.fromkeys(spec.sha256, "0" * 64)
    monkeypatch.setitem(builtin.IDX_SETS, "mnist", replace(spec, sha256=bad))
    with pytest.raises(LaminaError, match="checksum mismatch"):
        builtin.fetch_idx("mnist")


def test_digits() -> None:
    ds = DATASETS.get("digits").load(DataConfig(name="digits"))
    assert ds.train.x.shape == (1797, 1, 8, 8) and ds.train.x.dtype == torch.uint8
    assert int(ds.train.x.max()) == 16 and ds.test is None and ds.flip is False
    assert (ds.preprocess.scale, ds.preprocess.size, ds.preprocess.channels) == (16.0, (8, 8), 1)
    full = build_dataset(DataConfig(name="digits"))
    assert full.test is not None and full.val is not None
    assert len(full.train) + len(full.val) + len(full.test) == 1797


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(LaminaError, match="pip install scikit-learn"):
        builtin.load_digits()


def test_mnist1d_generated_then_cached(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ds = builtin.load_mnist1d()
    assert ds.train.x.shape == (4000, 1, 40) and ds.train.x.dtype == torch.float32
    assert ds.test is not None and len(ds.test) == 1000 and ds.modality == "signal"
    assert ds.preprocess.kind == "array" and ds.flip is False
    cached = places["cache"] / builtin.MNIST1D_CACHE
    assert cached.is_file() and builtin.mnist1d_status() == str(cached)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # a second load must not generate
    again = builtin.load_mnist1d()
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)


def test_mnist1d_missing_package(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(LaminaError, match="pip install mnist1d"):
        builtin.load_mnist1d()


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_debian_fashion_labels() -> None:
    f = DEBIAN_FASHION / "train-labels-idx1-ubyte.gz"
    y = read_idx(f)
    assert y.shape == (60000,) and int(y.max()) == 9
    assert hashlib.sha256(f.read_bytes()).hexdigest() == builtin.IDX_SETS["fashion-mnist"].sha256[f.name]


def test_split_seed_fixes_the_splits_whatever_the_training_seed() -> None:
    a = build_dataset(DataConfig(name="digits", split_seed=3), seed=0)
    b = build_dataset(DataConfig(name="digits", split_seed=3), seed=1)
    c = build_dataset(DataConfig(name="digits"), seed=1)  # -1: the training seed draws them
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.test.x, c.test.x)
