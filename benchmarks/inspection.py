"""Cost of `lamina report` (inspection + HTML) next to the training it explains, and what it found.

    python benchmarks/inspection.py       # writes benchmarks/results/inspection_cpu.json

1. As `make demo` does it (`lamina train ... --report`): train the demo recipe, then inspect and
   write the report in the same process; time each part; the process's peak resident memory.
2. As a separate command: `lamina report RUN --reinspect` in a fresh process (its time includes
   starting Python and importing torch), with that process's own peak memory.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import environment, result_path, write


def main() -> None:
    import lamina
    from lamina.inspection.run import inspect_run
    from lamina.reporting import write_report

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo"
        summary = lamina.train("fashion-mnist", recipe="demo", out=str(run), quiet=True).summary
        t0 = time.perf_counter()
        inspect_run(run)
        t1 = time.perf_counter()
        write_report(run)
        t2 = time.perf_counter()
        in_process = {"inspect_seconds": t1 - t0, "report_seconds": t2 - t1, "total_seconds": t2 - t0,
                      "peak_rss_mb_whole_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "lamina.cli.main", "report", str(run), "--reinspect"])
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
        "in_process": in_process,
        "report_command_seconds": report_seconds,
        "inspection_seconds": inspection["seconds"],
        "report_peak_rss_mb": peak_mb,
        "report_html_bytes": size,
        "probes": probes,
        "summary": {
            "inspect_and_report_pct_of_training": 100 * in_process["total_seconds"] / summary["train_seconds"],
            "report_command_pct_of_training": 100 * report_seconds / summary["train_seconds"],
            "peak_memory_gb_report_command": peak_mb / 1024,
            "peak_memory_gb_train_and_report_process": in_process["peak_rss_mb_whole_process"] / 1024,
            "probe_first_stage": probes[0]["accuracy"],
            "probe_deepest_stage": probes[-1]["accuracy"],
        },
    }
    print(json.dumps(record["summary"]))
    print(f"wrote {write(result_path('inspection', 'cpu'), record)}")


if __name__ == "__main__":
    main()
