"""The Trainer against a hand-written PyTorch loop, plus EMA, metrics and callbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lamina.data.base import Preprocess, Split
from lamina.data.gpu_loader import DeviceLoader
from lamina.errors import LaminaError
from lamina.tasks.classify import ClassificationMetrics, Classify
from lamina.training.callbacks import Callback, CancelFit, EarlyStopping
from lamina.training.engine import Engine, resolve_device, rng_state, set_rng_state
from lamina.training.schedules import create_scheduler
from lamina.training.trainer import Trainer


def _data(n=64, d=5, k=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return Split(x, y.clamp(max=k - 1))


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))


def _loader(split, shuffle=True):
    return DeviceLoader(split, batch_size=16, device=torch.device("cpu"), preprocess=Preprocess(), shuffle=shuffle, seed=0)


def test_trainer_equals_hand_written_loop():
    split = _data()
    engine = Engine.create("cpu", "fp32")
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sched = create_scheduler("onecycle", opt, total_steps=3 * 4, warmup_fraction=0.25)
    trainer = Trainer(model, engine=engine, optimizer=opt, scheduler=sched, task=Classify(3, label_smoothing=0.1),
                      grad_clip=1.0)
    trainer.fit(_loader(split), epochs=3)

    ref = _model()
    ropt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    rsched = create_scheduler("onecycle", ropt, total_steps=3 * 4, warmup_fraction=0.25)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    loader = _loader(split)
    for _ in range(3):
        for x, y in loader:
            loss = loss_fn(ref(x), y)
            ropt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
            ropt.step()
            rsched.step()
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    assert trainer.step == 12 and trainer.epoch == 3


def test_ema_matches_manual_average():
    split = _data()
    model = _model()
    init = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snapshots = []

    class Record(Callback):
        def batch_end(self, trainer):
            snapshots.append([p.detach().clone() for p in trainer.module.parameters()])

    t = Trainer(model, engine=Engine.create("cpu"), optimizer=opt, task=Classify(3), ema_decay=0.9, callbacks=[Record()])
    t.fit(_loader(split), epochs=1)
    ema = init
    for i, snap in enumerate(snapshots):
        # AveragedModel copies the first update, then averages: e = d*e + (1-d)*p
        ema = snap if i == 0 else [0.9 * e + 0.1 * s for e, s in zip(ema, snap, strict=True)]
    for a, b in zip(t.ema.module.parameters(), ema, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_metrics_against_manual_count():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 1, 1])
    m = ClassificationMetrics(2)
    m.update(logits, y, nn.functional.cross_entropy(logits, y, reduction="sum"))
    out = m.compute()
    assert out["confusion"] == [[1, 1], [1, 1]] and out["accuracy"] == 0.5
    assert out["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)))


def test_early_stopping_and_cancel():
    split = _data()
    model = _model()
    t = Trainer(model, engine=Engine.create("cpu"), optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                task=Classify(3), callbacks=[EarlyStopping(patience=2)])
    t.fit(_loader(split), _loader(split, shuffle=False), epochs=50)
    assert t.epoch == 3 and "early stopping" in t.stop_reason  # lr 0: never improves after epoch 1

    class Stop(Callback):
        def batch_end(self, trainer):
            if trainer.step == 2:
                raise CancelFit("enough")

    t2 = Trainer(_model(), engine=Engine.create("cpu"), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                 task=Classify(3), callbacks=[Stop()])
    t2.fit(_loader(split), epochs=5)
    assert t2.step == 2 and t2.stop_reason == "enough"


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_device_errors():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(LaminaError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(LaminaError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(LaminaError, match="precision"):
        Engine.create("cpu", "fp8")


def test_time_of_an_epoch_cut_short_is_counted():
    import time

    class SlowStop(Callback):
        def batch_end(self, trainer):
            time.sleep(0.05)
            if trainer.step == 2:
                raise CancelFit("cut")

    model = _model()
    t = Trainer(model, engine=Engine.create("cpu"), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                task=Classify(3), callbacks=[SlowStop()])
    t.fit(_loader(_data()), epochs=3)
    assert t.step == 2 and t.train_seconds >= 0.1


def test_tensorboard_event_files_hold_the_epoch_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lamina.training.callbacks import TensorBoard

    model = _model()
    t = Trainer(model, engine=Engine.create("cpu"), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                task=Classify(3), callbacks=[TensorBoard(tmp_path / "tb", every=2)])
    t.fit(_loader(_data()), _loader(_data(), shuffle=False), epochs=2)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"step/loss", "step/lr", "epoch/train_loss", "epoch/val_accuracy"} <= set(tags)
    assert [e.step for e in events.Scalars("epoch/train_loss")] == [1, 2]
    assert events.Scalars("step/loss")[0].step == 2


def test_nan_guard_finite_check():
    from lamina.training.nan_guard import NanGuard

    m = nn.Linear(3, 2)
    m.weight.grad, m.bias.grad = torch.full((2, 3), 1e38), torch.ones(2)  # huge but finite: no overflow
    assert NanGuard.finite(torch.tensor(1.0), m)
    for bad in (float("nan"), float("inf"), -float("inf")):
        m.bias.grad[0] = bad
        assert not NanGuard.finite(torch.tensor(1.0), m)
    m.bias.grad[0] = 0.0
    assert not NanGuard.finite(torch.tensor(float("nan")), m)


def test_a_limit_reached_at_an_epoch_end_is_checkpointed_with_the_state_that_reached_it(tmp_path):
    """The epoch's checkpoint is taken first (same step); the callback that then stops the run has
    moved on (an energy meter's last read), and the final checkpoint must hold that, not the earlier."""
    from lamina.training import checkpoint
    from lamina.training.callbacks import Checkpoint

    class Budget(Callback):
        order = 85  # after the checkpoint callback, like the energy meter

        def __init__(self) -> None:
            self.spent = 0

        def epoch_end(self, trainer):
            self.spent += 1
            if self.spent == 2:
                raise CancelFit("budget reached")

        def state_dict(self):
            return {"spent": self.spent}

        def load_state_dict(self, state):
            self.spent = state["spent"]

    model = _model()
    t = Trainer(model, engine=Engine.create("cpu"), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                task=Classify(3), callbacks=[Checkpoint(tmp_path, {}), Budget()])
    t.fit(_loader(_data()), epochs=5)
    state, _ = checkpoint.latest(tmp_path)
    assert t.stop_reason == "budget reached" and state["counters"]["step"] == t.step
    assert state["callbacks"]["Budget"]["spent"] == 2
