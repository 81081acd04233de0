"""benchmarks/energy_overhead.py and energy_check.py at a tiny size: the JSON each writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lamina.energy.counters import CounterUnavailable, RaplCounter

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_energy_overhead_writes_side_by_side_and_direct_costs(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    done = run("energy_overhead.py", "--steps", "20", "--pairs", "2", "--calls", "2000", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in ("device", "torch", "lamina", "code_version", "command", "seeds"):
        assert key in r, key
    assert len(r["side_by_side"]["step_ms"]["on"]) == len(r["side_by_side"]["step_ms"]["off"]) == 2
    assert r["side_by_side"]["meter_fraction"]["n"] == 2 and r["direct"]["batch_end_ns"] > 0
    assert r["direct"]["meter_fraction"] < r["target_fraction"]


def test_energy_check_says_why_it_cannot_run(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run (benchmarks/energy_check.py --device cuda)")
    out = tmp_path / "check.json"
    done = run("energy_check.py", "--device", "cuda", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["ran"] is False and "CUDA" in r["reason"] and r["check"] == "nvml counter vs sampled power"
    try:
        RaplCounter()
        return  # RAPL is readable here: the CPU check would run for real
    except CounterUnavailable:
        pass
    done = run("energy_check.py", "--device", "cpu", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["ran"] is False and "RAPL" in r["reason"]
