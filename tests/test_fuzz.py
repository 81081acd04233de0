"""Bad input never hurts: every loader, fed malformed files, raises only :class:`LaminaError`.

Each target gets random bytes and structured near-misses (a valid header then garbage, truncated
or huge dimensions, wrong keys, dtypes and shapes). No example is larger than ~1 MB; each must
finish in seconds and leave peak memory (RSS) within bounds. Regressions found by fuzzing are
pinned with ``@example``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import resource
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from lamina import api, artifacts
from lamina.config import RunConfig, all_keys, apply_overrides, from_dict, load_config
from lamina.data.base import Preprocess
from lamina.data.idx import read_idx
from lamina.data.images import load_image, load_image_folder, load_npz
from lamina.errors import LaminaError
from lamina.tasks.classify import Classify
from lamina.training import checkpoint

MAX_SECONDS = 10.0  # per example: far above what any of them needs, far below a hang
MAX_RSS_GROWTH = 1 << 30  # bytes of peak resident memory a whole fuzz test may add


def fuzz(n: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@pytest.fixture(autouse=True)
def _bounded_memory() -> Iterator[None]:
    before = _peak_rss()
    yield
    grown = _peak_rss() - before
    assert grown < MAX_RSS_GROWTH, f"peak memory grew by {grown / 2**20:.0f} MiB"


@contextmanager
def _tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def only_lamina_errors(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn``: success or a one-line LaminaError are fine; anything else fails the example."""
    start = time.perf_counter()
    try:
        fn(*args)
    except LaminaError as e:
        assert str(e) and "\n" not in str(e), f"LaminaError message is empty or not one line: {e!r}"
    assert time.perf_counter() - start < MAX_SECONDS, f"{fn.__name__} took {time.perf_counter() - start:.1f} s"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------- IDX
IDX_CODES = (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)
ITEMSIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """An IDX header (mostly plausible) followed by a body of the right, wrong or absurd length."""
    code = draw(st.sampled_from(IDX_CODES) | st.integers(0, 255))
    ndim = draw(st.integers(0, 5) | st.just(255))
    dims = draw(st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=min(ndim, 8), max_size=min(ndim, 8)))
    magic = draw(st.sampled_from([b"\x00\x00", b"\x00\x00", b"\x00\x01", b"\x1f\x8b"]))
    header = magic + bytes([code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    need = int(np.prod(dims, dtype=object)) * ITEMSIZE.get(code, 1) if dims else 0
    size = draw(st.sampled_from(["exact", "short", "long", "random"]))
    if size == "exact" and need <= 50_000:
        body = draw(st.binary(min_size=need, max_size=need)) if need <= 256 else bytes(need)
    elif size == "short" and 0 < need <= 50_000:
        body = bytes(draw(st.integers(0, need - 1)))
    elif size == "long" and need <= 50_000:
        body = bytes(need) + draw(st.binary(min_size=1, max_size=16))
    else:
        body = draw(st.binary(max_size=256))
    data = header + body
    if draw(st.booleans()):
        data = gzip.compress(data)
    cut = draw(st.none() | st.integers(0, len(data)))
    return data if cut is None else data[:cut]


@fuzz(60)
@given(data=st.binary(max_size=512), name=st.sampled_from(["x.idx", "x.idx.gz", "train-images-idx3-ubyte"]))
@example(data=b"\x1f\x8b", name="x.idx")
@example(data=gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 2**31) + bytes(1 << 20)), name="x.gz")
def test_read_idx_random_bytes(data: bytes, name: str) -> None:
    with _tmp() as d:
        (d / name).write_bytes(data)
        only_lamina_errors(read_idx, d / name)


@fuzz(80)
@given(data=idx_files(), name=st.sampled_from(["x.idx", "x.idx.gz"]))
def test_read_idx_headers(data: bytes, name: str) -> None:
    with _tmp() as d:
        (d / name).write_bytes(data)
        only_lamina_errors(read_idx, d / name)


def test_read_idx_gzip_bomb_is_refused_without_decompressing_it(tmp_path: Path) -> None:
    # 100 MB of zeros compress to ~100 KB; the header claims 3 bytes, so the rest is garbage
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03")
    for _ in range(100):
        data += bomb.compress(bytes(1 << 20))
    data += bomb.flush()
    (tmp_path / "bomb.gz").write_bytes(data)
    before = _peak_rss()
    with pytest.raises(LaminaError, match="need"):
        read_idx(tmp_path / "bomb.gz")
    assert _peak_rss() - before < 50 << 20


