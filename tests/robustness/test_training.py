"""AdversarialTraining: the batches it returns, what the Trainer logs, and that it buys robustness."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch import nn

from lamina.config import AdversarialConfig
from lamina.data.base import Preprocess, Split
from lamina.data.gpu_loader import DeviceLoader
from lamina.errors import LaminaError
from lamina.robustness.attacks import RawModel, robust_accuracy
from lamina.robustness.training import AdversarialTraining, check_config
from lamina.tasks.classify import Classify
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer

PRE = Preprocess(mean=(0.5,), std=(0.25,))
EPS = 0.1


def _toy(n: int, seed: int) -> Split:
    """Binary vectors in [0, 1]^20: feature 0 is robust (margin 0.3) but agrees with the label only
    85 % of the time; features 1..19 always agree, with a margin of 0.05 < eps (not robust)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    s = (2 * y - 1).float()
    flip = torch.where(torch.rand(n, generator=g) < 0.15, -1.0, 1.0)
    x = 0.5 + 0.05 * s[:, None] + 0.02 * (2 * torch.rand(n, 20, generator=g) - 1)
    x[:, 0] = 0.5 + 0.3 * s * flip
    return Split(x.clamp(0, 1), y)


def _loader(split: Split, shuffle: bool = True) -> DeviceLoader:
    return DeviceLoader(split, batch_size=32, device=torch.device("cpu"), preprocess=PRE, shuffle=shuffle, seed=0)


def _fit(task, *, epochs=6, lr=0.05, val=None, precision="fp32", linear=False):
    torch.manual_seed(0)
    model = nn.Linear(20, 2) if linear else nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=lr) if lr > 0 else torch.optim.SGD(model.parameters(), lr=0.0)
    trainer = Trainer(model, engine=Engine.create("cpu", precision), optimizer=opt, task=task)
    trainer.fit(_loader(_toy(256, 0)), val, epochs=epochs)
    return trainer


def _robust(model) -> float:
    test = _toy(512, 1)
    return robust_accuracy(RawModel(model.eval(), PRE), (test.x, test.y), eps=EPS, steps=20, lower=0.0, upper=1.0,
                           generator=torch.Generator().manual_seed(0))


def _adv(method="pgd", **kw) -> AdversarialTraining:
    return AdversarialTraining(Classify(2), AdversarialConfig(method=method, eps=EPS, steps=5, **kw), PRE)


# FGSM-RS on a linear model: on the ReLU network this toy makes it overfit catastrophically (robust
# to its own single step, not to PGD), as Wong et al. warn for large steps; PGD training does not.
@pytest.mark.parametrize("method,linear", [("pgd", False), ("fgsm-rs", True)])
def test_adversarial_training_buys_robustness_that_clean_training_lacks(method, linear):
    clean = _fit(Classify(2), linear=linear)
    adv = _fit(_adv(method), linear=linear)
    r_clean, r_adv = _robust(clean.module), _robust(adv.module)
    # clean training leans on the 19 fragile features and breaks; adversarial training learns feature 0
    assert r_clean < 0.5 and r_adv > 0.75, (r_clean, r_adv)


def test_the_training_loss_is_the_loss_of_perturbed_inputs():
    # lr 0: the model never changes, so any difference in the logged loss is the inputs'
    clean, adv = _fit(Classify(2), epochs=1, lr=0), _fit(_adv(), epochs=1, lr=0)
    assert set(adv.last_epoch) >= {"train_loss", "train_robust_accuracy"} and "train_accuracy" not in adv.last_epoch
    assert adv.last_epoch["train_loss"] > clean.last_epoch["train_loss"] + 0.05
    assert adv.last_epoch["train_robust_accuracy"] < clean.last_epoch["train_accuracy"]


