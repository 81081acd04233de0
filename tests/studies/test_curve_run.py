"""End-to-end curves on tiny synthetic vectors: curve.json, curve.html, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import lamina.studies.curve as curve_module
from lamina.data.base import build_dataset
from lamina.errors import LaminaError
from lamina.reporting.curve import write_curve_report
from lamina.studies import run_curve
from lamina.training.callbacks import Callback, Interrupted

pytestmark = pytest.mark.usefixtures("sigint_delivered")  # they send themselves SIGINT

# deterministic (a resumed CPU run is bit-identical), checkpoints every 2 steps, a small MLP
TINY = ["train.epochs=1", "train.deterministic=true", "train.checkpoint_every=2", "model.width=16",
        "train.gradient_flow_every=0"]
FRACTIONS = [0.25, 1.0]


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 separable classes of 8-dim vectors, 240 examples (unequal classes)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [120, 72, 48])
    centres = rng.normal(size=(3, 8)) * 2.0
    x = (centres[y] + rng.normal(size=(len(y), 8))).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, x=x, y=y)
    return path


def _curve(npz: Path, out: Path, **kw):
    kw.setdefault("fractions", FRACTIONS)
    kw.setdefault("seeds", 2)
    return run_curve(str(npz), out=out, overrides=TINY, **kw)


@pytest.fixture(scope="module")
def reference(npz: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ref") / "curve"
    return out, _curve(npz, out)


def _statuses(doc: dict) -> list[str]:
    runs = sorted((r for p in doc["points"] for r in p["runs"]), key=lambda r: r["folder"])
    return [r["status"] for r in runs]


def test_curve_writes_points_fit_and_settings(npz, reference):
    out, doc = reference
    assert {**json.loads((out / "curve.json").read_text()), "out": str(out)} == doc
    assert (out / "curve.yaml").is_file()
    ds = build_dataset(curve_module.resolve_config(str(npz), overrides=TINY).data, seed=0)
    n = len(ds.train)
    assert doc["complete"] and doc["runs_done"] == doc["runs_total"] == 4
    assert doc["train_examples"] == n and doc["test_examples"] == len(ds.test)
    assert [p["fraction"] for p in doc["points"]] == FRACTIONS
    small, full = doc["points"]
    assert full["examples"] == n and small["examples"] < n / 3
    assert (small["epochs"], full["epochs"]) == (2, 1)  # ceil(1 * 0.25 ** -0.5) = 2
    assert small["batch_size"] == 16
    assert small["seeds"] == [0, 1]
    acc = small["accuracies"]
    assert small["accuracy_mean"] == pytest.approx(np.mean(acc))
    assert small["accuracy_std"] == pytest.approx(np.std(acc, ddof=1))
    for p in doc["points"]:
        for r in p["runs"]:
            summary = json.loads((out / r["folder"] / "summary.json").read_text())
            assert summary["train_examples"] == p["examples"] and summary["seed"] == r["seed"]
            assert summary["test_accuracy"] == r["test_accuracy"] and summary["test_examples"] == len(ds.test)
            assert summary["epochs"] == p["epochs"]
            assert r["status"] == "trained"
    assert (out / "base" / "f0.25-s1" / "summary.json").is_file()
    fit = doc["fit"]
    assert fit["points"] == 4 and fit["sizes"] == 2 and len(fit["exponent_ci95"]) == 2
    assert fit["hestness_2017_image_classification"]["top1_error_exponent"] == -0.309
    assert "variants" not in doc
    assert doc["torch"] and doc["lamina"] and doc["config"]["data"]["name"] == str(npz)


def test_runs_share_the_full_test_split_and_normalisation(npz, reference):
    out, doc = reference
    models = [json.loads((out / r["folder"] / "model.json").read_text()) for p in doc["points"] for r in p["runs"]]
    assert all(m["preprocess"] == models[0]["preprocess"] for m in models)  # the full split's statistics
    assert len({r["test_examples"] for p in doc["points"] for r in p["runs"]}) == 1


def test_curve_report_is_self_contained(reference):
    out, doc = reference
    page = write_curve_report(out).read_text()
    assert (out / "curve.html").is_file()
    assert "default-src 'none'" in page and 'src="data:image/png;base64,' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert f"{doc['fit']['exponent']:.3f}" in page and "Hestness" in page and "-0.309" in page
    assert "This curve is partial" not in page


class InterruptRun(Callback):
    """SIGINT at ``step`` of the ``run``-th run (1-based) this callback sees: as Ctrl-C would."""

    order = 10  # before the checkpoint callback, which acts on the flag in the same step

    def __init__(self, run: int, step: int) -> None:
        self.run, self.step, self.started = run, step, 0

    def fit_start(self, trainer):
        self.started += 1

    def batch_end(self, trainer):
        if self.started == self.run and trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_curve_resumes_where_it_stopped(npz, tmp_path, reference):
    ref_out, ref = reference
    out = tmp_path / "curve"
    # runs go f0.25-s0, f0.25-s1, f1-s0, f1-s1: stop the third at step 3 (a checkpoint at step 2)
    with pytest.raises(Interrupted):
        _curve(npz, out, callbacks=[InterruptRun(3, 3)])
    partial = json.loads((out / "curve.json").read_text())
    assert not partial["complete"] and partial["runs_done"] == 2 and len(partial["points"]) == 1
    assert "This curve is partial" in write_curve_report(out).read_text()
    done = {f: (out / "base" / f / "summary.json").read_bytes() for f in ("f0.25-s0", "f0.25-s1")}
    assert not (out / "base" / "f1-s0" / "summary.json").exists()
    assert (out / "base" / "f1-s0" / "checkpoints").is_dir()

    doc = _curve(npz, out)
    assert _statuses(doc) == ["reused", "reused", "resumed", "trained"]  # f0.25-s0, f0.25-s1, f1-s0, f1-s1
    assert all((out / "base" / f / "summary.json").read_bytes() == b for f, b in done.items())  # not retrained
    # deterministic on a CPU: the resumed run ends with the uninterrupted run's weights
    for run in ("f1-s0", "f1-s1"):
        assert (out / "base" / run / "model.safetensors").read_bytes() == \
            (ref_out / "base" / run / "model.safetensors").read_bytes()
    assert [p["accuracies"] for p in doc["points"]] == [p["accuracies"] for p in ref["points"]]
    assert doc["fit"]["exponent"] == pytest.approx(ref["fit"]["exponent"])

    # a run with checkpoints but no summary is resumed; one with neither (killed before its first
    # checkpoint) is trained again from scratch; the rest are reused
    (out / "base" / "f1-s1" / "summary.json").unlink()
    for p in (out / "base" / "f0.25-s1").iterdir():
        if p.name not in ("config.yaml", "metrics.jsonl"):
            p.unlink() if p.is_file() else shutil.rmtree(p)
    again = _curve(npz, out)
    assert _statuses(again) == ["reused", "trained", "reused", "resumed"]
    assert [p["accuracies"] for p in again["points"]] == [p["accuracies"] for p in ref["points"]]


def test_a_rerun_with_other_settings_is_refused(npz, reference):
    out, _ = reference
    with pytest.raises(LaminaError, match=r"other settings \(seeds differ\).*another --out") as info:
        _curve(npz, out, seeds=3)
    assert "\n" not in str(info.value)
    with pytest.raises(LaminaError, match="fractions differ"):
        _curve(npz, out, fractions=[0.5, 1.0])


def test_compare_gives_one_curve_per_variant_on_data_loaded_once(npz, tmp_path, monkeypatch):
    calls = []

    def counting(cfg, seed=0):
        calls.append(cfg)
        return build_dataset(cfg, seed=seed)

    monkeypatch.setattr(curve_module, "build_dataset", counting)
    out = tmp_path / "cmp"
    lines = []
    doc = _curve(npz, out, fractions=[0.5], seeds=1, compare=["data.translate=0", "model.width=8 train.lr=0.05"],
                 progress=lines.append)
    assert len(calls) == 1  # neither variant changes which examples are loaded
    names = [v["name"] for v in doc["variants"]]
    assert names == ["data.translate=0", "model.width=8 train.lr=0.05"]
    assert doc["points"] == doc["variants"][0]["points"]
    assert (out / "data.translate_0" / "f0.5-s0" / "summary.json").is_file()
    assert (out / "model.width_8_train.lr_0.05" / "f0.5-s0" / "summary.json").is_file()
    cfg = json.loads((out / "model.width_8_train.lr_0.05" / "f0.5-s0" / "model.json").read_text())
    assert cfg["arch"]["width"] == 8
    assert len(lines) == 2 and lines[0].startswith("point 1/1: 50 % = ") and "seed 1/1 [data.translate=0]" in lines[0]
    assert doc["variants"][1]["points"][0]["lr"] == pytest.approx(0.05 * 16 / 16)  # base batch is already 16
    page = write_curve_report(out).read_text()
    assert "model.width=8 train.lr=0.05" in page

    calls.clear()
    _curve(npz, tmp_path / "cmp2", fractions=[1.0], seeds=1, compare=["data.val_fraction=0.1", "data.val_fraction=0.2"])
    assert len(calls) == 2  # the split differs: each variant loads its own


@pytest.mark.parametrize("kw,match", [
    ({"fractions": [0.0, 1.0]}, r"must lie in \(0, 1\]"),
    ({"fractions": [0.5, 1.2]}, r"must lie in \(0, 1\]"),
    ({"fractions": "0.1,abc"}, "is not a number"),
    ({"fractions": [0.5, 0.5]}, "more than once"),
    ({"fractions": []}, "no fractions"),
    ({"seeds": 0}, "at least 1"),
    ({"seeds": 1.5}, "at least 1"),
    ({"epoch_scale": 0.5}, "epoch_scale"),
    ({"compare": ["data.nope=1"]}, "unknown config key 'data.nope'"),
    ({"compare": ["model.width=8", "model.width=8"]}, "given twice"),
    ({"fractions": [0.005, 1.0]}, r"fraction 0.005 gives 1 of .* fewer than the 3 classes"),
])
def test_bad_input_is_a_one_line_error(npz, tmp_path, kw, match):
    out = tmp_path / "bad"
    with pytest.raises(LaminaError, match=match) as info:
        _curve(npz, out, **kw)
    assert "\n" not in str(info.value)
    assert not (out / "curve.yaml").exists()  # nothing written: fix the argument and rerun into the same --out


def test_a_language_model_data_set_is_refused(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("It is a truth universally acknowledged. " * 50)
    with pytest.raises(LaminaError, match="language-model data: a curve needs a classification task"):
        run_curve(str(book), out=tmp_path / "c", fractions=[0.5, 1.0], seeds=1)


def test_an_out_folder_holding_other_files_is_refused(npz, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(LaminaError, match=r"no curve\.yaml: choose another --out"):
        _curve(npz, tmp_path / "busy")
