"""The report's robustness section: ``robustness.json`` (``lamina attack``) and, for adversarially
trained runs, the per-epoch ``val_robust_accuracy`` of ``metrics.jsonl``.

It shows robust accuracy against ε (table and figure, FGSM and PGD, chance dashed), the
gradient-masking checks (a failed one in red, with a warning that the numbers may overstate
robustness), and adversarial examples beside their originals (``robustness/examples.npz``, read
with ``allow_pickle=False``). The section is absent when the run has neither file's data.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lamina.errors import LaminaError
from lamina.reporting.figures import _figure, _png, _show, _style
from lamina.reporting.html import (
    RunFolder,
    Section,
    class_names,
    esc,
    figures_block,
    image,
    note,
    para,
    pct,
    register_section,
    run_task,
    table,
)

FAILED = "#cf222e"
PASSED = "#1a7f37"
MAX_EXAMPLES = 6  # rows of the examples grid
NORM_NAMES = {"linf": "L∞", "l2": "L2"}


# -- figures -----------------------------------------------------------------------------------

def robust_accuracy_curve(results: Sequence[Mapping[str, Any]], *, clean: float | None, chance: float | None,
                          norm: str) -> bytes:
    """Robust accuracy (%) against ε: one line per attack (FGSM, PGD-k), the clean accuracy at
    ε = 0, chance level dashed."""
    fig = _figure(3.6)
    ax = fig.subplots()
    series: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r.get("role") in ("main", "fgsm", "pgd"):
            name = f"PGD-{r['steps']}" + (f" ×{r['restarts']}" if r.get("restarts", 1) > 1 else "") \
                if r["method"] == "pgd" else r["method"].upper()
            series.setdefault(name, []).append((float(r["eps"]), 100.0 * float(r["robust_accuracy"])))
    for i, (name, pts) in enumerate(sorted(series.items())):
        pts = sorted(pts)
        if clean is not None:
            pts = [(0.0, 100.0 * clean), *pts]
        ax.plot(*zip(*pts, strict=True), "o-", lw=2, ms=5, color=f"C{i}", label=name)
    if chance is not None:
        ax.axhline(100.0 * chance, color="0.45", ls="--", lw=1.5, label=f"chance {100.0 * chance:.0f}\u00a0%")
    ax.set_xlabel(f"ε ({NORM_NAMES.get(norm, norm)}, raw input units)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title("Robust accuracy against the attack's radius")
    _style(ax)
    ax.legend(loc="upper right", frameon=False)
    return _png(fig)


def robust_training_curve(epochs: Sequence[Mapping[str, Any]]) -> bytes:
    """Clean and robust validation accuracy (%) per epoch of an adversarially trained run."""
    fig = _figure(3.4)
    ax = fig.subplots()
    for key, name, color in (("val_accuracy", "clean", "C0"), ("val_robust_accuracy", "robust (PGD)", "C3"),
                             ("train_robust_accuracy", "train, on adversarial batches", "0.6")):
        pts = [(r.get("epoch", i + 1), 100.0 * r[key]) for i, r in enumerate(epochs)
               if isinstance(r.get(key), int | float)]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", lw=2, ms=5, color=color, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Validation accuracy during adversarial training")
    _style(ax)
    ax.legend(loc="best", frameon=False)
    return _png(fig)


def adversarial_grid(z: Mapping[str, np.ndarray], classes: Sequence[str], *, rows: int = MAX_EXAMPLES) -> bytes:
    """Each row an original and its adversarial versions at each ε, titled with the true class and
    the prediction (red where the prediction is wrong)."""
    original, adversarial, eps = z["original"], z["adversarial"], z["eps"]
    label, before, after = z["label"], z["pred_before"], z["pred_after"]
    n, cols = min(rows, len(original)), 1 + len(eps)
    fig = _figure(1.35 * n + 0.4, width=min(1.25 * cols + 0.4, 9.0))
    axes = np.atleast_2d(fig.subplots(n, cols, squeeze=False))

    def name(i: Any) -> str:
        i = int(i)
        return str(classes[i]) if 0 <= i < len(classes) else str(i)

    for r in range(n):
        cells = [(original[r], f"true {name(label[r])}\npred {name(before[r])}", before[r] == label[r])]
        cells += [(adversarial[e, r], f"ε {eps[e]:g}\npred {name(after[e, r])}", after[e, r] == label[r])
                  for e in range(len(eps))]
        for c, (arr, title, right) in enumerate(cells):
            ax = axes[r, c]
            _show(ax, arr)
            ax.set_title(title, fontsize=8, color="black" if right else FAILED)
    fig.suptitle("Originals (left) and their adversarial versions", fontsize=10)
    return _png(fig)


# -- reading the run folder -----------------------------------------------------------------------

def read_examples(run: RunFolder) -> dict[str, np.ndarray] | None:
    """``robustness/examples.npz`` as plain arrays (never unpickled), or None when absent."""
    path = run.path / "robustness" / "examples.npz"
    if not path.is_file():
        return None
    keys = ("original", "adversarial", "eps", "label", "pred_before", "pred_after")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: np.load leaks its own on a bad zip
            out = {k: np.asarray(z[k]) for k in (*keys, "classes") if k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise LaminaError(f"{path} is unreadable or corrupt ({type(e).__name__})",
                          hint="run lamina attack on the run folder again") from None
    missing = [k for k in keys if k not in out]
    if missing:
        raise LaminaError(f"{path} lacks {', '.join(missing)}", hint="run lamina attack on the run folder again")
    return out


def _results_table(doc: Mapping[str, Any]) -> str:
    by_eps: dict[float, dict[str, Mapping[str, Any]]] = {}
    for r in doc["results"]:
        if r.get("role") in ("main", "fgsm", "pgd"):
            by_eps.setdefault(float(r["eps"]), {})[r["method"]] = r
    pgd_steps = next((r["steps"] for d in by_eps.values() for m, r in d.items() if m == "pgd"), "?")
    rows = []
    for e in sorted(by_eps):
        d = by_eps[e]
        seconds = sum(float(r.get("seconds", 0.0)) for r in d.values())
        rows.append((f"{e:g}", pct(d["pgd"]["robust_accuracy"]) if "pgd" in d else "—",
                     pct(d["fgsm"]["robust_accuracy"]) if "fgsm" in d else "—", f"{seconds:.1f} s"))
    return table(rows, ["ε", f"PGD-{pgd_steps}", "FGSM", "attack time"])


def _checks(checks: Mapping[str, Mapping[str, Any]]) -> tuple[str, bool]:
    """The checks as a list (a failed one in red) and whether any failed."""
    if not checks:
        return para("No gradient-masking checks were recorded."), False
    items, failed = [], False
    for name, c in checks.items():
        what, detail = esc(name.replace("_", " ")), esc(c.get("detail", ""))
        if c.get("passed") is True:
            items.append(f'<li><b style="color:{PASSED}">✓ passed</b> {what}: {detail}</li>')
        else:
            failed = True
            items.append(f'<li style="color:{FAILED}"><b>✗ FAILED</b> {what}: {detail}</li>')
    return "<ul>" + "".join(items) + "</ul>", failed


def _attack_body(run: RunFolder, doc: Mapping[str, Any]) -> str:
    if not isinstance(doc.get("results"), list) or not doc["results"]:
        raise LaminaError(f"{run.path / 'robustness.json'} has no results", hint="run lamina attack again")
    classes = class_names(run) or [str(c) for c in doc.get("classes") or []]
    k = len(classes) or None
    chance = 1.0 / k if k else None
    norm = str(doc.get("norm", "linf"))
    clean = doc.get("clean_accuracy") if isinstance(doc.get("clean_accuracy"), int | float) else None
    lo, hi = (doc.get("bounds") or [0.0, 1.0])[:2]
    flips = " with test-time flips, as the run evaluates" if doc.get("tta_flip") else ""
    body = para(f"Accuracy of the saved model{flips} on the first {doc.get('examples', '?')} examples of the "
                f"{doc.get('split', 'test')} split when each input may be changed by at most ε under "
                f"{NORM_NAMES.get(norm, norm)}, in raw input units (inputs in [{lo:g}, {hi:g}]), by attacks that "
                f"follow the model's gradient. Clean accuracy {pct(clean)}; chance {pct(chance)}.")
    body += _results_table(doc)
    checks, failed = _checks(doc.get("checks") or {})
    if failed:
        body += note("A gradient-masking check failed: the attacks may not reach the model's worst case, so these "
                     "robust accuracies may be unreliable (too high). Treat them as upper bounds.")
    figs = [image(robust_accuracy_curve(doc["results"], clean=clean, chance=chance, norm=norm),
                  "robust accuracy against epsilon",
                  "Robust accuracy of each attack against ε (ε = 0: clean accuracy); dashed: chance (1/K).")]
    z = read_examples(run)
    if z is not None:
        names = [str(c) for c in z["classes"]] if "classes" in z else classes
        figs.append(image(adversarial_grid(z, names), "adversarial examples beside their originals",
                          "Each row: an original and its adversarial versions at each ε, with the true class "
                          "and the predicted one (red: wrong)."))
    body += figures_block(*figs)
    body += "<h3>Gradient-masking checks</h3>" + checks
    return body


@register_section
def section_robustness(run: RunFolder) -> Section | None:
    """Robust accuracy, masking checks and adversarial examples; None without robustness data."""
    if run_task(run) != "classify":
        return None
    doc = run.json("robustness.json")
    records = run.jsonl("metrics.jsonl") or []
    epochs = [r for r in records if r.get("kind") == "epoch" and isinstance(r.get("val_robust_accuracy"), int | float)]
    if doc is None and not epochs:
        return None
    body = ""
    if doc is not None:
        if not isinstance(doc, dict):
            raise LaminaError(f"{run.path / 'robustness.json'} is not a mapping", hint="run lamina attack again")
        body += _attack_body(run, doc)
    if epochs:
        last = epochs[-1]
        body += para(f"Adversarially trained: after epoch {last.get('epoch', len(epochs))} validation accuracy "
                     f"{pct(last.get('val_accuracy'))} clean and {pct(last['val_robust_accuracy'])} under the "
                     "per-epoch PGD of adversarial.eval_steps steps.")
        body += figures_block(image(robust_training_curve(epochs), "clean and robust validation accuracy by epoch",
                                    "Clean and robust validation accuracy per epoch; grey: the training batches' "
                                    "accuracy, measured on their adversarial versions."))
    return Section("robustness", "Adversarial robustness", body)
