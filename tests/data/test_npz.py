import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.data.images import load_npz
from lamina.errors import LaminaError

Y = np.array([0, 1, 2, 1, 0, 2])


def npz(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> Path:
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_vectors(tmp_path: Path) -> None:
    ds = load_npz(npz(tmp_path, x=np.random.rand(6, 5), y=Y))
    assert ds.modality == "vector" and ds.train.x.dtype == torch.float32 and ds.input_shape == (5,)
    assert ds.classes == ["0", "1", "2"] and ds.train.y.dtype == torch.int64
    assert ds.preprocess.kind == "array" and ds.preprocess.scale == 1.0 and ds.flip is False
    assert ds.test is None and ds.name == "d"


def test_signals_and_test_split(tmp_path: Path) -> None:
    x = np.random.rand(6, 2, 10).astype(np.float32)
    ds = load_npz(npz(tmp_path, x_train=x, y_train=Y, x_test=x[:3], y_test=Y[:3].astype(np.uint8)))
    assert ds.modality == "signal" and ds.input_shape == (2, 10)
    assert ds.test is not None and len(ds.test) == 3


def test_1d_x_is_vector(tmp_path: Path) -> None:
    assert load_npz(npz(tmp_path, x=np.arange(6.0), y=Y)).input_shape == (1,)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((6, 7, 8), (1, 7, 8)), ((6, 3, 7, 8), (3, 7, 8)), ((6, 7, 8, 3), (3, 7, 8)), ((6, 7, 8, 1), (1, 7, 8))],
)
def test_uint8_images(tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    ds = load_npz(npz(tmp_path, x=x, y=Y))
    assert ds.modality == "image" and ds.input_shape == expected and ds.train.x.dtype == torch.uint8
    p = ds.preprocess
    assert (p.kind, p.scale, p.channels, p.size) == ("image", 255.0, expected[0], expected[1:])
    assert ds.flip is True
    if shape[-1] == 3:
        assert torch.equal(ds.train.x[2, 1], torch.from_numpy(x[2, :, :, 1]))


def test_class_names(tmp_path: Path) -> None:
    ds = load_npz(npz(tmp_path, x=np.random.rand(6, 2), y=Y, classes=np.array(["ant", "bee", "cow"])))
    assert ds.classes == ["ant", "bee", "cow"]


def test_too_few_class_names(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="only 2 classes"):
        load_npz(npz(tmp_path, x=np.random.rand(6, 2), y=Y, classes=np.array(["ant", "bee"])))


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")


def test_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "bad.npz"
    p.write_bytes(b"this is not a zip file at all")
    with pytest.raises(LaminaError, match=r"not a valid \.npz"):
        load_npz(p)


def test_truncated_zip(tmp_path: Path) -> None:
    p = npz(tmp_path, x=np.random.rand(50, 20), y=np.arange(50) % 2)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(LaminaError, match=r"not a valid \.npz"):
        load_npz(p)


def test_npy_not_npz(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(LaminaError, match=r"single \.npy"):
        load_npz(p)


def test_pickled_array_refused(tmp_path: Path) -> None:
    p = npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(LaminaError, match="Python objects"):
        load_npz(p)


def test_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="expected arrays 'x' and 'y'") as e:
        load_npz(npz(tmp_path, data=np.zeros(3), labels=Y))
    assert "x_train" in str(e.value) and "['data', 'labels']" in str(e.value)


def test_half_test_split(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="both 'x_test' and 'y_test'"):
        load_npz(npz(tmp_path, x_train=np.zeros((6, 2)), y_train=Y, x_test=np.zeros((2, 2))))


def test_length_mismatch(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="same length"):
        load_npz(npz(tmp_path, x=np.zeros((5, 2)), y=Y))


def test_float_labels(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="labels must be integers"):
        load_npz(npz(tmp_path, x=np.zeros((6, 2)), y=Y.astype(float)))


def test_negative_labels(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="negative labels"):
        load_npz(npz(tmp_path, x=np.zeros((6, 2)), y=Y - 1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path: Path, bad: float) -> None:
    x = np.zeros((6, 2))
    x[3, 1] = bad
    with pytest.raises(LaminaError, match="NaN or inf"):
        load_npz(npz(tmp_path, x=x, y=Y))


def test_one_class(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="at least 2 classes"):
        load_npz(npz(tmp_path, x=np.zeros((6, 2)), y=np.zeros(6, int)))


def test_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="C = 1 or 3"):
        load_npz(npz(tmp_path, x=np.zeros((6, 5, 7, 8), np.uint8), y=Y))
    with pytest.raises(LaminaError, match="reshape or convert"):
        load_npz(npz(tmp_path, x=np.zeros((6, 2, 3, 4), np.float32), y=Y))
    with pytest.raises(LaminaError, match="labels must be one integer"):
        load_npz(npz(tmp_path, x=np.zeros((6, 2)), y=np.zeros((6, 2), int)))
    with pytest.raises(LaminaError, match="test' examples have shape"):
        load_npz(npz(tmp_path, x_train=np.zeros((6, 2)), y_train=Y, x_test=np.zeros((2, 3)), y_test=Y[:2]))
    with pytest.raises(LaminaError, match="no examples"):
        load_npz(npz(tmp_path, x=np.zeros((0, 2)), y=np.zeros(0, int)))


def _zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=120).map(lambda b: b"\x93NUMPY" + b),
        st.tuples(st.binary(max_size=80), st.binary(max_size=80)).map(
            lambda t: _zip_of({"x.npy": b"\x93NUMPY\x01\x00" + t[0], "y.npy": t[1]})
        ),
    )
)
def test_fuzz_only_lamina_errors(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fuzz.npz"
    p.write_bytes(data)
    try:
        load_npz(p)
    except LaminaError:
        pass
