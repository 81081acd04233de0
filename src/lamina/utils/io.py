"""Small file helpers: atomic writes of text/JSON, run-folder naming."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from lamina.errors import LaminaError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | Path) -> None:
    """Flush a file or a folder (its directory entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``.

    Readers never see half a file, and a failed write (full disk) leaves the old file intact.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fsync_path(tmp)
        tmp.replace(path)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error type
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise LaminaError(f"could not write {path}: {reason} (free disk space or choose another --out)") from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LaminaError(f"{what} {path} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise LaminaError(f"{what} {path} is unreadable or not valid JSON: {e}") from None


class JsonLines:
    """An append-only JSON-lines file (``metrics.jsonl``, ``gradients.jsonl``): one object per line,
    flushed as written so a killed run keeps every line it wrote. Errors are one-line ``LaminaError``s.

    Args:
        path: the file; its folder is created, and an existing file is appended to (a resumed run).
        allow_nan: write NaN/inf as JSON's non-standard ``NaN``/``Infinity`` (else they raise).
    """

    def __init__(self, path: str | Path, *, allow_nan: bool = True) -> None:
        self.path, self.allow_nan = Path(path), allow_nan
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a")
        except OSError as e:
            raise LaminaError(f"could not open {self.path}: {e.strerror or e}") from None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record, allow_nan=self.allow_nan) + "\n")
            self.file.flush()
        except OSError as e:
            raise LaminaError(f"could not write {self.path}: {e.strerror or e} (free disk space)") from None

    def close(self) -> None:
        self.file.close()


def default_run_dir(dataset: str, model: str, root: str | Path = "runs") -> Path:
    """``runs/<dataset>-<model>-<YYYYmmdd-HHMMSS>`` (a suffix is added if that exists)."""
    name = Path(dataset).stem if ("/" in dataset or "." in dataset) else dataset
    base = Path(root) / f"{name}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out
