"""write_report on synthetic run folders: self-contained, every section, graceful without inspection."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from lamina.errors import LaminaError
from lamina.reporting import SECTIONS, RunFolder, Section, register_section, write_report

HEADINGS = ["Summary", "Learning curves", "Hierarchy", "Activations", "Gradient flow", "Attributions",
            "Confusion &amp; mistakes"]
INSPECTION = ["probes.json", "cka.json", "activations.json", "filters.json", "top_activations.json",
              "attributions.json", "confusion.json", "misclassified.json", "inspection.json"]
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_run(root: Path, *, inspection: bool = True, classes: int = 10, hw: int = 12) -> Path:
    """A run folder with every file lamina train and lamina inspect write, filled with synthetic values."""
    rng = np.random.default_rng(0)
    run = root / "run"
    run.mkdir(parents=True)
    names = [f"class <{i}>" for i in range(classes)]  # markup in names checks the escaping
    conf = (rng.integers(0, 3, (classes, classes)) + np.eye(classes, dtype=int) * 30).tolist()
    _write(run / "summary.json", {
        "test_accuracy": 0.8858, "test_loss": 0.6529, "confusion": conf, "train_seconds": 7.25, "epochs": 3,
        "steps": 126, "params": 94186, "model": "cnn", "dataset": "digits", "train_examples": 1368,
        "test_examples": 359, "device": "cpu (x86_64, 2 threads)", "precision": "bf16", "torch": "2.13.0+cpu",
        "seed": 0, "lamina": "0.1.0", "stop_reason": ""})
    (run / "config.yaml").write_text(yaml.safe_dump({
        "data": {"name": "digits", "batch_size": 32}, "model": {"name": "cnn"},
        "train": {"epochs": 3, "lr": 0.0125, "optimizer": "sgd", "schedule": "onecycle", "seed": 0}}))
    _write(run / "model.json", {"arch": {"name": "cnn", "width": 32, "depth": 1, "act": "relu", "norm": "batch"},
                                "classes": names})
    lines = []
    for e in range(1, 4):
        for s in range(10 * e - 9, 10 * e + 1, 3):
            lines.append({"kind": "step", "step": s, "epoch": e, "loss": 2.3 / s**0.3, "accuracy": 1 - 0.9 / s**0.3})
        lines.append({"kind": "epoch", "epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "train_accuracy": 0.3 * e,
                      "val_loss": 1.5 / e, "val_accuracy": 0.25 * e + 0.1, "lr": 0.01, "seconds": 2.0 * e})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "gradients.jsonl").write_text("".join(json.dumps({"step": s, "layers": [
        {"name": f"stage{k}.conv.weight", "grad_norm": 0.5 / (k * (1 + s)), "weight_norm": 3.0,
         "update_ratio": 1e-3 / k} for k in range(1, 6)]}) + "\n" for s in range(0, 30, 3)))
    if not inspection:
        return run
    ins = run / "inspection"
    img = lambda: rng.random((1, hw, hw)).round(3).tolist()  # noqa: E731
    _write(ins / "probes.json", [{"stage": st, "depth": d + 1, "accuracy": 0.6 + 0.1 * d} for d, st in enumerate(STAGES)])
    m = np.clip(1 - 0.25 * np.abs(np.subtract.outer(np.arange(4), np.arange(4))), 0, 1)
    _write(ins / "cka.json", {"stages": STAGES, "matrix": m.tolist(), "other_run": "runs/seed1",
                              "same_stage": [0.95, 0.9, 0.85, 0.8]})
    _write(ins / "activations.json", {st: {"mean": 0.3, "std": 0.5, "dead_fraction": 0.05 * d,
                                           "saturation": None} for d, st in enumerate(STAGES)})
    _write(ins / "filters.json", {"shape": [8, 1, 3, 3], "values": rng.normal(size=(8, 1, 3, 3)).tolist()})
    idx = list(range(20))
    _write(ins / "top_activations.json", {"stage": "stage2", "channels": {str(c): idx[c:c + 4] for c in range(3)},
                                          "images": {str(i): img() for i in idx}})
    maps = {k: rng.random((3, hw, hw)).tolist() for k in ("saliency", "integrated_gradients", "grad_cam")}
    _write(ins / "attributions.json", {"indices": [0, 1, 2], "labels": [1, 2, 3], "predicted": [1, 2, 5],
                                       "images": [img() for _ in range(3)], "methods": maps})
    _write(ins / "confusion.json", {"classes": names, "matrix": conf})
    _write(ins / "misclassified.json", [{"index": i, "true": 3, "predicted": 5, "confidence": 0.9 - 0.01 * i,
                                         "image": img()} for i in range(7)])
    _write(ins / "inspection.json", {"lamina": "0.1.0", "seconds": {"probes": 1.5, "cka": 0.5, "total": 2.5},
                                     "skipped": {"grad_cam": "no convolutional stage"},
                                     "max_examples": 2000, "peak_rss_mb": 612.0})
    return run


def embedded_images(page: str) -> list[Image.Image]:
    out = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        im.load()
        out.append(im)
    return out


def test_full_report_is_self_contained_and_has_every_section(tmp_path: Path) -> None:
    path = write_report(make_run(tmp_path))
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text(encoding="utf-8")
    positions = [page.index(f"{h}</h2>") if h != "Hierarchy" else page.index("<h2>Hierarchy") for h in HEADINGS]
    assert positions == sorted(positions), "sections are out of order"
    assert '<meta name="viewport"' in page and "<style>" in page
    for bad in ("http://", "https://", 'src="/', "<script", "//cdn", "@import", "url("):
        assert bad not in page
    assert "could not be drawn" not in page
    srcs = re.findall(r'src="([^"]{0,30})', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    images = embedded_images(page)
    assert len(images) == len(srcs) >= 9
    assert all(im.format == "PNG" and im.width > 100 for im in images)
    assert "taken for class &lt;" in page and "class <" not in page  # names are escaped
    assert "2.5 s, peak memory 612.0 MB" in page and "grad_cam: no convolutional stage" in page
    assert "88.58\u00a0%" in page and "94,186" in page and "60.0\u00a0%" in page and "90.0\u00a0%" in page  # summary, probes
    assert len(page) < 3_000_000


def test_without_inspection_those_sections_are_absent(tmp_path: Path) -> None:
    page = write_report(make_run(tmp_path, inspection=False)).read_text(encoding="utf-8")
    for h in ("Summary", "Learning curves", "Gradient flow", "Confusion &amp; mistakes"):
        assert f"{h}</h2>" in page
    for h in ("Hierarchy", "Activations", "Attributions"):
        assert f"<h2>{h}" not in page
    assert "No inspection yet" in page
    assert len(embedded_images(page)) == 3


def test_partial_inspection_and_missing_images(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    for name in ("cka.json", "filters.json", "attributions.json"):
        (run / "inspection" / name).unlink()
    for name in ("top_activations.json", "misclassified.json"):  # inspection that stored no pixels
        doc = json.loads((run / "inspection" / name).read_text())
        if isinstance(doc, dict):
            doc.pop("images")
        else:
            [m.pop("image") for m in doc]
        (run / "inspection" / name).write_text(json.dumps(doc))
    page = write_report(run).read_text(encoding="utf-8")
    assert "<h2>Hierarchy" in page and "<h2>Attributions" not in page
    assert "The most confident mistakes" in page  # a table instead of the image grid
    assert len(embedded_images(page)) == 5  # curves, probes, activations, gradients, confusion


def test_missing_or_corrupt_required_files_raise_one_line_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path, inspection=False)
    (run / "summary.json").unlink()
    with pytest.raises(LaminaError, match=r"summary\.json") as e:
        write_report(run)
    assert "\n" not in str(e.value)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(LaminaError, match="corrupt"):
        write_report(run)
    with pytest.raises(LaminaError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    (run / "summary.json").write_text("{}")
    (run / "config.yaml").unlink()
    with pytest.raises(LaminaError, match=r"config\.yaml"):
        RunFolder(run)


def test_malformed_optional_file_becomes_a_note(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "inspection" / "cka.json").write_text('{"stages": ["a"]}')  # no matrix
    (run / "inspection" / "activations.json").write_text("[1, 2")  # not JSON
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "step", "st')  # a run killed mid-write
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("could not be drawn") == 2
    assert "Learning curves</h2>" in page and "Attributions</h2>" in page


def test_a_new_section_registers_without_touching_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lamina.reporting.html.SECTIONS", list(SECTIONS))  # registered only for this test

    @register_section
    def section_energy(run: RunFolder) -> Section | None:
        doc = run.json("energy.json")
        return None if doc is None else Section("energy", "Energy", f"<p>{doc['joules']} J</p>")

    run = make_run(tmp_path, inspection=False)
    assert "Energy</h2>" not in write_report(run).read_text(encoding="utf-8")
    (run / "energy.json").write_text('{"joules": 12}')
    page = write_report(run).read_text(encoding="utf-8")
    assert page.index("Confusion &amp; mistakes</h2>") < page.index("Energy</h2>")
    assert "12 J" in page
