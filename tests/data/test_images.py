from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamina.data.base import Preprocess
from lamina.data.images import load_image, load_image_folder
from lamina.errors import LaminaError


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    im.save(path)
    return path


def grey(h: int = 6, w: int = 6, v: int = 0) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * 7 + v).astype(np.uint8)


def make_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 3, ext: str = "png") -> Path:
    for c, name in enumerate(classes):
        for i in range(n):
            save(root / name / f"{i}.{ext}", grey(v=c * 50 + i))
    return root


def test_grey_folder(tmp_path: Path) -> None:
    ds = load_image_folder(make_folder(tmp_path / "pets", ("dog", "cat")))
    assert ds.classes == ["cat", "dog"]  # sorted
    assert ds.train.x.shape == (6, 1, 6, 6) and ds.train.x.dtype == torch.uint8
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1] and ds.train.y.dtype == torch.int64
    assert ds.modality == "image" and ds.flip is True and ds.test is None
    p = ds.preprocess
    assert (p.kind, p.scale, p.channels, p.size) == ("image", 255.0, 1, (6, 6))
    assert p.mean == (0.0,) and p.std == (1.0,)
    assert ds.name == "pets"
    assert torch.equal(ds.train.x[3, 0], torch.from_numpy(grey(v=0)))


def test_rgb_when_any_colour_and_common_size(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a", "b"), n=2, ext="jpg")
    save(tmp_path / "b" / "colour.png", np.full((10, 12, 3), (200, 10, 10), np.uint8))
    ds = load_image_folder(tmp_path)
    assert ds.preprocess.channels == 3 and ds.preprocess.size == (6, 6)  # the most common size
    assert ds.train.x.shape == (5, 3, 6, 6)
    red = ds.train.x[ds.train.y == 1][-1]
    assert red[0].float().mean() > 150 and red[1].float().mean() < 60


def test_image_size_and_formats(tmp_path: Path) -> None:
    for i, ext in enumerate(["png", "jpeg", "bmp"]):
        save(tmp_path / "x" / f"{i}.{ext}", grey(8, 8))
        save(tmp_path / "y" / f"{i}.{ext.upper()}", grey(5, 9))
    (tmp_path / "x" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path, image_size=4)
    assert ds.train.x.shape == (6, 1, 4, 4)


def test_webp(tmp_path: Path) -> None:
    for c in "ab":
        save(tmp_path / c / "1.webp", np.full((8, 8, 3), 120, np.uint8))
    ds = load_image_folder(tmp_path)
    assert ds.train.x.shape == (2, 3, 8, 8)


def test_grey_modes_stay_grey(tmp_path: Path) -> None:
    save(tmp_path / "a" / "la.png", grey(), "LA")
    save(tmp_path / "a" / "bw.png", grey(), "1")
    Image.fromarray(grey().astype(np.uint16) * 257).save(tmp_path / "a" / "16bit.png")
    save(tmp_path / "b" / "l.png", grey())
    ds = load_image_folder(tmp_path)
    assert ds.preprocess.channels == 1
    x16 = ds.train.x[0, 0]  # 16bit.png sorts first
    assert torch.equal(x16, torch.from_numpy(grey()))


def test_large_images_capped(tmp_path: Path) -> None:
    for c in "ab":
        save(tmp_path / c / "1.png", np.zeros((100, 200), np.uint8))
    assert load_image_folder(tmp_path).preprocess.size == (32, 64)


def test_split_folders(tmp_path: Path) -> None:
    make_folder(tmp_path / "train")
    make_folder(tmp_path / "test", n=2)
    ds = load_image_folder(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds.train) == 6 and ds.test is not None and len(ds.test) == 4


def test_split_folders_must_agree(tmp_path: Path) -> None:
    make_folder(tmp_path / "train")
    make_folder(tmp_path / "test", ("cat", "cow"))
    with pytest.raises(LaminaError, match="same class folders"):
        load_image_folder(tmp_path)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


def test_not_a_directory(tmp_path: Path) -> None:
    f = save(tmp_path / "one.png", grey())
    with pytest.raises(LaminaError, match="not a directory"):
        load_image_folder(f)


def test_no_class_folders(tmp_path: Path) -> None:
    save(tmp_path / "one.png", grey())
    with pytest.raises(LaminaError, match="no class sub-folders"):
        load_image_folder(tmp_path)


def test_one_class(tmp_path: Path) -> None:
    make_folder(tmp_path, ("only",))
    with pytest.raises(LaminaError, match="needs at least 2 classes"):
        load_image_folder(tmp_path)


def test_empty_class(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / "readme.txt").write_text("x")
    with pytest.raises(LaminaError, match="has no images") as e:
        load_image_folder(tmp_path)
    assert "emu" in str(e.value)


def test_truncated_png(tmp_path: Path) -> None:
    make_folder(tmp_path)
    good = save(tmp_path / "ref.png", np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8))
    data = good.read_bytes()
    good.unlink()
    bad = tmp_path / "dog" / "broken.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(LaminaError, match="remove or replace it") as e:
        load_image_folder(tmp_path)
    assert "broken.png" in str(e.value)


def test_corrupt_jpeg(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "cat" / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(LaminaError, match=r"junk\.jpg.*remove or replace it"):
        load_image_folder(tmp_path)


def test_bad_image_size(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="image_size"):
        load_image_folder(make_folder(tmp_path), image_size=0)


# ---------------------------------------------------------------------------------- load_image
def test_load_image_matches_folder(tmp_path: Path) -> None:
    make_folder(tmp_path, n=1)
    save(tmp_path / "cat" / "big.jpg", np.full((20, 30, 3), 90, np.uint8))
    ds = load_image_folder(tmp_path, image_size=5)
    for i, f in enumerate([tmp_path / "cat" / "0.png", tmp_path / "cat" / "big.jpg"]):
        assert torch.equal(load_image(f, ds.preprocess), ds.train.x[i])
        with Image.open(f) as im:
            assert torch.equal(load_image(im, ds.preprocess), ds.train.x[i])


@pytest.mark.parametrize("layout", ["hw", "chw_tensor", "hwc_array", "hw1"])
def test_load_image_arrays(layout: str) -> None:
    g = grey(6, 6)
    arr = {
        "hw": g,
        "chw_tensor": torch.from_numpy(np.stack([g, g, g])),
        "hwc_array": np.stack([g, g, g], axis=-1),
        "hw1": g[:, :, None],
    }[layout]
    pre = Preprocess(kind="image", scale=255, channels=1, size=(6, 6))
    assert torch.equal(load_image(arr, pre)[0], torch.from_numpy(g))
    rgb = load_image(arr, Preprocess(kind="image", scale=255, channels=3, size=(3, 3)))
    assert rgb.shape == (3, 3, 3) and rgb.dtype == torch.uint8


def test_load_image_errors(tmp_path: Path) -> None:
    pre = Preprocess(kind="image", scale=255, channels=1, size=(4, 4))
    with pytest.raises(LaminaError, match="does not exist"):
        load_image(tmp_path / "nope.png", pre)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    with pytest.raises(LaminaError, match="remove or replace it"):
        load_image(tmp_path / "bad.png", pre)
    with pytest.raises(LaminaError, match="uint8"):
        load_image(np.zeros((4, 4), np.float32), pre)
    with pytest.raises(LaminaError, match="expected"):
        load_image(np.zeros((5, 5, 7), np.uint8), pre)
    with pytest.raises(LaminaError, match="image Preprocess"):
        load_image(grey(), Preprocess())
