"""``lamina attack RUN``: the robust accuracy of a finished classifier run, with masking checks.

The saved model is loaded (:func:`lamina.artifacts.load`) and its data rebuilt from
``config.yaml`` as evaluation does; the first ``n`` examples of a split are attacked in raw units
(:class:`~lamina.robustness.attacks.RawModel`: the run's normalisation and test-time flips inside
the model) at each ε. Besides the attack asked for, what the gradient-masking checks need runs
too (:mod:`lamina.robustness.checks`): the other of FGSM/PGD at each ε, PGD at an ε spanning the
whole input range, and PGD with twice the steps and with more restarts on a subset. The results
go to ``RUN/robustness.json`` and a few examples to ``RUN/robustness/examples.npz``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lamina import __version__
from lamina.artifacts import Classifier, load
from lamina.config import load_config
from lamina.data.base import build_dataset
from lamina.errors import LaminaError, did_you_mean
from lamina.robustness.attacks import (
    NORMS,
    RawModel,
    accuracy,
    attack_batches,
    input_bounds,
    max_eps,
    model_device,
)
from lamina.robustness.checks import masking_checks
from lamina.utils.io import atomic_path, write_json

CHECK_SUBSET = 256  # examples the stronger attacks of the checks run on
SAVED_EXAMPLES = 8  # originals kept in examples.npz, with their adversarial versions at each eps
METHODS = ("fgsm", "pgd")


# Inputs an attack cannot move by a small epsilon: token ids, and tables (their category indices).
DISCRETE_INPUTS = ("text", "table")

def check_arguments(*, method: str, eps: Sequence[float], steps: int, restarts: int, norm: str,
                    n: int | None, batch_size: int, step_size: float | None) -> None:
    """One-line errors for arguments that are wrong before anything is loaded."""
    if method not in METHODS:
        raise LaminaError(f"unknown attack method '{method}': {did_you_mean(method, METHODS)}")
    if norm not in NORMS:
        raise LaminaError(f"unknown norm '{norm}': {did_you_mean(norm, NORMS)}")
    if not eps:
        raise LaminaError("give at least one eps")
    for e in eps:
        if not (isinstance(e, int | float) and math.isfinite(e) and e > 0):
            raise LaminaError(f"eps must be positive (in raw input units, pixels in [0, 1]), got {e}")
    checks = [(steps >= 1, f"steps must be at least 1, got {steps}"),
              (restarts >= 1, f"restarts must be at least 1, got {restarts}"),
              (n is None or n >= 1, f"n must be at least 1 example, got {n}"),
              (batch_size >= 1, f"batch_size must be at least 1, got {batch_size}"),
              (step_size is None or (math.isfinite(step_size) and step_size > 0),
               f"step_size is a positive fraction of eps, got {step_size}")]
    for ok, message in checks:
        if not ok:
            raise LaminaError(message)


def _load(folder: Path, split: str, n: int | None, device: str
          ) -> tuple[Classifier, Tensor, Tensor, tuple[float, float], str]:
    """The classifier, the first ``n`` raw examples of ``split`` and their labels, the input range."""
    if not folder.is_dir():
        raise LaminaError(f"run folder {folder} does not exist")
    if not (folder / "model.json").is_file():
        raise LaminaError(f"run folder {folder} has no model.json: the run did not finish; train it first")
    predictor = load(folder, device)
    if (not isinstance(predictor, Classifier) or predictor.preprocess.kind == "tokens"
            or predictor.modality in DISCRETE_INPUTS):
        raise LaminaError(f"{folder} holds a {predictor.task} model of {predictor.modality or 'unknown'} inputs: "
                          "attacks need a classifier with continuous inputs (images, audio, signals, vectors, "
                          "k-mer frequencies)")
    cfg = load_config(folder / "config.yaml")
    ds = build_dataset(cfg.data, seed=cfg.train.seed)
    splits = ds.splits()
    if split not in splits:
        raise LaminaError(f"split '{split}' does not exist for {ds.name}: {did_you_mean(split, splits)}")
    s = splits[split]
    count = len(s) if n is None else min(n, len(s))
    x = s.x[:count] if isinstance(s.x, Tensor) else s.x[torch.arange(count)]
    pre = predictor.preprocess
    raw = x.float() / pre.scale
    lower, upper = input_bounds(pre, predictor.modality, ds.train.x if isinstance(ds.train.x, Tensor) else x)
    lower, upper = min(lower, float(raw.min())), max(upper, float(raw.max()))
    assert s.y is not None  # build_dataset checked every classification split has labels
    return predictor, raw, s.y[:count].clone(), (lower, upper), split


def attack_run(folder: str | Path, *, method: str = "pgd", eps: Sequence[float] = (0.05, 0.1, 0.2), steps: int = 20,
               restarts: int = 1, step_size: float | None = None, norm: str = "linf", n: int | None = None,
               split: str = "test", device: str = "cpu", batch_size: int = 500, seed: int = 0,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Attack a finished classifier run at each ε; write ``robustness.json`` and examples; return the record.

    Args:
        folder: the run folder (``model.json``, ``model.safetensors``, ``config.yaml``).
        method: ``pgd`` or ``fgsm``.
        eps: the radii, in raw input units (pixels in [0, 1]); each at most the input range
            (L∞) or the range box's diameter (L2).
        steps, restarts, step_size: PGD's (``step_size`` a fraction of ε; None: 2.5 / steps).
        norm: ``linf`` or ``l2``.
        n: attack the first ``n`` examples of the split (None: all).
        split: ``test``, ``val`` or ``train``.
        device: where the model runs (``cpu``, ``cuda``, ``auto``).
        batch_size: examples attacked at once.
        seed: of the random starts (each attack starts from the same seed).
        progress: called with a one-line status as the work goes on.
    """
    eps = [float(e) for e in (eps if isinstance(eps, Sequence) else [eps])]
    check_arguments(method=method, eps=eps, steps=steps, restarts=restarts, norm=norm, n=n, batch_size=batch_size,
                    step_size=step_size)
    folder = Path(folder)
    say = progress or (lambda _: None)
    say(f"loading {folder}")
    clf, x, y, (lower, upper), split = _load(folder, split, n, device)
    top = max_eps(norm, lower, upper, x[0].numel())
    for e in eps:
        if e > top * (1 + 1e-9):
            raise LaminaError(f"eps {e:g} is larger than the whole input range under {norm} ({top:g}; inputs lie "
                              f"in [{lower:g}, {upper:g}]): give eps in raw input units (pixels in [0, 1])")
    model = RawModel(clf.model, clf.preprocess, tta_flip=clf.tta_flip).to(clf.device).eval()
    if clf.modality == "image" and x.dim() == 4:  # NHWC, as training runs images: faster convolutions
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    clean = accuracy(model, (x, y), batch_size=batch_size)
    results, checks, kept = evaluate_robustness(
        model, x, y, num_classes=len(clf.classes), method=method, eps=eps, steps=steps, restarts=restarts,
        step_size=step_size, norm=norm, lower=lower, upper=upper, batch_size=batch_size, seed=seed, progress=say)
    out = {"clean_accuracy": clean, "split": split, "examples": len(y), "norm": norm, "tta_flip": clf.tta_flip,
           "method": method, "bounds": [lower, upper], "classes": clf.classes, "seed": seed, "results": results,
           "checks": checks, "device": str(clf.device), "torch": torch.__version__, "lamina": __version__}
    write_json(folder / "robustness.json", out)
    _save_examples(folder, model, x, y, kept, clf.classes)
    say(f"wrote {folder / 'robustness.json'}")
    return out


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, *, num_classes: int, method: str = "pgd",
                        eps: Sequence[float] = (0.05, 0.1, 0.2), steps: int = 20, restarts: int = 1,
                        step_size: float | None = None, norm: str = "linf", lower: float = 0.0, upper: float = 1.0,
                        batch_size: int = 500, seed: int = 0, progress: Callable[[str], None] | None = None
                        ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[float, tuple[Tensor, Tensor]]]:
    """The attacks of :func:`attack_run` on a model in memory (in eval mode, taking ``x``'s units).

    Runs ``method`` at each ε and what the masking checks need: the other of FGSM/PGD at each
    ε, and on the first ``CHECK_SUBSET`` examples: PGD from the clean inputs at an ε spanning the
    whole input range (:func:`max_eps`), and PGD with twice the steps and with twice the restarts
    (at least 2) at the largest requested ε.

    Returns:
        the result records (see :mod:`lamina.robustness.checks`), the checks, and per ε the first
        ``SAVED_EXAMPLES`` adversarial examples of the requested attack with their predictions.
    """
    say = progress or (lambda _: None)
    eps = sorted(float(e) for e in eps)
    other = "fgsm" if method == "pgd" else "pgd"
    plan: list[dict[str, Any]] = []
    for e in eps:
        plan += [{"method": method, "eps": e, "role": "main"}, {"method": other, "eps": e, "role": other}]
    sub = min(len(y), CHECK_SUBSET)
    # from the clean inputs, so restarts would repeat one another: one run, on the checks' subset
    plan.append({"method": "pgd", "eps": max_eps(norm, lower, upper, x[0].numel()), "role": "large-eps",
                 "random_start": False, "restarts": 1, "examples": sub})
    plan.append({"method": "pgd", "eps": eps[-1], "role": "more-steps", "steps": 2 * steps, "examples": sub})
    plan.append({"method": "pgd", "eps": eps[-1], "role": "more-restarts", "restarts": max(2, 2 * restarts),
                 "examples": sub})
    results: list[dict[str, Any]] = []
    correct: dict[tuple[str, float], Tensor] = {}  # (role, eps) -> per-example correctness, for baselines
    kept: dict[float, tuple[Tensor, Tensor]] = {}  # eps -> the main attack's first examples, predictions
    for i, p in enumerate(plan):
        def status(done: int, p: dict[str, Any] = p, i: int = i) -> None:
            say(f"[{i + 1}/{len(plan)}] {p['role']}: {p['method']} eps {p['eps']:g}, "
                f"{done}/{p.get('examples', len(y))} examples")

        record, ok, first = _one_attack(model, x, y, p, steps=steps, restarts=restarts, step_size=step_size,
                                        norm=norm, lower=lower, upper=upper, batch_size=batch_size, seed=seed,
                                        say=status)
        correct[(p["role"], p["eps"])] = ok
        if p["role"] == "main":
            kept[p["eps"]] = first
        if p["role"] in ("more-steps", "more-restarts"):
            base = correct[("main" if method == "pgd" else "pgd", p["eps"])]
            record["baseline_accuracy"] = float(base[:sub].float().mean())
        results.append(record)
    return results, masking_checks(results, num_classes=num_classes), kept


