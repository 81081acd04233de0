"""The curve page from a hand-written curve.json: variants, energy, an error of 0, a curve not yet fitted."""

from __future__ import annotations

import json
import struct

import pytest

from lamina.errors import LaminaError
from lamina.reporting.curve import curve_figure, curves, render_curve_report, write_curve_report
from lamina.studies import HESTNESS_2017_IMAGE_CLASSIFICATION, fit_power_law


def _point(fraction, examples, accs, energy=None):
    runs = [{"seed": s, "folder": f"v/f{fraction:g}-s{s}", "test_accuracy": a, "test_examples": 1000,
             "seconds": 2.0, "train_seconds": 1.5, "energy_j": energy, "status": "trained"} for s, a in enumerate(accs)]
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
    return {"fraction": fraction, "examples": examples, "epochs": 3, "batch_size": 16, "lr": 0.01,
            "seeds": list(range(len(accs))), "accuracies": accs, "accuracy_mean": mean, "accuracy_std": std,
            "error_mean": 1 - mean, "error_std": std, "seconds_mean": 2.0, "energy_j_mean": energy, "runs": runs}


def _doc():
    a = [_point(0.1, 100, [0.80, 0.82], energy=12.5), _point(1.0, 1000, [1.0, 1.0], energy=150.0)]
    b = [_point(0.1, 100, [0.7])]  # one size so far: no fit
    n = [p["examples"] for p in a for _ in p["runs"]]
    err = [max(1 - r["test_accuracy"], 0.5 / 1000) for p in a for r in p["runs"]]
    fit = {**fit_power_law(n, err).to_dict(), "hestness_2017_image_classification": HESTNESS_2017_IMAGE_CLASSIFICATION}
    variants = [{"name": "data.translate=0", "overrides": ["data.translate=0"], "points": a, "fit": fit},
                {"name": "data.translate=2", "overrides": ["data.translate=2"], "points": b, "fit": None}]
    return {"kind": "lamina-curve", "format": 1, "data": "blobs.npz", "dataset": "blobs", "classes": 3,
            "train_examples": 1000, "test_examples": 1000, "fractions": [0.1, 1.0], "seeds": [0, 1],
            "epoch_scale": 10.0, "recipe": "fast", "overrides": [], "complete": False, "runs_done": 5,
            "runs_total": 8, "points": a, "fit": fit, "variants": variants, "seconds": 10.0, "energy_j": 325.0,
            "rules": {"epochs": "ceil(...)"}, "lamina": "0.1.0", "torch": "2.x", "device": "cpu"}


def test_page_shows_every_variant_energy_and_the_comparison(tmp_path):
    doc = _doc()
    (tmp_path / "curve.json").write_text(json.dumps(doc))
    page = write_curve_report(tmp_path).read_text()
    assert page.count("<tr><td>data.translate=0</td>") == 3  # two points + its fit row
    assert "data.translate=2" in page and "needs 2 sizes" in page
    assert "12.5 J" in page and "150 J" in page and "325 J" in page
    assert "This curve is partial" in page
    assert f"{doc['fit']['exponent']:.3f}" in page and "ImageNet top-5" in page and "-0.488" in page
    assert "100.00\u00a0% ± 0.00\u00a0%" in page  # the accuracy of 1.0 is shown, though its error is clipped


def test_figure_is_a_png_of_the_usual_width():
    png = curve_figure(curves(_doc()), reference=-0.309)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", png[16:20])[0] == 500


def test_a_curve_without_variants_is_one_base_curve():
    doc = _doc()
    del doc["variants"]
    assert [c["name"] for c in curves(doc)] == ["base"]
    assert "<td>base</td>" in render_curve_report(doc)


def test_a_curve_with_no_finished_run_renders():
    doc = {**_doc(), "points": [], "fit": None, "runs_done": 0}
    del doc["variants"]
    assert "No run has finished yet" in render_curve_report(doc)


def test_missing_or_foreign_curve_json_is_a_one_line_error(tmp_path):
    with pytest.raises(LaminaError, match="does not exist"):
        write_curve_report(tmp_path)
    (tmp_path / "curve.json").write_text(json.dumps({"points": []}))
    with pytest.raises(LaminaError, match="is not a lamina curve"):
        write_curve_report(tmp_path)
    (tmp_path / "curve.json").write_text(json.dumps({"kind": "lamina-curve", "points": [{"examples": 1}]}))
    with pytest.raises(LaminaError, match="could not be drawn"):
        write_curve_report(tmp_path)
