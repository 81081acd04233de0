"""Two versions of lamina side by side: the same `lamina train` command, the same seeds, in
alternating fresh processes on the same machine (base, head, head, base, ...), so that a change is
judged by ratios measured in one run, not against numbers from another day's machine.

The base version is a git revision checked out into a temporary worktree (never committed) and put
first on ``PYTHONPATH``; the head is this checkout. Each run's training time and headline metric
come from its ``summary.json``. With the same seed and a refactor that keeps behaviour, the metric
is equal run for run (``same_metric``); the time ratio (head over base) says what the change cost.

    python benchmarks/ab.py --base a28bac8^ --seeds 2 --out benchmarks/results/ab_demo_cpu.json -- \\
        fashion-mnist --config src/lamina/recipes/demo.yaml train.max_minutes=0
    sed '/^cuda:/,$d' src/lamina/recipes/fast.yaml > /tmp/fast_nocuda.yaml   # a28bac8^ predates `cuda:` sections
    python benchmarks/ab.py --base a28bac8^ --seeds 2 --out benchmarks/results/ab_fast_cpu.json -- \\
        fashion-mnist --config /tmp/fast_nocuda.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, environment, mean_std, result_path, write

HEADLINES = ("test_accuracy", "val_bpc", "test_rmse", "test_loss")


def worktree(rev: str, where: Path) -> str:
    """Check ``rev`` out into ``where`` (detached); its full commit id."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "worktree", "add", "--detach", str(where), sha], cwd=ROOT, check=True, capture_output=True)
    return sha


def run(src: Path, argv: list[str], out: Path) -> dict[str, Any]:
    """One `lamina train` with ``src`` first on the import path; what its summary.json says."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lamina.cli.main", "train", *argv, "--out", str(out), "--quiet"],
                   check=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    metric = next(k for k in HEADLINES if k in summary)
    return {"seed": summary["seed"], "metric": metric, "value": summary[metric],
            "train_seconds": summary["train_seconds"], "command_seconds": wall, "epochs": summary["epochs"]}


def imported_from(src: Path) -> str:
    """Where ``import lamina`` resolves with ``src`` first on the path (a check that the base is the base)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", "import lamina; print(lamina.__file__)"], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare against (e.g. a commit before a refactor)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", type=Path, default=result_path("ab", "cpu"))
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of `lamina train`")
    a = p.parse_args()
    argv = a.train_args[1:] if a.train_args[:1] == ["--"] else a.train_args
    if not argv:
        p.error("give the `lamina train` arguments after --")
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "base"
        base_sha = worktree(a.base, base_dir)
        try:
            sources = {"base": base_dir / "src", "head": ROOT / "src"}
            origin = {k: imported_from(v) for k, v in sources.items()}
            if not origin["base"].startswith(str(base_dir)):
                sys.exit(f"error: the base version does not import from its worktree ({origin['base']})")
            runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
            for seed in range(a.seeds):
                order = ("base", "head") if seed % 2 == 0 else ("head", "base")
                for which in order:
                    r = run(sources[which], [*argv, "--seed", str(seed)], Path(tmp) / f"{which}-{seed}")
                    runs[which].append(r)
                    print(f"seed {seed} {which}: {r['metric']} {r['value']:.4f}, {r['train_seconds']:.1f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=ROOT, capture_output=True)
    ratios = [h["train_seconds"] / b["train_seconds"] for b, h in zip(runs["base"], runs["head"], strict=True)]
    record = {
        **environment("cpu"), "seeds": list(range(a.seeds)), "base": base_sha, "argv": ["lamina", "train", *argv],
        "runs": runs,
        "summary": {
            "metric": runs["head"][0]["metric"],
            "base_value": mean_std([r["value"] for r in runs["base"]]),
            "head_value": mean_std([r["value"] for r in runs["head"]]),
            "same_metric": all(b["value"] == h["value"] for b, h in zip(runs["base"], runs["head"], strict=True)),
            "base_train_seconds": mean_std([r["train_seconds"] for r in runs["base"]]),
            "head_train_seconds": mean_std([r["train_seconds"] for r in runs["head"]]),
            "time_ratio_head_over_base": mean_std(ratios),
        },
    }
    print(json.dumps(record["summary"], indent=1))
    print(f"wrote {write(a.out, record)}")


if __name__ == "__main__":
    main()
