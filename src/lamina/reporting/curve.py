"""The page of a sample-efficiency curve: ``write_curve_report(folder) -> folder/curve.html``.

It reads only ``curve.json`` (written by :func:`lamina.studies.run_curve`), so it can be rebuilt at
any time, also from a partial curve. Like the run report (:mod:`lamina.reporting.html`, whose CSS,
Content-Security-Policy and building blocks it uses) the page is one self-contained file: the
figure is an embedded PNG and nothing is fetched.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from lamina.errors import LaminaError
from lamina.reporting.figures import _figure, _png, _style
from lamina.reporting.html import Section, duration, figures_block, image, note, page, para, pct, table
from lamina.utils.io import atomic_write_bytes, read_json


def curves(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The curves of a curve.json: its ``variants``, or the one ``base`` curve of ``points``/``fit``."""
    if "variants" in doc:
        return list(doc["variants"])
    return [{"name": "base", "overrides": [], "points": doc["points"], "fit": doc.get("fit")}]


def _error(run: Mapping[str, Any]) -> float:
    """A run's test error, an error of 0 clipped to half a test example (as the fit does)."""
    floor = 0.5 / run["test_examples"] if run.get("test_examples") else 1e-6
    return max(1.0 - float(run["test_accuracy"]), floor)


def _ci(fit: Mapping[str, Any], digits: int = 3) -> str:
    ci = fit.get("exponent_ci95")
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "(no CI: 2 runs)"


def curve_figure(items: Sequence[Mapping[str, Any]], *, reference: float | None = None) -> bytes:
    """Test error against training examples on log–log axes: each curve's mean ± std per point, its
    runs as faint dots, its fitted power law (exponent and 95 % CI in the legend); ``reference``:
    a dotted line of that slope through the first curve's largest point (e.g. Hestness et al.'s)."""
    fig = _figure(4.2)
    ax = fig.subplots()
    for k, c in enumerate(items):
        color = f"C{k}"
        pts = c["points"]
        n = np.array([p["examples"] for p in pts], dtype=float)
        err = np.array([p["error_mean"] for p in pts], dtype=float)
        std = np.array([p["error_std"] for p in pts], dtype=float)
        runs = [(p["examples"], _error(r)) for p in pts for r in p["runs"]]
        err = np.maximum(err, min((e for _, e in runs), default=1e-6))  # an error of 0: drawn at the floor
        ax.scatter(*zip(*runs, strict=True), s=12, color=color, alpha=0.3, lw=0)
        lower = np.minimum(std, 0.9 * err)  # a log axis cannot show mean - std <= 0
        fit = c.get("fit")
        label = c["name"] if not fit else f"{c['name']}: b = {fit['exponent']:.3f} {_ci(fit)}"
        ax.errorbar(n, err, yerr=[lower, std], fmt="o", color=color, ms=6, capsize=3, lw=1.5, label=label)
        if fit:
            grid = np.geomspace(n.min(), n.max(), 50)
            ax.plot(grid, fit["a"] * grid ** fit["exponent"], "-", color=color, lw=1.5, alpha=0.8)
    if reference is not None and items and items[0]["points"]:
        c0 = items[0]
        n0 = float(c0["points"][-1]["examples"])
        fit = c0.get("fit")  # anchored on the fitted line at the largest point (else that point's error)
        e0 = fit["a"] * n0 ** fit["exponent"] if fit else min(_error(r) for r in c0["points"][-1]["runs"])
        first = float(c0["points"][0]["examples"])
        grid = np.geomspace(min(first, n0 / 10), n0, 20)
        ax.plot(grid, e0 * (grid / n0) ** reference, ":", color="0.35", lw=1.5,
                label=f"slope {reference:g} (Hestness et al. 2017, ImageNet top-1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # labelled minor ticks (3x10^1, 4x10^1, ...) collide on a short axis
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training examples")
    ax.set_ylabel("test error")
    ax.set_title("Sample efficiency: test error against training examples")
    _style(ax)
    ax.legend(loc="best", frameon=False)
    return _png(fig)


def _num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) and math.isfinite(x) else "—"


def _joules(e: Any) -> str:
    if not isinstance(e, int | float):
        return "—"
    return f"{e:,.0f} J" if abs(e) >= 100 else f"{e:.3g} J"


def _points_table(items: Sequence[Mapping[str, Any]], energy: bool) -> str:
    rows = []
    for c in items:
        for p in c["points"]:
            row = [c["name"], f"{p['fraction']:g}", p["examples"], p["epochs"], p["batch_size"],
                   f"{pct(p['accuracy_mean'], 2)} ± {pct(p['accuracy_std'], 2)}", len(p["seeds"]),
                   duration(p.get("seconds_mean"))]
            if energy:
                row.append(_joules(p.get("energy_j_mean")))
            rows.append(row)
    header = ["curve", "fraction", "examples", "epochs", "batch", "test accuracy (mean ± std)", "seeds",
              "seconds per run"] + (["energy per run"] if energy else [])
    return table(rows, header)


