import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.data.idx import read_idx
from lamina.errors import LaminaError


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    dt = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(dt).tobytes()


@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
@pytest.mark.parametrize("gz", [False, True])
def test_roundtrip_dtypes(tmp_path: Path, code: int, gz: bool) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(np.float64)
    if code == 0x08:
        arr = np.abs(arr)
    data = idx_bytes(arr, code)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    p.write_bytes(gzip.compress(data) if gz else data)
    t = read_idx(p)
    assert t.shape == (2, 3, 4)
    assert torch.equal(t.double(), torch.from_numpy(arr))
    if code == 0x08:
        assert t.dtype == torch.uint8


def test_labels_1d(tmp_path: Path) -> None:
    p = tmp_path / "labels-idx1-ubyte"
    p.write_bytes(idx_bytes(np.array([3, 1, 4], dtype=np.uint8), 0x08))
    assert read_idx(p).tolist() == [3, 1, 4]


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown dtype"),
        (b"\x00\x00\x08\x02\x00\x00", "header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "need"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "need"),  # trailing bytes
        (b"\x00\x00\x08\x00", "zero dimensions"),
    ],
)
def test_corrupt_plain(tmp_path: Path, data: bytes, phrase: str) -> None:
    p = tmp_path / "bad.idx"
    p.write_bytes(data)
    with pytest.raises(LaminaError, match=phrase) as e:
        read_idx(p)
    assert str(p) in str(e.value) and "delete it" in str(e.value)


def test_truncated_gz(tmp_path: Path) -> None:
    full = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10), 0x08))
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(LaminaError, match="gzip") as e:
        read_idx(p)
    assert "fetch it again" in str(e.value)


def test_gz_name_but_not_gzip(tmp_path: Path) -> None:
    p = tmp_path / "x.gz"
    p.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8), 0x08))
    with pytest.raises(LaminaError, match="not gzip"):
        read_idx(p)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=40).map(lambda b: b"\x00\x00" + b),
        st.binary(max_size=40).map(lambda b: gzip.compress(b)[: len(b) + 5]),
    )
)
def test_fuzz_only_lamina_errors(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fuzz.gz"
    p.write_bytes(data)
    try:
        read_idx(p)
    except LaminaError:
        pass
