"""Regression: metrics against numpy on known predictions, standardised targets, the task harness
(a step lowers the loss, sums give the mean), describe() as the Regressor reads it, and an end-to-end
run on a CSV table whose saved model predicts raw rows exactly as the evaluation scored them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lamina.errors import LaminaError
from lamina.tasks import TASKS
from lamina.tasks.base import add_sums, to_floats
from lamina.tasks.regress import Regress, regression_metrics
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer


def reference(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    err = pred - y
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))),
            "r2": float(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2))}


def sums_of(task: Regress, pred: np.ndarray, y: np.ndarray, batch: int = 7) -> dict[str, float]:
    total: dict = {}
    z = torch.tensor((pred - task.mean) / task.std, dtype=torch.float32)
    t = torch.tensor(y, dtype=torch.float32)
    for i in range(0, len(y), batch):
        out, tgt = z[i : i + batch], t[i : i + batch]
        add_sums(total, task.sums(out, tgt, task.loss(out, tgt)))
    return to_floats(total)


def test_registered_with_rmse_as_the_headline() -> None:
    assert TASKS.get("regress") is Regress
    assert (Regress.headline, Regress.higher_is_better) == ("rmse", False)


@pytest.mark.parametrize("offset", [0.0, 1e4])  # large targets: R² must not lose its digits
def test_metrics_equal_numpy_on_known_predictions(offset: float) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50) * 3 + offset
    pred = y + rng.normal(size=50) * 0.7
    task = Regress(float(y[:30].mean()), float(y[:30].std()))  # statistics of a "training" part
    m = regression_metrics(sums_of(task, pred, y))
    ref = reference(pred, y)
    for k in ("rmse", "mae", "r2"):
        assert m[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-6), k
    z = (y - task.mean) / task.std
    zp = (pred - task.mean) / task.std
    assert m["loss"] == pytest.approx(float(np.mean((zp - z) ** 2)), rel=1e-4)


def test_closed_forms() -> None:
    task = Regress(2.0, 1.0)
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(sums_of(task, y.copy(), y))
    assert (m["rmse"], m["mae"], m["r2"]) == (0.0, 0.0, 1.0)
    m = regression_metrics(sums_of(task, np.full(4, y.mean()), y))  # predicting the mean: R² = 0
    assert m["r2"] == pytest.approx(0.0, abs=1e-9) and m["rmse"] == pytest.approx(math.sqrt(1.25))
    assert regression_metrics(sums_of(task, np.array([5.0, 5.0]), np.array([5.0, 5.0])))["r2"] == 0.0


def test_loss_is_mse_on_standardised_targets_or_huber() -> None:
    task = Regress(10.0, 2.0)
    out, y = torch.tensor([0.0, 1.0]), torch.tensor([10.0, 16.0])
    assert task.loss(out, y).item() == pytest.approx((0 + 4) / 2)
    huber = Regress(10.0, 2.0, loss="huber")
    assert huber.loss(out, y).item() == pytest.approx((0 + (2 - 0.5)) / 2)
    with pytest.raises(LaminaError, match="unknown regression loss 'l1'"):
        Regress(0.0, 1.0, loss="l1")


def test_describe_is_what_the_regressor_reads() -> None:
    assert Regress(3.5, 0.25, target="price").describe() == {
        "task": "regress", "target": "price", "target_mean": 3.5, "target_std": 0.25}
    assert Regress(1.0, 0.0).std == 1.0  # one target value: predictions are that value


def test_a_step_lowers_the_loss_and_sums_give_the_mean() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) * 10 + 100
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]
    task, model = Regress(float(y.mean()), float(y.std())), nn.Linear(4, 1)
    trainer = Trainer(model, engine=Engine.create("cpu", "fp32"), task=task,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = task.evaluate(model, batches)
    trainer.fit(_Loader(batches), epochs=20)
    after = task.evaluate(model, batches)
    assert after["rmse"] < before["rmse"] / 5 and after["r2"] > 0.95 and after["examples"] == 48
    with torch.no_grad():
        pred = torch.cat([task.forward(model, b) for b, _ in batches]) * task.std + task.mean
    assert after["rmse"] == pytest.approx(float((pred - y).square().mean().sqrt()), rel=1e-3)


class _Loader(list):
    batch_size = 16


# -- end to end ----------------------------------------------------------------------------------------
def test_train_a_regression_table_then_predict_raw_rows(tmp_path: Path) -> None:
    import lamina
    from lamina.artifacts import Regressor
    from lamina.config import load_config
    from lamina.data.base import build_dataset
    from lamina.data.tabular import make_synthetic_table, write_predictions
    from lamina.session import build_task

    path = make_synthetic_table(tmp_path / "r.csv", 240, seed=3, task="regress")
    run = lamina.train(str(path), epochs=3, quiet=True, out=tmp_path / "run",
                       overrides=["train.threads=1", "train.gradient_flow_every=0", 'energy.meter="off"'])
    s = run.summary
    assert s["task"] == "regress" and list(s)[1] == "test_rmse" and s["test_examples"] == 48
    assert {"test_mae", "test_r2", "test_loss"} <= set(s) and s["target"] == "target"
    model = lamina.load(run.dir)
    assert isinstance(model, Regressor) and model.target == "target"
    c = load_config(run.dir / "config.yaml")
    ds = build_dataset(c.data, seed=c.train.seed)
    task = build_task(ds, c)
    loader = task.eval_loader(ds.test, ds, c.data, device=torch.device("cpu"))
    with torch.no_grad():
        evaluated = torch.cat([task.forward(model.model, x) for x, _ in loader]) * task.std + task.mean
    raw, _ = model.read(path)
    index = {tuple(r): i for i, r in enumerate(raw.tolist())}
    rows = [index[tuple(r)] for r in ds.test.x.tolist()]
    values = model.predict_values(path)[rows]
    assert torch.equal(values, evaluated)
    rmse = float((values.double() - ds.test.y.double()).square().mean().sqrt())
    assert rmse == pytest.approx(s["test_rmse"], rel=1e-5)
    out = write_predictions(path, tmp_path / "p.csv", model.predict(path), "target")
    with out.open() as f:
        header = next(csv.reader(f))
    assert header[-2:] == ["target", "target_predicted"]
