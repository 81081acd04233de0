"""The meter in whole runs: summary.json and energy.jsonl, the budget stop, and a resumed run's total."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import lamina
from lamina.reporting import RunFolder
from lamina.reporting.energy import section_energy
from lamina.training import checkpoint
from lamina.training.callbacks import Callback, Interrupted

pytestmark = pytest.mark.usefixtures("sigint_delivered")  # they send themselves SIGINT

BASE = ["data.batch_size=16", "model.name=cnn", "model.width=4", "energy.interval=0", "train.deterministic=true"]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "energy.jsonl").read_text().splitlines()]


def test_a_run_records_its_energy(npz, tmp_path):
    run = lamina.train(str(npz), epochs=3, out=str(tmp_path / "run"), quiet=True, overrides=BASE)
    s = run.summary
    assert s["energy_method"] == "estimate" and s["energy_estimated"] is True and s["energy_j"] > 0
    assert s["co2e_g"] == pytest.approx(s["energy_j"] / 3.6e6 * s["grid_intensity_g_per_kwh"])
    recs = _records(run.dir)
    assert [r["kind"] for r in recs] == ["epoch"] * 3 + ["total"] and [r["epoch"] for r in recs[:3]] == [1, 2, 3]
    assert recs[-1]["total_joules"] == s["energy_j"]
    body = section_energy(RunFolder(run.dir)).body
    assert "energy (estimated)" in body and "per point of test accuracy" in body


def test_the_budget_stops_a_run_with_a_checkpoint(npz, tmp_path):
    run = lamina.train(str(npz), epochs=50, out=str(tmp_path / "run"), quiet=True,
                       overrides=[*BASE, "energy.max_kwh=1e-7"])  # 0.36 J
    assert run.summary["stop_reason"] == "energy budget of 1e-07 kWh reached"
    assert run.summary["energy_j"] >= 0.36 and run.summary["epochs"] < 50
    state, _ = checkpoint.latest(run.dir / "checkpoints")
    assert state["counters"]["step"] == run.summary["steps"] and state["callbacks"]["EnergyMeter"]["total_joules"] >= 0.36


class SignalAt(Callback):
    order = 10  # before the checkpoint callback, which acts on the flag in the same step

    def __init__(self, step: int) -> None:
        self.step = step

    def batch_end(self, trainer):
        if trainer.step == self.step:
            # Spend 50 ms of CPU first: the estimate counts busy time in 10 ms ticks and is read only
            # after its 10 ms update period, so a fast machine could otherwise checkpoint an epoch of 0 J.
            start = time.process_time()
            while time.process_time() - start < 0.05:
                pass
            os.kill(os.getpid(), signal.SIGINT)


def test_a_resumed_run_continues_its_total(npz, tmp_path):
    with pytest.raises(Interrupted) as info:  # 7 steps an epoch: step 10 is inside epoch 2
        lamina.train(str(npz), epochs=3, out=str(tmp_path / "run"), quiet=True, overrides=BASE,
                     callbacks=[SignalAt(10)])
    state = checkpoint.load(info.value.checkpoint)
    before = state["callbacks"]["EnergyMeter"]
    assert before["total_joules"] > 0 and before["epoch_joules"] > 0
    assert _records(tmp_path / "run")[-1]["kind"] == "interrupted"
    run = lamina.resume(tmp_path / "run", quiet=True)
    recs = _records(run.dir)
    assert [r["kind"] for r in recs] == ["epoch", "interrupted", "epoch", "epoch", "total"]
    assert recs[1]["total_joules"] >= before["total_joules"]  # also the read after the checkpoint
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert epochs[1]["joules"] > before["epoch_joules"]  # epoch 2: before the interrupt and after the resume
    assert sum(r["joules"] for r in epochs) == pytest.approx(epochs[2]["total_joules"])
    assert run.summary["energy_j"] == recs[-1]["total_joules"] > before["total_joules"]
