"""Jobs of several processes on the CPU (gloo), started the way users start them: torchrun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

# A small classifier run whose every step is the same on 1 and on 2 ranks: no BatchNorm (each rank
# would normalise its half of the batch), no dropout, no augmentation; deterministic kernels.
RUN_ARGS = ["--model", "mlp", "--batch-size", "16", "--quiet", "--deterministic", "--checkpoint-every", "5",
            "model.norm=none", "model.dropout=0", "data.translate=0", "data.cutout=0", "data.flip=false", "train.keep_checkpoints=1000",
            "train.gradient_flow_every=0", "energy.meter=off",
            "train.precision=fp32"]  # bf16 autocast (auto on CPUs with AVX512-BF16) rounds far above float tolerance


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"):
        env.pop(key, None)
    return env


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on (free once the probe closes)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(nproc: int, *args: str, torchrun: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *torchrun,
            "-m", "lamina", *args]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def lamina(*args: str, nproc: int = 1, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``lamina ARGS`` in one process, or on ``nproc`` through torchrun."""
    cmd = [sys.executable, "-m", "lamina", *args] if nproc == 1 else torchrun_cmd(nproc, *args)
    return run(cmd, timeout)


def popen(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(p for p in folder.iterdir() if p.name.startswith("step-")) if folder.is_dir() else []


def unfinished_copy(src: Path, dst: Path, keep_step: int) -> Path:
    """``src`` as it was when its checkpoint of step ``keep_step`` was the newest: a run to resume."""
    shutil.copytree(src, dst)
    for name in ("summary.json", "model.safetensors", "model.json", "report.html"):
        (dst / name).unlink(missing_ok=True)
    for ckpt in checkpoints(dst):
        if int(ckpt.name.removeprefix("step-")) > keep_step:
            shutil.rmtree(ckpt)
    return dst


def worker_pids(launcher: subprocess.Popen[str], nproc: int, timeout: float = 120) -> dict[int, int]:
    """torchrun's workers by rank (read from each child's environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [int(c) for c in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()]
        ranks = {}
        for pid in kids:
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                ranks[int(rank[0].split(b"=")[1])] = pid
        if len(ranks) == nproc:
            return ranks
        time.sleep(0.05)
    raise AssertionError("torchrun's workers did not start")


def wait_for_checkpoint(run_dir: Path, launcher: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not checkpoints(run_dir):
        assert launcher.poll() is None, f"the job ended before its first checkpoint:\n{launcher.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


@pytest.fixture(scope="session")
def table_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """325 8x8 images of 3 classes (a test split of odd size: shards of unequal size on 2 ranks)."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("dist-data") / "blobs.npz"
    y = rng.integers(0, 3, 325)
    x = (rng.random((325, 1, 8, 8)) * 120 + y[:, None, None, None] * 50).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path

