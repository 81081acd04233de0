from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lamina.errors import LaminaError
from lamina.training.optim import create_optimizer, default_lr, param_groups
from lamina.training.schedules import SCHEDULES, create_scheduler


def _lrs(sched: torch.optim.lr_scheduler.LRScheduler, opt: torch.optim.Optimizer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_onecycle_matches_torch_onecycle():
    total, warmup = 100, 30
    p = [nn.Parameter(torch.zeros(1))]
    ours = torch.optim.SGD(p, lr=0.4)
    ref = torch.optim.SGD(p, lr=0.4)
    a = _lrs(create_scheduler("onecycle", ours, total_steps=total, warmup_fraction=warmup / total), ours, total)
    b = _lrs(torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=0.4, total_steps=total, pct_start=warmup / total,
                                                 cycle_momentum=False), ref, total)
    assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_schedules_peak_and_end(name):
    fn = SCHEDULES.get(name)
    total, warmup = 50, 10
    values = [fn(s, total, warmup) for s in range(total)]
    assert max(values) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in values)
    if name != "constant":
        assert values[-1] < 0.05


def test_cosine_closed_form():
    fn = SCHEDULES.get("cosine")
    assert fn(9, 100, 10) == pytest.approx(1.0)
    assert fn(55, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_no_weight_decay_on_norm_and_bias():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 0.1)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


def test_optimizers_by_name():
    model = nn.Linear(3, 2)
    sgd = create_optimizer("sgd", model, lr=0.1, weight_decay=1e-4, momentum=0.9)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(create_optimizer("adamw", model, lr=1e-3, weight_decay=0.0, momentum=0.9), torch.optim.AdamW)
    with pytest.raises(LaminaError, match="did you mean 'adamw'"):
        create_optimizer("adamm", model, lr=1e-3, weight_decay=0.0, momentum=0.9)
    assert default_lr("sgd", 512) == pytest.approx(2 * default_lr("sgd", 256))