# ----------------------------------------------------------------------------------------- npz
def _zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


NPZ_KEYS = ["x", "y", "x_train", "y_train", "x_test", "y_test", "classes", "z", "x.npy"]
NPZ_DTYPES = ["u1", "i1", "i8", "u8", "f2", "f4", "f8", "?", "c8", "U3", "S2", "M8[s]", "V4"]


@st.composite
def npz_arrays(draw: st.DrawFn) -> np.ndarray:
    """Small arrays of any dtype and rank, possibly holding NaN, inf, negative or huge values."""
    dtype = np.dtype(draw(st.sampled_from(NPZ_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=5)))
    n = int(np.prod(shape))
    if dtype.kind in "fc":
        values = draw(st.lists(st.floats(width=16, allow_nan=True, allow_infinity=True) | st.sampled_from([np.nan]), min_size=n, max_size=n))
        return np.array(values, dtype=dtype).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = draw(st.lists(st.integers(int(info.min), int(info.max)) | st.integers(0, 3), min_size=n, max_size=n))
        return np.array(values, dtype=dtype).reshape(shape)
    if dtype.kind == "b":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool).reshape(shape)
    return np.zeros(shape, dtype=dtype)


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    keys = draw(st.lists(st.sampled_from(NPZ_KEYS), max_size=5, unique=True))
    members: dict[str, bytes] = {}
    for k in keys:
        member = k if k.endswith(".npy") else k + ".npy"
        kind = draw(st.sampled_from(["array", "array", "array", "garbage", "header-then-garbage"]))
        if kind == "array":
            members[member] = _npy(draw(npz_arrays()))
        elif kind == "garbage":
            members[member] = draw(st.binary(max_size=64))
        else:
            members[member] = _npy(draw(npz_arrays()))[:draw(st.integers(0, 140))] + draw(st.binary(max_size=32))
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    return _zip_of(members, compression)


