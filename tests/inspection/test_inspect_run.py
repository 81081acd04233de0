"""inspect_run end to end on tiny runs trained with lamina.train, and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from torch import nn

import lamina
from lamina.errors import LaminaError
from lamina.inspection import GradientFlow, inspect_run
from lamina.inspection import run as run_module

pytest.importorskip("captum")

FILES = ["probes.json", "cka.json", "activations.json", "filters.json", "top_activations.json",
         "attributions.json", "confusion.json", "misclassified.json", "inspection.json"]
FAST = ["model.width=4", "train.device=cpu", "train.precision=fp32", "data.batch_size=32"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """200 images 1×12×12 of 3 classes (a bright band whose row says the class); a cnn with two
    seeds and an mlp, 2 epochs each."""
    root = tmp_path_factory.mktemp("inspect")
    rng = np.random.default_rng(0)
    y = np.arange(200) % 3
    x = rng.integers(0, 80, (200, 1, 12, 12)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 0, 4 * c : 4 * c + 4] += 150
    np.savez(root / "bands.npz", x=x, y=y)
    out = {}
    for name, model, seed in [("cnn", "cnn", 0), ("cnn_seed1", "cnn", 1), ("mlp", "mlp", 0)]:
        folder = root / name
        flow = [GradientFlow(folder / "inspection" / "gradients.jsonl", every=2)] if name == "cnn" else []
        lamina.train(str(root / "bands.npz"), model=model, epochs=2, seed=seed, quiet=True, out=str(folder),
                     overrides=FAST, callbacks=flow)
        out[name] = folder
    return out


@pytest.fixture(scope="module")
def inspected(runs: dict[str, Path]) -> Path:
    return inspect_run(runs["cnn"], max_examples=120, batch_size=32, compare_with=runs["cnn_seed1"])


def _read(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def test_every_file_exists_and_parses(inspected: Path, runs: dict[str, Path]):
    assert inspected == runs["cnn"] / "inspection"
    for name in FILES:
        _read(inspected, name)
    grads = [json.loads(line) for line in (inspected / "gradients.jsonl").read_text().splitlines()]
    assert grads and all(r["step"] % 2 == 0 for r in grads)  # written during training, kept by inspect_run


def test_probes_and_cka(inspected: Path):
    probes = _read(inspected, "probes.json")
    assert [p["depth"] for p in probes] == [1, 2, 3]
    assert [p["stage"] for p in probes] == ["stage1", "stage2", "stage3"]
    assert all(0 <= p["accuracy"] <= 1 for p in probes)
    assert probes[-1]["accuracy"] > 0.9  # the bands are easy
    cka = _read(inspected, "cka.json")
    assert cka["stages"] == ["stage1", "stage2", "stage3"]
    assert [cka["matrix"][i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert cka["matrix"] == [list(r) for r in zip(*cka["matrix"], strict=True)]
    assert cka["other_run"].endswith("cnn_seed1") and len(cka["same_stage"]) == 3
    assert all(0 < v <= 1 for v in cka["same_stage"])


def test_activations_filters_top(inspected: Path):
    acts = _read(inspected, "activations.json")
    assert list(acts) == ["stage1", "stage2", "stage3"]
    for s in acts.values():
        assert set(s) == {"mean", "std", "dead_fraction", "saturation"} and s["saturation"] is None  # relu
        assert s["mean"] >= 0 and 0 <= s["dead_fraction"] <= 1
    filters = _read(inspected, "filters.json")
    assert filters["shape"] == [4, 1, 3, 3] and np.array(filters["values"]).shape == (4, 1, 3, 3)
    top = _read(inspected, "top_activations.json")
    assert top["stage"] == "stage3" and list(top["channels"]) == [str(c) for c in range(8)]
    n_test = _read(inspected, "inspection.json")["examples"]["test"]
    assert all(len(v) == 8 and all(0 <= i < n_test for i in v) for v in top["channels"].values())


def test_attributions_confusion_misclassified(inspected: Path):
    att = _read(inspected, "attributions.json")
    assert len(att["indices"]) == len(att["labels"]) == len(att["predicted"]) == 8
    assert set(att["methods"]) == {"saliency", "integrated_gradients", "grad_cam"}
    for maps in att["methods"].values():
        a = np.array(maps)
        assert a.shape == (8, 12, 12) and np.isfinite(a).all()
    conf = _read(inspected, "confusion.json")
    assert conf["classes"] == ["0", "1", "2"] and np.array(conf["matrix"]).sum() == 39  # 20 % of 200, stratified
    wrong = _read(inspected, "misclassified.json")
    mistakes = np.array(conf["matrix"]).sum() - np.trace(np.array(conf["matrix"]))
    assert len(wrong) == min(run_module.MISCLASSIFIED, mistakes)  # the most confident ones, at most MISCLASSIFIED
    assert all(w["true"] != w["predicted"] for w in wrong)
    assert [w["confidence"] for w in wrong] == sorted((w["confidence"] for w in wrong), reverse=True)
    info = _read(inspected, "inspection.json")
    assert info["lamina"] == lamina.__version__ and info["max_examples"] == 120
    assert set(info["seconds"]) >= {"probes", "cka", "activations", "attributions", "confusion", "total"}
    assert info["peak_rss_mb"] > 0 and info["examples"] == {"train": 120, "test": 39}


def test_mlp_run_skips_filters_and_grad_cam(runs: dict[str, Path]):
    out = inspect_run(runs["mlp"], max_examples=60, batch_size=32)
    assert not (out / "filters.json").exists()
    assert set(_read(out, "attributions.json")["methods"]) == {"saliency", "integrated_gradients"}
    assert set(_read(out, "inspection.json")["skipped"]) == {"filters", "grad_cam"}
    assert [p["stage"] for p in _read(out, "probes.json")] == ["layer1", "layer2"]
    with pytest.raises(LaminaError, match="same architecture"):
        inspect_run(runs["mlp"], max_examples=60, compare_with=runs["cnn"])


def test_bad_run_folders(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(LaminaError, match="does not exist"):
        inspect_run(tmp_path / "nope")
    for missing in ["model.json", "config.yaml", "model.safetensors"]:
        broken = tmp_path / f"no-{missing}"
        shutil.copytree(runs["cnn"], broken, ignore=shutil.ignore_patterns("checkpoints", "inspection"))
        (broken / missing).unlink()
        with pytest.raises(LaminaError, match=f"missing {missing}") as err:
            inspect_run(broken)
        assert "\n" not in str(err.value)
    old = tmp_path / "old"
    shutil.copytree(runs["cnn"], old, ignore=shutil.ignore_patterns("checkpoints", "inspection"))
    meta = json.loads((old / "model.json").read_text())
    (old / "model.json").write_text(json.dumps({**meta, "format": "lamina-model/0"}))
    with pytest.raises(LaminaError, match="format 'lamina-model/0'"):
        inspect_run(old)
    no_stages = SimpleNamespace(model=nn.Linear(4, 3), preprocess=None, classes=["a", "b", "c"], device="cpu")
    monkeypatch.setattr(run_module, "load", lambda folder, device: no_stages)
    with pytest.raises(LaminaError, match=r"Linear has no stages\(\)"):
        inspect_run(runs["cnn"])


def test_predictions_confusion_and_most_confident_mistakes():
    import torch

    logits = torch.tensor([[5.0, 0, 0], [0, 3, 0], [0, 0, 1], [4, 0, 0], [0, 9, 0], [1, 1, 1.5]])
    labels = torch.tensor([0, 2, 2, 1, 0, 0])
    index = torch.tensor([10, 11, 12, 13, 14, 15])  # indices of the sample in the split
    predictor = SimpleNamespace(model=nn.Identity(), tta_flip=False)
    batches = [(logits[:4], labels[:4]), (logits[4:], labels[4:])]
    confusion, wrong = run_module._predictions(predictor, iter(batches), 3, index)
    assert confusion.tolist() == [[1, 1, 1], [1, 0, 0], [0, 1, 1]]
    assert [(w["index"], w["true"], w["predicted"]) for w in wrong] == [(14, 0, 1), (13, 1, 0), (11, 2, 1), (15, 0, 2)]
    assert wrong[0]["confidence"] == pytest.approx(float(torch.softmax(logits[4], 0)[1]), abs=1e-6)


def test_json_is_strict(tmp_path: Path):
    run_module._write(tmp_path / "a.json", {"x": [float("nan"), 1.5, float("inf")], 3: {"y": -float("inf")}})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [None, 1.5, None], "3": {"y": None}}


def test_pixels_travel_with_the_indices(inspected: Path, runs: dict[str, Path]):
    """The report cannot read the dataset: shown examples carry their raw pixels, scaled to [0, 1]."""
    import numpy as np

    from lamina.config import load_config
    from lamina.data.base import build_dataset

    cfg = load_config(inspected.parent / "config.yaml")
    test = build_dataset(cfg.data, seed=cfg.train.seed).test
    top = json.loads((inspected / "top_activations.json").read_text())
    shown = {i for idx in top["channels"].values() for i in idx}
    assert {int(k) for k in top["images"]} == shown
    i = next(iter(shown))
    assert np.allclose(top["images"][str(i)], test.x[i].numpy() / 255.0, atol=1e-3)
    attr = json.loads((inspected / "attributions.json").read_text())
    assert np.asarray(attr["images"]).shape == (len(attr["indices"]), *test.x.shape[1:])
    for w in json.loads((inspected / "misclassified.json").read_text()):
        assert np.allclose(w["image"], test.x[w["index"]].numpy() / 255.0, atol=1e-3)
