"""Cost of `lamina report` (inspection + HTML) next to the training it explains, and what it found.

    python benchmarks/inspection.py       # writes benchmarks/results/inspection_cpu.json

Trains the `make demo` recipe in one process, then runs `lamina report RUN` (which inspects the
run first) in a fresh process, timing it and reading its peak resident memory from the OS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, environment, write


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo"
        subprocess.run([sys.executable, "-m", "lamina.cli.main", "train", "fashion-mnist", "--config",
                        str(ROOT / "configs" / "demo.yaml"), "--out", str(run), "--quiet"], check=True)
        summary = json.loads((run / "summary.json").read_text())
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "lamina.cli.main", "report", str(run)])
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory, not the training's
        report_seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"lamina report failed with {proc.returncode}")
        peak_mb = usage.ru_maxrss / 1024  # KB on Linux
        inspection = json.loads((run / "inspection" / "inspection.json").read_text())
        probes = json.loads((run / "inspection" / "probes.json").read_text())
        size = (run / "report.html").stat().st_size
    record = {
        **environment("cpu"),
        "seeds": [summary["seed"]],
        "train_seconds": summary["train_seconds"],
        "test_accuracy": summary["test_accuracy"],
        "report_command_seconds": report_seconds,
        "inspection_seconds": inspection["seconds"],
        "report_peak_rss_mb": peak_mb,
        "report_html_bytes": size,
        "probes": probes,
        "summary": {
            "report_pct_of_training": 100 * report_seconds / summary["train_seconds"],
            "peak_memory_gb": peak_mb / 1024,
            "probe_first_stage": probes[0]["accuracy"],
            "probe_deepest_stage": probes[-1]["accuracy"],
        },
    }
    print(json.dumps(record["summary"]))
    print(f"wrote {write(ROOT / 'benchmarks' / 'results' / 'inspection_cpu.json', record)}")


if __name__ == "__main__":
    main()
