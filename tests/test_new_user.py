"""What a new user tried, following the README on a fresh clone, that did not work as documented."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

import lamina
from lamina.cli.main import main


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "digits", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out


def test_a_run_repeats_from_its_own_config_into_a_new_folder(digits_run, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "--config", str(digits_run / "config.yaml"), "--out", str(again), "--quiet"]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (digits_run, again))
    assert a["test_accuracy"] == b["test_accuracy"] and a["steps"] == b["steps"]


def test_the_python_api_has_every_train_option_and_documents_it():
    for name in ("report", "inspect", "generate", "train", "load", "resume", "evaluate"):
        assert callable(getattr(lamina, name))
    params = inspect.signature(lamina.train).parameters
    doc = lamina.train.__doc__ or ""
    for flag in ("model", "epochs", "batch_size", "lr", "seed", "device", "out", "config", "recipe", "quiet",
                 "checkpoint_every", "checkpoint_minutes", "on_nan", "deterministic", "tensorboard", "report", "task"):
        assert flag in params and flag in doc, flag


def test_train_keywords_and_a_string_of_overrides(tmp_path):
    run = lamina.train("digits", epochs=1, out=tmp_path / "r", quiet=True, tensorboard=True, deterministic=True,
                       overrides="model.width=8 train.lr=0.05")
    assert run.config.model.width == 8 and run.config.train.lr == 0.05 and run.config.train.tensorboard
    assert (run.dir / "tensorboard").is_dir()


def test_predict_npy_files_for_a_float_model_and_one_path(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    x = (rng.normal(size=(120, 6)) + y[:, None] * 2).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "d.npz"), "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    np.save(tmp_path / "one.npy", x[0])
    np.save(tmp_path / "batch.npy", x[:3])
    assert main(["predict", str(run), str(tmp_path / "one.npy"), str(tmp_path / "batch.npy"), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["input"].rsplit("/", 1)[-1] for a in answers] == ["one.npy", "batch.npy[0]", "batch.npy[1]", "batch.npy[2]"]
    model = lamina.load(run)
    assert len(model.predict(str(tmp_path / "batch.npy"))) == 3  # one path, not a list
    top = model.top_k(x[:2], k=2)
    assert len(top) == 2 and all(len(t) == 2 for t in top)  # a list per input


def test_a_closed_pipe_is_not_a_full_disk():
    proc = subprocess.run(f"{sys.executable} -m lamina.cli.main data list | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert "disk" not in proc.stderr and "Broken pipe" not in proc.stderr, proc.stderr
    assert proc.stdout.count("\n") == 1


def test_skipping_most_steps_stops_the_run(tmp_path, capsys):
    assert main(["train", "digits", "--lr", "1e12", "--on-nan", "skip", "--out", str(tmp_path / "r"), "--quiet",
                 "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "steps were skipped" in err and "diverged" in err


def test_train_without_data_says_what_to_give(capsys):
    assert main(["train"]) == 2
    assert "lamina train needs DATA" in capsys.readouterr().err


def test_version_and_debug_after_the_command(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and lamina.__version__ in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "nope"), "--debug"]) == 2  # accepted after the command
    assert "Traceback" in capsys.readouterr().err


def test_step_records_number_epochs_from_one(digits_run):
    records = [json.loads(line) for line in (digits_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    ends = [r["step"] for r in records if r["kind"] == "epoch"]  # the last step of epoch 1, 2, ...
    assert steps
    for r in steps:  # numbered from 1, as epoch records are: the epoch whose steps include this one
        assert r["epoch"] == next(e for e, end in enumerate(ends, start=1) if r["step"] <= end)
