"""Gradient-masking checks: signs that an attack's robust accuracy overstates the model's robustness.

A model that hides its gradients (rounding its input, a non-differentiable step, saturated
outputs) looks robust to gradient attacks without being robust (Athalye et al. 2018; Carlini et
al. 2019, "On evaluating adversarial robustness"). Four symptoms are checked on the attack
results of one run, each returned as ``{"passed": bool, "detail": "..."}``:

- ``monotone_in_eps``: robust accuracy does not rise as ε grows (a larger ball holds every
  example of a smaller one);
- ``large_eps_reaches_chance``: at ε spanning the whole input range (PGD from the clean input,
  without a random start, which would reach chance by itself) accuracy falls to chance (1/K)
  or below;
- ``pgd_not_weaker_than_fgsm``: PGD, which starts where FGSM's step goes and keeps climbing, is
  never weaker than FGSM at the same ε;
- ``more_effort_not_weaker``: twice the steps, or more restarts, never raise robust accuracy.

**Noise.** Every comparison allows for sampling noise: two binomial standard errors of an
accuracy ``p`` measured on ``n`` examples, and at least one example:
``noise(p, n) = max(2 * sqrt(p * (1 - p) / n), 1 / n)``, with ``p`` the mean of the two
accuracies compared and ``n`` the smaller number of examples. (The attacks compared run on the
same examples, so their difference varies less than that: the checks err towards passing, and
a failure is a real symptom.)

A result record is a dict as ``robustness.json`` stores it: ``method``, ``norm``, ``eps``,
``steps``, ``restarts``, ``robust_accuracy``, ``examples`` and ``role`` (``main``: the attack
asked for; ``fgsm``/``pgd``: the other method at the same ε; ``large-eps``; ``more-steps``/
``more-restarts``, which also carry ``baseline_accuracy``: the base attack on the same examples).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

Check = dict[str, Any]  # {"passed": bool, "detail": str}
Record = dict[str, Any]


def noise(p: float, n: int) -> float:
    """Two binomial standard errors of an accuracy ``p`` on ``n`` examples, at least ``1 / n``.

    >>> round(noise(0.5, 100), 3)
    0.1
    >>> noise(0.0, 50)
    0.02
    """
    n = max(int(n), 1)
    p = min(max(float(p), 0.0), 1.0)
    return max(2.0 * math.sqrt(p * (1.0 - p) / n), 1.0 / n)


def _margin(a: Record, b: Record) -> float:
    return noise((a["robust_accuracy"] + b["robust_accuracy"]) / 2, min(a["examples"], b["examples"]))


def _label(r: Record) -> str:
    steps = f"-{r['steps']}" if r["method"] == "pgd" else ""
    return f"{r['method']}{steps} at eps {r['eps']:g}"


def check_monotone_in_eps(records: Sequence[Record]) -> Check | None:
    """Within each series of one attack (same method, norm, steps, restarts, role) robust accuracy
    does not rise from one ε to the next by more than noise; None without a series of 2 ε."""
    series: dict[tuple[Any, ...], list[Record]] = {}
    for r in records:
        if r.get("role") in ("main", "fgsm", "pgd"):
            series.setdefault((r["method"], r["norm"], r["steps"], r["restarts"], r["role"]), []).append(r)
    pairs = 0
    bad: list[str] = []
    for rs in series.values():
        rs = sorted(rs, key=lambda r: r["eps"])
        for a, b in itertools.pairwise(rs):
            pairs += 1
            if b["robust_accuracy"] > a["robust_accuracy"] + _margin(a, b):
                bad.append(f"{_label(b)}: {b['robust_accuracy']:.3f} > {a['robust_accuracy']:.3f} at eps {a['eps']:g}")
    if not pairs:
        return None
    if bad:
        return {"passed": False, "detail": "robust accuracy rises with eps: " + "; ".join(bad)}
    return {"passed": True, "detail": f"robust accuracy never rises with eps ({pairs} steps of eps compared)"}


def check_large_eps(records: Sequence[Record], num_classes: int) -> Check | None:
    """At an ε spanning the whole input range accuracy is at most chance (1/K) plus noise."""
    large = [r for r in records if r.get("role") == "large-eps"]
    if not large:
        return None
    r = large[0]
    chance = 1.0 / num_classes
    limit = chance + noise(chance, r["examples"])
    acc = r["robust_accuracy"]
    what = f"{_label(r)} (the whole input range): robust accuracy {acc:.3f}, chance {chance:.3f}"
    if acc > limit:
        return {"passed": False, "detail": f"{what}: the attack cannot reach chance even where any input is allowed"}
    return {"passed": True, "detail": f"{what} (at most {limit:.3f} allowed)"}


def check_pgd_vs_fgsm(records: Sequence[Record]) -> Check | None:
    """At each ε, PGD's robust accuracy is at most FGSM's plus noise (PGD is the stronger attack)."""
    by_eps: dict[tuple[str, float], dict[str, Record]] = {}
    for r in records:
        if r.get("role") in ("main", "fgsm", "pgd") and r["method"] in ("pgd", "fgsm"):
            by_eps.setdefault((r["norm"], r["eps"]), {}).setdefault(r["method"], r)
    pairs = [(d["pgd"], d["fgsm"]) for d in by_eps.values() if "pgd" in d and "fgsm" in d]
    if not pairs:
        return None
    bad = [f"eps {p['eps']:g}: pgd {p['robust_accuracy']:.3f} > fgsm {f['robust_accuracy']:.3f}"
           for p, f in pairs if p["robust_accuracy"] > f["robust_accuracy"] + _margin(p, f)]
    if bad:
        return {"passed": False, "detail": "PGD is weaker than FGSM: " + "; ".join(bad)}
    return {"passed": True, "detail": f"PGD at least as strong as FGSM at each of {len(pairs)} eps"}


def check_more_effort(records: Sequence[Record]) -> Check | None:
    """More steps or restarts do not raise robust accuracy above the base attack's (on the same
    examples, ``baseline_accuracy``) by more than noise."""
    more = [r for r in records if r.get("role") in ("more-steps", "more-restarts")]
    if not more:
        return None
    bad, seen = [], []
    for r in more:
        base = {**r, "robust_accuracy": r["baseline_accuracy"]}
        what = f"{r['role']} (pgd-{r['steps']} x{r['restarts']} at eps {r['eps']:g}): {r['robust_accuracy']:.3f} " \
               f"vs {r['baseline_accuracy']:.3f} on {r['examples']} examples"
        seen.append(what)
        if r["robust_accuracy"] > r["baseline_accuracy"] + _margin(r, base):
            bad.append(what)
    if bad:
        return {"passed": False, "detail": "a stronger attack finds fewer adversarial examples: " + "; ".join(bad)}
    return {"passed": True, "detail": "; ".join(seen)}


def masking_checks(records: Sequence[Record], *, num_classes: int) -> dict[str, Check]:
    """Every check the records allow (a check without the results it needs is left out).

    Args:
        records: attack results (see the module docstring).
        num_classes: K, for chance level 1/K.
    """
    found = {
        "monotone_in_eps": check_monotone_in_eps(records),
        "large_eps_reaches_chance": check_large_eps(records, num_classes),
        "pgd_not_weaker_than_fgsm": check_pgd_vs_fgsm(records),
        "more_effort_not_weaker": check_more_effort(records),
    }
    return {k: v for k, v in found.items() if v is not None}
