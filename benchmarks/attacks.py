"""lamina's PGD and FGSM beside torchattacks and ART on the same model and the same test images.

    python benchmarks/attacks.py                         # trains Fashion-MNIST (fast recipe, 2 epochs) into a
                                                         # temporary folder; 1,000 test images, 3 repeats
                                                         # -> benchmarks/results/attacks_cpu.json
    python benchmarks/attacks.py --run RUN               # attack an existing classifier run instead
    python benchmarks/attacks.py --run RUN --n 50 --repeats 1 --out /tmp/attacks.json   # a smoke test

Every contender attacks the same raw-input model (``lamina.robustness.RawModel``: pixels in [0, 1],
the run's normalisation and test-time flips inside) on the same first ``--n`` test images, with the
same radius, steps, step size and a random start for PGD (L∞, ε = 0.1, 10 steps of 0.25 ε; FGSM:
one step of ε):

  lamina        ``lamina.robustness.pgd`` / ``fgsm`` (and PGD channels-last, ``lamina_pgd_nhwc``: how
                ``lamina attack`` runs an image model; the ``*_vs_nhwc`` ratios compare against it)
  torchattacks  ``torchattacks.PGD(eps, alpha, steps, random_start=True)`` / ``torchattacks.FGSM(eps)``
  art           ``ProjectedGradientDescent(norm=inf, eps, eps_step, max_iter, num_random_init=1)`` /
                ``FastGradientMethod(norm=inf, eps)`` on a ``PyTorchClassifier`` with clip values (0, 1)

The peers are installed at run time into a temporary folder (``pip install --target TMP --no-deps``;
ART's dependencies numpy/scipy/scikit-learn/tqdm are lamina's own) and put on ``sys.path``; they are
never copied into the project (``--peers DIR`` reuses a folder from an earlier run). Each repeat runs
every contender once, in a rotated order; times are wall-clock per image, and each peer's time is
also given as a ratio to lamina's in the same repeat (mean ± std over repeats). Robust accuracies
must agree within 1 point: ``agreement`` records it (random starts differ, so PGD's may by an
example or two at small ``--n``).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import environment, mean_std, result_path, write
from torch import Tensor, nn

import lamina
from lamina.artifacts import Classifier, load
from lamina.config import load_config
from lamina.data.base import build_dataset
from lamina.robustness.attacks import RawModel, accuracy, fgsm, pgd

PEERS = ("torchattacks", "adversarial-robustness-toolbox")
Attack = Callable[[Tensor, Tensor], Tensor]


def install_peers(folder: Path) -> dict[str, str]:
    """pip-install the peers into ``folder`` (no dependencies) unless there already; import them from there."""
    if not (folder / "torchattacks").is_dir() or not (folder / "art").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--target", str(folder), "--no-deps", *PEERS], check=True)
    sys.path.insert(0, str(folder))
    ta, art = importlib.import_module("torchattacks"), importlib.import_module("art")
    return {"torchattacks": ta.__version__, "art": art.__version__}


def trained_run(a: argparse.Namespace, tmp: Path) -> tuple[Path, dict[str, Any]]:
    if a.run:
        return Path(a.run), {"run": a.run}
    out = tmp / "run"
    t0 = time.perf_counter()
    lamina.train("fashion-mnist", recipe="fast", epochs=a.epochs, out=out, seed=a.seed, device=a.device, quiet=True)
    return out, {"run": "trained here", "dataset": "fashion-mnist", "recipe": "fast", "epochs": a.epochs,
                 "seed": a.seed, "train_seconds": time.perf_counter() - t0}


def test_images(folder: Path, n: int, device: str) -> tuple[Classifier, Tensor, Tensor]:
    """The saved classifier and its run's first ``n`` test images in raw units (as ``lamina attack`` takes them)."""
    clf = load(folder, device)
    assert isinstance(clf, Classifier) and clf.modality == "image", "the benchmark attacks image classifiers"
    cfg = load_config(folder / "config.yaml")
    test = build_dataset(cfg.data, seed=cfg.train.seed).test
    assert test is not None and isinstance(test.x, Tensor) and test.y is not None
    x = (test.x[:n].float() / clf.preprocess.scale).to(clf.device)
    return clf, x, test.y[:n].to(clf.device)


def contenders(model: nn.Module, a: argparse.Namespace, num_classes: int, shape: tuple[int, ...]
               ) -> dict[str, tuple[Attack, Callable[[], None]]]:
    """name -> (attack one batch, reseed before a run)."""
    import torchattacks
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    eps, alpha, steps = a.eps, a.step_size * a.eps, a.steps
    gen = torch.Generator(device=next(model.parameters()).device)

    def seed_lamina() -> None:
        gen.manual_seed(a.seed)

    def seed_global() -> None:
        torch.manual_seed(a.seed)
        np.random.seed(a.seed)

    estimator = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=num_classes,
                                  clip_values=(0.0, 1.0), device_type="gpu" if a.device.startswith("cuda") else "cpu")
    art_pgd = ProjectedGradientDescent(estimator, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                       num_random_init=1, batch_size=a.batch_size, verbose=False)
    art_fgsm = FastGradientMethod(estimator, norm=np.inf, eps=eps, batch_size=a.batch_size)
    ta_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    ta_fgsm = torchattacks.FGSM(model, eps=eps)

    def via_art(attack: Any) -> Attack:
        def run(x: Tensor, y: Tensor) -> Tensor:
            adv = attack.generate(x=x.cpu().numpy(), y=y.cpu().numpy())
            return torch.from_numpy(adv).to(x.device)

        return run

    # `lamina attack` runs image models channels-last (NHWC), as training does: the same weights, another layout
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return {
        "lamina_pgd": (lambda x, y: pgd(model, x, y, eps=eps, steps=steps, step_size=a.step_size, lower=0.0, upper=1.0,
                                        random_start=True, generator=gen), seed_lamina),
        "lamina_pgd_nhwc": (lambda x, y: pgd(nhwc, x.contiguous(memory_format=torch.channels_last), y, eps=eps,
                                             steps=steps, step_size=a.step_size, lower=0.0, upper=1.0,
                                             random_start=True, generator=gen), seed_lamina),
        "torchattacks_pgd": (lambda x, y: ta_pgd(x, y), seed_global),
        "art_pgd": (via_art(art_pgd), seed_global),
        "lamina_fgsm": (lambda x, y: fgsm(model, x, y, eps=eps, lower=0.0, upper=1.0), seed_lamina),
        "torchattacks_fgsm": (lambda x, y: ta_fgsm(x, y), seed_global),
        "art_fgsm": (via_art(art_fgsm), seed_global),
    }


