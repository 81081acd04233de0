"""The energy meter: a callback that reads a counter now and then and keeps every run's joules.

It costs one clock comparison a step: the counter is read at fit start, at most every
``interval`` seconds during an epoch (never more often than the counter updates), at every epoch
end and at fit end. Each epoch appends a record to ``energy.jsonl``; fit end appends the total
(``"kind": "interrupted"`` instead when a signal or an error ended the fit before its last epoch).
The sum of read-to-read differences is robust to a counter that wraps around (its range is added
back), stalls (a window of zero, caught up by the next read) or goes backwards without a wrap (a
driver reload: that window counts 0, the meter re-bases and counts the event as ``resets``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lamina.config import EnergyConfig
from lamina.energy.co2 import JOULES_PER_KWH, co2e_g, grid_intensity
from lamina.energy.counters import KINDS, Counter, choose_counter
from lamina.errors import LaminaError, did_you_mean
from lamina.training.callbacks import Callback, CancelFit
from lamina.utils import dist
from lamina.utils.io import JsonLines

if TYPE_CHECKING:
    from lamina.training.loop import Loop


class EnergyMeter(Callback):
    """Measures a run's energy from ``counter``; writes ``energy.jsonl``; stops at a budget.

    Args:
        path: the JSON-lines file (``RUN/energy.jsonl``), appended to on resume.
        counter: where the joules come from (see :mod:`lamina.energy.counters`).
        interval: seconds between reads inside an epoch (raised to the counter's ``min_interval``).
        max_joules: raise :class:`CancelFit` once this much is spent (checked at each read, so a run may
            overshoot by up to ``interval`` seconds' worth); 0: no limit.
        grid: (gCO2e per kWh, its source) for the CO2e figure; None: the world average.
        clock: monotonic seconds (injected in tests).
        sleep: waits out the counter's update period before the final read (injected in tests).

    >>> from lamina.energy.counters import EstimateCounter
    >>> EnergyMeter("energy.jsonl", EstimateCounter()).summary()["energy_method"]
    'estimate'
    """

    # after Checkpoint (80): a full disk fails first where the error says the checkpoints are intact;
    # a checkpoint still holds the energy up to its own step (state_dict reads the counter first)
    order = 85

    def __init__(self, path: str | Path, counter: Counter, *, interval: float = 5.0, max_joules: float = 0.0,
                 grid: tuple[float, str] | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (interval >= 0 and max_joules >= 0):
            raise LaminaError(f"the energy meter needs interval >= 0 and max_joules >= 0, not {interval} and {max_joules}")
        self.path, self.counter, self.max_joules = Path(path), counter, max_joules
        self.period = max(interval, counter.min_interval)
        self.grid = grid if grid is not None else grid_intensity("")
        self._clock, self._sleep = clock, sleep
        self.total_joules = self.seconds = self.epoch_joules = self.epoch_seconds = 0.0
        self.resets = self.reads = 0
        self._estimated_before = False  # a resumed run whose earlier part was estimated stays labelled so
        self._last_value = self._last_time = self._next = math.nan
        self._file: JsonLines | None = None  # opened at the first record, closed at fit end
        self._running = False

    @property
    def estimated(self) -> bool:
        """True when any part of the total (this fit or one before a resume) came from the power model."""
        return self.counter.method == "estimate" or self._estimated_before

    # -- events ---------------------------------------------------------------------------------------
    def fit_start(self, loop: Loop) -> None:
        self._running = True
        self._last_value, self._last_time = self.counter.read(), self._clock()  # a resumed run re-bases here
        self.reads += 1
        self._next = self._last_time + self.period

    def batch_end(self, loop: Loop) -> None:
        if self._clock() < self._next:  # all a step costs
            return
        self._sample()
        if not dist.active():  # several processes read at different steps: their budget is checked at epoch ends
            self._check_budget()

    def epoch_end(self, loop: Loop) -> None:
        if self._due():
            self._sample()
        epoch, total = self._job(self.epoch_joules), self._job(self.total_joules)  # every rank's, added
        self._write("epoch", loop, joules=epoch, seconds=self.epoch_seconds, job_total_joules=total)
        self.epoch_joules = self.epoch_seconds = 0.0
        self._check_budget(total)

    def _job(self, joules: float) -> float:
        """``joules`` of this process summed over a job's processes (a RAPL package once per node)."""
        if not dist.active():
            return joules
        own = joules if self.counter.method != "rapl" or os.environ.get("LOCAL_RANK", "0") == "0" else 0.0
        return dist.agree(own, "sum")

    def fit_end(self, loop: Loop) -> None:
        if not self._running:
            return
        wait = self.counter.min_interval - (self._clock() - self._last_time)
        if wait > 0:  # a read sooner than the counter updates would miss the last window
            self._sleep(wait)
        self._sample()
        # an interrupt or a crash also ends the fit: its record says so, and a resumed run appends the total
        finished = loop.epoch >= loop.epochs or bool(loop.stop_reason)
        self._running = False
        try:
            self._write("total" if finished else "interrupted", loop, joules=self.total_joules,
                        seconds=self.seconds, co2e_g=co2e_g(self.total_joules, self.grid[0]))
        except LaminaError:
            if finished:
                raise
            # an error (a full disk, a signal) is ending the fit: it is what the user must see, not this
        finally:
            if self._file is not None:
                with contextlib.suppress(OSError):  # the buffered line of a full disk cannot be flushed
                    self._file.close()
                self._file = None

    # -- accumulation ---------------------------------------------------------------------------------
    def _due(self) -> bool:
        elapsed = self._clock() - self._last_time
        return elapsed > 0 and elapsed >= self.counter.min_interval

    def _sample(self) -> None:
        now, value = self._clock(), self.counter.read()
        self.reads += 1
        delta = value - self._last_value
        if delta < 0 and self.counter.wrap:
            delta += self.counter.wrap  # wrapped around once (it cannot wrap twice within one interval)
        if delta < 0:  # backwards without a wrap: the driver reloaded; this window is unknown
            self.resets += 1
            delta = 0.0
        elapsed = now - self._last_time
        self.total_joules += delta
        self.epoch_joules += delta
        self.seconds += elapsed
        self.epoch_seconds += elapsed
        self._last_value, self._last_time, self._next = value, now, now + self.period

    def _check_budget(self, total: float | None = None) -> None:
        if self.max_joules > 0 and (self.total_joules if total is None else total) >= self.max_joules:
            raise CancelFit(f"energy budget of {self.max_joules / JOULES_PER_KWH:g} kWh reached")

    def _write(self, kind: str, loop: Loop, *, joules: float, seconds: float, **extra: Any) -> None:
        if not dist.is_main():  # rank 0 writes the job's records
            return
        if self._file is None:
            self._file = JsonLines(self.path)
        self._file.write({"kind": kind, "epoch": loop.epoch, "step": loop.step, "joules": joules,
                          "total_joules": self.total_joules, "seconds": seconds,
                          "watts": joules / seconds if seconds > 0 else None, "method": self.counter.method,
                          "device": self.counter.device, "estimated": self.estimated, "resets": self.resets, **extra})

    # -- state and results ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The totals so far (read first, when a checkpoint is taken mid-epoch), for a resumed run."""
        if self._running and self._due():
            self._sample()
        return {"total_joules": self.total_joules, "seconds": self.seconds, "epoch_joules": self.epoch_joules,
                "epoch_seconds": self.epoch_seconds, "resets": self.resets, "estimated": self.estimated,
                "method": self.counter.method}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the totals of :meth:`state_dict` (the counter is re-based at the next fit start).

        What was spent between that checkpoint and the end of the interrupted process is in its
        ``interrupted`` record, not in the resumed total (those steps are not run again).
        """
        self.total_joules, self.seconds = float(state["total_joules"]), float(state["seconds"])
        self.epoch_joules, self.epoch_seconds = float(state["epoch_joules"]), float(state["epoch_seconds"])
        self.resets = int(state["resets"])
        self._estimated_before = bool(state["estimated"])

    def summary(self) -> dict[str, Any]:
        """The run's energy for ``summary.json``: joules, how they were obtained, and their CO2e."""
        g, source = self.grid
        return {"energy_j": self.total_joules, "energy_method": self.counter.method,
                "energy_device": self.counter.device, "energy_estimated": self.estimated,
                "energy_note": self.counter.note, "energy_resets": self.resets,
                "co2e_g": co2e_g(self.total_joules, g), "grid_intensity_g_per_kwh": g, "grid_source": source}

    @classmethod
    def from_config(cls, cfg: EnergyConfig, device: torch.device, run_dir: str | Path) -> EnergyMeter | None:
        """The meter ``cfg`` asks for on ``device``, writing ``run_dir/energy.jsonl``; None for ``meter=off``."""
        check_config(cfg)
        if cfg.meter == "off":
            return None
        counter = choose_counter(cfg.meter, device, cpu_watts_per_core=cfg.cpu_watts_per_core)
        return cls(Path(run_dir) / "energy.jsonl", counter, interval=cfg.interval,
                   max_joules=cfg.max_kwh * JOULES_PER_KWH, grid=grid_intensity(cfg.grid_intensity))


def check_config(cfg: EnergyConfig) -> None:
    """One-line errors for a bad ``energy`` section: meter name, negative numbers, grid intensity."""
    if cfg.meter not in (*KINDS, "off"):
        raise LaminaError(f"unknown energy.meter '{cfg.meter}': {did_you_mean(cfg.meter, (*KINDS, 'off'))}")
    for key in ("max_kwh", "interval", "cpu_watts_per_core"):
        value = getattr(cfg, key)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise LaminaError(f"energy.{key} must be a finite number, 0 or more, not {value}")
    grid_intensity(cfg.grid_intensity)
