"""Image folders, single images and ``.npz`` arrays -> uint8 tensors ``(N, C, H, W)``.

One function decodes every image (:func:`_to_array`), so an image seen by ``predict`` goes
through exactly the conversion (grey or RGB) and resize that the training images went through.
Folders too large to decode up front stay on disk as :class:`LazyImages`, decoded on access
(by a DataLoader's workers, through ``data.loader=torch``).
"""

from __future__ import annotations

import math
import sys
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from lamina.data.base import Dataset, Preprocess, Split
from lamina.data.folders import class_folders, scan_splits
from lamina.errors import LaminaError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
MAX_AUTO_SIDE = 64  # without image_size, the common size is shrunk so its larger side is at most this
PROGRESS_MIN_FILES = 2000
LAZY_BYTES = 2 * 2**30  # load_image_folder(lazy=None) decodes on access above this many decoded bytes
# DecompressionBombWarning is an error when warnings are (python -W error): then it is refused like the rest
_PIL_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError,
               Image.DecompressionBombWarning)


def _bad_image(path: Path | str, e: BaseException) -> LaminaError:
    return LaminaError(f"cannot read image {path}: {e}; remove or replace it")


def _check_pixels(im: Image.Image) -> None:
    """Refuse an image larger than PIL's decompression-bomb limit (PIL only warns below twice that)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.width * im.height > limit:
        raise ValueError(f"{im.width}x{im.height} pixels is more than PIL.Image.MAX_IMAGE_PIXELS={limit}")


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    """(H, W) after the EXIF orientation is applied, read from the header only."""
    w, h = im.size
    if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
        w, h = h, w
    return h, w


def _grey(im: Image.Image) -> Image.Image:
    """Any single-channel mode -> 'L', scaling 16/32-bit and float values into 0..255."""
    if im.mode in ("L", "1", "LA", "La"):
        return im.convert("L")
    a = np.asarray(im)
    if a.dtype.kind == "f":
        a = a * 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else a
        a = np.nan_to_num(a)
    elif a.size and int(a.max()) > 255:
        a = a / 257.0 if int(a.max()) <= 65535 else a / (2**24 + 1)  # 16-bit or 32-bit samples
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))  # 2-D uint8: mode L


def _to_array(im: Image.Image, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Decode, orient, convert to grey/RGB and resize one image -> uint8 ``(C, H, W)``."""
    im = ImageOps.exif_transpose(im)
    if channels == 1:
        im = _grey(im) if im.mode in GREY_MODES else im.convert("L")
    else:
        im = _grey(im).convert("RGB") if im.mode in GREY_MODES - {"L", "1", "LA", "La"} else im.convert("RGB")
    h, w = size
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    a = np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _auto_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The most common (H, W), shrunk (keeping its aspect) so the larger side is <= MAX_AUTO_SIDE."""
    h, w = Counter(sizes).most_common(1)[0][0]
    if max(h, w) > MAX_AUTO_SIDE:
        f = MAX_AUTO_SIDE / max(h, w)
        h, w = max(1, round(h * f)), max(1, round(w * f))
    return h, w


@contextmanager
def _progress(total: int, what: str) -> Iterator[Any]:
    """Yield ``advance()``; draws a rich bar only for many files on a terminal."""
    if total <= PROGRESS_MIN_FILES or not sys.stdout.isatty():
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.rglob("*")
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and not f.name.startswith(".")
    )


def _scan(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and (file, label) pairs of a folder with one sub-folder per class."""
    folders = class_folders(root)
    if not folders:
        raise LaminaError(
            f"image folder {root} has no class sub-folders; put each class's images in its own"
            f" sub-folder, e.g. {root}/cat/1.png and {root}/dog/2.png"
        )
    if len(folders) == 1:
        raise LaminaError(
            f"image folder {root} has only one class folder '{folders[0].name}'; a classifier needs at"
            " least 2 classes: add a sub-folder per class"
        )
    items: list[tuple[Path, int]] = []
    for label, d in enumerate(folders):
        files = _image_files(d)
        if not files:
            raise LaminaError(
                f"class folder {d} has no images ({', '.join(IMAGE_SUFFIXES)}); add some or remove the folder"
            )
        items += [(f, label) for f in files]
    return [d.name for d in folders], items


