"""Language models and text classifiers end to end: train, generate, resume bit-identically, bad input."""

from __future__ import annotations

import json
import os
import signal

import pytest

import lamina
from lamina.cli.main import main
from lamina.errors import LaminaError
from lamina.training.callbacks import Callback, Interrupted

TINY = ["data.context=32", "model.width=32", "model.depth=2", "data.batch_size=8", "train.epochs=2"]
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.\n") * 40


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "book.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture(scope="module")
def lm_run(book, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lm"
    assert main(["train", str(book), "--out", str(out), "--quiet", *TINY]) == 0
    return out


def test_a_language_model_run_folder(lm_run):
    summary = json.loads((lm_run / "summary.json").read_text())
    assert summary["task"] == "language-model" and summary["val_bpc"] > 0
    assert summary["val_tokens"] == int(len(TEXT) * 0.05 + 0.5) - 1 or summary["val_tokens"] > 0
    meta = json.loads((lm_run / "model.json").read_text())
    assert meta["task"] == "language-model" and meta["vocab"]["kind"] == "char"
    epochs = [json.loads(line) for line in (lm_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]
    assert {"train_loss", "train_bpc", "val_loss", "val_bpc"} <= set(epochs[-1])
    assert (lm_run / "samples.jsonl").is_file()


def test_generate_streams_text_on_the_command_line(lm_run, capsys):
    assert main(["generate", str(lm_run), "--prompt", "It is a truth", "--max-new-tokens", "40", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("It is a truth") and len(out) > len("It is a truth") + 20


def test_generation_is_seeded_and_the_cache_does_not_change_greedy_output(lm_run):
    model = lamina.load(lm_run)
    a = model.generate("It is", max_new_tokens=25, seed=3)
    assert a == model.generate("It is", max_new_tokens=25, seed=3)
    greedy = model.generate("It is", max_new_tokens=25, temperature=0)
    assert greedy == model.generate("It is", max_new_tokens=25, temperature=0, use_cache=False)


def test_text_bad_input(lm_run, capsys):
    with pytest.raises(LaminaError, match="outside the model's character vocabulary"):
        lamina.load(lm_run).generate("Zebra ☃")
    assert main(["predict", str(lm_run), "x.npy"]) == 2
    assert "is a language model" in capsys.readouterr().err


def test_generate_on_a_classifier_is_an_error(tmp_path, capsys):
    run = tmp_path / "digits"
    assert main(["train", "digits", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    assert main(["generate", str(run), "--prompt", "hi"]) == 2
    assert "is a classifier" in capsys.readouterr().err


class SignalAt(Callback):
    order = 10

    def __init__(self, step: int) -> None:
        self.step = step

    def batch_end(self, trainer):
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupted_language_model_resumes_bit_identically(book, tmp_path):
    args = [*TINY, "train.deterministic=true", "train.checkpoint_every=3"]
    ref = lamina.train(str(book), out=str(tmp_path / "ref"), quiet=True, overrides=args)
    with pytest.raises(Interrupted):
        lamina.train(str(book), out=str(tmp_path / "run"), quiet=True, overrides=args, callbacks=[SignalAt(4)])
    run = lamina.resume(tmp_path / "run", quiet=True)
    assert (run.dir / "model.safetensors").read_bytes() == (ref.dir / "model.safetensors").read_bytes()
    assert run.summary["val_bpc"] == ref.summary["val_bpc"]


def test_text_classification_from_class_folders(tmp_path):
    for c, words in (("happy", "good great fine lovely"), ("sad", "bad awful poor grim")):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(30):
            (tmp_path / "data" / c / f"{i}.txt").write_text(" ".join([*words.split()[i % 4 :], str(i)]))
    run = lamina.train(str(tmp_path / "data"), epochs=8, out=str(tmp_path / "run"), quiet=True,
                       overrides="model.width=16 data.context=24")
    assert run.summary["task"] == "classify" and run.test_accuracy >= 0.9
    model = lamina.load(run.dir)
    assert model.meta["vocab"]["pad"] is True
    assert model.predict(["good great fine lovely", "bad awful poor grim"]) == ["happy", "sad"]


def test_eval_of_a_language_model_is_its_whole_validation_tail(lm_run, capsys):
    assert main(["eval", str(lm_run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    summary = json.loads((lm_run / "summary.json").read_text())
    assert m["split"] == "val" and m["examples"] == summary["val_tokens"]
    assert m["loss"] == pytest.approx(summary["val_loss"], rel=1e-6) and m["bpc"] == pytest.approx(summary["val_bpc"])


def test_a_text_transformer_classifier_builds_with_the_default_norm(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "d" / c / f"{i}.txt").write_text(f"{c * (i + 1)} {i}")
    run = lamina.train(str(tmp_path / "d"), model="text-transformer", epochs=1, out=str(tmp_path / "r"), quiet=True,
                       overrides="model.width=16 data.context=12")
    assert run.config.model.name == "text-transformer" and lamina.load(run.dir).model.arch["norm"] == "layer"


def test_a_textbag_classifier_trains_reloads_and_predicts(tmp_path):
    """`--model textbag` through `lamina train` (the config's default act and norm, which it does not
    take, are left out) learns class folders of word lists, and the saved model predicts."""
    for c, words in (("happy", "good great fine lovely"), ("sad", "bad awful poor grim")):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(30):
            (tmp_path / "data" / c / f"{i}.txt").write_text(" ".join([*words.split()[i % 4 :], str(i)]))
    run = lamina.train(str(tmp_path / "data"), model="textbag", epochs=8, out=str(tmp_path / "run"), quiet=True,
                       overrides="model.width=16 data.context=24 train.optimizer=adamw train.lr=0.01")
    assert run.summary["task"] == "classify" and run.test_accuracy >= 0.9
    model = lamina.load(run.dir)
    assert model.model.arch["name"] == "textbag"
    assert model.predict(["good great fine lovely", "bad awful poor grim"]) == ["happy", "sad"]
    with pytest.raises(LaminaError, match="model 'textbag' takes no 'norm'"):
        lamina.train(str(tmp_path / "data"), model="textbag", epochs=1, out=str(tmp_path / "r2"), quiet=True,
                     overrides="model.norm=layer")
