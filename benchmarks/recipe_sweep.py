"""How a recipe was chosen: test accuracy after every epoch for variants of it, on Fashion-MNIST.

    python benchmarks/recipe_sweep.py --seeds 2 --variant "epochs=5" --variant "model.width=24"
        # -> benchmarks/results/recipe_sweep_cpu.json

Each variant is a list of overrides (``train.``/``data.``/``model.`` keys, or ``epochs=N``) laid over
``--recipe`` (fast); the recipe itself always runs first as the reference. Runs are interleaved by
seed (all variants for seed 0, then seed 1, ...). Accuracy is measured as in ``fashion_mnist.py``:
the saved model's test accuracy (with the recipe's test-time flips) after each epoch, next to the
training seconds so far.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import environment, result_path, write
from fashion_mnist import EpochTest, load_data, time_to

import lamina


def parse(variant: str) -> tuple[int | None, list[str]]:
    """``"epochs=5 model.width=24"`` -> (5, ["model.width=24"])."""
    epochs, overrides = None, []
    for item in variant.split():
        if item.startswith("epochs="):
            epochs = int(item.split("=", 1)[1])
        else:
            overrides.append(item)
    return epochs, overrides


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--recipe", default="fast")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--variant", action="append", default=[], help='overrides, e.g. "epochs=5 model.width=24"')
    p.add_argument("--out", default=None)
    a = p.parse_args()
    env = environment(a.device)
    variants = ["", *a.variant]  # "": the recipe as it is
    label = {v: v or "(recipe)" for v in variants}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = load_data(False, tmp)
        for seed in range(a.seeds):
            for variant in variants:
                epochs, overrides = parse(variant)
                cb = EpochTest(data.test)
                lamina.train(data.name, recipe=a.recipe, device=a.device, seed=seed, epochs=epochs, quiet=True,
                             out=str(tmp / f"run-{seed}-{len(runs)}"), callbacks=[cb], overrides=overrides)
                runs.append({"variant": label[variant], "seed": seed, "epochs": cb.epochs,
                             "final_acc": cb.epochs[-1][1], "time_to_92_s": time_to(cb.epochs, 0.92)})
                print(f"  {label[variant]:<30} seed {seed}: "
                      + " ".join(f"{acc:.4f}@{s:.0f}s" for s, acc in cb.epochs), flush=True)
    summary = {}
    for variant in variants:
        rs = [r for r in runs if r["variant"] == label[variant]]
        finals = [r["final_acc"] for r in rs]
        summary[label[variant]] = {
            "final_acc_mean": statistics.fmean(finals),
            "final_acc_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "time_to_92_s": [r["time_to_92_s"] for r in rs]}
    path = write(a.out or result_path("recipe_sweep", a.device),
                 {**env, "recipe": a.recipe, "seeds": list(range(a.seeds)), "summary": summary, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
