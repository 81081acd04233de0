"""Checkpoint cost for the demo model: size, write time, and training overhead side by side.

    python benchmarks/checkpoint.py          # writes benchmarks/results/checkpoint_cpu.json

1. Size and write time of one full checkpoint (model, optimizer, scheduler, RNG, data position)
   of the `make demo` recipe, over repeated atomic writes.
2. The overhead of `--checkpoint-every 200`: the demo recipe shortened to `--epochs E`, run with
   and without it, interleaved and repeated, on the same machine in one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import environment, mean_std, result_path, write

import lamina
from lamina.training import checkpoint
from lamina.training.callbacks import Callback


class Grab(Callback):
    """Times one checkpoint write of the real training state after ``at`` steps, then stops."""

    def __init__(self, folder: Path, at: int, repeats: int) -> None:
        self.folder, self.at, self.repeats = folder, at, repeats
        self.seconds: list[float] = []

    def batch_end(self, trainer):
        if trainer.step != self.at:
            return
        for i in range(self.repeats):
            t0 = time.perf_counter()
            checkpoint.save({**trainer.state_dict(), "config": {}}, self.folder / f"c{i}")
            self.seconds.append(time.perf_counter() - t0)
        self.bytes = sum(f.stat().st_size for f in (self.folder / "c0").iterdir())
        from lamina.training.callbacks import CancelFit

        raise CancelFit("measured")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=4)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        grab = Grab(tmp / "ck", at=20, repeats=20)
        lamina.train("fashion-mnist", recipe="demo", out=str(tmp / "grab"), quiet=True, callbacks=[grab])
        base, every = [], []
        for r in range(a.repeats):  # interleaved A B, B A, A B ...: neither always runs first
            order = ((0, base), (200, every)) if r % 2 == 0 else ((200, every), (0, base))
            for ckpt, into in order:
                run = lamina.train("fashion-mnist", recipe="demo", epochs=a.epochs, out=str(tmp / f"r{r}-{ckpt}"), quiet=True,
                                   overrides=[f"train.checkpoint_every={ckpt}"])
                into.append(run.summary["train_seconds"])
                print(f"checkpoint_every={ckpt}: {into[-1]:.1f}s", flush=True)
        steps = run.summary["steps"]
    # per interleaved pair, then the median: one disturbed run on a shared machine does not decide it
    pairs = [100 * (e - b) / b for b, e in zip(base, every, strict=True)]
    overhead = statistics.median(pairs)
    per_ckpt = statistics.fmean(grab.seconds)
    record = {
        **environment("cpu"),
        "seeds": [0],
        "checkpoint_bytes": grab.bytes,
        "write_seconds": mean_std(grab.seconds),
        "side_by_side": {"epochs": a.epochs, "steps": steps, "train_seconds_no_step_checkpoints": mean_std(base),
                         "train_seconds_every_200_steps": mean_std(every)},
        "summary": {
            "checkpoint_mb": grab.bytes / 1e6,
            "write_ms": 1000 * per_ckpt,
            "overhead_every_200_steps_pct_measured": overhead,  # median over interleaved pairs
            "overhead_pct_per_pair": pairs,
            # extra writes per 200 steps, relative to the time 200 steps take: the same overhead, without the noise
            "overhead_every_200_steps_pct_from_write_time": 100 * per_ckpt / (statistics.fmean(base) / steps * 200),
        },
    }
    print(record["summary"])
    print(f"wrote {write(result_path('checkpoint', 'cpu'), record)}")


if __name__ == "__main__":
    main()
