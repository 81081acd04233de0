"""The regression section of the report: predicted against true values of the test split, and the
residuals, from ``inspection/predictions.json``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.reporting.figures import _figure, _png, _style
from lamina.reporting.html import RunFolder, Section, figures_block, image, para, register_section


def predicted_vs_true(true: Sequence[float], predicted: Sequence[float], *, target: str = "target") -> bytes:
    """Left: each test example's prediction against its true value, and the line y = x; right: the
    histogram of the residuals (predicted - true)."""
    t, p = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    fig = _figure(2.6)
    left, right = fig.subplots(1, 2)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    left.scatter(t, p, s=8, alpha=0.6, color="#2e6da4", linewidths=0)
    left.plot([lo, hi], [lo, hi], color="#c0392b", linewidth=1)
    left.set_xlabel(f"true {target}")
    left.set_ylabel("predicted")
    right.hist(p - t, bins=30, color="#2e6da4")
    right.set_xlabel("residual (predicted - true)")
    right.set_ylabel("test examples")
    for ax in (left, right):
        _style(ax)
    return _png(fig)


@register_section
def section_predictions(run: RunFolder) -> Section | None:
    pred = run.json("inspection/predictions.json")
    if not isinstance(pred, dict) or not pred.get("true"):
        return None
    t, p = np.asarray(pred["true"], dtype=float), np.asarray(pred["predicted"], dtype=float)
    err = p - t
    rmse, mae = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
    r2 = 1.0 - float(np.sum(err**2)) / max(float(np.sum((t - t.mean()) ** 2)), 1e-12)
    target = str(pred.get("target", "target"))
    fig = image(predicted_vs_true(t, p, target=target), "predicted against true values",
                "Left: one point per test example; on the red line the prediction is exact. Right: the residuals.")
    intro = para(f"{len(t):,} test examples: RMSE {rmse:.4g}, MAE {mae:.4g}, R² {r2:.4f} "
                 f"(in the units of {target}); the largest residual is {float(np.abs(err).max()):.4g}.")
    return Section("predictions", "Predictions", intro + figures_block(fig))
