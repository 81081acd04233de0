"""The README's `make demo` and `lamina train digits` numbers, measured as a user runs them.

Each seed runs the real command line (`lamina train ... --recipe demo`) in a fresh
process and times the whole command; training time and accuracy come from the run's summary.json.

    python benchmarks/demo.py --seeds 3                # writes benchmarks/results/demo_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, environment, mean_std, result_path, write


def run(argv: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lamina.cli.main", *argv, "--out", str(out), "--quiet"], check=True,
                   cwd=ROOT)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    return {"seed": summary["seed"], "test_accuracy": summary["test_accuracy"], "train_seconds": summary["train_seconds"],
            "command_seconds": wall, "epochs": summary["epochs"], "params": summary["params"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    cases = {
        "demo_fashion_mnist": ["train", "fashion-mnist", "--recipe", "demo", "--device", a.device],
        "digits_default": ["train", "digits", "--device", a.device],
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in cases.items():
            records = [run([*argv, "--seed", str(s)], Path(tmp) / f"{name}-{s}") for s in range(a.seeds)]
            results[name] = {
                "argv": ["lamina", *argv],
                "runs": records,
                "test_accuracy": mean_std([r["test_accuracy"] for r in records]),
                "train_seconds": mean_std([r["train_seconds"] for r in records]),
                "command_seconds": mean_std([r["command_seconds"] for r in records]),
            }
            print(name, json.dumps({k: results[name][k] for k in ("test_accuracy", "train_seconds")}))
    path = write(a.out or result_path("demo", a.device),
                 {**environment(a.device), "seeds": list(range(a.seeds)), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
