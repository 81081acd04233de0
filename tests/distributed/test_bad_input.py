"""What a job of several processes gets for bad input: one line each, and nothing hangs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.distributed.conftest import _env, free_port

import lamina
from lamina.errors import LaminaError

pytestmark = pytest.mark.distributed


def _lamina(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lamina", *args], capture_output=True, text=True, timeout=timeout,
                          env={**_env(), **(env or {})})


def test_unreachable_rendezvous_is_a_one_line_error_within_the_timeout(npz: Path, tmp_path: Path) -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    t0 = time.monotonic()
    r = _lamina("train", str(npz), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "r"),
                "train.dist_timeout=3", env=env)
    assert time.monotonic() - t0 < 60
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: [rank 1] could not join the process group at 127.0.0.1:"), r.stderr[-2000:]
    assert "check the rendezvous endpoint" in last and "Traceback" not in r.stderr


def test_strategy_none_under_torchrun_and_unknown_strategies(npz: Path, tmp_path: Path) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    r = _lamina("train", str(npz), "--model", "mlp", "--out", str(tmp_path / "r"), "train.strategy=none", env=env)
    assert r.returncode == 2 and "train.strategy=none, but torchrun started 2 processes" in r.stderr
    with pytest.raises(LaminaError, match=r"unknown train\.strategy 'dpp': did you mean 'ddp'"):
        lamina.train(str(npz), model="mlp", out=tmp_path / "s", overrides=["train.strategy=dpp"], quiet=True)
    with pytest.raises(LaminaError, match=r"train\.dist_timeout is in seconds"):
        lamina.train(str(npz), model="mlp", out=tmp_path / "s", overrides=["train.dist_timeout=0"], quiet=True)


def test_a_checkpoint_of_another_model_is_a_one_line_error(npz: Path, tmp_path: Path) -> None:
    small = lamina.train(str(npz), model="mlp", epochs=1, out=tmp_path / "small", quiet=True,
                         overrides=["model.width=16"])
    big = lamina.train(str(npz), model="mlp", epochs=1, out=tmp_path / "big", quiet=True, overrides=["model.width=32"])
    (big.dir / "summary.json").unlink()  # an unfinished run ...
    shutil.rmtree(big.dir / "checkpoints")
    shutil.copytree(small.dir / "checkpoints", big.dir / "checkpoints")  # ... given another run's checkpoints
    r = _lamina("resume", str(big.dir))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: the checkpoint holds another model than this run builds")
    assert "Traceback" not in r.stderr


def test_ddp_in_one_process_is_a_job_of_one(npz: Path, tmp_path: Path) -> None:
    """train.strategy=ddp without torchrun: DistributedDataParallel over a world of 1 (what the GPU
    overhead check measures), the same weights as no wrapper."""
    import torch
    from safetensors.torch import load_file

    args = dict(model="mlp", epochs=1, quiet=True, deterministic=True)
    plain = lamina.train(str(npz), out=tmp_path / "plain", **args)
    ddp = lamina.train(str(npz), out=tmp_path / "ddp", overrides=["train.strategy=ddp"], **args)
    assert (ddp.summary["world_size"], ddp.summary["strategy"]) == (1, "ddp")
    a, b = load_file(str(plain.dir / "model.safetensors")), load_file(str(ddp.dir / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    import torch.distributed as dist

    assert not dist.is_initialized()  # the job of one ended with its run
