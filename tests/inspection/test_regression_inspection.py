"""A regression run is inspected too: its predictions against the truth, attributions of the
predicted value, and the report's Predictions section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lamina
from lamina.inspection.run import inspect_run


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(0)
    rows = ["a,b,colour,price"]
    for _ in range(150):
        a, b, colour = rng.uniform(0, 10), rng.uniform(-1, 1), rng.choice(["red", "blue"])
        rows.append(f"{a:.4f},{b:.4f},{colour},{100 + 7 * a - 3 * b + (20 if colour == 'red' else 0):.4f}")
    (root / "t.csv").write_text("\n".join(rows) + "\n")
    run = lamina.train(str(root / "t.csv"), epochs=10, out=str(root / "run"), quiet=True)
    assert run.summary["task"] == "regress"
    return run.dir


def test_predictions_json_holds_what_predict_gives_on_the_test_split(regression_run: Path) -> None:
    out = inspect_run(regression_run)
    pred = json.loads((out / "predictions.json").read_text())
    summary = json.loads((regression_run / "summary.json").read_text())
    t, p = np.array(pred["true"]), np.array(pred["predicted"])
    assert pred["target"] == "price" and len(t) == summary["test_examples"]
    assert np.sqrt(np.mean((p - t) ** 2)) == pytest.approx(summary["test_rmse"], rel=1e-3)
    skipped = json.loads((out / "inspection.json").read_text())["skipped"]
    assert "probes" in skipped  # linear probes are classifiers: said, not silently missing
    attr = json.loads((out / "attributions.json").read_text())
    assert attr["target"] == "predicted value" and "saliency" in attr["methods"]


def test_the_report_has_a_predictions_section(regression_run: Path) -> None:
    html = lamina.report(regression_run).read_text()
    assert 'id="predictions"' in html and "RMSE" in html and "data:image/png;base64," in html
