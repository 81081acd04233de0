"""Lazily decoded image folders: the same examples as the eager path, through a torch DataLoader."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lamina
from lamina.config import DataConfig
from lamina.data import images
from lamina.data.augment import Augment
from lamina.data.base import Split, build_dataset, channel_stats
from lamina.data.gpu_loader import DeviceLoader, TorchLoader, _fits, make_loader
from lamina.data.images import LazyImages, load_image_folder
from lamina.errors import LaminaError

CLASSES = ("ant", "bee", "cat")


def make_folder(root: Path, *, rgb: bool = False, n: int = 6) -> Path:
    """3 classes x ``n`` PNGs of 10x12 (one of 20x24, resized on load); with ``rgb``, some RGB."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(n):
            h, w = (20, 24) if (c, i) == (1, 2) else (10, 12)
            if rgb and i % 2:
                im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
            else:
                im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
            im.save(root / name / f"{i}.png")
    return root


def corrupt_jpeg(png: Path) -> Path:
    """Replace ``png`` by a JPEG whose header is whole (the header pass reads it) but whose pixel
    data is cut short. (A PNG will not do: reading its EXIF in the header pass decodes it.)"""
    path = png.with_suffix(".jpg")
    with Image.open(png) as im:
        im.convert("RGB").resize((64, 64)).save(path, quality=95)
    png.unlink()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_lazy_gives_the_eager_examples(tmp_path: Path, rgb: bool) -> None:
    folder = make_folder(tmp_path / "f", rgb=rgb)
    eager, lazy = load_image_folder(folder, lazy=False), load_image_folder(folder, lazy=True)
    x, lx = eager.train.x, lazy.train.x
    assert isinstance(x, torch.Tensor) and isinstance(lx, LazyImages)
    assert lx.shape == x.shape == (18, 3 if rgb else 1, 10, 12) and lx.dtype == x.dtype == torch.uint8
    assert len(lx) == 18 and lx.dim() == 4
    assert (lx.element_size(), lx.nelement()) == (x.element_size(), x.nelement())
    for i in range(len(x)):
        assert torch.equal(lx[i], x[i])
    assert torch.equal(lazy.train.y, eager.train.y)
    assert (lazy.classes, lazy.preprocess, lazy.flip) == (eager.classes, eager.preprocess, eager.flip)
    idx = torch.tensor([17, 0, 5, 5])
    assert torch.equal(lx[idx], x[idx]) and torch.equal(lx[[3, -1]], x[[3, -1]])
    assert torch.equal(lx[2:9:3], x[2:9:3]) and torch.equal(lx[torch.tensor(4)], x[4]) and torch.equal(lx[-2], x[-2])
    assert lx[[]].shape == (0, *x.shape[1:])
    sub = lx.take(idx)
    assert isinstance(sub, LazyImages) and torch.equal(sub[torch.arange(4)], x[idx])
    assert torch.equal(pickle.loads(pickle.dumps(lx))[:], x)
    assert channel_stats(lx, 255.0) == channel_stats(x, 255.0)
    with pytest.raises(IndexError):
        lx[18]


def test_channel_stats_decode_a_bounded_seeded_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lx = load_image_folder(make_folder(tmp_path / "f"), lazy=True).train.x
    seen: list[list[int]] = []
    getitem = LazyImages.__getitem__

    def spy(self: LazyImages, idx: object) -> torch.Tensor:
        seen.append(torch.as_tensor(idx).tolist())
        return getitem(self, idx)

    monkeypatch.setattr(LazyImages, "__getitem__", spy)
    assert channel_stats(lx, 255.0, max_lazy=5, seed=1) == channel_stats(lx, 255.0, max_lazy=5, seed=1)
    assert len(seen[0]) == 5 and seen[0] == seen[1] and seen[0] != list(range(5))


