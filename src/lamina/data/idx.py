"""Read IDX files, the format of (Fashion-)MNIST: plain or gzip-compressed.

Layout: two zero bytes, a dtype byte, the number of dimensions, then each dimension as a
big-endian uint32, then the data in row-major order (big-endian for multi-byte types).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lamina.errors import LaminaError

# dtype byte -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _corrupt(path: Path, why: str) -> LaminaError:
    return LaminaError(f"{path} is not a valid IDX file ({why}); delete it and fetch it again")


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file (``.gz`` or plain) into a tensor of its own dtype and shape.

    >>> import gzip, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.idx"
    >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(p).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    if not path.is_file():
        raise LaminaError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise _corrupt(path, f"bad or truncated gzip data: {e}") from None
    elif path.suffix == ".gz":
        raise _corrupt(path, "named .gz but not gzip-compressed")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise _corrupt(path, "bad magic number")
    dtype_byte, ndim = raw[2], raw[3]
    if dtype_byte not in IDX_DTYPES:
        raise _corrupt(path, f"unknown dtype byte 0x{dtype_byte:02x}")
    if ndim == 0:
        raise _corrupt(path, "zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, "header is cut short")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_DTYPES[dtype_byte])
    count = int(np.prod(dims, dtype=object))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise _corrupt(path, f"dims {dims} need {expected} bytes, file has {len(raw)}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header, count=count).reshape(dims)
    # copy into native byte order: torch cannot hold big-endian or read-only buffers
    return torch.from_numpy(arr.astype(dtype.newbyteorder("="), copy=True))
