"""The report's energy section: from energy.jsonl and summary.json; labelled when estimated; absent otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lamina.reporting import SECTIONS, RunFolder, write_report
from lamina.reporting.energy import energy, grams, section_energy


def make_run(root: Path, *, method: str = "estimate", energy_j: float | None = 7200.0) -> Path:
    run = root / "run"
    run.mkdir()
    summary = {"task": "classify", "test_accuracy": 0.9, "train_seconds": 100.0, "steps": 40, "dataset": "toy",
               "model": "mlp", "lamina": "test"}
    if energy_j is not None:
        summary |= {"energy_j": energy_j, "energy_method": method, "energy_device": "cpu",
                    "energy_estimated": method == "estimate", "energy_note": f"{method} note", "co2e_g": 0.95,
                    "grid_intensity_g_per_kwh": 475.0, "grid_source": "world average"}
        lines = [{"kind": "epoch", "epoch": e, "step": 20 * e, "joules": 3000.0, "total_joules": 3000.0 * e,
                  "seconds": 50.0, "watts": 60.0, "method": method, "device": "cpu",
                  "estimated": method == "estimate", "resets": 0} for e in (1, 2)]
        (run / "energy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    else:
        summary["energy_method"] = "off"
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "toy"}, "model": {"name": "mlp"}}))
    return run


def test_estimated_run_is_labelled_everywhere(tmp_path: Path) -> None:
    sec = section_energy(RunFolder(make_run(tmp_path)))
    assert sec is not None and sec.id == "energy"
    body = sec.body
    assert "energy (estimated)" in body and "CO2e (estimated)" in body and "Estimated:" in body
    assert "2 Wh (7,200 J)" in body and "0.95 g" in body  # 7,200 J, 0.95 g
    assert "per point of test accuracy (estimated)" in body and "0.0222 Wh (80 J)" in body  # 7200 / 90 points
    assert "mean power over training (estimated)" in body and "72 W" in body
    assert body.count("<tr>") == 3 and "0.8333" in body and "1.667" in body  # header + 2 epochs, Wh per epoch


def test_measured_run_says_measured(tmp_path: Path) -> None:
    body = section_energy(RunFolder(make_run(tmp_path, method="nvml"))).body
    assert "estimated" not in body.lower() and "NVML energy counter" in body


def test_absent_without_energy(tmp_path: Path) -> None:
    assert section_energy(RunFolder(make_run(tmp_path, energy_j=None))) is None


def test_in_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lamina.reporting.html.SECTIONS", [*[s for s in SECTIONS if s is not section_energy],
                                                           section_energy])
    page = write_report(make_run(tmp_path)).read_text(encoding="utf-8")
    assert "Energy and CO2e</h2>" in page and "could not be drawn" not in page


def test_units() -> None:
    assert energy(5400.0) == "1.5 Wh (5,400 J)" and energy(7.2e6) == "2 kWh (7,200,000 J)"
    assert grams(12.345) == "12.3 g" and grams(2500.0) == "2.5 kg"