def _decode_file(f: Path | str, channels: int, size: tuple[int, int]) -> Tensor:
    """One image file -> uint8 ``(C, H, W)``; unreadable files raise the one-line :func:`_bad_image`."""
    try:
        with Image.open(f) as im:
            _check_pixels(im)
            return torch.from_numpy(_to_array(im, channels, size))
    except _PIL_ERRORS as e:
        raise _bad_image(f, e) from None


def _decode_all(items: list[tuple[Path, int]], channels: int, size: tuple[int, int], what: str) -> Split:
    x = torch.empty((len(items), channels, *size), dtype=torch.uint8)
    with _progress(len(items), what) as advance:
        for i, (f, _) in enumerate(items):
            x[i] = _decode_file(f, channels, size)
            advance()
    return Split(x, _labels(items))


def _labels(items: list[tuple[Path, int]]) -> Tensor:
    return torch.tensor([label for _, label in items], dtype=torch.int64)


class LazyImages:
    """Images decoded from their files on every access: an array-like ``(N, C, H, W)`` uint8.

    For folders too large to decode into memory. Indexing with an int gives one ``(C, H, W)``
    tensor; a slice, a list or a 1-D tensor of indices gives them stacked ``(n, C, H, W)``.
    Decoding is exactly the eager path's (:func:`_to_array`). Only plain attributes (path strings,
    channels, size), so a DataLoader's worker processes receive it cheaply and decode there.
    """

    dtype = torch.uint8

    def __init__(self, files: Sequence[str | Path], channels: int, size: tuple[int, int]) -> None:
        self.files = [str(f) for f in files]
        self.channels = int(channels)
        self.size = (int(size[0]), int(size[1]))

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, *self.size))

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} files, channels={self.channels}, size={self.size})"

    def dim(self) -> int:
        return 4

    def element_size(self) -> int:
        return 1

    def nelement(self) -> int:
        return math.prod(self.shape)

    def _indices(self, idx: Any) -> list[int]:
        if isinstance(idx, slice):
            return list(range(*idx.indices(len(self))))
        t = torch.as_tensor(idx)
        if t.numel() == 0 and t.dim() == 1:
            return []
        if t.dtype == torch.bool:
            if t.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {tuple(t.shape)} for {len(self)} images")
            t = torch.nonzero(t).flatten()
        if t.dim() != 1 or t.dtype.is_floating_point or t.is_complex():
            raise IndexError(f"LazyImages takes an int, a slice or a 1-D list of indices, got {idx!r}")
        return [self._index(int(i)) for i in t.tolist()]

    def _index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for {len(self)} images")
        return i % len(self)

    def __getitem__(self, idx: Any) -> Tensor:
        if isinstance(idx, int | np.integer) or (isinstance(idx, Tensor) and idx.dim() == 0 and not idx.is_floating_point()):
            return _decode_file(self.files[self._index(int(idx))], self.channels, self.size)
        picks = self._indices(idx)
        x = torch.empty((len(picks), self.channels, *self.size), dtype=torch.uint8)
        for j, i in enumerate(picks):
            x[j] = _decode_file(self.files[i], self.channels, self.size)
        return x

    def take(self, idx: Any) -> LazyImages:
        """The images at ``idx`` (any index ``__getitem__`` accepts), without decoding any."""
        picks = [self._index(int(idx))] if isinstance(idx, int) else self._indices(idx)
        return LazyImages([self.files[i] for i in picks], self.channels, self.size)


