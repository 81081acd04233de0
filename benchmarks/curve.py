"""A sample-efficiency curve on Fashion-MNIST: test error against training examples, with a power-law fit.

    python benchmarks/curve.py                  # -> benchmarks/results/curve_fashion_mnist_cpu.json (<= 15 min)
    python benchmarks/curve.py --fractions 0.01,0.02 --seeds 1 --epochs 1 --out /tmp/c.json   # smoke test

``lamina.studies.run_curve`` with recipe ``fast`` (a 32-64-128 CNN, 6 epochs at 100 % of the data on a
CPU): 5 fractions of the 60,000 training examples (0.01, 0.03, 0.1, 0.3, 1) x 3 seeds, each point tested
on all 10,000 test examples. A subset of fraction f trains ceil(6 * min(f^-0.5, 10)) epochs (60, 35, 19,
11, 6) at ``min(256, auto_batch_size(examples))`` examples a step, the learning rate scaled with the
batch; a seed costs about 2.1 full runs, so the whole curve about 6.4 runs of ~65 s on a 2-core CPU
(~8 min with the per-point evaluation and startup).

The fit is error = a * n^b by least squares on log(error) over all 15 runs, with a 95 % t interval of b,
beside Hestness et al. 2017's ImageNet exponents (top-1 -0.309, top-5 -0.488; quoted from the paper).
Their curves tune the model per size; ours use one recipe for every size, so small subsets are
relatively under-tuned and b is not expected to match.

The runs go to a temporary folder (``--runs DIR`` keeps them: rerunning with the same DIR resumes an
interrupted curve instead of starting again, and then the wall-clock time covers only the new runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import environment, result_path, write

from lamina.studies import DEFAULT_FRACTIONS, HESTNESS_2017_IMAGE_CLASSIFICATION, run_curve

BUDGET_S = 15 * 60


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist", help="the data set (any lamina classification data)")
    p.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                   help="fractions of the training split, comma-separated")
    p.add_argument("--seeds", type=int, default=3, help="runs per point (seeds 0, 1, ...)")
    p.add_argument("--recipe", default="fast")
    p.add_argument("--epochs", type=int, default=None, help="epochs at fraction 1 (default: the recipe's)")
    p.add_argument("--epoch-scale", type=float, default=10.0, help="cap on the epoch multiplier of a small subset")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--out", default=None,
                   help="the result JSON (default: benchmarks/results/curve_<data>_<device>.json)")
    a = p.parse_args()
    env = environment(a.device)
    overrides = [f"train.device={a.device}"] + ([f"train.epochs={a.epochs}"] if a.epochs else [])
    stem = f"curve_{a.data.replace('-', '_')}"
    out = Path(a.out) if a.out else result_path(stem, a.device)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(a.runs) if a.runs else Path(tmp) / "curve"
        t0 = time.perf_counter()
        doc = run_curve(a.data, fractions=a.fractions, seeds=a.seeds, recipe=a.recipe, overrides=overrides,
                        epoch_scale=a.epoch_scale, out=runs, quiet=True, progress=print)
        wall = time.perf_counter() - t0
    points = [{k: p[k] for k in ("fraction", "examples", "epochs", "batch_size", "lr", "seeds", "accuracies",
                                 "accuracy_mean", "accuracy_std", "error_mean", "error_std", "seconds_mean",
                                 "energy_j_mean")} for p in doc["points"]]
    fit = doc["fit"]
    result = {**env, "settings": {"data": a.data, "recipe": a.recipe, "fractions": doc["fractions"],
                                  "epoch_scale": doc["epoch_scale"], "overrides": overrides, "rules": doc["rules"],
                                  "train_examples": doc["train_examples"], "test_examples": doc["test_examples"],
                                  "lamina_config": doc["config"]},
              "seeds": doc["seeds"], "points": points,
              "fit": {k: v for k, v in fit.items() if k != "hestness_2017_image_classification"} if fit else None,
              "hestness_2017_image_classification": HESTNESS_2017_IMAGE_CLASSIFICATION,
              "wall_seconds": wall, "runs_seconds": doc["seconds"], "energy_j": doc["energy_j"],
              "budget_seconds": BUDGET_S, "within_budget": wall <= BUDGET_S,
              "reused_runs": sum(r["status"] != "trained" for p in doc["points"] for r in p["runs"])}
    path = write(out, result)
    for pt in points:
        print(f"{pt['fraction']:>5g}  {pt['examples']:>6,} examples  {pt['epochs']:>3} epochs  "
              f"batch {pt['batch_size']:>3}  test accuracy {100 * pt['accuracy_mean']:.2f} ± {100 * pt['accuracy_std']:.2f} %")
    if fit:
        ci = fit["exponent_ci95"]
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        r2 = f"{fit['r2']:.3f}" if fit["r2"] is not None else "-"
        print(f"error ~ {fit['a']:.3g} * n^{fit['exponent']:.3f}{ci_text} (95 % CI), R^2 {r2}; "
              f"Hestness et al. 2017, ImageNet: top-1 -0.309, top-5 -0.488")
    print(f"{wall:.0f} s wall-clock ({'within' if wall <= BUDGET_S else 'OVER'} the {BUDGET_S // 60}-minute budget)"
          f"\nwrote {path}")


if __name__ == "__main__":
    main()
