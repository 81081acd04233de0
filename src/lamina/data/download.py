"""Resumable, checksummed downloads with urllib (no third-party HTTP client, nothing pickled).

A file is streamed to ``<dest>.part`` beside its destination and renamed only once its SHA-256
matches, so a half-written file is never mistaken for data. An interrupted download resumes
from the ``.part`` file with an HTTP ``Range`` request when the server supports it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from lamina.errors import LaminaError
from lamina.utils.io import sha256_file

CHUNK = 1 << 16  # bytes per read
USER_AGENT = "lamina (python urllib)"


class DownloadError(LaminaError):
    """The file could not be fetched (no network, server error); a checksum mismatch is not one."""


def download(
    url: str, dest: str | Path, sha256: str, *, timeout: float = 30.0, progress: bool | None = None
) -> Path:
    """Download ``url`` to ``dest`` unless it is already there with the right SHA-256.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dest: final path; its folder is created. The data is written to ``dest.part`` first.
        sha256: expected hex digest; on mismatch the file is deleted and LaminaError raised.
        timeout: seconds to wait for the server on connect and on each read.
        progress: show a progress bar; None shows one only when stdout is a terminal.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "ftp", "file"):
        raise LaminaError(f"cannot download '{url}': give an http(s)://, ftp:// or file:// address")
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file():
        if sha256_file(dest) == sha256:
            return dest
        dest.unlink()  # stale or corrupt copy: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if progress is None:
        progress = sys.stdout.isatty()
    try:
        _fetch(url, part, timeout, progress)
    except urllib.error.HTTPError as e:
        if e.code == 416 and part.is_file():  # range past the end: the .part file may be complete
            pass
        else:
            raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"could not download {url}: {reason}", hint="check the internet connection; run again to resume"
        ) from None
    except OSError as e:
        raise LaminaError(f"could not write {part}: {e.strerror or e}; check the folder and free disk space") from None
    got = sha256_file(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        raise LaminaError(
            f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {got}; the partial file was deleted,"
            " run again to download it afresh"
        )
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``part``, appending when the server honours a Range request."""
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        status = getattr(resp, "status", None)
        resumed = have > 0 and status == 206
        length = resp.headers.get("Content-Length")
        total = int(length) + (have if resumed else 0) if length and length.isdigit() else None
        mode = "ab" if resumed else "wb"
        name = part.name.removesuffix(".part")
        with open(part, mode) as out, _bar(name, total, have if resumed else 0, progress) as advance:
            while block := resp.read(CHUNK):
                out.write(block)
                advance(len(block))


@contextlib.contextmanager
def _bar(name: str, total: int | None, done: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A rich download bar; a no-op when ``show`` is false."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
    ) as bar:
        task = bar.add_task(name, total=total, completed=done)
        yield lambda n: bar.advance(task, n)

