"""One writer per run folder: a second run into a folder in use is refused, naming the holder's
process; a holder killed with SIGKILL frees the folder (the OS drops the lock), so resume works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lamina
from lamina.errors import LaminaError
from lamina.utils.lock import RunLock

HOLD = "import sys, time; from lamina.utils.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(300)"


class _Holder:
    """A process that holds the lock of ``folder`` until it is killed."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]


def _holder(folder: Path) -> _Holder:
    return _Holder(folder)


def test_second_lock_names_the_holder(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(LaminaError, match=rf"run folder .*run is in use by process {proc.pid}: wait"):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.kill()


def test_sigkill_releases_the_lock(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.kill()
    with RunLock(tmp_path / "run") as lock:  # free again: the OS released it with the process
        assert lock.held
    assert not lock.held
    RunLock(tmp_path / "run").acquire().release()  # and after release


def test_same_process_second_writer_is_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"):
        with pytest.raises(LaminaError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()


def test_train_into_a_folder_in_use_is_refused_and_leaves_it_alone(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        t0 = time.monotonic()
        with pytest.raises(LaminaError, match=f"in use by process {proc.pid}"):
            lamina.train(str(npz), model="mlp", epochs=1, out=out, quiet=True)
        assert time.monotonic() - t0 < 60
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written by the refused run
    finally:
        proc.kill()
    run = lamina.train(str(npz), model="mlp", epochs=1, out=out, quiet=True)  # free: it trains
    assert (run.dir / "summary.json").exists()
    RunLock(out).acquire().release()  # released when the run ended


def test_cli_second_writer_one_line_error(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        r = subprocess.run([sys.executable, "-m", "lamina.cli.main", "train", str(npz), "--model", "mlp",
                            "--epochs", "1", "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=120)
    finally:
        proc.kill()
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: run folder {out} is in use by process {proc.pid}")
    assert "Traceback" not in r.stderr