def test_build_dataset_with_the_torch_loader_keeps_splits_lazy(tmp_path: Path) -> None:
    folder = str(make_folder(tmp_path / "f", rgb=True))
    lazy = build_dataset(DataConfig(name=folder, loader="torch", val_fraction=0.2))
    eager = build_dataset(DataConfig(name=folder, loader="device", val_fraction=0.2))
    assert set(lazy.splits()) == set(eager.splits()) == {"train", "val", "test"}
    for name, s in lazy.splits().items():
        e = eager.splits()[name]
        assert isinstance(s.x, LazyImages) and isinstance(e.x, torch.Tensor)
        assert torch.equal(s.y, e.y) and torch.equal(s.x[:], e.x)
    assert lazy.input_shape == eager.input_shape == (3, 10, 12)
    assert lazy.preprocess == eager.preprocess  # every example sampled: the same statistics


def test_lazy_none_follows_the_size_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "f")
    assert isinstance(load_image_folder(folder).train.x, torch.Tensor)
    monkeypatch.setattr(images, "LAZY_BYTES", 18 * 10 * 12 - 1)
    assert isinstance(load_image_folder(folder).train.x, LazyImages)
    assert isinstance(load_image_folder(folder, lazy=False).train.x, torch.Tensor)


def test_torch_loader_with_workers_yields_what_the_device_loader_yields(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", rgb=True)
    eager, lazy = load_image_folder(folder, lazy=False), load_image_folder(folder, lazy=True)
    kw = dict(batch_size=4, device=torch.device("cpu"), preprocess=eager.preprocess, shuffle=True, drop_last=True,
              augment=Augment(translate=2, flip=True, cutout=3), seed=7)
    dev, tl = DeviceLoader(eager.train, **kw), TorchLoader(lazy.train, workers=2, **kw)
    for _ in range(2):  # two epochs: a new order each
        pairs = list(zip(dev, tl, strict=True))
        assert len(pairs) == 4
        for (x1, y1), (x2, y2) in pairs:
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_lazy_splits_choose_the_torch_loader(tmp_path: Path) -> None:
    split = load_image_folder(make_folder(tmp_path / "f"), lazy=True).train
    kw = dict(batch_size=4, device=torch.device("cpu"), preprocess=images.Preprocess(scale=255.0), train=True)
    assert not _fits(split, torch.device("cpu"))
    assert isinstance(make_loader(split, kind="auto", **kw), TorchLoader)
    with pytest.raises(LaminaError, match=r"does not fit.*use data\.loader=torch"):
        make_loader(split, kind="device", **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_fails_when_its_batch_is_decoded(tmp_path: Path, workers: int) -> None:
    folder = make_folder(tmp_path / "f")
    bad = corrupt_jpeg(folder / "cat" / "4.png")  # example 16 of 18
    with pytest.raises(LaminaError) as eager_error:
        load_image_folder(folder, lazy=False)
    ds = load_image_folder(folder, lazy=True)  # the header pass still reads it
    loader = TorchLoader(ds.train, workers=workers, batch_size=4, device=torch.device("cpu"),
                         preprocess=ds.preprocess)
    it = iter(loader)
    for _ in range(4):  # examples 0..15 decode
        next(it)
    with pytest.raises(LaminaError) as lazy_error:
        next(it)
    msg = str(lazy_error.value)
    assert msg == str(eager_error.value) and str(bad) in msg and "\n" not in msg
    with pytest.raises(LaminaError, match="cannot read image"):
        ds.train.x[16]


def test_train_end_to_end_through_the_torch_loader(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", rgb=True)
    run = lamina.train(str(folder), epochs=1, quiet=True, out=str(tmp_path / "r"),
                       overrides=["data.loader=torch", "data.workers=0"])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["test_examples"] > 0 and run.summary == summary


def test_split_take_keeps_lazy_examples_lazy(tmp_path: Path) -> None:
    split = load_image_folder(make_folder(tmp_path / "f"), lazy=True).train
    sub = split.take(torch.tensor([1, 7]))
    assert isinstance(sub, Split) and isinstance(sub.x, LazyImages) and sub.y.tolist() == [0, 1]
    assert torch.equal(sub.x[:], split.x[torch.tensor([1, 7])])