def load_image_folder(path: str | Path, image_size: int | None = None, *, lazy: bool | None = None) -> Dataset:
    """Load a folder with one sub-folder of images per class (sorted names are the classes).

    Images are grey when every one is grey, else RGB, and are resized (bilinear) to
    ``image_size`` squared, or to the most common size capped at 64 pixels a side. A folder
    holding ``train/`` and ``test/`` (or ``val/``) folders of class folders gives those splits.
    ``lazy``: keep file paths (:class:`LazyImages`) and decode on access instead of decoding all
    now; None decodes lazily only when the decoded images would exceed ``LAZY_BYTES``.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise LaminaError(f"image folder {root} does not exist; check the path")
    if not root.is_dir():
        raise LaminaError(f"{root} is not a directory; give a folder with one sub-folder of images per class")
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 1):
        raise LaminaError(f"image_size must be a positive number of pixels, got {image_size!r}")
    _, scanned = scan_splits(root, _scan)
    classes = scanned["train"][0]
    modes, sizes = set(), []
    for _, items in scanned.values():
        for f, _ in items:
            try:
                with Image.open(f) as im:  # header only: cheap
                    _check_pixels(im)
                    modes.add(im.mode)
                    sizes.append(_oriented_size(im))
            except _PIL_ERRORS as e:
                raise _bad_image(f, e) from None
    channels = 1 if modes <= GREY_MODES else 3
    size = (int(image_size), int(image_size)) if image_size else _auto_size(sizes)
    if lazy is None:
        lazy = len(sizes) * channels * size[0] * size[1] > LAZY_BYTES
    if lazy:
        splits = {
            k: Split(LazyImages([f for f, _ in items], channels, size), _labels(items))
            for k, (_, items) in scanned.items()
        }
    else:
        splits = {k: _decode_all(items, channels, size, f"decoding {k} images") for k, (_, items) in scanned.items()}
    return Dataset(
        name=root.resolve().name,
        classes=classes,
        train=splits["train"],
        test=splits.get("test"),
        val=splits.get("val"),
        modality="image",
        preprocess=Preprocess(kind="image", scale=255.0, channels=channels, size=size),
        flip=True,
        source=str(root.resolve()),
    )


def load_image(image: str | Path | Image.Image | np.ndarray | Tensor, preprocess: Preprocess) -> Tensor:
    """Decode one image for prediction, exactly as the folder loader did -> uint8 ``(C, H, W)``.

    Accepts a path, a PIL image, or a uint8 array/tensor ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``.
    """
    if preprocess.kind != "image" or preprocess.channels is None or preprocess.size is None:
        raise LaminaError("load_image needs an image Preprocess with channels and size (from the trained model)")
    if isinstance(image, Image.Image):
        try:
            return torch.from_numpy(_to_array(image, preprocess.channels, preprocess.size))
        except _PIL_ERRORS as e:
            raise _bad_image("(PIL image)", e) from None
    if isinstance(image, np.ndarray | Tensor):
        return torch.from_numpy(_to_array(_from_array(image), preprocess.channels, preprocess.size))
    path = Path(image).expanduser()
    if not path.is_file():
        raise LaminaError(f"image {path} does not exist; check the path")
    return _decode_file(path, preprocess.channels, preprocess.size)


def _from_array(a: np.ndarray | Tensor) -> Image.Image:
    """uint8 ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` (C in 1, 3, 4) -> PIL image."""
    is_tensor = isinstance(a, Tensor)
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    if arr.dtype != np.uint8:
        raise LaminaError(f"image arrays must be uint8 (0..255), got {arr.dtype}; convert with .astype('uint8')")
    if arr.ndim == 3:
        chw, hwc = arr.shape[0] in (1, 3, 4), arr.shape[2] in (1, 3, 4)
        if chw and (is_tensor or not hwc):  # tensors are channel-first by convention, arrays channel-last
            arr = arr.transpose(1, 2, 0)
        elif not hwc:
            raise LaminaError(f"image array of shape {arr.shape}: expected (H, W), (C, H, W) or (H, W, C), C in 1, 3, 4")
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
    elif arr.ndim != 2:
        raise LaminaError(f"image array of shape {arr.shape}: expected (H, W), (C, H, W) or (H, W, C)")
    return Image.fromarray(np.ascontiguousarray(arr))  # mode from the shape: L, RGB or RGBA


# ---------------------------------------------------------------------------------------------- npz
NPZ_KEYS = "'x' and 'y' (or 'x_train', 'y_train' and optionally 'x_test', 'y_test')"
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError, MemoryError)


def _bad_npz(path: Path, why: str) -> LaminaError:
    return LaminaError(f"{path} is not a valid .npz file ({why}); re-create it with numpy.savez(path, x=..., y=...)")


def _npz_array(path: Path, z: Any, key: str) -> np.ndarray:
    """Read one array, checking its header first so a corrupt shape cannot allocate gigabytes."""
    name = key + ".npy" if key + ".npy" in z.zip.namelist() else key
    info = z.zip.getinfo(name)
    with z.zip.open(info) as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    if dtype.hasobject:
        raise LaminaError(f"{path}: array '{key}' holds Python objects, which lamina never unpickles; save numbers or strings")
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise _bad_npz(path, f"array '{key}' is cut short")
    # the zip's own size field is no proof either: deflate inflates at most ~1032:1, storing 1:1
    ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}.get(info.compress_type)
    if ratio and info.file_size > ratio * info.compress_size + 1024:
        raise _bad_npz(path, f"array '{key}' claims {info.file_size} bytes from {info.compress_size} compressed")
    return z[key]


def _npz_x(path: Path, key: str, x: np.ndarray) -> tuple[Tensor, str]:
    """Examples -> (tensor, modality): uint8 images channel-first, or float32 vectors/signals."""
    if x.ndim == 0 or len(x) == 0:
        raise LaminaError(f"{path}: '{key}' holds no examples")
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        if x.ndim == 3:
            x = x[:, None]
        elif x.shape[1] not in (1, 3):
            if x.shape[3] not in (1, 3):
                raise LaminaError(
                    f"{path}: '{key}' has shape {x.shape}; uint8 images must be (N, H, W), (N, C, H, W) or"
                    " (N, H, W, C) with C = 1 or 3"
                )
            x = x.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x)), "image"
    if x.dtype.kind not in "biuf":
        raise LaminaError(f"{path}: '{key}' has dtype {x.dtype}; store numbers (float32 or uint8 images)")
    if x.ndim > 3:
        raise LaminaError(
            f"{path}: '{key}' has shape {x.shape}; arrays must be (N, D) vectors or (N, C, L) signals, and"
            " images uint8 (N, H, W) or (N, C, H, W): reshape or convert it"
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise LaminaError(f"{path}: '{key}' contains NaN or inf values; clean or impute them first")
    if x.ndim == 1:
        x = x[:, None]
    return torch.from_numpy(np.ascontiguousarray(x)), "vector" if x.ndim == 2 else "signal"


def _npz_y(path: Path, key: str, y: np.ndarray, n: int) -> Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise LaminaError(f"{path}: '{key}' has shape {y.shape}; labels must be one integer per example, (N,)")
    if len(y) != n:
        raise LaminaError(f"{path}: {n} examples but {len(y)} labels in '{key}'; x and y must have the same length")
    if y.dtype.kind not in "iu":
        raise LaminaError(f"{path}: '{key}' has dtype {y.dtype}; labels must be integers 0..K-1 (use .astype(int))")
    if len(y) and int(y.min()) < 0:
        raise LaminaError(f"{path}: '{key}' has negative labels ({int(y.min())}); labels must be integers 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def _npz_classes(path: Path, z: Any, k: int, n: int) -> list[str]:
    if "classes" not in z.files:
        if k > n:  # also guards against a huge label allocating a huge class list
            raise LaminaError(
                f"{path}: labels go up to {k - 1} but there are only {n} examples; number the classes"
                " 0..K-1 (np.unique(y, return_inverse=True)) or add a 'classes' array"
            )
        return [str(i) for i in range(k)]
    c = _npz_array(path, z, "classes")
    if c.ndim != 1 or c.dtype.kind not in "USiu":
        raise LaminaError(f"{path}: 'classes' must be a 1-D array of names, got shape {c.shape} dtype {c.dtype}")
    names = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in c.tolist()]
    if len(names) < k:
        raise LaminaError(f"{path}: labels go up to {k - 1} but 'classes' names only {len(names)} classes")
    return names


def load_npz(path: str | Path) -> Dataset:
    """Load ``x`` (N, ...) and ``y`` (N,) from an ``.npz`` file (never unpickles anything).

    uint8 ``(N, H, W)``/``(N, C, H, W)``/``(N, H, W, C)`` are images; float ``(N, D)`` vectors and
    ``(N, C, L)`` signals. ``x_train, y_train, x_test, y_test`` give a test split; an optional
    ``classes`` string array names the classes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LaminaError(f"npz file {path} does not exist; check the path")
    try:
        with open(path, "rb") as f:  # our own handle: np.load leaks its own when the zip is corrupt
            # a lone .npy is refused before np.load reads it: its header could claim terabytes
            single = f.read(6) == b"\x93NUMPY"
            f.seek(0)
            z = None if single else np.load(f, allow_pickle=False)
            if not hasattr(z, "files"):
                raise _bad_npz(path, "it holds a single .npy array, save with numpy.savez instead")
            with z:
                return _from_npz(path, z)
    except LaminaError:
        raise
    except _NPZ_ERRORS as e:
        raise _bad_npz(path, f"corrupt or truncated: {type(e).__name__}: {e}") from None


def _from_npz(path: Path, z: Any) -> Dataset:
    keys = set(z.files)
    if {"x", "y"} <= keys:
        pairs = {"train": ("x", "y")}
    elif {"x_train", "y_train"} <= keys:
        pairs = {"train": ("x_train", "y_train")}
        if {"x_test", "y_test"} <= keys:
            pairs["test"] = ("x_test", "y_test")
        elif keys & {"x_test", "y_test"}:
            raise LaminaError(f"{path}: a test split needs both 'x_test' and 'y_test', found only one")
    else:
        raise LaminaError(f"{path} has arrays {sorted(keys)}; expected arrays {NPZ_KEYS}")
    splits: dict[str, Split] = {}
    modality = ""
    for split, (kx, ky) in pairs.items():
        x, mod = _npz_x(path, kx, _npz_array(path, z, kx))
        y = _npz_y(path, ky, _npz_array(path, z, ky), len(x))
        if splits and (mod != modality or x.shape[1:] != splits["train"].x.shape[1:]):
            raise LaminaError(
                f"{path}: '{kx}' examples have shape {tuple(x.shape[1:])} ({mod}) but the training examples"
                f" have {tuple(splits['train'].x.shape[1:])} ({modality})"
            )
        splits[split], modality = Split(x, y), mod
    k = max(int(s.y.max()) + 1 for s in splits.values())
    classes = _npz_classes(path, z, k, sum(len(s) for s in splits.values()))
    if len(classes) < 2:
        raise LaminaError(f"{path}: all labels are {classes[0]}, only one class; a classifier needs at least 2 classes")
    train = splits["train"]
    if modality == "image":
        pre = Preprocess(kind="image", scale=255.0, channels=train.x.shape[1], size=tuple(train.x.shape[2:]))
    else:
        pre = Preprocess(kind="array", scale=1.0)
    return Dataset(
        name=path.stem,
        classes=classes,
        train=train,
        test=splits.get("test"),
        modality=modality,
        preprocess=pre,
        flip=modality == "image",
        source=str(path.resolve()),
    )
