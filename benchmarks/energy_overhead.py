"""The energy meter's own cost, as a fraction of training time, measured two ways.

    python benchmarks/energy_overhead.py        # writes benchmarks/results/energy_overhead_cpu.json

1. Side by side: the same Trainer on the same in-memory synthetic batches, alternately without and
   with an :class:`EnergyMeter` (the counter ``energy.meter=auto`` picks on this device, default
   interval), several pairs, in alternating order (off, on, on, off, ...). The per-pair difference
   of per-step time, as a fraction of the step without the meter, is reported as mean ± std.
   On a shared CPU this is mostly noise (about ±3 %) around a cost far smaller than that.
2. Directly: the time of ``batch_end`` between reads (one clock comparison) and of one counter read,
   each averaged over many calls; their cost per step (batch_end + read × steps per read) over the
   step time is the meter's fraction, without the noise of whole runs. The target is ≤ 0.5 %.

The model is a two-layer MLP on 784-feature batches of 128 (a fashion-mnist-sized step, ~1 ms on
two CPU threads): a cheap step makes the fraction large, so this is close to the worst case the
meter meets in practice.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import environment, mean_std, result_path, write
from torch import Tensor, nn

from lamina.energy.counters import choose_counter
from lamina.energy.meter import EnergyMeter
from lamina.tasks.classify import Classify
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer

BATCH, FEATURES, CLASSES = 128, 784, 10


class Batches(list[tuple[Tensor, Tensor]]):
    batch_size = BATCH


def make_batches(steps: int, seed: int) -> Batches:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH * steps, FEATURES, generator=g)
    y = torch.randint(0, CLASSES, (BATCH * steps,), generator=g)
    return Batches(zip(x.split(BATCH), y.split(BATCH), strict=True))


def fit(batches: Batches, *, meter: bool, seed: int, folder: Path) -> tuple[float, int]:
    """Seconds per step of one epoch, and how many times the meter read its counter."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, CLASSES))
    callbacks = [EnergyMeter(folder / "energy.jsonl", choose_counter("auto", torch.device("cpu")))] if meter else []
    trainer = Trainer(model, engine=Engine.create("cpu", precision="fp32"), task=Classify(CLASSES), on_nan="off",
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit(batches, epochs=1)
    seconds = time.perf_counter() - t0
    return seconds / len(batches), callbacks[0].reads if callbacks else 0


def per_call(fn: Callable[[], object], calls: int) -> float:
    best = float("inf")
    for _ in range(5):  # the best of 5: the call's own cost, not the machine's interruptions
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def micro(folder: Path, calls: int) -> dict[str, float]:
    counter = choose_counter("auto", torch.device("cpu"))
    meter = EnergyMeter(folder / "micro.jsonl", counter)

    class Loop:  # the counters the meter reads (lamina.training.loop.Loop)
        step = epoch = epochs = 0
        stop_reason = ""

    loop = Loop()
    meter.fit_start(loop)
    batch_end_s = per_call(lambda: meter.batch_end(loop), calls)  # between reads: the clock comparison only
    read_s = per_call(counter.read, max(1, calls // 10))
    meter.fit_end(loop)
    return {"batch_end_ns": 1e9 * batch_end_s, "read_us": 1e6 * read_s, "period_s": meter.period,
            "method": counter.method, "note": counter.note}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000, help="steps per timed run")
    p.add_argument("--pairs", type=int, default=8, help="pairs of runs (meter off, meter on), alternating")
    p.add_argument("--calls", type=int, default=200_000, help="calls per micro-measure of batch_end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(result_path("energy_overhead", "cpu")))
    a = p.parse_args()
    env = environment("cpu")
    batches = make_batches(a.steps, a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fit(batches, meter=True, seed=a.seed, folder=folder)  # warm-up
        step_s: dict[str, list[float]] = {"off": [], "on": []}
        reads: list[int] = []
        for i in range(a.pairs):
            for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                seconds, n = fit(batches, meter=name == "on", seed=a.seed, folder=folder)
                step_s[name].append(seconds)
                if name == "on":
                    reads.append(n)
        direct = micro(folder, a.calls)
    fractions = [(on - off) / off for on, off in zip(step_s["on"], step_s["off"], strict=True)]
    step = statistics.median(step_s["off"])
    cost = 1e-9 * direct["batch_end_ns"] + 1e-6 * direct["read_us"] * step / direct["period_s"]
    result = {**env, "settings": {"steps": a.steps, "pairs": a.pairs, "batch_size": BATCH,
                                  "model": f"MLP {FEATURES}-256-{CLASSES}", "optimizer": "sgd momentum 0.9",
                                  "threads": torch.get_num_threads(), "calls": a.calls},
              "seeds": [a.seed],
              "side_by_side": {"step_ms": {k: [1e3 * s for s in v] for k, v in step_s.items()},
                               "meter_fraction": mean_std(fractions), "reads_per_run": reads},
              "direct": {**direct, "step_ms_median": 1e3 * step, "meter_cost_per_step_us": 1e6 * cost,
                         "meter_fraction": cost / step},
              "target_fraction": 0.005}
    path = write(a.out, result)
    ms = result["side_by_side"]["meter_fraction"]
    print(f"side by side: meter adds {100 * ms['mean']:+.2f} ± {100 * ms['std']:.2f} % per step (n={ms['n']}); "
          f"direct: batch_end {direct['batch_end_ns']:.0f} ns, read {direct['read_us']:.1f} us every "
          f"{direct['period_s']:g} s -> {100 * cost / step:.4f} % of a {1e3 * step:.2f} ms step\nwrote {path}")


if __name__ == "__main__":
    main()
