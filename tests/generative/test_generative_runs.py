"""`lamina train --task vae|diffusion` end to end on tiny images: the run folder, FD-lamina during and
after training, `lamina generate`, the report, exact resume and the bad inputs."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

import lamina
from lamina.cli.main import main
from lamina.errors import LaminaError
from lamina.training.callbacks import Callback, Interrupted

TINY = ["data.batch_size=16", "model.width=8", "generate.samples=4", "generate.fd_samples=20",
        "generate.timesteps=20", "generate.sample_steps=5", "train.gradient_flow_every=0"]


@pytest.fixture(scope="module")
def classifier(npz, tmp_path_factory):
    """The feature classifier FD-lamina is measured with: a tiny CNN of the same images."""
    return lamina.train(str(npz), epochs=1, out=tmp_path_factory.mktemp("cls") / "run", quiet=True,
                        overrides=["model.name=cnn", "model.width=4", "data.batch_size=16"]).dir


@pytest.fixture(scope="module", params=["vae", "diffusion"])
def run(request, npz, classifier, tmp_path_factory):
    return lamina.train(str(npz), task=request.param, epochs=2, out=tmp_path_factory.mktemp(request.param) / "run",
                        quiet=True, overrides=[*TINY, f"generate.fd_classifier={classifier}"])


def test_a_generative_run_writes_samples_and_fd_lamina(run, classifier):
    s = run.summary
    assert s["task"] in ("vae", "diffusion") and s["modality"] == "image"
    assert s["fd_classifier"] == str(classifier) and s["fd_samples"] == 20
    assert s["fd_lamina"] >= 0 and 0 <= s["fd_precision"] <= 1 and 0 <= s["fd_recall"] <= 1
    assert ("test_nelbo" in s) == (s["task"] == "vae")
    grids = [json.loads(line) for line in (run.dir / "samples" / "samples.jsonl").read_text().splitlines()]
    assert [g["epoch"] for g in grids] == [1, 2] and all((run.dir / "samples" / g["png"]).is_file() for g in grids)
    fid = [json.loads(line) for line in (run.dir / "fidelity.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in fid] == [1, 2] and all(r["fd_train_test"] >= 0 for r in fid)
    meta = json.loads((run.dir / "model.json").read_text())
    assert meta["task"] == s["task"] and meta["preprocess"]["scale"] == 255.0


def test_generate_writes_a_grid_and_single_images(run, tmp_path, capsys):
    assert main(["generate", str(run.dir), "--n", "6", "--seed", "3", "--out", str(tmp_path / "g")]) == 0
    assert "6 samples" in capsys.readouterr().out
    assert (tmp_path / "g" / "samples_seed3.png").is_file() and len(list((tmp_path / "g").glob("0*.png"))) == 6
    sampler = lamina.load(run.dir)
    a, b = sampler.sample(3, seed=1), lamina.sample(run.dir, 3, seed=1)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and 0 <= float(a.min()) <= float(a.max()) <= 1
    assert not torch.equal(a, sampler.sample(3, seed=2))


def test_a_vae_interpolates_and_a_diffusion_model_does_not(run, capsys):
    code = main(["generate", str(run.dir), "--interpolate", "0", "3", "--n", "5"])
    out = capsys.readouterr()
    if run.summary["task"] == "vae":
        assert code == 0 and (run.dir / "generated" / "interpolation_0_3.png").is_file()
    else:
        assert code == 2 and "only a VAE interpolates" in out.err


def test_the_report_of_a_generative_run(run):
    path = lamina.report(run.dir, max_examples=40)
    html = path.read_text()
    assert "Generated images" in html and "could not be drawn" not in html
    assert ("Latent space" in html) == (run.summary["task"] == "vae")


@pytest.mark.parametrize("argv,message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--steps", "-1"], "--steps must be positive"),
])
def test_generate_bad_counts(run, argv, message, capsys):
    assert main(["generate", str(run.dir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_generate_on_a_classifier_run_says_what_it_does(classifier, capsys):
    assert main(["generate", str(classifier), "--n", "4"]) == 2
    assert "classifier" in capsys.readouterr().err


def test_generative_tasks_refuse_data_that_are_not_images(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    for task in ("vae", "diffusion"):
        with pytest.raises(LaminaError, match=f"data.task={task} generates images"):
            lamina.train(str(table), task=task, epochs=1, out=tmp_path / task, quiet=True)


def test_a_bad_fd_classifier_is_one_line(npz, tmp_path):
    with pytest.raises(LaminaError, match="not a finished run folder"):
        lamina.train(str(npz), task="vae", epochs=1, out=tmp_path / "r", quiet=True,
                     overrides=[*TINY, f"generate.fd_classifier={tmp_path}"])


class SignalAt(Callback):
    order = 10

    def __init__(self, step: int) -> None:
        self.step = step

    def batch_end(self, trainer):
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.usefixtures("sigint_delivered")
@pytest.mark.parametrize("task", ["vae", "diffusion"])
def test_an_interrupted_generative_run_resumes_bit_identically(npz, tmp_path, task):
    over = [*TINY, "generate.fd_classifier=off", "train.deterministic=true", "train.checkpoint_every=4"]
    ref = lamina.train(str(npz), task=task, epochs=2, out=tmp_path / "ref", quiet=True, overrides=over)
    with pytest.raises(Interrupted):
        lamina.train(str(npz), task=task, epochs=2, out=tmp_path / "run", quiet=True, overrides=over,
                     callbacks=[SignalAt(5)])
    run = lamina.resume(tmp_path / "run", quiet=True)
    assert (run.dir / "model.safetensors").read_bytes() == (ref.dir / "model.safetensors").read_bytes()
    a = (ref.dir / "samples" / "samples.jsonl").read_text()
    assert (run.dir / "samples" / "samples.jsonl").read_text() == a  # each grid written once
    assert np.array_equal(np.frombuffer((run.dir / "samples" / "epoch_002.png").read_bytes(), np.uint8),
                          np.frombuffer((ref.dir / "samples" / "epoch_002.png").read_bytes(), np.uint8))
