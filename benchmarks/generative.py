"""Generative models on Fashion-MNIST: a VAE and a DDPM trained by ``lamina train --task vae|diffusion``
with their defaults, scored by FD-lamina and precision/recall, and DDIM against the full chain.

FD-lamina is the Fréchet distance in the feature space of lamina's own Fashion-MNIST classifier
(``generate.fd_classifier=auto``: the ``fast`` recipe, trained once and cached; its folder and test
accuracy are recorded), calibrated by the distance of as many real test images to the training
set. It is not an Inception FID: never compare it with published FIDs.

    python benchmarks/generative.py                      # VAE (~5 min) + DDPM (15 min) + sampling, 2 CPU cores
    python benchmarks/generative.py --only vae --seeds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, environment, mean_std, result_path, write
from rich.console import Console

import lamina
from lamina.artifacts import load
from lamina.config import load_config
from lamina.data.base import build_dataset
from lamina.fidelity import Features, Reference, classifier_run
from lamina.session import resolve_config

KEYS = ("test_nelbo", "test_bpd", "test_rec", "test_kl", "test_loss", "fd_lamina", "fd_train_test", "fd_precision",
        "fd_recall", "fd_precision_test", "fd_recall_test", "train_seconds", "total_seconds", "params", "epochs", "steps")


def train(task: str, seed: int, out: Path, device: str, overrides: list[str], max_minutes: float | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = lamina.train("fashion-mnist", task=task, seed=seed, device=device, out=out, overrides=overrides,
                          max_minutes=max_minutes, quiet=True)
    s = result.summary
    return {"seed": seed, "wall_seconds": time.perf_counter() - t0, **{k: s[k] for k in KEYS if k in s},
            "fd_samples": s.get("fd_samples"), "sample_steps": s.get("sample_steps"), "stop_reason": s.get("stop_reason")}


def sampling(run: Path, device: str, n: int, steps: list[int]) -> list[dict[str, Any]]:
    """FD-lamina and the time of ``n`` samples for each sampler step count, on one calibration."""
    sampler = load(run, device)
    cfg = load_config(run / "config.yaml")
    ds = build_dataset(cfg.data, seed=cfg.train.seed)
    ref = Reference.build(Features(classifier_run(cfg, Console(stderr=True)), sampler.device), ds)
    rows = []
    for k in steps:
        t0 = time.perf_counter()
        images = sampler.sample(n, steps=k, seed=0)
        seconds = time.perf_counter() - t0
        rows.append({"steps": k, "seconds": seconds, "images": n, **ref.score(images)})
        print(f"  {k:>4} steps: {seconds:.1f} s, FD-lamina {rows[-1]['fd_lamina']:.2f} "
              f"(real {rows[-1]['fd_train_test']:.2f})", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["vae", "diffusion"], help="one model only")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--diffusion-minutes", type=float, default=15.0, help="the DDPM's training budget")
    p.add_argument("--chain-samples", type=int, default=500,
                   help="images per sampler in the DDIM-vs-full-chain comparison (the full chain costs 20x DDIM-50)")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    record: dict[str, Any] = {**environment(a.device), "seeds": list(range(a.seeds))}
    work = Path(tempfile.mkdtemp(prefix="lamina-gen-"))
    t0 = time.perf_counter()
    cls_run = classifier_run(resolve_config("fashion-mnist", task="vae", device=a.device), Console(stderr=True))
    cls_summary = json.loads((cls_run / "summary.json").read_text()) if cls_run else {}
    record["fd_classifier"] = {"run": str(cls_run), "test_accuracy": cls_summary.get("test_accuracy"),
                               "model": cls_summary.get("model"), "recipe": "fast",
                               "seconds_if_trained_now": time.perf_counter() - t0}
    for task in ("vae", "diffusion"):
        if a.only and task != a.only:
            continue
        runs = []
        for seed in range(a.seeds):
            out = work / f"{task}-{seed}"
            minutes = a.diffusion_minutes if task == "diffusion" else None
            print(f"{task}, seed {seed} -> {out}", flush=True)
            runs.append(train(task, seed, out, a.device, [], minutes))
            print(f"  {runs[-1]}", flush=True)
            grids = sorted((out / "samples").glob("epoch_*.png"))
            if seed == 0 and grids:
                shutil.copy(grids[-1], ROOT / "benchmarks" / "results" / f"{task}_fashion_mnist_grid.png")
        stats = {k: mean_std([r[k] for r in runs]) for k in KEYS if all(isinstance(r.get(k), int | float) for r in runs)}
        record[task] = {"runs": runs, "stats": stats}
        if task == "diffusion":
            print("DDIM vs the full chain", flush=True)
            chain = load_config(work / "diffusion-0" / "config.yaml").generate.timesteps
            record["diffusion"]["sampling"] = sampling(work / "diffusion-0", a.device, a.chain_samples, [50, chain])
            record["diffusion"]["sampling_note"] = f"{chain} steps: the full ancestral chain; 50: DDIM (eta 0)"
    record["seconds"] = time.perf_counter() - t0
    path = a.out or result_path("generative" if not a.only else f"generative_{a.only}", a.device)
    write(path, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