def run_one(attack: Attack, reseed: Callable[[], None], model: nn.Module, x: Tensor, y: Tensor,
            batch_size: int) -> tuple[float, float, float]:
    """(robust accuracy, seconds, the largest L∞ distance from x) of one contender over every image."""
    reseed()
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    advs = [attack(xb, yb) for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)]
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    adv = torch.cat(advs).float()
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0, "an attack left the pixel range"
    return accuracy(model, (adv, y), batch_size=batch_size), seconds, float((adv - x).abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="", help="an image classifier run folder (default: train Fashion-MNIST here)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the model trained here")
    p.add_argument("--n", type=int, default=1000, help="test images attacked (the first n)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of every contender")
    p.add_argument("--eps", type=float, default=0.1, help="L∞ radius in pixels (of [0, 1])")
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--step-size", type=float, default=0.25, help="PGD step as a fraction of eps")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--peers", default="", help="a folder the peers are (or get) installed in; default: a temp folder")
    p.add_argument("--out", default="")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-attacks-") as tmp_name:
        tmp = Path(tmp_name)
        versions = install_peers(Path(a.peers) if a.peers else tmp / "peers")
        folder, model_info = trained_run(a, tmp)
        clf, x, y = test_images(folder, a.n, a.device)
        model = RawModel(clf.model, clf.preprocess, tta_flip=clf.tta_flip).to(clf.device).eval()
        clean = accuracy(model, (x, y), batch_size=a.batch_size)
        attacks = contenders(model, a, len(clf.classes), tuple(x.shape[1:]))
        names = list(attacks)
        acc: dict[str, list[float]] = {k: [] for k in names}
        secs: dict[str, list[float]] = {k: [] for k in names}
        dist: dict[str, float] = {}
        for r in range(a.repeats):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
            for name in order:
                ra, s, d = run_one(*attacks[name], model, x, y, a.batch_size)
                acc[name].append(ra)
                secs[name].append(s)
                dist[name] = max(dist.get(name, 0.0), d)
                print(f"repeat {r + 1}/{a.repeats}  {name:18s} robust accuracy {100 * ra:5.1f} %  "
                      f"{1e3 * s / len(y):7.2f} ms/image", flush=True)
    agreement, ratio = {}, {}
    for method in ("pgd", "fgsm"):
        ours = statistics.fmean(acc[f"lamina_{method}"])
        for peer in ("torchattacks", "art"):
            theirs = statistics.fmean(acc[f"{peer}_{method}"])
            agreement[f"{peer}_{method}"] = {"difference_points": 100 * (theirs - ours),
                                             "within_1_point": abs(theirs - ours) <= 0.01 + 1e-12}
            ratio[f"{peer}_{method}"] = mean_std([t / o for t, o in zip(secs[f"{peer}_{method}"],
                                                                        secs[f"lamina_{method}"], strict=True)])
            if method == "pgd":  # against lamina as `lamina attack` runs it (channels-last)
                ratio[f"{peer}_pgd_vs_nhwc"] = mean_std([t / o for t, o in zip(
                    secs[f"{peer}_pgd"], secs["lamina_pgd_nhwc"], strict=True)])
    result = {
        **environment(a.device), "seeds": {"attacks": a.seed, "training": a.seed if not a.run else None},
        "peers": versions, "model": {**model_info, "tta_flip": clf.tta_flip, "clean_accuracy": clean},
        "setting": {"images": len(y), "norm": "linf", "eps": a.eps, "pgd_steps": a.steps,
                    "pgd_step_size_fraction_of_eps": a.step_size, "pgd_random_start": True, "fgsm_step": a.eps,
                    "batch_size": a.batch_size, "repeats": a.repeats},
        "robust_accuracy": {k: mean_std(v) for k, v in acc.items()},
        "seconds_per_image": {k: mean_std([s / len(y) for s in v]) for k, v in secs.items()},
        "time_ratio_to_lamina": ratio,
        "agreement": agreement,
        "max_linf_distance": dist,
        "raw": {"robust_accuracy": acc, "seconds": secs},
    }
    path = write(a.out or result_path("attacks", a.device), result)
    print(f"clean accuracy {100 * clean:.1f} % on {len(y)} images")
    for k in names:
        print(f"{k:18s} robust {100 * result['robust_accuracy'][k]['mean']:5.1f} %  "
              f"{1e3 * result['seconds_per_image'][k]['mean']:7.2f} ± {1e3 * result['seconds_per_image'][k]['std']:.2f}"
              " ms/image" + (f"  x{ratio[k]['mean']:.2f} lamina's time" if k in ratio else ""))
    bad = [k for k, v in agreement.items() if not v["within_1_point"]]
    if bad:
        print(f"robust accuracies differ by more than 1 point from lamina's: {', '.join(bad)}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
