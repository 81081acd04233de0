"""Every modality's quick command, timed: each must finish in under a minute on a 2-core CPU.

    python benchmarks/quick_commands.py          # ~4 min

Each command runs as a user would type it (a fresh process, so import time counts), one after
another, in a temporary folder; the wall-clock seconds and the headline metric are recorded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, result_path, write

LAMINA = str(Path(sys.executable).with_name("lamina"))


def commands(tmp: Path) -> list[tuple[str, list[list[str]], Path]]:
    """(modality, the commands, the run folder) of each quick example."""
    kw = tmp / "keywords-small"
    return [
        ("audio", [[LAMINA, "data", "make-keywords", str(kw), "--small"],
                   [LAMINA, "train", str(kw), "--out", str(tmp / "audio"), "--quiet"]], tmp / "audio"),
        ("sequence", [[LAMINA, "train", "rrna16s", "--out", str(tmp / "sequence"), "--quiet"]],
         tmp / "sequence"),
        ("table (classes)", [[LAMINA, "train", "wine", "--out", str(tmp / "wine"), "--quiet"]], tmp / "wine"),
        ("table (regression)", [[LAMINA, "train", "diabetes", "--out", str(tmp / "diabetes"), "--quiet"]],
         tmp / "diabetes"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(result_path("quick_commands", "cpu")))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lamina-quick-") as name:
        tmp = Path(name)
        for modality, cmds, run in commands(tmp):
            t0 = time.perf_counter()
            for cmd in cmds:
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
            seconds = time.perf_counter() - t0
            s = json.loads((run / "summary.json").read_text())
            headline = {k: s[k] for k in ("test_accuracy", "test_macro_f1", "test_rmse", "test_r2") if k in s}
            shown = [" ".join(Path(c[0]).name if i == 0 else a for i, a in enumerate(c)).replace(str(tmp) + "/", "")
                     for c in cmds]
            rows.append({"modality": modality, "commands": shown, "seconds": round(seconds, 1),
                         "train_seconds": round(s["train_seconds"], 1), "model": s["model"],
                         "under_a_minute": seconds < 60, **headline})
            print(f"{modality:<20} {seconds:6.1f} s  {headline}")
    write(args.out, {**environment("cpu"), "seeds": [0], "results": rows})


if __name__ == "__main__":
    main()
