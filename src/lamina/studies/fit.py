"""A power law of test error against training examples, ``error ≈ a · n^b``, fitted by ordinary
least squares on ``log(error)`` against ``log(n)``, with the slope's 95 % confidence interval.

The exponent ``b`` is what Hestness et al. (2017) call the learning curve's steepness β_g, so a
curve's fit can be set beside theirs (:data:`HESTNESS_2017_IMAGE_CLASSIFICATION`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lamina.errors import LaminaError

# Hestness et al. 2017, "Deep Learning Scaling is Predictable, Empirically" (arXiv:1712.00409),
# Section 4.2 (image classification): ResNets on subsets of ImageNet, each size with its own
# hyperparameter-reduced model. The numbers are quoted from the paper, not recomputed here.
HESTNESS_2017_IMAGE_CLASSIFICATION: dict[str, Any] = {
    "paper": "Hestness et al. 2017, Deep Learning Scaling is Predictable, Empirically (arXiv:1712.00409)",
    "where": "Section 4.2, image classification: ResNets on ImageNet subsets, model size tuned per subset",
    "top1_error_exponent": -0.309,
    "top5_error_exponent": -0.488,
    "form": "error(m) = alpha * m**beta_g (+ an irreducible error, beyond the power-law region)",
    "note": ("quoted from the paper's Section 4.2; across their domains beta_g lies between about -0.07 "
             "and -0.35, shallower than the -0.5 or -1 most theory predicts"),
}


@dataclass(frozen=True)
class PowerLawFit:
    """``error ≈ a · n^b`` fitted on ``log(error) = log(a) + b · log(n)``.

    Args:
        exponent: the slope ``b`` (negative when more data lowers the error).
        exponent_se: the slope's standard error (None with fewer than 3 runs).
        exponent_ci95: ``(low, high)``, a 95 % interval from the t distribution with
            ``points - 2`` degrees of freedom (None with fewer than 3 runs).
        a: the prefactor (the error the law predicts at one example).
        r2: the fraction of the variance of ``log(error)`` the line explains (None when all are equal).
        points: the number of (size, seed) runs fitted.
        sizes: the number of distinct training-set sizes among them.
    """

    exponent: float
    exponent_se: float | None
    exponent_ci95: tuple[float, float] | None
    a: float
    r2: float | None
    points: int
    sizes: int

    def predict(self, n: float) -> float:
        """The error the law predicts for ``n`` training examples."""
        return self.a * n**self.exponent

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exponent_ci95"] = list(self.exponent_ci95) if self.exponent_ci95 else None
        return {"model": "error = a * examples**exponent", **d, "dof": self.points - 2}


def fit_power_law(examples: Sequence[float], errors: Sequence[float]) -> PowerLawFit:
    """Least squares of ``log(error)`` on ``log(examples)``: the exponent, its 95 % CI, ``a`` and R².

    Every (size, seed) run is one point, so the spread between seeds enters the interval. The
    interval treats the residuals as independent; runs of one seed share nested subsets, so it
    is, if anything, a little narrow.

    Args:
        examples: training-set sizes, positive.
        errors: test errors, positive (clip an error of 0 to a floor first, e.g. half an example).

    >>> fit = fit_power_law([100, 1000, 10000], [0.4, 0.2, 0.1])
    >>> round(fit.exponent, 4), round(fit.predict(100), 4)
    (-0.301, 0.4)
    """
    if len(examples) != len(errors):
        raise LaminaError(f"{len(examples)} sizes but {len(errors)} errors: give one error per size")
    if any(not (n > 0 and math.isfinite(n)) for n in examples):
        raise LaminaError("power-law fit: every training-set size must be a positive number")
    if any(not (e > 0 and math.isfinite(e)) for e in errors):
        raise LaminaError("power-law fit: every error must be positive (clip an error of 0 to a floor first)")
    sizes = len(set(examples))
    if sizes < 2:
        raise LaminaError(f"power-law fit needs at least 2 distinct training-set sizes, got {sizes}")
    x = [math.log(n) for n in examples]
    y = [math.log(e) for e in errors]
    m = len(x)
    mx, my = sum(x) / m, sum(y) / m
    sxx = sum((u - mx) ** 2 for u in x)
    sxy = sum((u - mx) * (v - my) for u, v in zip(x, y, strict=True))
    syy = sum((v - my) ** 2 for v in y)
    b = sxy / sxx
    intercept = my - b * mx
    ssr = sum((v - intercept - b * u) ** 2 for u, v in zip(x, y, strict=True))
    r2 = 1.0 - ssr / syy if syy > 0 else None
    se: float | None = None
    ci: tuple[float, float] | None = None
    if m > 2:
        from scipy import stats

        se = math.sqrt(ssr / (m - 2) / sxx)
        t = float(stats.t.ppf(0.975, m - 2))
        ci = (b - t * se, b + t * se)
    return PowerLawFit(exponent=b, exponent_se=se, exponent_ci95=ci, a=math.exp(intercept), r2=r2, points=m,
                       sizes=sizes)
