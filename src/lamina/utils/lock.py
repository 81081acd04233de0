"""A run folder has one writer: an exclusive lock on ``RUN/.lock``, held while the run trains.

The lock is an advisory ``flock`` on an open file, so the operating system releases it the moment
the holder's process ends, however it ends (a crash, ``kill -9``): ``lamina resume`` after a crash
finds the folder free. The file records the holder's process id and host, which is what a second
writer is told. Where ``flock`` does not exist (Windows) ``msvcrt.locking`` takes its place.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import TracebackType

from lamina.errors import LaminaError

LOCK_NAME = ".lock"


class RunLock:
    """``with RunLock(folder):`` or :meth:`acquire`/:meth:`release`; a held lock raises
    :class:`LaminaError` naming the holder. Re-acquiring in the same object is a no-op."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LaminaError(f"cannot lock run folder {self.folder}: {e.strerror or e}") from None
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise LaminaError(f"run folder {self.folder} is in use by {holder}: wait for that run to finish, "
                              "stop it, or choose another --out")
        try:  # record who holds it (the lock itself is on the descriptor, not on the contents)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError:
            pass  # a full disk must not stop a run that holds its lock
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing the descriptor drops the lock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str:
    """``process 1234 on host`` from the lock file, or ``another process`` when it says nothing."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        words = os.read(fd, 256).decode(errors="replace").split()
    except OSError:
        words = []
    if not words or not words[0].isdigit():
        return "another process"
    host = f" on {words[1]}" if len(words) > 1 and words[1] != socket.gethostname() else ""
    return f"process {words[0]}{host}"
