"""Sample-efficiency curves: test accuracy against the number of training examples.

``run_curve`` trains one run per (fraction of the training split, seed, variant) on nested,
stratified subsets, fits a power law of test error against examples, and writes ``OUT/curve.json``
after every finished run. Runs live in ``OUT/<variant>/f<fraction>-s<seed>/``; a rerun with the
same arguments reuses finished runs, resumes interrupted ones from their checkpoints and trains
the rest, so an interrupted curve continues where it stopped.

The data are loaded once (per distinct data-loading config) and every run gets a shallow copy of
the :class:`~lamina.data.base.Dataset` whose training split is the subset. Validation and test
splits are the full ones, the same for every point, and so is the normalisation: the
preprocess statistics (per-channel mean and std) of the **full** training split. A point thus
differs from its neighbours only in the examples it trains on, not in how inputs are scaled
(training on the subset alone would compute slightly different statistics from fewer examples).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import re
import shutil
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from torch import Tensor

from lamina import __version__
from lamina.config import RunConfig, load_config, to_dict
from lamina.data.base import Dataset, build_dataset
from lamina.errors import LaminaError
from lamina.session import Session, auto_batch_size, resolve_config, truncate_metrics, validate
from lamina.studies.fit import HESTNESS_2017_IMAGE_CLASSIFICATION, fit_power_law
from lamina.training import callbacks as cb
from lamina.training import checkpoint
from lamina.training.optim import default_lr
from lamina.utils.io import atomic_write_bytes, default_run_dir, read_json, write_json

DEFAULT_FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)
FORMAT = 1  # of curve.json and curve.yaml

# Fields of DataConfig that only shape batches (not which examples are loaded or how they are split):
# variants differing only in these share one loaded dataset.
_BATCH_ONLY = {"batch_size": 0, "translate": 0, "cutout": 0, "loader": "auto", "workers": 0}


def nested_subsets(y: Tensor, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """Indices of stratified, nested training subsets, one per fraction (sorted).

    Each class's indices are permuted once with a generator seeded by ``seed``; the subset at
    fraction ``f`` takes the first ``max(1, round(f * n_c))`` of every class ``c``. So class
    proportions are kept (within rounding), every smaller subset lies inside every larger one,
    and the same ``seed`` gives the same subsets.

    Args:
        y: the training labels, (N,) int64.
        fractions: each in (0, 1].
        seed: the subsets' seed (a curve uses the run's ``train.seed``).

    >>> y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    >>> [len(i) for i in nested_subsets(y, [0.25, 0.5, 1.0], seed=0)]
    [3, 6, 12]
    """
    for f in fractions:
        _check_fraction(f)
    g = torch.Generator().manual_seed(seed)
    perms = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        perms.append(idx[torch.randperm(len(idx), generator=g)])
    return [torch.cat([p[: max(1, round(f * len(p)))] for p in perms]).sort().values for f in fractions]


def point_epochs(base_epochs: int, fraction: float, epoch_scale: float) -> int:
    """Epochs for a subset of ``fraction`` of the data: ``ceil(base * min(fraction ** -0.5, epoch_scale))``.

    Why ``f^-0.5``: with the base epochs a 1 % subset takes 1 % of the steps, too few to train at
    all; with ``1/f`` epochs every point would cost a full run. ``f^-0.5`` sits between: a point
    processes ``sqrt(f)`` of a full run's examples, so the default fractions (0.01 ... 1) cost
    about 2.1 full runs per seed. Hestness et al. (2017) tune the model and hyperparameters per
    size instead; that is better but unbounded in cost, and a fixed rule keeps points comparable.
    ``epoch_scale`` caps the multiplier (1: every point trains ``base_epochs``).

    >>> [point_epochs(6, f, 10.0) for f in (0.01, 0.1, 1.0)]
    [60, 19, 6]
    """
    return max(1, math.ceil(base_epochs * min(fraction**-0.5, epoch_scale) - 1e-9))


def point_batch_size(base_batch: int, examples: int) -> int:
    """``min(base_batch, auto_batch_size(examples))``: a small subset still takes ~32 steps an epoch."""
    return min(base_batch, auto_batch_size(examples))


def point_lr(lr: float | None, optimizer: str, base_batch: int, batch: int) -> float:
    """The learning rate at ``batch``: the optimizer's default for that batch when ``lr`` is None,
    else ``lr`` scaled as :func:`lamina.training.optim.default_lr` scales (linear for SGD, square
    root for AdamW), so a point with a smaller batch keeps the per-example step size."""
    if lr is None:
        return default_lr(optimizer, batch)
    ratio = batch / base_batch
    return lr * (ratio if optimizer == "sgd" else math.sqrt(ratio))


@dataclass(frozen=True)
class Variant:
    """One curve: a name, the overrides laid over the base config, its resolved config and folder."""

    name: str
    overrides: tuple[str, ...]
    cfg: RunConfig
    folder: str


def run_curve(
    data: str | None,
    *,
    fractions: Sequence[float] | str = DEFAULT_FRACTIONS,
    seeds: int = 3,
    compare: Sequence[str | Sequence[str]] = (),
    out: str | Path | None = None,
    recipe: str | None = None,
    config: RunConfig | str | Path | None = None,
    overrides: str | Sequence[str] = (),
    epoch_scale: float = 10.0,
    console: Console | None = None,
    quiet: bool = True,
    progress: Callable[[str], None] | None = None,
    callbacks: Sequence[cb.Callback] = (),
) -> dict[str, Any]:
    """Train a sample-efficiency curve and write ``OUT/curve.json`` (the same as ``lamina curve``).

    For each fraction (smallest first), each seed and each variant, one run trains on a nested,
    stratified subset of the training split (:func:`nested_subsets`) for :func:`point_epochs`
    epochs with :func:`point_batch_size` examples a step (learning rate: :func:`point_lr`), and is
    tested on the full test split. Each point records the mean ± std of test accuracy over seeds,
    its examples, epochs, batch size, seconds and, where the runs' ``summary.json`` has it,
    ``energy_j``. The fit is :func:`lamina.studies.fit.fit_power_law` over all runs, next to
    Hestness et al. 2017's image-classification exponents.

    Args:
        data: a dataset name or path, as for :func:`lamina.train` (None: the config's ``data.name``).
        fractions: fractions of the training split, each in (0, 1] (or ``"0.01,0.1,1"``).
        seeds: runs per point, with ``train.seed``, ``train.seed + 1``, ...; a run's seed also picks its subset.
        compare: variants, each one or more ``a.b=c`` overrides (a string, split at spaces, or a
            list) laid over the base config; each gives its own curve. Empty: one curve, ``base``.
        out: the curve's folder (default ``runs/<data>-curve-<time>``); pass the same one to resume.
        recipe, config, overrides: as for :func:`lamina.train`.
        epoch_scale: the most a subset's epochs are multiplied by (see :func:`point_epochs`).
        console: where progress lines go (default: standard error).
        quiet: no progress lines and no per-run progress bars.
        progress: called with each progress line (also when quiet).
        callbacks: extra callbacks for every run (tests use them to interrupt a run).

    Returns:
        the curve as written to ``OUT/curve.json``, and ``out``: that folder.
    """
    fracs = _parse_fractions(fractions)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise LaminaError(f"seeds must be a whole number of at least 1, got {seeds!r}")
    if not (isinstance(epoch_scale, int | float) and epoch_scale >= 1):
        raise LaminaError(f"epoch_scale caps the epoch multiplier: use 1 (no scaling) or more, got {epoch_scale!r}")
    variants = _variants(data, compare, config=config, recipe=recipe, overrides=overrides)
    base = variants[0].cfg
    root = Path(out) if out is not None else default_run_dir(base.data.name, "curve")
    settings = {"format": FORMAT, "data": base.data.name, "fractions": list(fracs), "seeds": seeds,
                "epoch_scale": float(epoch_scale), "recipe": recipe,
                "overrides": overrides.split() if isinstance(overrides, str) else list(overrides),
                "variants": [{"name": v.name, "overrides": list(v.overrides), "config": _saved(v.cfg)}
                             for v in variants]}
    _check_settings(root, settings)
    console = console or Console(stderr=True, quiet=quiet)
    say = _Say(console, quiet, progress)
    datasets = _load_datasets(variants)
    plan = _plan(variants, datasets, fracs, seeds, epoch_scale)
    _write_settings(root, settings)
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for i, f in enumerate(fracs):
        for j, seed in enumerate(plan.seeds):
            for v in variants:
                p = plan.points[(v.name, f)]
                folder = root / v.folder / f"f{f:.12g}-s{seed}"  # 12 digits: distinct fractions, distinct names
                subset = _subset(datasets[v.name], plan.subsets[(v.name, seed)][i], f)
                summary, status = _run_point(_point_config(v.cfg, p, seed, folder), folder, subset, p,
                                             console=console if not quiet else Console(quiet=True),
                                             quiet=quiet, callbacks=callbacks)
                record = _run_record(summary, status, seed, folder.relative_to(root))
                results.setdefault((v.name, f), []).append(record)
                write_json(root / "curve.json", _document(settings, variants, datasets, plan, results))
                who = f" [{v.name}]" if len(variants) > 1 or compare else ""
                say(f"point {i + 1}/{len(fracs)}: {f * 100:g} % = {p['examples']:,} examples, seed {j + 1}/{seeds}"
                    f"{who} ... test accuracy {record['test_accuracy']:.3f} ({record['seconds']:.1f} s, {status})")
    return {**_document(settings, variants, datasets, plan, results), "out": str(root)}


# -- arguments ------------------------------------------------------------------------------------

def _check_fraction(f: Any) -> float:
    if isinstance(f, bool) or not isinstance(f, int | float) or not (0.0 < f <= 1.0):
        raise LaminaError(f"fraction {f!r} must lie in (0, 1]: a fraction of the training split, 1 for all of it")
    return float(f)


def _parse_fractions(fractions: Sequence[float] | str) -> tuple[float, ...]:
    if isinstance(fractions, str):
        items: list[Any] = []
        for part in fractions.replace(" ", "").split(","):
            try:
                items.append(float(part))
            except ValueError:
                raise LaminaError(f"fraction '{part}' is not a number: use e.g. --fractions 0.01,0.1,1") from None
    else:
        items = list(fractions)
    if not items:
        raise LaminaError("no fractions given: use e.g. --fractions 0.01,0.1,1")
    fracs = [_check_fraction(f) for f in items]
    dupes = sorted({f for f in fracs if fracs.count(f) > 1})
    if dupes:
        raise LaminaError(f"fraction {dupes[0]:g} is given more than once: give each fraction once")
    return tuple(sorted(fracs))


def _variants(data: str | None, compare: Sequence[str | Sequence[str]], *, config: RunConfig | str | Path | None,
              recipe: str | None, overrides: str | Sequence[str]) -> list[Variant]:
    base = overrides.split() if isinstance(overrides, str) else list(overrides)
    items = [tuple(c.split()) if isinstance(c, str) else tuple(c) for c in compare] or [()]
    names = [" ".join(o) or "base" for o in items]
    if any(not o for o in items) and compare:
        raise LaminaError("an empty --compare variant: give each one or more key=value overrides")
    if len(set(names)) < len(names):
        raise LaminaError(f"variant '{next(n for n in names if names.count(n) > 1)}' is given twice: give each once")
    from lamina.data.sources import declared_task

    out, folders = [], set()
    for name, extra in zip(names, items, strict=True):
        cfg = resolve_config(data, config=config, recipe=recipe, overrides=[*base, *extra])
        validate(cfg)
        task = declared_task(cfg.data)
        if task != "classify":
            raise LaminaError(f"{cfg.data.name} is {task} data: a curve needs a classification "
                              "task (test accuracy against training examples)")
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "variant"
        while folder in folders:
            folder += "_"
        folders.add(folder)
        out.append(Variant(name, extra, cfg, folder))
    return out


def _saved(cfg: RunConfig) -> dict[str, Any]:
    return to_dict(dataclasses.replace(cfg, out=""))


def _check_settings(root: Path, settings: dict[str, Any]) -> None:
    path = root / "curve.yaml"
    if root.exists() and not root.is_dir():
        raise LaminaError(f"--out {root} exists and is not a folder: choose another --out")
    if not path.is_file():
        if root.is_dir() and any(root.iterdir()):
            raise LaminaError(f"--out {root} is a folder with files but no curve.yaml: choose another --out")
        return
    try:
        before = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise LaminaError(f"{path} is unreadable: {' '.join(str(e).split())[:120]}; choose another --out") from None
    if before != settings:
        keys = [k for k in settings if not isinstance(before, dict) or before.get(k) != settings[k]]
        raise LaminaError(f"{root} holds a curve with other settings ({', '.join(keys) or 'format'} differ): "
                          "use another --out, or the same arguments to resume it")


def _write_settings(root: Path, settings: dict[str, Any]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LaminaError(f"cannot create curve folder {root}: {e.strerror}") from None
    atomic_write_bytes(root / "curve.yaml", yaml.safe_dump(settings, sort_keys=False).encode())


# -- data and the plan ----------------------------------------------------------------------------

def _data_key(cfg: RunConfig) -> str:
    return json.dumps([to_dict(dataclasses.replace(cfg.data, **_BATCH_ONLY)), cfg.train.seed], sort_keys=True)


def _load_datasets(variants: Sequence[Variant]) -> dict[str, Dataset]:
    """Each distinct data-loading config is built once (the split seed is the variant's train.seed)."""
    built: dict[str, Dataset] = {}
    out = {}
    for v in variants:
        key = _data_key(v.cfg)
        if key not in built:
            ds = build_dataset(v.cfg.data, seed=v.cfg.train.seed)
            if ds.task != "classify" or ds.train.y is None:
                raise LaminaError(f"{ds.name} is {ds.task} data: a curve needs a classification task")
            built[key] = ds
        out[v.name] = built[key]
    return out


@dataclass
class _Plan:
    seeds: list[int]
    points: dict[tuple[str, float], dict[str, Any]]  # (variant, fraction) -> examples, epochs, batch size, lr
    subsets: dict[tuple[str, int], list[Tensor]]  # (variant, seed) -> indices per fraction


def _plan(variants: Sequence[Variant], datasets: dict[str, Dataset], fracs: Sequence[float], seeds: int,
          epoch_scale: float) -> _Plan:
    first = variants[0].cfg.train.seed
    plan = _Plan([first + k for k in range(seeds)], {}, {})
    for v in variants:
        ds, t = datasets[v.name], v.cfg.train
        assert ds.train.y is not None
        n, c = len(ds.train), ds.num_classes
        base_batch = v.cfg.data.batch_size or auto_batch_size(n)
        for f in fracs:
            if round(f * n) < c:
                raise LaminaError(f"fraction {f:g} gives {round(f * n)} of {n:,} training examples, fewer than the "
                                  f"{c} classes: use a fraction of at least {c / n:.2g}")
        for seed in plan.seeds:
            plan.subsets[(v.name, seed)] = nested_subsets(ds.train.y, fracs, seed)
        for f, idx in zip(fracs, plan.subsets[(v.name, first)], strict=True):
            batch = point_batch_size(base_batch, len(idx))
            plan.points[(v.name, f)] = {
                "fraction": f, "examples": len(idx), "epochs": point_epochs(t.epochs, f, epoch_scale),
                "batch_size": batch, "lr": point_lr(t.lr, t.optimizer, base_batch, batch)}
    return plan

def _subset(ds: Dataset, idx: Tensor, fraction: float) -> Dataset:
    """A shallow copy whose training split is ``idx``: val, test and the full split's preprocess stay."""
    what = f"{len(idx):,} of {len(ds.train):,} training examples ({fraction:g})"
    return dataclasses.replace(ds, train=ds.train.take(idx), summary=what)


def _point_config(cfg: RunConfig, point: dict[str, Any], seed: int, folder: Path) -> RunConfig:
    return dataclasses.replace(
        cfg, out=str(folder), data=dataclasses.replace(cfg.data, batch_size=point["batch_size"]),
        train=dataclasses.replace(cfg.train, seed=seed, epochs=point["epochs"], lr=point["lr"]))


# -- one run: reuse, resume or train ---------------------------------------------------------------

def _run_point(cfg: RunConfig, folder: Path, subset: Dataset, point: dict[str, Any], *, console: Console,
               quiet: bool, callbacks: Sequence[cb.Callback]) -> tuple[dict[str, Any], str]:
    """The run's summary and how it was got: ``reused`` (summary.json exists), ``resumed`` (from its
    newest valid checkpoint) or ``trained`` (from scratch; a folder with neither is cleared first)."""
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        summary = read_json(summary_path, "run summary")
        if not isinstance(summary, dict) or summary.get("train_examples") != point["examples"] \
                or summary.get("seed") != cfg.train.seed or "test_accuracy" not in summary:
            raise LaminaError(f"run folder {folder} holds a different run than this curve expects: "
                              "use another --out")
        return summary, "reused"
    found = None
    if (folder / "config.yaml").is_file():
        def skipped(path: Path, err: LaminaError) -> None:
            console.print(f"[yellow]skipping checkpoint[/] {path.name}: {err}; trying the previous one")

        found = checkpoint.latest(folder / "checkpoints", on_skip=skipped)
    if found is not None:
        # resume_session's steps, with the subset: resume_session would rebuild the full data set.
        state, path = found
        saved = dataclasses.replace(load_config(folder / "config.yaml"), out=str(folder))
        session = Session(saved, console, quiet=quiet, resuming=True, extra=callbacks, dataset=subset)
        session.trainer.load_state_dict(state)
        truncate_metrics(folder / "metrics.jsonl", session.trainer.step)
        console.print(f"resuming {folder} from {path.name} (epoch {session.trainer.epoch + 1}, "
                      f"step {session.trainer.step})")
        return session.run(), "resumed"
    if folder.exists():  # started but killed before its first checkpoint: nothing to keep
        shutil.rmtree(folder)
    return Session(cfg, console, quiet=quiet, extra=callbacks, dataset=subset).run(), "trained"


def _run_record(summary: dict[str, Any], status: str, seed: int, folder: Path) -> dict[str, Any]:
    energy = summary.get("energy_j")
    return {"seed": seed, "folder": folder.as_posix(), "test_accuracy": float(summary["test_accuracy"]),
            "test_examples": int(summary.get("test_examples", 0)), "seconds": float(summary.get("total_seconds", 0.0)),
            "train_seconds": float(summary.get("train_seconds", 0.0)), "epochs": summary.get("epochs"),
            "steps": summary.get("steps"),
            "energy_j": float(energy) if isinstance(energy, int | float) else None, "device": summary.get("device"),
            "status": status}


# -- curve.json -------------------------------------------------------------------------------------

def _error(run: dict[str, Any]) -> float:
    """Test error, clipped to half a test example (an error of 0 has no logarithm)."""
    floor = 0.5 / run["test_examples"] if run["test_examples"] else 1e-6
    return max(1.0 - run["test_accuracy"], floor)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _point(plan_point: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    acc = [r["test_accuracy"] for r in runs]
    mean, std = _mean_std(acc)
    err_mean, err_std = _mean_std([1.0 - a for a in acc])
    energy = [r["energy_j"] for r in runs if r["energy_j"] is not None]
    return {**plan_point, "seeds": [r["seed"] for r in runs], "accuracies": acc, "accuracy_mean": mean,
            "accuracy_std": std, "error_mean": err_mean, "error_std": err_std,
            "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in runs),
            "energy_j_mean": statistics.fmean(energy) if len(energy) == len(runs) else None, "runs": runs}


def _fit(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    runs = [(p["examples"], _error(r)) for p in points for r in p["runs"]]
    if len({n for n, _ in runs}) < 2:
        return None  # a partial curve with one size so far: nothing to fit yet
    fit = fit_power_law([n for n, _ in runs], [e for _, e in runs]).to_dict()
    clipped = sum(1 for p in points for r in p["runs"] if r["test_accuracy"] >= 1.0)
    return {**fit, "fitted_on": "every (point, seed) run: log(test error) against log(training examples)",
            "error_floor": "an error of 0 counts as half a test example", "clipped": clipped,
            "hestness_2017_image_classification": HESTNESS_2017_IMAGE_CLASSIFICATION}


def _document(settings: dict[str, Any], variants: Sequence[Variant], datasets: dict[str, Dataset], plan: _Plan,
              results: dict[tuple[str, float], list[dict[str, Any]]]) -> dict[str, Any]:
    curves = []
    for v in variants:
        points = [_point(plan.points[(v.name, f)], results[(v.name, f)]) for f in settings["fractions"]
                  if (v.name, f) in results]
        curves.append({"name": v.name, "overrides": list(v.overrides), "folder": v.folder, "points": points,
                       "fit": _fit(points)})
    base, ds = variants[0], datasets[variants[0].name]
    runs = [r for rs in results.values() for r in rs]
    total = len(settings["fractions"]) * len(plan.seeds) * len(variants)
    doc: dict[str, Any] = {
        "kind": "lamina-curve", "format": FORMAT, "data": settings["data"], "dataset": ds.name,
        "classes": ds.num_classes, "train_examples": len(ds.train),
        "test_examples": len(ds.test) if ds.test is not None else 0,
        "fractions": settings["fractions"], "seeds": plan.seeds, "epoch_scale": settings["epoch_scale"],
        "recipe": settings["recipe"], "overrides": settings["overrides"],
        "complete": len(runs) == total, "runs_done": len(runs), "runs_total": total,
        "points": curves[0]["points"], "fit": curves[0]["fit"],
        "seconds": sum(r["seconds"] for r in runs),
        "energy_j": sum(r["energy_j"] for r in runs) if runs and all(r["energy_j"] is not None for r in runs) else None,
        "rules": {
            "subsets": "stratified and nested: per seed, each class permuted once; first max(1, round(f * n_c))",
            "epochs": "ceil(base_epochs * min(f ** -0.5, epoch_scale))",
            "batch_size": "min(base batch, auto_batch_size(examples))",
            "lr": "base lr scaled with the batch (linear for sgd, square root otherwise)",
            "preprocess": "normalisation statistics of the full training split; val and test splits are full",
        },
        "config": _saved(base.cfg), "lamina": __version__, "torch": torch.__version__,
        "python": platform.python_version(), "device": runs[0].get("device") if runs else None,
        "argv": list(sys.argv),
    }
    if len(variants) > 1 or base.overrides:
        doc["variants"] = curves
    return doc


class _Say:
    """A progress line to the console (unless quiet) and to ``progress`` (always)."""

    def __init__(self, console: Console, quiet: bool, progress: Callable[[str], None] | None) -> None:
        self.console, self.quiet, self.progress = console, quiet, progress

    def __call__(self, line: str) -> None:
        if not self.quiet:
            self.console.print(line, highlight=False)
        if self.progress is not None:
            self.progress(line)