def _fit_table(items: Sequence[Mapping[str, Any]], hestness: Mapping[str, Any] | None) -> str:
    rows: list[list[Any]] = []
    for c in items:
        fit = c.get("fit")
        if fit:
            r2 = fit.get("r2")
            rows.append([c["name"], _num(fit["exponent"]), _ci(fit), _num(fit.get("a"), 4),
                         _num(r2) if r2 is not None else "—", fit["points"]])
        else:
            rows.append([c["name"], "—", "needs 2 sizes", "—", "—", sum(len(p["runs"]) for p in c["points"])])
    if hestness:
        rows.append(["Hestness et al. 2017, ImageNet top-1", _num(hestness.get("top1_error_exponent")), "—", "—",
                     "—", "—"])
        rows.append(["Hestness et al. 2017, ImageNet top-5", _num(hestness.get("top5_error_exponent")), "—", "—",
                     "—", "—"])
    return table(rows, ["curve", "exponent b", "95 % CI of b", "a", "R²", "runs fitted"])


def render_curve_report(doc: Mapping[str, Any], *, name: str = "") -> str:
    """The page of a parsed curve.json as an HTML string."""
    items = curves(doc)
    fits = [c.get("fit") for c in items if c.get("fit")]
    hestness = fits[0].get("hestness_2017_image_classification") if fits else None
    energy = any(isinstance(p.get("energy_j_mean"), int | float) for c in items for p in c["points"])
    title = f"lamina curve: {doc.get('dataset') or doc.get('data', '?')}"
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    done = f"{doc.get('runs_done', '?')} of {doc.get('runs_total', '?')} runs"
    sections = []
    intro = para(f"{len(items)} curve(s) on {doc.get('dataset', '?')} ({doc.get('classes', '?')} classes, "
                 f"{doc.get('train_examples', 0):,} training and {doc.get('test_examples', 0):,} test examples): "
                 f"fractions {', '.join(f'{f:g}' for f in doc.get('fractions', []))} of the training split, "
                 f"seeds {', '.join(str(s) for s in doc.get('seeds', []))}; {done}.")
    if not doc.get("complete", True):
        intro += note("This curve is partial: run the same `lamina curve` command with the same --out to finish it.")
    if any(c["points"] for c in items):
        ref = hestness.get("top1_error_exponent") if hestness else None
        fig = image(curve_figure(items, reference=ref), "test error against training examples, log-log",
                    "Mean ± std over seeds per point (faint dots: single runs); lines: least-squares power laws "
                    "error = a·n^b on all runs; legend: b with its 95 % confidence interval.", wide=True)
        sections.append(("curve", "Curve", intro + figures_block(fig)))
        sections.append(("points", "Points", _points_table(items, energy)))
    else:
        sections.append(("curve", "Curve", intro + note("No run has finished yet.")))
    comparison = para("The exponent b is the learning curve's steepness (β_g in Hestness et al. 2017). They fit "
                      "ImageNet with ResNets whose size and hyperparameters were tuned per training-set size; "
                      "here one model and recipe serve every size (epochs grow as f^-0.5), and the fit includes "
                      "the small-data and near-irreducible-error ends, which flatten a curve.")
    if hestness:
        comparison += note(str(hestness.get("note", "")))
    sections.append(("fit", "Power-law fit and Hestness et al. 2017", _fit_table(items, hestness) + comparison))
    rules = doc.get("rules") or {}
    settings = [["data", doc.get("data", "?")], ["recipe", doc.get("recipe") or "—"],
                ["overrides", " ".join(doc.get("overrides") or []) or "—"],
                ["epoch scale cap", doc.get("epoch_scale", "—")],
                *[[k, v] for k, v in rules.items()],
                ["total run time", duration(doc.get("seconds"))],
                ["lamina / torch", f"{doc.get('lamina', '?')} / {doc.get('torch', '?')}"],
                ["device", doc.get("device") or "—"]]
    if isinstance(doc.get("energy_j"), int | float):
        settings.append(["total energy", _joules(doc["energy_j"])])
    sections.append(("settings", "Settings", table(settings, kv=True)))
    return page(title, f"{name} · page written {when}", [Section(i, t, b) for i, t, b in sections],
                f"Written by lamina {doc.get('lamina', '?')} from curve.json only; rebuild it with "
                "lamina.reporting.curve.write_curve_report(folder).")


def write_curve_report(folder: str | Path) -> Path:
    """Write ``folder/curve.html`` from ``folder/curve.json`` and return its path.

    Args:
        folder: the ``--out`` folder of ``lamina curve``.
    """
    folder = Path(folder)
    doc = read_json(folder / "curve.json", "curve file")
    if not isinstance(doc, dict) or doc.get("kind") != "lamina-curve":
        raise LaminaError(f"{folder / 'curve.json'} is not a lamina curve: pass the --out folder of lamina curve")
    try:
        page = render_curve_report(doc, name=folder.resolve().name)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise LaminaError(f"{folder / 'curve.json'} could not be drawn ({type(e).__name__}: {e}); "
                          "is it from another lamina version? run lamina curve again") from None
    path = folder / "curve.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
