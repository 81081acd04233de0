"""benchmarks/ab.py at a tiny size: two versions side by side, the JSON it writes, the worktree gone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_ab_script_runs_both_versions_and_finds_the_same_metric(tmp_path):
    """HEAD against HEAD on a 1-epoch table run: the same seed gives the same accuracy, the time ratio
    is a positive number, and no worktree is left behind."""
    out = tmp_path / "ab.json"
    before = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--base", "HEAD", "--seeds", "1",
                           "--out", str(out), "--", "digits", "--epochs", "1", "energy.meter=off",
                           "train.gradient_flow_every=0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in ("device", "torch", "lamina", "code_version", "command", "seeds", "base", "argv"):
        assert key in r, key
    s = r["summary"]
    assert s["metric"] == "test_accuracy" and s["same_metric"] is True
    assert len(r["runs"]["base"]) == len(r["runs"]["head"]) == 1
    assert s["time_ratio_head_over_base"]["mean"] > 0
    after = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before
