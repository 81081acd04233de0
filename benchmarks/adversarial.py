"""Adversarial training on Fashion-MNIST against L-infinity eps = 0.1 (issue 11's targets).

    python benchmarks/adversarial.py                 # both methods: writes benchmarks/results/adversarial_cpu.json
    python benchmarks/adversarial.py --eval-n 2000 --keep runs/adv   # train both, attack 2,000 test images
    python benchmarks/adversarial.py --keep runs/adv --reattack      # the same runs on the whole test split
    python benchmarks/adversarial.py --methods fgsm-rs --minutes 5 --eval-n 2000 --restarts 1   # a quicker look

For each method (PGD, Madry et al. 2018: 3 steps of 2.5 eps / 3 by default, 7 epochs; FGSM from a
random start, Wong et al. 2020: 4 epochs) this trains ``--recipe robust`` with that method, with
``--minutes`` as a hard budget (``train.max_minutes``: the run stops gracefully when it is spent;
the epochs are chosen to end before it, so that the learning-rate schedule completes), then measures what counts with ``lamina attack``:
PGD-20 with 5 random restarts (step 2.5 eps / 20) on the whole test split, evaluated as the run
evaluates (test-time flips), with the gradient-masking checks. The per-epoch clean and PGD-10 robust
accuracy of 1,000 validation images (``metrics.jsonl``) give the time-robustness curve.

Targets (issue 11): PGD training robust >= 78.5 % with clean >= 88.5 % within 15 minutes of training
(Croce, Andriushchenko and Hein, AISTATS 2019, Table 1: Madry-style CNN, clean 88.46 %); FGSM-RS within
3 points of PGD training's robust accuracy in at most a third of its time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

from common import environment, result_path, write

import lamina

TARGET_ROBUST, TARGET_CLEAN = 0.785, 0.885


def train_and_attack(method: str, args: argparse.Namespace, folder: Path) -> dict:
    spec = f"{method} eps={args.eps}" + (f" steps={args.train_steps}" if method == "pgd" else "")
    epochs = args.pgd_epochs if method == "pgd" else args.fgsm_epochs
    if args.reattack and (folder / method / "summary.json").is_file():  # attack the run trained before again
        run = SimpleNamespace(dir=folder / method, summary=json.loads((folder / method / "summary.json").read_text()))
    else:
        run = lamina.train("fashion-mnist", recipe="robust", adversarial=spec, max_minutes=args.minutes,
                           device=args.device, seed=args.seed, out=folder / method, quiet=True,
                           overrides=[f"train.epochs={epochs}"] if epochs else ())
    epochs = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()
              if '"kind": "epoch"' in line]
    r = lamina.attack(run.dir, method="pgd", eps=[args.eps], steps=args.steps, restarts=args.restarts,
                      n=args.eval_n, device=args.device)
    pgd = next(x for x in r["results"] if x["method"] == "pgd" and x["eps"] == args.eps
               and x["steps"] == args.steps and x["restarts"] == args.restarts)
    return {
        "spec": spec, "config": run.summary.get("adversarial"),
        "train_seconds": run.summary["train_seconds"], "epochs": run.summary["epochs"],
        "stop_reason": run.summary["stop_reason"],
        "clean_accuracy": r["clean_accuracy"], "robust_accuracy": pgd["robust_accuracy"],
        "attack": {"method": "pgd", "eps": args.eps, "steps": args.steps, "restarts": args.restarts,
                   "examples": r["examples"], "seconds": pgd["seconds"]},
        "checks": r["checks"],
        "energy_j": run.summary.get("energy_j"), "energy_method": run.summary.get("energy_method"),
        "time_robustness": [{"epoch": e["epoch"], "seconds": e["seconds"], "val_accuracy": e.get("val_accuracy"),
                             "val_robust_accuracy": e.get("val_robust_accuracy")} for e in epochs],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="pgd,fgsm-rs", help="comma-separated: pgd, fgsm-rs")
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per method")
    p.add_argument("--pgd-epochs", type=int, default=7, help="epochs of PGD training (0: the recipe's)")
    p.add_argument("--fgsm-epochs", type=int, default=4, help="epochs of FGSM-RS training (0: the recipe's)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--train-steps", type=int, default=3, help="PGD steps of PGD training")
    p.add_argument("--steps", type=int, default=20, help="PGD steps of the evaluation")
    p.add_argument("--restarts", type=int, default=5, help="random restarts of the evaluation")
    p.add_argument("--eval-n", type=int, default=None, help="test images attacked (default: all 10,000)")
    p.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--reattack", action="store_true",
                   help="with --keep: attack the runs already there again instead of training them")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            results[method] = r = train_and_attack(method, args, Path(args.keep or tmp))
            print(f"{method}: clean {r['clean_accuracy']:.4f}  robust {r['robust_accuracy']:.4f} "
                  f"(PGD-{args.steps} x{args.restarts}, {r['attack']['examples']} images) after "
                  f"{r['train_seconds']:.0f}s of training, {r['epochs']} epochs", flush=True)
    summary: dict[str, object] = {}
    if "pgd" in results:
        pgd = results["pgd"]
        summary["pgd_meets_target"] = pgd["robust_accuracy"] >= TARGET_ROBUST and pgd["clean_accuracy"] >= TARGET_CLEAN
        summary["pgd_within_budget"] = pgd["train_seconds"] <= args.minutes * 60 + 1
    if {"pgd", "fgsm-rs"} <= set(results):
        pgd, fast = results["pgd"], results["fgsm-rs"]
        summary["fgsm_rs_gap_points"] = 100 * (pgd["robust_accuracy"] - fast["robust_accuracy"])
        summary["fgsm_rs_time_ratio"] = fast["train_seconds"] / pgd["train_seconds"]
        summary["fgsm_rs_meets_target"] = (summary["fgsm_rs_gap_points"] <= 3  # type: ignore[operator]
                                           and summary["fgsm_rs_time_ratio"] <= 1 / 3)  # type: ignore[operator]
    record = {**environment(args.device), "seeds": [args.seed],
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "targets": {"robust_accuracy": TARGET_ROBUST, "clean_accuracy": TARGET_CLEAN,
                          "source": "Croce, Andriushchenko, Hein (AISTATS 2019), Table 1"},
              "results": results, "summary": summary,
              "note": "one seed per method (no std): a 15-minute run each does not fit more on this machine"}
    print(f"written to {write(args.out or result_path('adversarial', args.device), record)}")


if __name__ == "__main__":
    main()
