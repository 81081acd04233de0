"""Read IDX files, the format of (Fashion-)MNIST: plain or gzip-compressed.

Layout: two zero bytes, a dtype byte, the number of dimensions, then each dimension as a
big-endian uint32, then the data in row-major order (big-endian for multi-byte types).
"""

from __future__ import annotations

import gzip
import io
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
CHUNK = 1 << 20  # bytes decompressed per read


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
    gz = raw[:2] == b"\x1f\x8b"  # gzip magic, whatever the suffix says
    if not gz and path.suffix == ".gz":
        raise _corrupt(path, "named .gz but not gzip-compressed")
    # Decompress only as far as the header says the data goes: a small file of garbage that
    # inflates to gigabytes (a gzip bomb) is refused after reading one byte past the data.
    stream = gzip.GzipFile(fileobj=io.BytesIO(raw)) if gz else io.BytesIO(raw)
    try:
        head = stream.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0:
            raise _corrupt(path, "bad magic number")
        dtype_byte, ndim = head[2], head[3]
        if dtype_byte not in IDX_DTYPES:
            raise _corrupt(path, f"unknown dtype byte 0x{dtype_byte:02x}")
        if ndim == 0:
            raise _corrupt(path, "zero dimensions")
        header = 4 + 4 * ndim
        dims_raw = stream.read(4 * ndim)
        if len(dims_raw) < 4 * ndim:
            raise _corrupt(path, "header is cut short")
        dims = [int.from_bytes(dims_raw[4 * i : 4 + 4 * i], "big") for i in range(ndim)]
        dtype = np.dtype(IDX_DTYPES[dtype_byte])
        count = int(np.prod(dims, dtype=object))
        expected = header + count * dtype.itemsize
        chunks, size = [head, dims_raw], header
        while size <= expected:  # read one byte more than needed, to detect trailing data
            chunk = stream.read(min(CHUNK, expected + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, f"bad or truncated gzip data: {e}") from None
    if size != expected:
        have = f"{size} or more" if size > expected else str(size)
        raise _corrupt(path, f"dims {dims} need {expected} bytes, file has {have}")
    data = b"".join(chunks)
    arr = np.frombuffer(data, dtype=dtype, offset=header, count=count).reshape(dims)
    # copy into native byte order: torch cannot hold big-endian or read-only buffers
    return torch.from_numpy(arr.astype(dtype.newbyteorder("="), copy=True))
