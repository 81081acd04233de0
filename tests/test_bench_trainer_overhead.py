"""benchmarks/trainer_overhead.py at a tiny size: the JSON it writes, and that both loops train the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_trainer_overhead_script_writes_per_step_costs_and_the_same_weights(tmp_path):
    out = tmp_path / "overhead.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trainer_overhead.py"), "--steps", "30",
                           "--repeats", "2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in ("device", "torch", "lamina", "code_version", "command", "seeds"):
        assert key in r, key
    assert r["same_weights"] is True  # the Trainer ran exactly the plain loop's steps
    assert len(r["seconds"]["plain"]) == len(r["seconds"]["trainer"]) == 2
    assert all(v > 0 for v in r["per_step_us_median"].values())
    assert r["trainer_added_us_per_step"] == r["per_step_us_median"]["trainer"] - r["per_step_us_median"]["plain"]
