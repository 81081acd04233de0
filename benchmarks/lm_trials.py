"""Short trials of character language-model settings on Austen: the search behind the CPU defaults.

Each trial trains lamina's character model on the six novels (``data.val_fraction=0.1``, the split of
``austen_lm.py``) for the same number of steps with one set of overrides, and records the whole-tail
validation loss (nats per character) after every 150 steps with the training seconds. Trials run one
after another in this process, so their seconds are comparable on one machine; compare losses at equal
steps, and at equal seconds for the cost of a setting.

    python benchmarks/lm_trials.py                          # the default trials, ~20 min on 2 CPU cores
    python benchmarks/lm_trials.py --steps 300 --trials adamw,muon   # a quicker look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from austen_lm import COMMON, race_lamina
from common import environment, result_path, write

from lamina.data.austen import read_austen

# Named override sets; every trial pins what it compares, so a change of lamina's defaults does not
# change what a name means.
AW64 = ["data.context=64", "data.batch_size=32", "model.positions=learned"]
RO128 = ["data.context=128", "data.batch_size=16", "model.positions=rotary"]
RO256 = ["data.context=256", "data.batch_size=8", "model.positions=rotary"]
TRIALS: dict[str, list[str]] = {
    "adamw": ["train.optimizer=adamw", "train.lr=3e-3", *AW64],  # the CPU defaults before Muon
    "muon": ["train.optimizer=muon", "train.lr=3e-3", *AW64],
    "muon-lr6e-3": ["train.optimizer=muon", "train.lr=6e-3", *AW64],
    "muon-lr1.2e-2": ["train.optimizer=muon", "train.lr=1.2e-2", *AW64],
    "muon-lr6e-3-rotary128": ["train.optimizer=muon", "train.lr=6e-3", *RO128],  # today's CPU defaults
    "muon-lr6e-3-rotary256": ["train.optimizer=muon", "train.lr=6e-3", *RO256],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", default=",".join(TRIALS), help=f"comma-separated, of: {', '.join(TRIALS)}")
    p.add_argument("--steps", type=int, default=900, help="training steps of each trial (a multiple of 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=result_path("lm_trials", "cpu"))
    a = p.parse_args()
    names = a.trials.split(",")
    unknown = [n for n in names if n not in TRIALS]
    if unknown:
        raise SystemExit(f"unknown trial {unknown[0]!r}: use {', '.join(TRIALS)}")
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lamina-lm-trials-") as tmp:
        text_file = Path(tmp) / "austen.txt"
        text_file.write_text("\n\n".join(read_austen().values()))
        for name in names:
            steps = [*COMMON, *TRIALS[name], "data.steps_per_epoch=150", f"train.epochs={max(1, a.steps // 150)}"]
            print(f"[{name}] {' '.join(TRIALS[name])} ...", flush=True)
            r = race_lamina(text_file, Path(tmp) / name, steps, seed=a.seed)
            last = r["curve"][-1]
            print(f"[{name}] {last['step']} steps, {last['seconds']:.1f} s: {last['val_loss_per_char']:.4f} nats/char",
                  flush=True)
            results[name] = {"overrides": TRIALS[name], "curve": r["curve"], "final_val_loss_per_char":
                             last["val_loss_per_char"], "train_seconds": last["seconds"], "steps": last["step"]}
    summary = {n: {"val_loss_per_char": r["final_val_loss_per_char"], "train_seconds": r["train_seconds"]}
               for n, r in results.items()}
    record = {**environment("cpu"), "seeds": [a.seed], "steps": a.steps, "bench_seconds": time.perf_counter() - t0,
              "summary": summary, "trials": results}
    print(f"wrote {write(a.out, record)}")


if __name__ == "__main__":
    main()
