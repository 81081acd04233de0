"""The robustness report section on synthetic run folders: table, figures, checks, examples, curves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from lamina.errors import LaminaError
from lamina.reporting.html import RunFolder, render_report
from lamina.reporting.robustness import section_robustness


def _rec(method, eps, acc, role, steps=20):
    return {"method": method, "norm": "linf", "eps": eps, "steps": steps, "restarts": 1, "step_size": 0.125,
            "robust_accuracy": acc, "seconds": 0.5, "examples": 100, "role": role}


def _run(tmp_path: Path, *, failed: bool = False, examples: bool = True, metrics: list[dict] | None = None,
         robustness: bool = True) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"task": "classify", "test_accuracy": 0.9, "lamina": "0"}))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "toy"}, "model": {"name": "mlp"}}))
    classes = ["cat <a>", "dog", "emu"]
    (run / "model.json").write_text(json.dumps({"task": "classify", "classes": classes, "modality": "image"}))
    if robustness:
        results = [_rec("pgd", 0.05, 0.5, "main"), _rec("fgsm", 0.05, 0.6, "fgsm", steps=1),
                   _rec("pgd", 0.1, 0.2, "main"), _rec("fgsm", 0.1, 0.4, "fgsm", steps=1),
                   _rec("pgd", 1.0, 0.0, "large-eps")]
        checks = {"monotone_in_eps": {"passed": True, "detail": "fine"},
                  "large_eps_reaches_chance": {"passed": not failed, "detail": "robust accuracy 0.9 <at eps 1>"}}
        (run / "robustness.json").write_text(json.dumps({
            "clean_accuracy": 0.9, "split": "test", "examples": 100, "norm": "linf", "tta_flip": False,
            "bounds": [0.0, 1.0], "results": results, "checks": checks}))
    if examples:
        rng = np.random.default_rng(0)
        orig = rng.random((4, 1, 6, 6)).astype(np.float32)
        (run / "robustness").mkdir()
        np.savez(run / "robustness" / "examples.npz", original=orig,
                 adversarial=np.stack([orig + 0.05, orig + 0.1]).clip(0, 1), eps=np.array([0.05, 0.1]),
                 label=np.array([0, 1, 2, 0]), pred_before=np.array([0, 1, 2, 1]),
                 pred_after=np.array([[0, 2, 2, 1], [1, 2, 0, 1]]), classes=np.array(classes))
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    return run


def _images(html: str) -> int:
    return len(re.findall(r'<img src="data:image/png;base64,', html))


def test_the_section_shows_the_table_the_figures_and_the_checks(tmp_path):
    sec = section_robustness(RunFolder(_run(tmp_path)))
    assert sec is not None and sec.id == "robustness"
    assert "PGD-20" in sec.body and "FGSM" in sec.body and "50.0\u00a0%" in sec.body and "40.0\u00a0%" in sec.body
    assert _images(sec.body) == 2  # the curve and the examples grid
    assert "✓ passed" in sec.body and "FAILED" not in sec.body and "unreliable" not in sec.body
    assert "&lt;at eps 1&gt;" in sec.body  # details are escaped


def test_a_failed_check_is_red_with_a_warning(tmp_path):
    sec = section_robustness(RunFolder(_run(tmp_path, failed=True)))
    assert re.search(r'<li style="color:#cf222e"><b>✗ FAILED</b> large eps reaches chance', sec.body)
    assert "may be unreliable" in sec.body and "gradient-masking" in sec.body.lower()


def test_no_robustness_data_no_section_and_adversarial_training_curves(tmp_path):
    plain = _run(tmp_path / "a", robustness=False, examples=False,
                 metrics=[{"kind": "epoch", "epoch": 1, "val_accuracy": 0.8}])
    assert section_robustness(RunFolder(plain)) is None
    epochs = [{"kind": "epoch", "epoch": e, "val_accuracy": 0.5 + 0.1 * e, "val_robust_accuracy": 0.1 * e,
               "train_robust_accuracy": 0.1 * e} for e in (1, 2, 3)]
    trained = _run(tmp_path / "b", robustness=False, examples=False, metrics=epochs)
    sec = section_robustness(RunFolder(trained))
    assert sec is not None and _images(sec.body) == 1 and "30.0\u00a0%" in sec.body  # the last robust accuracy


def test_examples_are_never_unpickled_and_a_corrupt_file_is_a_note(tmp_path):
    run = _run(tmp_path)
    np.savez(run / "robustness" / "examples.npz", original=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(LaminaError, match="unreadable or corrupt"):
        section_robustness(RunFolder(run))
    (run / "robustness" / "examples.npz").write_bytes(b"PK\x03\x04 not a zip")
    html = render_report(RunFolder(run))
    assert "could not be drawn" in html and "examples.npz is unreadable" in html


def test_a_language_model_run_has_no_robustness_section(tmp_path):
    run = _run(tmp_path)
    (run / "summary.json").write_text(json.dumps({"task": "language-model"}))
    assert section_robustness(RunFolder(run)) is None
