"""Exact resume, signals, corrupt checkpoints and non-finite values, in-process on tiny data."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import lamina
from lamina.errors import LaminaError
from lamina.training.callbacks import Callback, Interrupted
from lamina.training.nan_guard import NonFiniteError

pytestmark = pytest.mark.usefixtures("sigint_delivered")  # they send themselves SIGINT

BASE = ["train.deterministic=true", "train.checkpoint_every=3", "data.batch_size=16", "model.name=cnn",
        "model.width=4", "train.ema=0.9", "model.dropout=0.2", "data.cutout=2"]


def _train(npz, out, *extra, callbacks=()):
    return lamina.train(str(npz), epochs=3, out=str(out), quiet=True, overrides=[*BASE, *extra], callbacks=callbacks)


class SignalAt(Callback):
    order = 10  # before the checkpoint callback, which acts on the flag in the same step

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.step, self.signum = step, signum

    def batch_end(self, trainer):
        if trainer.step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.fixture(scope="module")
def reference(npz, tmp_path_factory):
    run = _train(npz, tmp_path_factory.mktemp("ref") / "run")
    return (run.dir / "model.safetensors").read_bytes(), run


@pytest.mark.parametrize("step,signum", [(5, signal.SIGINT), (7, signal.SIGTERM), (14, signal.SIGINT), (15, signal.SIGTERM)])
def test_interrupt_then_resume_is_bit_identical(npz, tmp_path, reference, step, signum):
    # 150 examples: 8 per class held out for test, 5 % of the rest for val -> 7 steps of 16 an epoch
    with pytest.raises(Interrupted) as info:
        _train(npz, tmp_path / "run", callbacks=[SignalAt(step, signum)])
    assert info.value.step == step and info.value.signum == signum
    assert info.value.checkpoint.name == f"step-{step:09d}"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler from before is back
    run = lamina.resume(tmp_path / "run", quiet=True)
    assert (run.dir / "model.safetensors").read_bytes() == reference[0]
    assert run.summary["steps"] == reference[1].summary["steps"]
    assert run.summary["total_seconds"] >= run.summary["train_seconds"]
    steps = [r for r in (run.dir / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in r]
    assert len(steps) == 3  # each epoch logged once


def test_an_ignored_sigint_stays_ignored(npz, tmp_path):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    _train(npz, tmp_path / "run", "train.checkpoint_every=0")
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_resume_skips_a_corrupt_checkpoint(npz, tmp_path, reference, capsys):
    with pytest.raises(Interrupted):
        _train(npz, tmp_path / "run", callbacks=[SignalAt(11)])
    newest = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    (newest / "tensors.safetensors").write_bytes(b"garbage")
    from rich.console import Console

    run = lamina.resume(tmp_path / "run", console=Console(stderr=True))
    assert "skipping checkpoint" in capsys.readouterr().err
    assert (run.dir / "model.safetensors").read_bytes() == reference[0]


def test_resume_errors(tmp_path, reference):
    with pytest.raises(LaminaError, match="does not exist"):
        lamina.resume(tmp_path / "none")
    with pytest.raises(LaminaError, match="already finished"):
        lamina.resume(reference[1].dir)


class NanAt(Callback):
    """stage2 of the model returns NaN in training steps ``step`` .. ``step + times - 1``."""

    def __init__(self, step: int, times: int = 1) -> None:
        self.step, self.times = step, times

    def fit_start(self, trainer):
        def hook(module, inputs, output):
            if module.training and self.step <= trainer.step + 1 < self.step + self.times:
                return output * float("nan")
            return output

        trainer.module.stage2.register_forward_hook(hook)


def test_nan_stop_names_step_and_layer_and_keeps_checkpoint(npz, tmp_path):
    with pytest.raises(NonFiniteError, match=r"step 5: the first non-finite output is layer 'stage2'") as info:
        _train(npz, tmp_path / "run", callbacks=[NanAt(5)])
    assert "lower train.lr" in str(info.value)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-000000003"]
    from lamina.training import checkpoint

    state = checkpoint.load(tmp_path / "run" / "checkpoints" / ckpts[0])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nan_skip_and_rollback_finish_the_run(npz, tmp_path):
    run = _train(npz, tmp_path / "skip", "train.on_nan=skip", callbacks=[NanAt(5, times=2)])
    assert run.summary["skipped_steps"] == 2 and np.isfinite(run.summary["test_loss"])
    run = _train(npz, tmp_path / "rb", "train.on_nan=rollback", callbacks=[NanAt(8)])
    assert np.isfinite(run.summary["test_loss"]) and run.summary["steps"] == 21


class FillDisk(Callback):
    """After the first checkpoint, fill the disk the run folder is on."""

    def __init__(self, folder):
        self.folder = folder

    def batch_end(self, trainer):
        if trainer.step == 4:
            with open(self.folder / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass


def _tmpfs(path, size="3m"):
    import subprocess

    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _fail_after_first_checkpoint(monkeypatch):
    from lamina.training import checkpoint as ck

    real = ck.save_file

    def save_file(tensors, path):
        if any(Path(path).parent.parent.glob("step-*")):
            raise OSError(28, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(ck, "save_file", save_file)


def test_full_disk_keeps_the_previous_checkpoint(npz, tmp_path, monkeypatch):
    """A real full disk (a 3 MB tmpfs filled after the first checkpoint) where root may mount one."""
    disk = tmp_path / "disk"
    mounted = _tmpfs(disk)
    if not mounted:
        _fail_after_first_checkpoint(monkeypatch)
    try:
        with pytest.raises(LaminaError, match=r"No space left.*earlier checkpoints are intact"):
            _train(npz, disk / "run", callbacks=[FillDisk(disk)] if mounted else [])
        ckpts = sorted((disk / "run" / "checkpoints").glob("step-*"))
        assert [p.name for p in ckpts] == ["step-000000003"]
        from lamina.training import checkpoint

        assert checkpoint.load(ckpts[0])["counters"]["step"] == 3
        assert not list((disk / "run" / "checkpoints").glob(".tmp-*"))
    finally:
        if mounted:
            import subprocess

            subprocess.run(["umount", str(disk)], check=False)


def test_full_disk_is_a_one_line_cli_error(npz, tmp_path, monkeypatch, capsys):
    from lamina.cli.main import main

    _fail_after_first_checkpoint(monkeypatch)
    assert main(["train", str(npz), "--out", str(tmp_path / "run"), "--quiet", *BASE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "No space left" in err, err


def test_callback_state_and_counters_are_checkpointed(npz, tmp_path):
    from lamina.training import checkpoint

    with pytest.raises(Interrupted):
        _train(npz, tmp_path / "run", "train.early_stopping=5", callbacks=[SignalAt(10)])
    state = checkpoint.load(sorted((tmp_path / "run" / "checkpoints").iterdir())[-1])
    assert state["counters"]["step"] == 10 and state["counters"]["samples"] == 160
    assert state["callbacks"]["EarlyStopping"]["bad"] == 0 and state["callbacks"]["EarlyStopping"]["best"] > 0
    assert state["data"] == {"epoch": 1, "position": 3, "seed": 0}  # 7 steps an epoch: step 10 = 3rd of epoch 2


def test_adamw_resume_on_channels_last_weights_is_bit_identical(npz, tmp_path):
    # the fused CPU AdamW kernel reads its moments in the parameter's layout: a checkpoint stores them
    # contiguous, so resuming a channels_last conv net must put them back in channels_last (it diverged)
    ref = _train(npz, tmp_path / "ref", "train.optimizer=adamw", "train.lr=0.003")
    with pytest.raises(Interrupted):
        _train(npz, tmp_path / "run", "train.optimizer=adamw", "train.lr=0.003", callbacks=[SignalAt(8)])
    run = lamina.resume(tmp_path / "run", quiet=True)
    assert (run.dir / "model.safetensors").read_bytes() == (ref.dir / "model.safetensors").read_bytes()