def test_each_epoch_logs_clean_and_robust_validation_accuracy_and_the_summary_has_both():
    task = _adv(eval_examples=100, eval_steps=3)
    val = _loader(_toy(150, 2), shuffle=False)
    trainer = _fit(task, epochs=2, val=val, precision="bf16")  # the attack under the engine's bf16 autocast
    record = trainer.last_epoch
    assert {"val_accuracy", "val_robust_accuracy", "val_loss", "train_robust_accuracy"} <= set(record)
    assert "val_robust_examples" not in record
    assert 0.0 <= record["val_robust_accuracy"] <= 1.0
    m = task.evaluate(trainer.module, val)
    assert m["robust_examples"] == 100 and m["examples"] == 150 and len(m["confusion"]) == 2
    final = task.final_metrics(trainer.module, {"test": val})
    assert list(final)[:3] == ["test_accuracy", "test_robust_accuracy", "test_robust_examples"]
    assert final["adversarial"] == asdict(task.cfg) and "confusion" in final
    assert final["test_robust_accuracy"] == pytest.approx(m["robust_accuracy"])  # seeded: the same PGD each time
    assert task.describe() == {"task": "classify", "classes": ["0", "1"], "tta_flip": False,
                               "adversarial": asdict(task.cfg)}
    assert task.name == "classify" and trainer.module.training  # evaluation restored train mode


@pytest.mark.parametrize("method", ["pgd", "fgsm-rs"])
def test_train_inputs_are_normalised_adversarial_batches_in_the_ball(method):
    pre = Preprocess(kind="image", scale=255.0, mean=(0.4,), std=(0.3,), channels=1, size=(6, 6))
    task = AdversarialTraining(Classify(3), AdversarialConfig(method=method, eps=EPS, steps=3), pre)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(144, 3)).train()
    raw = torch.randint(0, 256, (16, 1, 6, 6), dtype=torch.uint8)
    x = pre.apply(raw).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (16,))
    out = task.train_inputs(model, x, y)
    assert out.shape == x.shape and out.dtype == x.dtype and not out.requires_grad
    assert out.is_contiguous(memory_format=torch.channels_last)
    u, u0 = out * 0.3 + 0.4, raw.float() / 255
    assert (u - u0).abs().max() <= EPS + 1e-5 and (u - u0).abs().max() > EPS / 2
    assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6
    assert model.training and all(p.grad is None for p in model.parameters())
    ce = nn.functional.cross_entropy
    assert ce(model(out), y) > ce(model(x), y)  # it is adversarial


def test_bad_configs_are_one_line_errors():
    check_config(AdversarialConfig())  # off: nothing to check
    cases = [(dict(method="pgdd"), "did you mean 'pgd'"), (dict(method="pgd", norm="l1"), "unknown adversarial.norm"),
             (dict(method="pgd", eps=0.0), "adversarial.eps must be positive"),
             (dict(method="pgd", eps=-1.0), "adversarial.eps must be positive"),
             (dict(method="pgd", steps=0), "adversarial.steps must be at least 1"),
             (dict(method="pgd", eval_steps=0), "adversarial.eval_steps must be at least 1"),
             (dict(method="pgd", eval_examples=-1), "adversarial.eval_examples"),
             (dict(method="pgd", step_size=-0.5), "adversarial.step_size")]
    for kw, phrase in cases:
        with pytest.raises(LaminaError, match=phrase):
            check_config(AdversarialConfig(**kw))
    with pytest.raises(LaminaError, match="larger than the whole input range under linf"):
        check_config(AdversarialConfig(method="pgd", eps=2.0), lower=0.0, upper=1.0)
    with pytest.raises(LaminaError, match="larger than the whole input range under linf"):
        AdversarialTraining(Classify(2), AdversarialConfig(method="pgd", eps=2.0), PRE)
    with pytest.raises(LaminaError, match="under l2"):
        check_config(AdversarialConfig(method="pgd", norm="l2", eps=9.0), lower=0.0, upper=1.0, dims=64)
    check_config(AdversarialConfig(method="pgd", norm="l2", eps=2.0), lower=0.0, upper=1.0, dims=64)
    with pytest.raises(LaminaError, match="method is '' \\(off\\)"):
        AdversarialTraining(Classify(2), AdversarialConfig(), PRE)
    with pytest.raises(LaminaError, match="continuous inputs"):
        AdversarialTraining(Classify(2), AdversarialConfig(method="pgd"), Preprocess(kind="tokens"))
