"""Checks the energy counters against an independent reading over the same interval.

    python benchmarks/energy_check.py --device cuda   # benchmarks/results/energy_check_cuda.json
    python benchmarks/energy_check.py --device cpu    # benchmarks/results/energy_check_cpu.json

* CUDA: the NVML energy counter against instantaneous board power (``NVML_FI_DEV_POWER_INSTANT``)
  sampled every few ms by a thread and integrated (trapezoids) over the same window of a matmul
  load; they should agree within 5 %. The counter is the number: on A100/H100 the power sensor
  sees only ~25 % of the runtime (Yang et al., "Part-time Power Measurements", arXiv 2312.02741),
  so the integral is the noisy side of the comparison.
* CPU with readable RAPL: the RAPL package counters against CodeCarbon's CPU energy
  (``OfflineEmissionsTracker``) over the same window of a CPU load; the difference is reported, not
  tuned (CodeCarbon reads RAPL itself where it can, else falls back to a TDP model).

A check that cannot run here (no GPU, no NVML, no readable RAPL, no codecarbon) is written to the
JSON with the reason, and the script exits 0.
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from typing import Any

import torch
from common import environment, result_path, write

from lamina.energy.counters import CounterUnavailable, NvmlCounter, RaplCounter, nvml_index, sampled_power_w

TOLERANCE = 0.05


def gpu_load(seconds: float, device: torch.device) -> int:
    """Back-to-back bf16 matmuls for ``seconds`` (synchronised every few so the queue stays short)."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    c = torch.empty_like(a)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(8):
            torch.matmul(a, b, out=c)  # the same operands each time: a steady load (no under/overflow)
        torch.cuda.synchronize(device)
        n += 8
    return n


def integrate(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Trapezoid integral of (time, watts) samples over [t0, t1], clipped to the window."""
    inside = [(t, w) for t, w in samples if t0 <= t <= t1]
    if len(inside) < 2:
        raise RuntimeError("too few power samples in the window")
    joules = sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in itertools.pairwise(inside))
    # the edges: hold the first and last sample's power out to the window's ends
    return joules + (inside[0][0] - t0) * inside[0][1] + (t1 - inside[-1][0]) * inside[-1][1]


def check_cuda(seconds: float, repeats: int, period: float) -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"ran": False, "reason": "no CUDA device here"}
    device = torch.device("cuda", 0)
    try:
        index = nvml_index(device)
        counter = NvmlCounter(index)
        sampled_power_w(index)
    except CounterUnavailable as e:
        return {"ran": False, "reason": str(e)}
    gpu_load(3.0, device)  # warm up: clocks and temperature settle a little
    windows = []
    for _ in range(repeats):
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample(out: list[tuple[float, float]] = samples, done: threading.Event = stop) -> None:
            while not done.is_set():
                out.append((time.perf_counter(), sampled_power_w(index)))
                time.sleep(period)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        time.sleep(0.2)  # samples before the window opens
        t0, e0 = time.perf_counter(), counter.read()
        steps = gpu_load(seconds, device)
        t1, e1 = time.perf_counter(), counter.read()
        time.sleep(0.2)
        stop.set()
        thread.join()
        counter_j, sampled_j = e1 - e0, integrate(samples, t0, t1)
        diff = (sampled_j - counter_j) / counter_j
        windows.append({"seconds": t1 - t0, "counter_j": counter_j, "sampled_j": sampled_j, "difference": diff,
                        "mean_w_counter": counter_j / (t1 - t0), "power_samples": len(samples),
                        "matmuls": steps, "within_tolerance": abs(diff) <= TOLERANCE})
    return {"ran": True, "counter": counter.note, "tolerance": TOLERANCE, "sample_period_s": period,
            "windows": windows, "passed": all(w["within_tolerance"] for w in windows),
            "reference": "Yang et al., arXiv 2312.02741: A100/H100 power sensors sample ~25 % of the runtime"}


def cpu_load(seconds: float) -> int:
    x, n, end = torch.randn(512, 512), 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        x = torch.tanh(x @ x.T / 512)
        n += 1
    return n


def check_cpu(seconds: float, repeats: int) -> dict[str, Any]:
    try:
        counter = RaplCounter()
    except CounterUnavailable as e:
        return {"ran": False, "reason": f"no readable RAPL counter: {e}"}
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        return {"ran": False, "reason": "the RAPL check compares with CodeCarbon: pip install codecarbon"}
    windows = []
    for _ in range(repeats):
        tracker = OfflineEmissionsTracker(country_iso_code="USA", measure_power_secs=1, save_to_file=False,
                                          log_level="error", tracking_mode="machine")
        tracker.start()
        t0, e0 = time.perf_counter(), counter.read()
        steps = cpu_load(seconds)
        t1, e1 = time.perf_counter(), counter.read()
        tracker.stop()
        data = tracker.final_emissions_data
        cc_j = float(data.cpu_energy) * 3.6e6
        rapl_j = e1 - e0
        windows.append({"seconds": t1 - t0, "rapl_j": rapl_j, "codecarbon_cpu_j": cc_j,
                        "difference": (cc_j - rapl_j) / rapl_j if rapl_j else None,
                        "codecarbon_cpu_model": getattr(data, "cpu_model", "?"), "matmuls": steps})
    return {"ran": True, "counter": counter.note, "windows": windows,
            "note": "reported, not tuned: CodeCarbon may read other RAPL domains or fall back to a TDP model"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each measured window")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sample-period", type=float, default=0.002, help="seconds between power samples (cuda)")
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.manual_seed(0)
    check = check_cuda(a.seconds, a.repeats, a.sample_period) if a.device == "cuda" else check_cpu(a.seconds, a.repeats)
    result = {**environment(a.device), "settings": {"seconds": a.seconds, "repeats": a.repeats}, "seeds": [0],
              "check": "nvml counter vs sampled power" if a.device == "cuda" else "rapl counter vs codecarbon",
              **check}
    path = write(a.out or result_path("energy_check", a.device), result)
    if not check["ran"]:
        print(f"check did not run: {check['reason']}\nwrote {path}")
        return
    for w in check["windows"]:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in w.items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
