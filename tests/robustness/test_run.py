"""``attack_run`` end to end on tiny run folders: robustness.json, examples.npz, one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import lamina
from lamina.errors import LaminaError
from lamina.robustness.run import CHECK_SUBSET, SAVED_EXAMPLES, attack_run

TINY = ["model.width=32", "model.depth=1", "data.batch_size=32", "data.val_fraction=0", "data.translate=0", "train.lr=0.1",
        "train.precision=fp32"]  # bf16 (auto on AVX512-BF16 CPUs) trains the toy to a few points less


def _quadrants(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 classes of grey 8x8 uint8 images: class c has quadrant c brighter."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    x = g.integers(60, 100, (n, 1, 8, 8))
    for c in range(3):
        r, col = divmod(c, 2)
        x[y == c, :, 4 * r: 4 * r + 4, 4 * col: 4 * col + 4] += 60
    return x.astype(np.uint8), y.astype(np.int64)


def _train(tmp_path_factory, name: str, npz: dict[str, np.ndarray], epochs: int = 5):
    folder = tmp_path_factory.mktemp(name)
    np.savez(folder / "data.npz", **npz)
    out = folder / "run"
    lamina.train(str(folder / "data.npz"), model="mlp", epochs=epochs, out=out, quiet=True, seed=0,
                 overrides=TINY)
    return out


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    x, y = _quadrants(320, 0)
    xt, yt = _quadrants(96, 1)
    return _train(tmp_path_factory, "images", {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt})


def test_attack_run_writes_robustness_json_and_examples(image_run):
    lines: list[str] = []
    out = attack_run(image_run, eps=(0.1, 0.05), steps=4, n=80, progress=lines.append)
    saved = json.loads((image_run / "robustness.json").read_text())
    assert saved == json.loads(json.dumps(out))
    for key in ("clean_accuracy", "split", "examples", "norm", "tta_flip", "results", "checks", "device", "torch",
                "lamina"):
        assert key in saved, key
    assert saved["split"] == "test" and saved["examples"] == 80 and saved["norm"] == "linf"
    assert saved["clean_accuracy"] > 0.8  # the toy is easy: the attack has something to break
    roles = [(r["role"], r["method"], r["eps"]) for r in saved["results"]]
    assert roles == [("main", "pgd", 0.05), ("fgsm", "fgsm", 0.05), ("main", "pgd", 0.1), ("fgsm", "fgsm", 0.1),
                     ("large-eps", "pgd", 1.0), ("more-steps", "pgd", 0.1), ("more-restarts", "pgd", 0.1)]
    for r in saved["results"]:
        assert {"method", "norm", "eps", "steps", "restarts", "step_size", "robust_accuracy", "seconds",
                "examples"} <= set(r)
        assert 0.0 <= r["robust_accuracy"] <= saved["clean_accuracy"] + 0.05 and r["seconds"] > 0
    assert saved["results"][0]["steps"] == 4 and saved["results"][0]["step_size"] == 2.5 / 4
    assert saved["results"][5]["steps"] == 8 and saved["results"][6]["restarts"] == 2
    assert saved["results"][5]["examples"] == min(80, CHECK_SUBSET)
    assert all(c["passed"] for c in saved["checks"].values()), saved["checks"]
    assert any("examples" in line for line in lines)

    with np.load(image_run / "robustness" / "examples.npz", allow_pickle=False) as z:
        k = SAVED_EXAMPLES
        assert z["original"].shape == (k, 1, 8, 8) and z["adversarial"].shape == (2, k, 1, 8, 8)
        assert z["eps"].tolist() == [0.05, 0.1] and z["label"].shape == z["pred_before"].shape == (k,)
        assert z["pred_after"].shape == (2, k) and z["classes"].tolist() == ["0", "1", "2"]
        linf = np.abs(z["adversarial"] - z["original"][None]).reshape(2, k, -1).max(-1)
        assert (linf <= z["eps"][:, None] + 1e-6).all()
        assert z["adversarial"].min() >= 0 and z["adversarial"].max() <= 1
        ds = lamina.data.build_dataset(lamina.config.load_config(image_run / "config.yaml").data, seed=0)
        assert np.allclose(z["original"], ds.test.x[:k].float().numpy() / 255)  # raw units: pixels in [0, 1]

    from lamina.reporting.html import RunFolder
    from lamina.reporting.robustness import section_robustness

    section = section_robustness(RunFolder(image_run))  # the report reads what attack_run wrote
    assert section is not None and section.body.count("data:image/png") == 2 and "FAILED" not in section.body


def test_fgsm_and_l2_runs(image_run):
    out = attack_run(image_run, method="fgsm", eps=(0.5,), norm="l2", steps=3, n=40)
    assert [r["role"] for r in out["results"]][:2] == ["main", "pgd"]
    large = next(r for r in out["results"] if r["role"] == "large-eps")
    assert large["eps"] == pytest.approx(8.0)  # the diameter of [0, 1]^64
    assert out["norm"] == "l2"


def test_the_attacked_model_is_the_saved_classifier_with_its_preprocessing(image_run):
    from lamina.robustness.attacks import RawModel, accuracy

    clf = lamina.load(image_run)
    ds = lamina.data.build_dataset(lamina.config.load_config(image_run / "config.yaml").data, seed=0)
    raw = ds.test.x.float() / clf.preprocess.scale
    expected = clf.predict_proba(ds.test.x).argmax(1)
    assert torch.equal(RawModel(clf.model, clf.preprocess)(raw).argmax(1), expected)
    out = attack_run(image_run, eps=(0.05,), steps=1)
    assert out["examples"] == len(ds.test)
    assert out["clean_accuracy"] == pytest.approx(accuracy(RawModel(clf.model, clf.preprocess), (raw, ds.test.y)))


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    g = np.random.default_rng(0)
    x = g.normal(size=(200, 6)).astype(np.float32) * 2.0
    y = (x[:, 0] > 0).astype(np.int64)
    return _train(tmp_path_factory, "vectors", {"x": x, "y": y}, epochs=2)


def test_vector_runs_are_attacked_inside_the_range_of_their_data(vector_run):
    out = attack_run(vector_run, eps=(0.2,), steps=2, n=30)
    lo, hi = out["bounds"]
    assert lo < -2 and hi > 2  # the data's min and max, not [0, 1]
    with np.load(vector_run / "robustness" / "examples.npz", allow_pickle=False) as z:
        assert z["original"].shape == (8, 6) and z["adversarial"].min() >= lo and z["adversarial"].max() <= hi


def test_bad_input_is_a_one_line_error(image_run, tmp_path):
    cases = [
        (dict(eps=(0.0,)), "eps must be positive"),
        (dict(eps=(-0.1,)), "eps must be positive"),
        (dict(eps=(1.5,)), "larger than the whole input range under linf"),
        (dict(eps=(9.0,), norm="l2"), "larger than the whole input range under l2"),
        (dict(steps=0), "steps must be at least 1"),
        (dict(restarts=0), "restarts must be at least 1"),
        (dict(n=0), "n must be at least 1"),
        (dict(method="pgdd"), "did you mean 'pgd'"),
        (dict(norm="l3"), "unknown norm 'l3'"),
        (dict(split="vall"), "split 'vall' does not exist"),
    ]
    for kw, phrase in cases:
        with pytest.raises(LaminaError, match=phrase) as e:
            attack_run(image_run, **{"steps": 1, "n": 8, **kw})
        assert "\n" not in str(e.value)
    with pytest.raises(LaminaError, match="does not exist"):
        attack_run(tmp_path / "nowhere")
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(LaminaError, match=r"no model\.json"):
        attack_run(empty)
    broken = tmp_path / "broken"
    shutil.copytree(image_run, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(LaminaError, match="did not finish"):
        attack_run(broken)


def test_a_language_model_cannot_be_attacked(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("It is a truth universally acknowledged, that a single man must be in want of a wife.\n" * 8)
    out = tmp_path / "lm"
    lamina.train(str(book), epochs=1, out=out, quiet=True,
                 overrides=["data.context=8", "model.width=8", "model.depth=1", "data.batch_size=8"])
    with pytest.raises(LaminaError, match="attacks need a classifier with continuous inputs"):
        attack_run(out)
