"""The energy meter against scripted counters and an injected clock: exact totals through wraps,
stalls and driver resets, read frequency, the budget, the records, resume state, a real Trainer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from lamina.config import EnergyConfig
from lamina.data.base import Preprocess, Split
from lamina.data.gpu_loader import DeviceLoader
from lamina.energy import EnergyMeter, EstimateCounter, check_config
from lamina.energy.co2 import JOULES_PER_KWH, WORLD_AVERAGE_G_PER_KWH
from lamina.errors import LaminaError
from lamina.tasks.classify import Classify
from lamina.training.callbacks import CancelFit
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer


class Clock:
    """Seconds that move only when the test says so (``tick`` each call, plus ``advance``)."""

    def __init__(self, tick: float = 0.0) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeCounter:
    """Reads come from a script (the last value repeats); records the clock at every read."""

    method, device, note = "nvml", "fake gpu", "scripted reads"

    def __init__(self, values: list[float], clock: Clock, *, wrap: float | None = None, min_interval: float = 0.0):
        self.values, self.clock, self.wrap, self.min_interval = list(values), clock, wrap, min_interval
        self.read_times: list[float] = []

    def read(self) -> float:
        self.read_times.append(self.clock.t)
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


@dataclass
class FakeLoop:
    step: int = 0
    epoch: int = 0
    epochs: int = 1
    stop_reason: str = ""
    extra: dict = field(default_factory=dict)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def drive(meter: EnergyMeter, clock: Clock, *, epochs: int, steps: int, dt: float = 1.0) -> FakeLoop:
    """fit_start, ``steps`` batches of ``dt`` seconds per epoch, epoch ends, fit_end (as the Trainer does)."""
    loop = FakeLoop(epochs=epochs)
    meter.fit_start(loop)
    try:
        for _ in range(epochs):
            for _ in range(steps):
                clock.advance(dt)
                loop.step += 1
                meter.batch_end(loop)
            loop.epoch += 1
            meter.epoch_end(loop)
    except CancelFit as stop:
        loop.stop_reason = str(stop)
    finally:
        meter.fit_end(loop)
    return loop


def test_wraps_stalls_and_resets_give_exact_totals(tmp_path: Path) -> None:
    clock = Clock()
    # true energy: +50, stall (+0), +30 (catch-up after the stall), wrap at 200: 180 -> 20 is +40, +40
    wrapping = FakeCounter([100, 150, 150, 180, 20, 60], clock, wrap=200.0)
    meter = EnergyMeter(tmp_path / "a.jsonl", wrapping, interval=1.0, clock=clock, sleep=clock.advance)
    drive(meter, clock, epochs=1, steps=5)
    assert meter.total_joules == 50 + 0 + 30 + 40 + 40 and meter.resets == 0

    clock = Clock()
    # no wrap range: 180 -> 5 is a driver reset (that window counts 0), then +10 and +15 from the new base
    resetting = FakeCounter([100, 150, 180, 5, 15, 30], clock)
    meter = EnergyMeter(tmp_path / "b.jsonl", resetting, interval=1.0, clock=clock, sleep=clock.advance)
    drive(meter, clock, epochs=1, steps=5)
    assert meter.total_joules == 50 + 30 + 0 + 10 + 15
    assert meter.resets == 1 and records(tmp_path / "b.jsonl")[-1]["resets"] == 1


def test_reads_are_never_closer_than_interval_or_min_interval(tmp_path: Path) -> None:
    # two epochs of 23 steps of 0.5 s (11.5 s each); reads at fit start, whenever a period has passed at a
    # step, at epoch ends (unless the counter has not updated since) and at fit end (after waiting it out)
    cases = {(5.0, 0.0): [0.0, 5.0, 10.0, 11.5, 16.5, 21.5, 23.0, 23.0],
             (2.0, 7.0): [0.0, 7.0, 14.0, 21.0, 28.0]}  # interval raised to min_interval; epoch ends too soon
    for (interval, min_interval), expected in cases.items():
        clock = Clock()
        counter = FakeCounter([float(i) for i in range(1000)], clock, min_interval=min_interval)
        meter = EnergyMeter(tmp_path / f"{interval}.jsonl", counter, interval=interval, clock=clock, sleep=clock.advance)
        drive(meter, clock, epochs=2, steps=23, dt=0.5)
        assert counter.read_times == expected
        assert meter.total_joules == len(expected) - 1


def test_batch_end_reads_only_the_clock_between_reads(tmp_path: Path) -> None:
    clock = Clock()
    counter = FakeCounter([0.0, 1.0], clock)
    meter = EnergyMeter(tmp_path / "e.jsonl", counter, interval=5.0, clock=clock)
    loop = FakeLoop()
    meter.fit_start(loop)
    for _ in range(4):
        clock.advance(1.0)
        meter.batch_end(loop)
    assert len(counter.read_times) == 1  # only fit start's read
    clock.advance(1.0)
    meter.batch_end(loop)
    assert len(counter.read_times) == 2 and meter.total_joules == 1.0


def test_budget_raises_cancel_fit_at_the_read_that_reaches_it(tmp_path: Path) -> None:
    clock = Clock()
    counter = FakeCounter([30.0 * i for i in range(100)], clock)
    meter = EnergyMeter(tmp_path / "f.jsonl", counter, interval=1.0, max_joules=100.0, clock=clock)
    loop = FakeLoop()
    meter.fit_start(loop)
    for i in range(1, 4):
        clock.advance(1.0)
        meter.batch_end(loop)  # 30, 60, 90 J
        assert meter.total_joules == 30.0 * i
    clock.advance(1.0)
    with pytest.raises(CancelFit, match=f"energy budget of {100 / JOULES_PER_KWH:g} kWh reached"):
        meter.batch_end(loop)


def test_records_per_epoch_and_total(tmp_path: Path) -> None:
    clock = Clock()
    counter = FakeCounter([10.0 * i for i in range(100)], clock)  # 10 J a read
    meter = EnergyMeter(tmp_path / "energy.jsonl", counter, interval=2.0, clock=clock, sleep=clock.advance,
                        grid=(100.0, "test grid"))
    drive(meter, clock, epochs=2, steps=4)
    recs = records(tmp_path / "energy.jsonl")
    assert [r["kind"] for r in recs] == ["epoch", "epoch", "total"]
    # per epoch: reads at 2 s and 4 s into it (the epoch end is at 4 s: already read), so 20 J in 4 s
    assert [r["joules"] for r in recs[:2]] == [20.0, 20.0] and [r["seconds"] for r in recs[:2]] == [4.0, 4.0]
    assert [r["epoch"] for r in recs] == [1, 2, 2] and [r["step"] for r in recs] == [4, 8, 8]
    assert recs[1]["total_joules"] == 40.0 and recs[0]["watts"] == 5.0
    total = recs[-1]
    assert total["total_joules"] == total["joules"] == meter.total_joules == 50.0  # the final read adds 10
    assert total["co2e_g"] == pytest.approx(50.0 / JOULES_PER_KWH * 100.0)
    assert {r["method"] for r in recs} == {"nvml"} and not any(r["estimated"] for r in recs)
    s = meter.summary()
    assert s["energy_j"] == 50.0 and s["grid_source"] == "test grid" and s["energy_estimated"] is False
    assert set(s) >= {"energy_j", "energy_method", "energy_device", "energy_estimated", "energy_note", "co2e_g",
                      "grid_intensity_g_per_kwh", "grid_source"}


def test_final_read_waits_out_the_counters_update_period(tmp_path: Path) -> None:
    clock = Clock()
    counter = FakeCounter([0.0, 7.0], clock, min_interval=0.1)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    meter = EnergyMeter(tmp_path / "g.jsonl", counter, interval=5.0, clock=clock, sleep=sleep)
    loop = FakeLoop()
    meter.fit_start(loop)
    clock.advance(0.04)
    meter.epoch_end(loop)  # too soon after fit start: not read, the window goes on
    meter.fit_end(loop)
    assert waits == [pytest.approx(0.06)] and counter.read_times == [0.0, pytest.approx(0.1)]
    assert meter.total_joules == 7.0


def test_state_round_trip_continues_the_total(tmp_path: Path) -> None:
    clock = Clock()
    first = EnergyMeter(tmp_path / "h.jsonl", FakeCounter([0, 10, 25, 40], clock), interval=1.0, clock=clock,
                        sleep=clock.advance)
    loop = FakeLoop()
    first.fit_start(loop)
    for _ in range(2):
        clock.advance(1.0)
        first.batch_end(loop)
    clock.advance(1.0)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it; reads first: 40 J
    assert state["total_joules"] == 40.0 and state["epoch_joules"] == 40.0

    clock2 = Clock()  # a new process: the counter starts somewhere else entirely
    second = EnergyMeter(tmp_path / "h.jsonl", FakeCounter([5000, 5007], clock2), interval=1.0, clock=clock2,
                         sleep=clock2.advance)
    second.load_state_dict(state)
    second.fit_start(loop)
    clock2.advance(1.0)
    loop.epoch += 1
    second.epoch_end(loop)
    assert second.total_joules == 47.0 and second.seconds == 4.0
    assert records(tmp_path / "h.jsonl")[-1]["joules"] == 47.0  # the resumed epoch's whole energy
    second.fit_end(loop)


def test_estimated_label_survives_resume_on_a_measured_counter(tmp_path: Path) -> None:
    est = EnergyMeter(tmp_path / "i.jsonl", EstimateCounter(times=lambda: (1.0, 0.5)))
    assert est.summary()["energy_estimated"] is True
    clock = Clock()
    measured = EnergyMeter(tmp_path / "i.jsonl", FakeCounter([0.0], clock), clock=clock)
    measured.load_state_dict(est.state_dict())
    assert measured.summary()["energy_estimated"] is True


def test_from_config_and_check_config(tmp_path: Path) -> None:
    assert EnergyMeter.from_config(EnergyConfig(meter="off"), torch.device("cpu"), tmp_path) is None
    meter = EnergyMeter.from_config(EnergyConfig(meter="estimate", max_kwh=0.5, interval=2.0, grid_intensity="200",
                                                 cpu_watts_per_core=4.0), torch.device("cpu"), tmp_path)
    assert meter is not None and meter.path == tmp_path / "energy.jsonl"
    assert meter.max_joules == 0.5 * JOULES_PER_KWH and meter.period == 2.0 and meter.grid[0] == 200.0
    assert meter.counter.method == "estimate" and "4 W per busy core" in meter.counter.note
    default = EnergyMeter.from_config(EnergyConfig(meter="estimate"), torch.device("cpu"), tmp_path)
    assert default is not None and default.grid[0] == WORLD_AVERAGE_G_PER_KWH
    bad = [(EnergyConfig(meter="nvm"), "did you mean 'nvml'"), (EnergyConfig(max_kwh=-1.0), "energy.max_kwh"),
           (EnergyConfig(interval=-5.0), "energy.interval"), (EnergyConfig(cpu_watts_per_core=float("nan")), "cpu_watts"),
           (EnergyConfig(grid_intensity="abc"), "grid_intensity"), (EnergyConfig(grid_intensity="-3"), "grid_intensity")]
    for cfg, message in bad:
        with pytest.raises(LaminaError, match=message) as err:
            check_config(cfg)
        assert "\n" not in str(err.value)


# -- inside a real Trainer ------------------------------------------------------------------------------

def _trainer(callbacks: list) -> tuple[Trainer, DeviceLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    split = Split(x, (x[:, 0] > 0).long())
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    loader = DeviceLoader(split, batch_size=16, device=torch.device("cpu"), preprocess=Preprocess(), shuffle=True, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, engine=Engine.create("cpu"), optimizer=opt, task=Classify(2), callbacks=callbacks), loader


def test_meter_in_a_real_trainer_writes_epoch_records(tmp_path: Path) -> None:
    cpu = iter(float(i) for i in range(10_000))  # a monotone scripted CPU time: 1 s a read
    clock = Clock(tick=0.5)
    meter = EnergyMeter(tmp_path / "energy.jsonl", EstimateCounter(2.0, times=lambda: (next(cpu), 0.0)),
                        interval=1.0, clock=clock, sleep=clock.advance)
    trainer, loader = _trainer([meter])
    trainer.fit(loader, epochs=3)
    recs = records(tmp_path / "energy.jsonl")
    assert [r["kind"] for r in recs] == ["epoch"] * 3 + ["total"]
    assert [r["epoch"] for r in recs[:3]] == [1, 2, 3] and [r["step"] for r in recs[:3]] == [4, 8, 12]
    assert sum(r["joules"] for r in recs[:3]) == pytest.approx(recs[2]["total_joules"])
    assert recs[-1]["total_joules"] == meter.total_joules > recs[2]["total_joules"]
    assert all(r["estimated"] and r["method"] == "estimate" for r in recs)
    # every read adds exactly 2 J (1 CPU second at 2 W): the total is 2 J per read after the first
    assert meter.total_joules == 2.0 * (meter.reads - 1)
    assert trainer.state_dict()["callbacks"]["EnergyMeter"]["total_joules"] >= meter.total_joules


def test_energy_budget_stops_a_real_trainer(tmp_path: Path) -> None:
    clock = Clock(tick=1.0)
    counter = FakeCounter([3.0 * i for i in range(1000)], clock)
    meter = EnergyMeter(tmp_path / "energy.jsonl", counter, interval=1.0, max_joules=10.0, clock=clock,
                        sleep=clock.advance)
    trainer, loader = _trainer([meter])
    trainer.fit(loader, epochs=5)
    assert trainer.stop_reason.startswith("energy budget of") and trainer.step < 20
    assert meter.total_joules >= 10.0 and records(tmp_path / "energy.jsonl")[-1]["kind"] == "total"
