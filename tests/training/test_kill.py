"""SIGKILL a training process at random moments, resume each time, and get the same bytes.

Every kill lands while training runs: after a new checkpoint appears the test waits a random
0-60 ms (seeded) and kills, which catches mid-epoch steps, epoch boundaries and checkpoint
writes (a checkpoint every 2 steps). The final model.safetensors must equal, byte for byte, that
of a run that was never interrupted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ARGS = ["--epochs", "3", "--seed", "3", "--checkpoint-every", "2", "--deterministic", "--quiet",
        "data.batch_size=16", "model.name=cnn", "model.width=8", "train.ema=0.9", "model.dropout=0.1", "data.cutout=2"]
KILLS_PER_CHAIN = 10


def _default_sigint() -> None:
    # Under nohup or as a background job SIGINT starts ignored, and lamina leaves an ignored SIGINT
    # ignored; these tests send SIGINT on purpose, so the child starts with the default handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "lamina.cli.main", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint)


def _checkpoints(run: Path) -> list[str]:
    """Finished checkpoints (a half-written one is a dot-folder until it is renamed)."""
    folder = run / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 700)
    x = (rng.random((700, 1, 10, 10)) * 100 + y[:, None, None, None] * 40).astype(np.uint8)
    path = tmp_path_factory.mktemp("kill") / "data.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("ref") / "run"
    p = _cli("train", str(data), "--out", str(out), *ARGS)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return (out / "model.safetensors").read_bytes()


def _kill_chain(data: Path, run: Path, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    stats = {"kills": 0, "during_write": 0, "restarts": 0, "late": 0}
    proc = _cli("train", str(data), "--out", str(run), *ARGS)
    while True:
        seen = _checkpoints(run)
        deadline = time.monotonic() + 120
        killed = False
        while proc.poll() is None and time.monotonic() < deadline:
            now = _checkpoints(run)
            if stats["kills"] < KILLS_PER_CHAIN and now and now != seen:  # training is progressing
                time.sleep(rng.uniform(0.0, 0.06))
                if proc.poll() is None:
                    stats["during_write"] += any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    stats["kills"] += 1
                    killed = True
                break
            time.sleep(0.005)
        if not killed and proc.poll() is None:
            continue  # still running and not yet killed: keep watching
        _, err = proc.communicate()
        if not killed:
            assert proc.returncode == 0, err
            return stats
        if (run / "summary.json").exists():  # the kill landed after the run had finished: nothing to resume
            stats["late"] = 1
            return stats
        stats["restarts"] += 1
        proc = _cli("resume", str(run), "--quiet")


@pytest.mark.parametrize("chain", [0, 1])
def test_sigkill_and_resume_gives_identical_weights(data, reference, tmp_path, chain):
    stats = _kill_chain(data, tmp_path / "run", seed=chain)
    assert stats["kills"] == KILLS_PER_CHAIN or stats["late"], stats
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == reference
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_signal_checkpoints_and_says_how_to_resume(data, reference, tmp_path, signum, code):
    run = tmp_path / "run"
    proc = _cli("train", str(data), "--out", str(run), *ARGS)
    deadline = time.monotonic() + 120
    while not _checkpoints(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert f"interrupted by {signal.Signals(signum).name}" in last and f"lamina resume {run}" in last
    resumed = _cli("resume", str(run), "--quiet")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert (run / "model.safetensors").read_bytes() == reference