def _one_attack(model: nn.Module, x: Tensor, y: Tensor, p: dict[str, Any], *, steps: int, restarts: int,
                step_size: float | None, norm: str, lower: float, upper: float, batch_size: int, seed: int,
                say: Callable[[int], None]) -> tuple[dict[str, Any], Tensor, tuple[Tensor, Tensor]]:
    """Run one planned attack; its record, per-example correctness (CPU) and its first examples."""
    count = int(p.get("examples", len(y)))
    st, rs = int(p.get("steps", steps)), int(p.get("restarts", restarts))
    pgd = p["method"] == "pgd"
    device = model_device(model)
    g = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    oks: list[Tensor] = []
    first: tuple[Tensor, Tensor] | None = None
    done = 0
    for adv, yb, pred in attack_batches(model, (x[:count], y[:count]), method=p["method"], eps=p["eps"], norm=norm,
                                        lower=lower, upper=upper, steps=st, restarts=rs,
                                        step_size=step_size if pgd else None,
                                        random_start=p.get("random_start"), batch_size=batch_size, generator=g):
        oks.append((pred == yb).cpu())
        if first is None:
            first = (adv[:SAVED_EXAMPLES].cpu(), pred[:SAVED_EXAMPLES].cpu())
        done += len(yb)
        say(done)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ok = torch.cat(oks)
    record = {"method": p["method"], "norm": norm, "eps": p["eps"], "steps": st if pgd else 1,
              "restarts": rs if pgd else 1,
              "step_size": (step_size if step_size is not None else 2.5 / st) if pgd else 1.0,
              "random_start": bool(p.get("random_start", pgd)),
              "robust_accuracy": float(ok.float().mean()), "seconds": time.perf_counter() - t0,
              "examples": count, "role": p["role"]}
    assert first is not None
    return record, ok, first


@torch.no_grad()
def _save_examples(folder: Path, model: nn.Module, x: Tensor, y: Tensor, kept: dict[float, tuple[Tensor, Tensor]],
                   classes: list[str]) -> None:
    """``robustness/examples.npz``: originals (k, ...), adversarial (E, k, ...) at ``eps`` (E,), labels,
    predictions before (k,) and after (E, k), and the class names; plain arrays (no pickle)."""
    eps = sorted(kept)
    k = len(kept[eps[0]][0])
    device = model_device(model)
    before = model(x[:k].to(device)).argmax(dim=1).cpu()
    arrays = {"original": x[:k].numpy().astype(np.float32),
              "adversarial": np.stack([kept[e][0].numpy() for e in eps]).astype(np.float32),
              "eps": np.asarray(eps, dtype=np.float64), "label": y[:k].numpy().astype(np.int64),
              "pred_before": before.numpy().astype(np.int64),
              "pred_after": np.stack([kept[e][1].numpy() for e in eps]).astype(np.int64),
              "classes": np.asarray(classes, dtype=str)}
    out = folder / "robustness"
    out.mkdir(exist_ok=True)
    with atomic_path(out / "examples.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
