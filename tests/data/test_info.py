from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lamina.data.base import Dataset, Preprocess, Split
from lamina.data.info import describe, sample_grid


def image_ds(channels: int = 1) -> Dataset:
    x = torch.randint(0, 256, (12, channels, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1])
    pre = Preprocess(kind="image", scale=255, channels=channels, size=(8, 8))
    return Dataset("img", ["ant", "bee", "cow"], Split(x, y), test=Split(x[:3], y[:3]), preprocess=pre, source="mem")


def test_describe() -> None:
    d = describe(image_ds())
    assert d["name"] == "img" and d["source"] == "mem" and d["modality"] == "image"
    assert d["input_shape"] == [1, 8, 8] and d["classes"] == ["ant", "bee", "cow"] and d["num_classes"] == 3
    assert d["splits"]["train"] == {"size": 12, "per_class": {"ant": 5, "bee": 4, "cow": 3}}
    assert d["splits"]["test"]["size"] == 3 and "val" not in d["splits"]


def _check_png(p: Path) -> None:
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_grid_grey_and_rgb(tmp_path: Path) -> None:
    _check_png(sample_grid(image_ds(1), tmp_path / "grey.png", per_class=4))
    _check_png(sample_grid(image_ds(3), tmp_path / "sub" / "rgb.png", per_class=6, split="test"))


def test_grid_signals(tmp_path: Path) -> None:
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(9, 2, 30)).astype(np.float32))
    ds = Dataset("sig", ["0", "1", "2"], Split(x, torch.arange(9) % 3), modality="signal")
    _check_png(sample_grid(ds, tmp_path / "sig.png", per_class=3))
    vec = Dataset("vec", ["0", "1"], Split(torch.rand(6, 5), torch.arange(6) % 2), modality="vector")
    _check_png(sample_grid(vec, tmp_path / "vec.png"))
