"""Issue 11 through the command line: adversarial training, `lamina attack`, the energy meter of
every run, `--max-energy-kwh`, `lamina curve`, and their one-line errors."""

from __future__ import annotations

import json

import pytest

from lamina.cli.main import main
from lamina.session import adversarial_overrides


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "robust"
    args = ["train", "digits", "--epochs", "2", "--out", str(out), "--quiet", "--adversarial", "fgsm-rs", "eps=0.1",
            "eval_examples=64", "--grid-intensity", "100"]
    assert main(args) == 0
    return out


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_adversarial_training_logs_clean_and_robust_accuracy_per_epoch(robust_run):
    epochs = [r for r in _lines(robust_run / "metrics.jsonl") if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for r in epochs:
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["val_robust_accuracy"] <= 1
        assert "train_robust_accuracy" in r  # the training batches were adversarial
        assert r["val_robust_accuracy"] <= r["val_accuracy"] + 1e-9
    summary = json.loads((robust_run / "summary.json").read_text())
    assert summary["adversarial"]["method"] == "fgsm-rs" and summary["adversarial"]["eps"] == 0.1
    assert 0 <= summary["test_robust_accuracy"] <= summary["test_accuracy"]
    cfg = (robust_run / "config.yaml").read_text()
    assert "method: fgsm-rs" in cfg  # `lamina train --config RUN/config.yaml` repeats it


def test_every_run_has_an_energy_meter_labelled_with_its_method(robust_run):
    summary = json.loads((robust_run / "summary.json").read_text())
    assert summary["energy_j"] > 0 and summary["energy_method"] in ("nvml", "rapl", "estimate")
    assert summary["energy_estimated"] == (summary["energy_method"] == "estimate")
    # 100 gCO2e/kWh: grams = joules / 3.6e6 * 100
    assert summary["co2e_g"] == pytest.approx(summary["energy_j"] / 3.6e6 * 100, rel=1e-6)
    records = _lines(robust_run / "energy.jsonl")
    per_epoch = [r for r in records if r["kind"] == "epoch"]
    assert len(per_epoch) == 2 and all(r["method"] == summary["energy_method"] for r in records)
    assert sum(r["joules"] for r in per_epoch) <= summary["energy_j"] + 1e-6


def test_attack_command_writes_robustness_json(robust_run, capsys):
    assert main(["attack", str(robust_run), "--eps", "0.05,0.1", "--steps", "5", "--n", "100"]) == 0
    out = capsys.readouterr().out
    assert "clean accuracy" in out and "gradient-masking checks" in out
    r = json.loads((robust_run / "robustness.json").read_text())
    pgd = [x for x in r["results"] if x["method"] == "pgd" and x["steps"] == 5 and x["eps"] in (0.05, 0.1)]
    assert {x["eps"] for x in pgd} == {0.05, 0.1}
    assert r["examples"] == 100 and set(r["checks"])
    assert main(["report", str(robust_run)]) == 0
    html = (robust_run / "report.html").read_text()
    assert "robust" in html.lower() and "energy" in html.lower()


def test_energy_budget_stops_training_gracefully_with_a_checkpoint(tmp_path):
    out = tmp_path / "r"
    assert main(["train", "digits", "--epochs", "5", "--out", str(out), "--quiet", "--max-energy-kwh", "1e-12",
                 "energy.interval=0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "energy" in summary["stop_reason"] and summary["epochs"] < 5
    assert any((out / "checkpoints").iterdir())


def test_curve_command(tmp_path, capsys):
    out = tmp_path / "curve"
    assert main(["curve", "digits", "--fractions", "0.3,1", "--seeds", "2", "--out", str(out), "--quiet",
                 "train.epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "curve.json" in printed
    curve = json.loads((out / "curve.json").read_text())
    assert [p["fraction"] for p in curve["points"]] == [0.3, 1.0]
    assert all(len(p["seeds"]) == 2 for p in curve["points"])
    assert (out / "curve.html").is_file()


def _fails(args, capsys, needle):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and needle in err, err


def test_bad_input_is_one_line(tmp_path, robust_run, capsys):
    out = str(tmp_path / "r")
    _fails(["train", "digits", "--out", out, "--adversarial", "eps=0.1"], capsys, "method first")
    _fails(["train", "digits", "--out", out, "--adversarial", "pgd", "epss=0.1"], capsys, "did you mean 'eps'")
    _fails(["train", "digits", "--out", out, "--adversarial", "pgdd"], capsys, "pgd")
    _fails(["train", "digits", "--out", out, "--adversarial", "pgd", "eps=-0.1"], capsys, "eps")
    _fails(["train", "digits", "--out", out, "--grid-intensity", "abc"], capsys, "grid")
    _fails(["train", "digits", "--out", out, "--max-energy-kwh", "-1"], capsys, "max_kwh")
    _fails(["attack", str(robust_run), "--eps", "0.1,x"], capsys, "comma-separated numbers")
    _fails(["attack", str(robust_run), "--eps", "-0.1"], capsys, "eps")
    _fails(["attack", str(robust_run), "--method", "pgdd"], capsys, "pgd")
    _fails(["attack", str(tmp_path / "norun")], capsys, "does not exist")
    _fails(["curve", "digits", "--fractions", "0,1", "--out", out], capsys, "(0, 1]")
    _fails(["curve", "digits", "--fractions", "1.5", "--out", out], capsys, "(0, 1]")
    _fails(["curve", "--out", out], capsys, "needs DATA")


def test_adversarial_spec_parsing():
    assert adversarial_overrides("pgd eps=0.1 steps=7") == ["adversarial.method=pgd", "adversarial.eps=0.1",
                                                            "adversarial.steps=7"]
    assert adversarial_overrides(["fgsm-rs", "eps=0.03"]) == ["adversarial.method=fgsm-rs", "adversarial.eps=0.03"]
