"""Named recipes (precedence, the CUDA overlay, errors, the CLI flag) and test-time flip augmentation."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
from torch import nn

import lamina
from lamina import recipes
from lamina.artifacts import Classifier as Predictor
from lamina.cli.main import main
from lamina.config import RunConfig, load_config
from lamina.data.base import Preprocess
from lamina.errors import LaminaError
from lamina.session import resolve_config, validate
from lamina.tasks.classify import evaluate, flip_tta_log_probs
from lamina.training.engine import Engine


# -- recipes ---------------------------------------------------------------------------------------
def test_shipped_recipes_resolve_on_every_device():
    assert {"fast", "fast-long", "demo"} <= set(recipes.names())
    for name in recipes.names():
        for device in ("cpu", "cuda"):
            cfg = resolve_config("digits", recipe=name, device=device)
            assert cfg.data.name == "digits" and cfg.train.device == device
        validate(resolve_config("digits", recipe=name, device="cpu"))


@pytest.mark.parametrize("name", recipes.names())
def test_every_numeric_hyperparameter_carries_a_unit_comment(name):
    for line in (recipes.RECIPE_DIR / f"{name}.yaml").read_text().splitlines():
        m = re.match(r"\s*(\w+):\s*([-+0-9.e]+)\s*(#.*)?$", line)
        if m:
            assert m.group(3), f"{name}.yaml: '{line.strip()}' has no comment with its unit"


def test_precedence_recipe_then_config_file_then_keywords_then_overrides(tmp_path):
    base = resolve_config("digits", recipe="fast", device="cpu")
    assert (base.data.batch_size, base.train.lr, base.train.epochs, base.model.width) == (256, 0.2, 6, 32)
    assert base.train.tta_flip and base.data.val_fraction == 0.0 and not base.train.compile
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  width: 16\ntrain:\n  lr: 0.3\n  epochs: 5\n  tta_flip: false\ndata:\n")
    cfg = resolve_config("digits", recipe="fast", config=f, device="cpu", epochs=3, lr=0.4,
                         overrides=["train.lr=0.5"])
    assert cfg.model.width == 16  # the file over the recipe
    assert cfg.train.tta_flip is False  # a file setting a key to its default still beats the recipe
    assert cfg.train.epochs == 3  # a keyword over the file
    assert cfg.train.lr == 0.5  # an override over the keyword
    assert cfg.data.batch_size == 256 and cfg.data.val_fraction == 0.0  # the recipe over the defaults (`data:` is empty)
    assert cfg.train.label_smoothing == 0.1 and cfg.model.name == "cnn"


def test_a_runconfig_object_overrides_the_recipe_where_it_differs_from_the_defaults():
    base = RunConfig()
    cfg = resolve_config("digits", recipe="fast", device="cpu", config=replace(base, train=replace(base.train, epochs=2)))
    assert cfg.train.epochs == 2 and cfg.data.batch_size == 256


def test_cuda_overlay_applies_only_when_the_device_is_cuda(monkeypatch):
    cpu, cuda = recipes.recipe_dict("fast", "cpu"), recipes.recipe_dict("fast", "cuda")
    assert cpu["train"]["compile"] is False and cuda["train"]["compile"] is True
    assert cuda["data"]["batch_size"] > cpu["data"]["batch_size"]
    assert cuda["train"]["lr"] == pytest.approx(cpu["train"]["lr"] * cuda["data"]["batch_size"] / cpu["data"]["batch_size"])
    assert cuda["train"]["tta_flip"] is True  # the base is kept under the overlay
    assert recipes.recipe_dict("fast-long", "cuda")["train"]["epochs"] > cuda["train"]["epochs"]
    # resolved from the device the rest of the config resolves to (no GPU needed: nothing is validated)
    for device in ("cuda", "cuda:1"):
        assert resolve_config("digits", recipe="fast", device=device).train.compile is True
    assert resolve_config("digits", recipe="fast", overrides=["train.device=cuda"]).train.compile is True
    assert resolve_config("digits", recipe="fast", device="cpu").train.compile is False
    assert resolve_config("digits", recipe="fast", device="cuda", epochs=2).train.epochs == 2  # keywords beat it
    assert resolve_config("digits", recipe="fast", device="cuda", overrides=["train.compile=false"]).train.compile is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert recipes.device_kind("auto") == "cuda"
    assert resolve_config("digits", recipe="fast").train.compile is True


def test_unknown_recipe_is_an_error_with_a_suggestion(capsys):
    with pytest.raises(LaminaError, match="unknown recipe 'fsat': did you mean 'fast'"):
        resolve_config("digits", recipe="fsat")
    with pytest.raises(LaminaError, match="unknown recipe"):
        recipes.read("../recipes/demo")
    assert main(["train", "digits", "--recipe", "fastest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown recipe 'fastest'") and "\n" not in err


def test_cli_trains_digits_with_the_fast_recipe(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "digits", "--recipe", "fast", "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    cfg = load_config(out / "config.yaml")
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.model.name, cfg.train.compile) == (1, 256, "cnn", False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["tta_flip"] is False  # digits: a mirror image is another digit
    assert json.loads((out / "model.json").read_text())["tta_flip"] is False


def test_tta_flip_is_saved_and_used_by_load_and_evaluate(tmp_path):
    run = lamina.train("digits", recipe="fast", epochs=2, device="cpu", out=str(tmp_path / "r"), quiet=True,
                       overrides=["data.flip=true", "data.batch_size=64"])
    assert run.summary["tta_flip"] is True
    model = lamina.load(run.dir)
    assert model.tta_flip is True
    assert lamina.evaluate(run.dir)["accuracy"] == pytest.approx(run.test_accuracy)
    meta = json.loads((run.dir / "model.json").read_text())
    (run.dir / "model.json").write_text(json.dumps({**meta, "tta_flip": "yes"}))
    with pytest.raises(LaminaError, match="tta_flip"):
        lamina.load(run.dir)


# -- test-time flips -------------------------------------------------------------------------------
def _batches(n: int = 96, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def _net(symmetric: bool) -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    if symmetric:  # a kernel symmetric left-right, zero padding and a global mean: exactly flip-invariant
        with torch.no_grad():
            net[0].weight.copy_((net[0].weight + net[0].weight.flip(-1)) / 2)
    return net


def test_tta_flip_changes_nothing_for_a_flip_invariant_model():
    net, engine, batches = _net(symmetric=True), Engine(torch.device("cpu")), _batches()
    x = torch.cat([b[0] for b in batches])
    assert torch.allclose(net(x), net(x.flip(-1)), atol=1e-6)
    plain = evaluate(net, batches, engine=engine, num_classes=3)
    tta = evaluate(net, batches, engine=engine, num_classes=3, tta_flip=True)
    assert tta["accuracy"] == plain["accuracy"] and tta["confusion"] == plain["confusion"]
    assert tta["loss"] == pytest.approx(plain["loss"], abs=1e-5)


def test_tta_flip_averages_the_probabilities_of_x_and_its_mirror_image():
    net, engine, batches = _net(symmetric=False), Engine(torch.device("cpu")), _batches()
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        manual = (torch.softmax(net(x), 1) + torch.softmax(net(x.flip(-1)), 1)) / 2
        assert not torch.allclose(manual, torch.softmax(net(x), 1), atol=1e-3)  # the model is not flip-invariant
        assert torch.allclose(flip_tta_log_probs(net, x).exp(), manual, atol=1e-6)
    m = evaluate(net, batches, engine=engine, num_classes=3, tta_flip=True)
    assert m["accuracy"] == pytest.approx(float((manual.argmax(1) == y).float().mean()))
    assert m["loss"] == pytest.approx(float(-manual[torch.arange(len(y)), y].log().mean()), rel=1e-5)
    net.input_shape, net.num_classes = (1, 8, 8), 3  # what the Classifier reads of a lamina Model
    meta = {"classes": ["a", "b", "c"], "modality": "image", "preprocess": Preprocess().to_dict()}
    predictor = Predictor(net, {**meta, "tta_flip": True})
    assert torch.allclose(predictor.predict_proba(x), manual, atol=1e-6)
    plain = Predictor(net, {**meta, "tta_flip": False})
    assert torch.allclose(plain.predict_proba(x), torch.softmax(net(x), 1).detach(), atol=1e-6)


@pytest.mark.parametrize("modality,flip,expected", [("image", True, True), ("image", False, False),
                                                    ("vector", True, False), ("signal", True, False)])
def test_tta_flip_is_read_from_the_data_never_from_a_batch_rank(modality, flip, expected):
    from lamina.config import RunConfig, TrainConfig
    from lamina.data.base import Dataset, Split
    from lamina.tasks.classify import Classify

    ds = Dataset("d", ["a", "b"], Split(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])), modality=modality,
                 flip=flip)
    task = Classify.from_data(ds, RunConfig(train=TrainConfig(tta_flip=True)))
    assert task.tta_flip is expected


# -- GPU -------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fast_recipe_compiles_and_reaches_91_percent_in_seconds_on_cuda(tmp_path):
    from lamina.config import DataConfig
    from lamina.data.base import build_dataset

    try:
        build_dataset(DataConfig(name="fashion-mnist"))
    except LaminaError:
        pytest.skip("Fashion-MNIST is not on this machine (lamina data fetch fashion-mnist)")
    # The first run compiles; torch.compile caches the graphs per process, so the second is timed without it.
    lamina.train("fashion-mnist", recipe="fast", device="cuda", epochs=1, out=str(tmp_path / "warm"), quiet=True)
    run = lamina.train("fashion-mnist", recipe="fast", device="cuda", out=str(tmp_path / "r"), quiet=True)
    cfg = load_config(run.dir / "config.yaml")
    assert cfg.train.compile and run.summary["precision"] == "bf16" and run.summary["tta_flip"]
    assert run.test_accuracy >= 0.91
    assert run.summary["train_seconds"] <= 15.0
