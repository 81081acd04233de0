"""End to end through the command line: train on digits, eval, predict saved PNGs; bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

import lamina
from lamina.cli.main import main
from lamina.config import DataConfig
from lamina.data.base import build_dataset


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "digits", "--epochs", "6", "--out", str(out), "--quiet", "--seed", "1"]) == 0
    return out


def test_train_writes_a_complete_run_folder(digits_run):
    names = {p.name for p in digits_run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "model.safetensors", "model.json", "checkpoints"} <= names
    summary = json.loads((digits_run / "summary.json").read_text())
    for key in ("test_accuracy", "test_loss", "train_seconds", "epochs", "params", "device", "torch", "seed", "lamina"):
        assert key in summary
    assert summary["test_accuracy"] >= 0.9 and summary["epochs"] == 6 and summary["seed"] == 1
    records = [json.loads(line) for line in (digits_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4, 5, 6]
    assert len(list((digits_run / "checkpoints").iterdir())) == 2


def test_eval_reproduces_the_summary(digits_run, capsys):
    assert main(["eval", str(digits_run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    summary = json.loads((digits_run / "summary.json").read_text())
    assert m["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert m["examples"] == summary["test_examples"]


def test_predict_on_saved_pngs_agrees_with_eval(digits_run, tmp_path, capsys):
    cfg = lamina.config.load_config(digits_run / "config.yaml")
    ds = build_dataset(cfg.data, seed=cfg.train.seed)
    paths = []
    for i, img in enumerate(ds.test.x[:, 0].numpy()):
        p = tmp_path / f"{i}.png"
        Image.fromarray(img.astype(np.uint8), mode="L").save(p)
        paths.append(str(p))
    assert main(["predict", str(digits_run), *paths, "--json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    predicted = [r["top"][0]["class"] for r in out]
    assert all(len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"] for r in out)
    acc = np.mean([p == ds.classes[int(y)] for p, y in zip(predicted, ds.test.y, strict=True)])
    assert main(["eval", str(digits_run), "--json"]) == 0
    assert acc == pytest.approx(json.loads(capsys.readouterr().out)["accuracy"])


def test_python_api_load_and_predict(digits_run):
    model = lamina.load(digits_run)
    ds = build_dataset(DataConfig(name="digits"), seed=1)
    probs = model.predict_proba(ds.test.x[:5])
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(1), torch.ones(5))
    assert model.predict(ds.test.x[:3]) == [model.classes[i] for i in probs[:3].argmax(1).tolist()]


def _fails(argv, capsys, phrase):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert phrase in err, err


def test_bad_input_gives_one_line_errors(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "r")
    _fails(["train", str(tmp_path / "nope"), "--out", out], capsys, "does not exist")
    (tmp_path / "empty").mkdir()
    _fails(["train", str(tmp_path / "empty"), "--out", out], capsys, "class")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "one" / "cat" / "a.png")
    _fails(["train", str(tmp_path / "one"), "--out", out], capsys, "at least 2 classes")
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3), np.float32), y=np.zeros(5, np.int64))
    _fails(["train", str(tmp_path / "bad.npz"), "--out", out], capsys, "same length")
    np.savez(tmp_path / "range.npz", x=np.zeros((4, 3), np.float32), y=np.array([0, 1, -1, 1]))
    _fails(["train", str(tmp_path / "range.npz"), "--out", out], capsys, "negative")
    _fails(["train", "fashion-mnistt", "--out", out], capsys, "did you mean 'fashion-mnist'")
    _fails(["train", "digits", "--model", "resnett", "--out", out], capsys, "did you mean 'resnet'")
    _fails(["train", "digits", "train.optimizer=adamm", "--out", out], capsys, "did you mean 'adamw'")
    _fails(["train", "digits", "train.lrr=0.1", "--out", out], capsys, "did you mean 'train.lr'")
    if not torch.cuda.is_available():
        _fails(["train", "digits", "--device", "cuda", "--out", out], capsys, "no CUDA GPU")
    # a corrupt IDX file found through $LAMINA_DATA
    root = tmp_path / "data" / "fashion-mnist"
    root.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    monkeypatch.setenv("LAMINA_DATA", str(tmp_path / "data"))
    _fails(["train", "fashion-mnist", "--out", out], capsys, "idx")
    _fails(["eval", str(tmp_path / "norun")], capsys, "does not exist")
    _fails(["predict", str(tmp_path / "norun"), "x.png"], capsys, "does not exist")


def test_predict_bad_image(digits_run, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    _fails(["predict", str(digits_run), str(tmp_path / "broken.png")], capsys, "broken.png")
    _fails(["predict", str(digits_run), str(tmp_path / "missing.png")], capsys, "missing.png")


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "train", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "does not exist" in err.strip().splitlines()[-1]


def test_data_commands(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("fashion-mnist", "mnist", "digits", "mnist1d"))
    grid = tmp_path / "grid.png"
    assert main(["data", "info", "digits", "--grid", str(grid), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input_shape"] == [1, 8, 8] and len(info["classes"]) == 10
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert main(["data", "fetch", "digits"]) == 0
    assert "no download" in capsys.readouterr().out
    _fails(["data", "fetch", "cifar"], capsys, "unknown dataset")
    _fails(["data", "info", str(tmp_path / "none.npz")], capsys, "does not exist")


def test_report_inspects_first_then_inspect_and_errors(digits_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    for f in (run / "inspection").iterdir():  # keep gradients.jsonl: it was recorded during training
        if f.name != "gradients.jsonl":
            f.unlink()
    assert not (run / "inspection" / "probes.json").exists()
    assert main(["report", str(run), "--max-examples", "200"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    html = (run / "report.html").read_text()
    assert "Hierarchy" in html and (run / "inspection" / "probes.json").is_file()
    assert main(["inspect", str(run), "--max-examples", "200", "--stage", "stage2"]) == 0
    assert "linear probe accuracy by depth: stage1" in capsys.readouterr().out
    assert json.loads((run / "inspection" / "top_activations.json").read_text())["stage"] == "stage2"
    pngs = sorted(p.name for p in (run / "inspection").glob("*.png"))
    assert pngs == sorted(["probes.png", "cka.png", "activations.png", "filters.png", "top_activations.png",
                           "attributions.png", "confusion.png", "misclassified.png", "gradient_flow.png",
                           "learning_curves.png"])
    for p in (run / "inspection").glob("*.png"):
        with Image.open(p) as im:
            im.verify()
    _fails(["report", str(tmp_path / "none")], capsys, "does not exist")
    _fails(["inspect", str(run), "--max-examples", "100", "--stage", "stage9"], capsys, "no stage 'stage9'")
    (run / "model.json").unlink()
    _fails(["inspect", str(run)], capsys, "model.json")
    _fails(["inspect", str(run), "--max-examples", "0"], capsys, "at least 1")


def test_gradient_flow_is_recorded_during_training(digits_run):
    lines = (digits_run / "inspection" / "gradients.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["step"] == 50 and first["layers"][0]["name"].startswith("stage1")