def _zip_claiming_size(payload: bytes, claimed: int) -> bytes:
    """A zip of ``x.npy`` (``payload``) and a good ``y.npy``, whose headers claim ``x.npy`` is ``claimed`` bytes."""
    data = bytearray(_zip_of({"x.npy": payload, "y.npy": _npy(np.array([0, 1]))}, zipfile.ZIP_DEFLATED))
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # x.npy's local and central headers
        at = data.find(sig)
        data[at + offset : at + offset + 4] = struct.pack("<I", claimed)
    return bytes(data)


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """Only the header of a version-1 .npy file (no data follows)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


HUGE_NPY = _npy_header((10**6, 10**6))  # claims 8 TB


@fuzz(40)
@given(data=st.binary(max_size=512) | st.binary(max_size=200).map(lambda b: b"PK\x03\x04" + b))
@example(data=HUGE_NPY)  # a lone .npy
@example(data=_zip_of({"x.npy": HUGE_NPY, "y.npy": _npy(np.zeros(2, int))}))
@example(data=_zip_claiming_size(_npy_header((2, 1000, 1000, 1000), "|u1"), 2**32 - 1))
def test_load_npz_random_bytes(data: bytes) -> None:
    with _tmp() as d:
        (d / "f.npz").write_bytes(data)
        only_lamina_errors(load_npz, d / "f.npz")


@fuzz(60)
@given(data=npz_files())
@example(data=_zip_of({"x.npy": _npy(np.full((3, 2), np.nan, np.float32)), "y.npy": _npy(np.array([0, 1, 0]))}))
@example(data=_zip_of({"x.npy": _npy(np.zeros((2, 2))), "y.npy": _npy(np.array([0, 2**62]))}))
@example(data=_zip_of({"x.npy": _npy(np.zeros((2, 2))), "y.npy": _npy(np.array([0, 1], np.uint64) - 1)}))
def test_load_npz_structured(data: bytes) -> None:
    with _tmp() as d:
        (d / "f.npz").write_bytes(data)
        only_lamina_errors(load_npz, d / "f.npz")


# -------------------------------------------------------------------------------------- images
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_header(w: int, h: int, mode_bits: tuple[int, int]) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, mode_bits[0], mode_bits[1], 0, 0, 0)
    return PNG_SIG + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(w: int, h: int, bits: tuple[int, int], idat: bytes) -> bytes:
    """A PNG with a well-formed IHDR claiming ``w`` x ``h`` and one IDAT of (compressed) ``idat``."""
    return _png_header(w, h, bits) + _png_chunk(b"IDAT", zlib.compress(idat)) + _png_chunk(b"IEND", b"")


PNG_BITS = st.sampled_from([(8, 0), (8, 2), (16, 0), (8, 6), (1, 0), (8, 3), (7, 2)])
image_bytes = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: PNG_SIG + b),
    st.binary(max_size=256).map(lambda b: b"\xff\xd8\xff\xe0" + b),  # JPEG SOI + APP0
    st.binary(max_size=256).map(lambda b: b"GIF89a" + b),
    st.builds(lambda w, h, bits, tail: _png_header(w, h, bits) + tail,
              st.integers(1, 20_000), st.integers(1, 20_000), PNG_BITS, st.binary(max_size=64)),
    st.builds(_png, st.integers(1, 64) | st.integers(1, 20_000), st.integers(1, 64) | st.integers(1, 20_000),
              PNG_BITS, st.binary(max_size=300)),
)
GREY = Preprocess(kind="image", scale=255.0, channels=1, size=(8, 8))
RGB = Preprocess(kind="image", scale=255.0, channels=3, size=(8, 8))


@fuzz(50)
@given(data=image_bytes, suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp"]), pre=st.sampled_from([GREY, RGB]))
@example(data=_png(12_000, 10_000, (8, 2), bytes(100)), suffix=".png", pre=RGB)  # PIL only warns: a bomb
@example(data=_png(3, 2, (8, 0), bytes(3 * 2 + 2)), suffix=".png", pre=GREY)  # a valid image decodes
def test_load_image_random_bytes(data: bytes, suffix: str, pre: Preprocess) -> None:
    with _tmp() as d:
        (d / f"img{suffix}").write_bytes(data)
        only_lamina_errors(load_image, d / f"img{suffix}", pre)


@fuzz(15)
@given(
    folders=st.lists(st.lists(image_bytes, max_size=3), max_size=3),
    suffix=st.sampled_from([".png", ".jpg"]),
    layout=st.sampled_from(["flat", "train-test", "odd-names"]),
)
def test_load_image_folder_random_files(folders: list[list[bytes]], suffix: str, layout: str) -> None:
    with _tmp() as d:
        root = d / "ds"
        root.mkdir()
        for split in (["train", "test"] if layout == "train-test" else [""]):
            for i, files in enumerate(folders):
                cls = root / split / (f".hidden{i}" if layout == "odd-names" and i == 0 else f"c{i}")
                cls.mkdir(parents=True)
                for j, data in enumerate(files):
                    (cls / f"{j}{suffix}").write_bytes(data)
        only_lamina_errors(load_image_folder, root)


# -------------------------------------------------------------------------------------- config
SECTION_KEYS = {"data", "model", "train", "out"} | {k.split(".")[1] for k in all_keys() if "." in k}
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.sampled_from(["1e-3", "yes", "cuda", "mlp", "0x10", ".nan"]),
)
keys = st.sampled_from(sorted(SECTION_KEYS)) | st.text(max_size=8) | st.integers(-3, 3)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@fuzz(100)
@given(data=trees | st.dictionaries(keys, trees, max_size=4))
@example(data={"train": {"lr": 10**400}})
@example(data={"data": 0})
@example(data={"model": {"dropout": 10**400}})
def test_from_dict_random_trees(data: Any) -> None:
    only_lamina_errors(from_dict, data)


override_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["2001-13-01", "!!int abc", "!!float ''", "!!bool maybe", "!!timestamp x", "1" * 5000, "&a [*a]", "{a: 1}", "!!python/object:os.system x", "!!binary '%%%'"]),
)


@fuzz(100)
@given(
    items=st.lists(
        st.text(max_size=30) | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(all_keys()) | st.text(max_size=8), override_values),
        max_size=4,
    )
)
@example(items=["train.lr=2001-13-01"])
@example(items=["train.epochs=!!int abc"])
@example(items=["train.lr=" + "[" * 2000])
@example(items=["train.lr=1" + "0" * 400])
def test_apply_overrides_random_strings(items: list[str]) -> None:
    only_lamina_errors(apply_overrides, RunConfig(), items)


def _yaml_like(tree: Any) -> str:
    return json.dumps(tree, default=repr)  # JSON is YAML: a structured document lamina must judge


@fuzz(60)
@given(
    text=st.one_of(
        st.text(max_size=200),
        trees.map(_yaml_like),
        st.builds(lambda k, v: f"{k}:\n  {v}\n", st.sampled_from(["data", "model", "train"]), override_values),
    )
)
@example(text="train:\n  lr: 2001-13-01\n")
@example(text="[" * 5000)
@example(text="train: !!python/object/apply:os.system ['echo pwned']\n")
def test_load_config_random_text(text: str) -> None:
    with _tmp() as d:
        (d / "c.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        only_lamina_errors(load_config, d / "c.yaml")


@fuzz(10)
@given(data=st.binary(max_size=200))
def test_load_config_random_bytes(data: bytes) -> None:
    with _tmp() as d:
        (d / "c.yaml").write_bytes(data)
        only_lamina_errors(load_config, d / "c.yaml")


# ---------------------------------------------------------------------------------- checkpoints
CKPT_FILES = ("tensors.safetensors", "state.json", "manifest.json")
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["__tensor__", "__tuple__", "__tuple__int:x", "__tuple__int:1", "w", "step"]) | st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)


def _checkpoint(folder: Path) -> Path:
    return checkpoint.save({"model": {"w": torch.ones(2, 3), "b": torch.zeros(3)}, "step": 7, "opt": {0: (1, 2)}}, folder)


@fuzz(40)
@given(
    target=st.sampled_from(CKPT_FILES),
    data=st.binary(max_size=512) | json_trees.map(lambda t: json.dumps(t).encode()),
    rehash=st.booleans(),
)
@example(target="tensors.safetensors", data=b"\x80\x04K\x01.", rehash=True)  # a pickle, checksum matching
@example(target="state.json", data=b"[" * 100_000, rehash=True)
@example(target="state.json", data=b'{"__tensor__": "nope"}', rehash=True)
@example(target="state.json", data=b'{"__tuple__int:x": 1}', rehash=True)
@example(target="manifest.json", data=b"[]", rehash=False)
@example(target="manifest.json", data=b'{"format": "lamina-checkpoint/1", "sha256": {}}', rehash=False)
@example(target="manifest.json", data=b'{"format": "lamina-checkpoint/1", "sha256": {"/dev/zero": "0"}}', rehash=False)
def test_checkpoint_load_random_files(target: str, data: bytes, rehash: bool) -> None:
    """Random bytes in one file; ``rehash``: the manifest is updated to match, so parsing must refuse it."""
    with _tmp() as d:
        folder = _checkpoint(d / "ckpt")
        (folder / target).write_bytes(data)
        if rehash and target != "manifest.json":
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["sha256"][target] = _sha256(data)
            (folder / "manifest.json").write_text(json.dumps(manifest))
        only_lamina_errors(checkpoint.load, folder)


@fuzz(20)
@given(sha=json_trees, fmt=st.sampled_from([checkpoint.FORMAT, "x", None]))
def test_checkpoint_load_random_manifest(sha: Any, fmt: Any) -> None:
    with _tmp() as d:
        folder = _checkpoint(d / "ckpt")
        (folder / "manifest.json").write_text(json.dumps({"format": fmt, "sha256": sha}))
        only_lamina_errors(checkpoint.load, folder)


# ---------------------------------------------------------------------------------- saved models
def _run(folder: Path) -> Path:
    from lamina.data.base import Dataset, Split
    from lamina.models import create_model

    ds = Dataset(name="t", classes=["a", "b"], train=Split(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])),
                 modality="vector", preprocess=Preprocess(kind="array", scale=1.0))
    folder.mkdir()
    artifacts.save_model(create_model("mlp", (3,), 2, width=4, depth=1), folder, ds, Classify(2, classes=ds.classes))
    return folder


archs = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["mlp", "cnn", "resnet", "auto", "nope"]) | st.integers(),
        "input_shape": st.lists(st.integers(-2, 5) | st.integers(0, 10**7), max_size=4) | st.integers() | st.text(max_size=3),
        "num_classes": st.integers(-1, 5) | st.integers(0, 10**9) | st.text(max_size=3) | st.none(),
        "width": st.integers(-1, 8) | st.integers(0, 10**7) | st.floats() | st.text(max_size=3),
        "depth": st.integers(-1, 3) | st.integers(0, 10**5),
        "act": st.sampled_from(["relu", "gelu", "nope"]) | st.integers(),
        "norm": st.sampled_from(["batch", "none", "layer", "nope"]),
        "dropout": st.floats() | st.integers(),
        "extra": st.integers(),
    },
)
model_jsons = st.fixed_dictionaries(
    {"format": st.sampled_from([artifacts.MODEL_FORMAT, artifacts.MODEL_FORMAT, "x"])},
    optional={
        "arch": archs | json_trees,
        "preprocess": json_trees | st.fixed_dictionaries({"kind": st.sampled_from(["array", "image"]), "scale": st.floats()}),
        "classes": st.lists(st.text(max_size=3), max_size=4) | json_trees,
        "modality": st.sampled_from(["vector", "image"]) | json_trees,
    },
)


def _good_meta(run: Path) -> dict[str, Any]:
    return json.loads((run / "model.json").read_text())


@fuzz(50)
@given(meta=model_jsons, keep=st.sets(st.sampled_from(["arch", "preprocess", "classes", "modality"])))
@example(meta={"format": artifacts.MODEL_FORMAT, "arch": {"name": "mlp", "input_shape": [10**7], "num_classes": 10**6,
                                                     "width": 10**6, "depth": 50}}, keep={"preprocess", "classes", "modality"})
@example(meta={"format": artifacts.MODEL_FORMAT, "arch": []}, keep=set())
@example(meta={"format": artifacts.MODEL_FORMAT, "classes": 3}, keep={"arch", "preprocess", "modality"})
@example(meta={"format": artifacts.MODEL_FORMAT, "classes": ["a"]}, keep={"arch", "preprocess", "modality"})
def test_api_load_random_model_json(meta: dict[str, Any], keep: set[str]) -> None:
    """A model.json with random fields (``keep``: fields taken from a good one)."""
    with _tmp() as d:
        run = _run(d / "run")
        good = _good_meta(run)
        meta = {**meta, **{k: good[k] for k in keep}}
        (run / "model.json").write_text(json.dumps(meta))
        only_lamina_errors(api.load, run)


@fuzz(30)
@given(
    target=st.sampled_from(["model.json", "model.safetensors"]),
    data=st.binary(max_size=512) | json_trees.map(lambda t: json.dumps(t).encode()),
)
@example(target="model.json", data=b"[]")
@example(target="model.json", data=b"\xff\xfe")
def test_api_load_random_bytes(target: str, data: bytes) -> None:
    with _tmp() as d:
        run = _run(d / "run")
        (run / target).write_bytes(data)
        only_lamina_errors(api.load, run)


@fuzz(20)
@given(
    tensors=st.dictionaries(
        st.sampled_from(["layer1.1.weight", "head.weight", "head.bias", "x"]) | st.text(min_size=1, max_size=5),
        st.tuples(st.lists(st.integers(0, 5), max_size=3), st.sampled_from([torch.float32, torch.int64, torch.float16, torch.bool])),
        max_size=5,
    )
)
def test_api_load_wrong_weights(tensors: dict[str, tuple[list[int], torch.dtype]]) -> None:
    """A valid safetensors file whose tensors have the wrong names, shapes or dtypes."""
    with _tmp() as d:
        run = _run(d / "run")
        save_file({k: torch.zeros(shape, dtype=dt) for k, (shape, dt) in tensors.items()}, str(run / "model.safetensors"))
        only_lamina_errors(api.load, run)


@pytest.mark.parametrize("section", [0, False, "", []])
def test_from_dict_refuses_a_falsy_non_mapping_section(section: Any) -> None:
    assert from_dict({"train": None}) == RunConfig()  # an empty YAML section keeps the defaults
    with pytest.raises(LaminaError, match="must be a mapping"):
        from_dict({"train": section})
