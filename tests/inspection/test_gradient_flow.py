"""GradientFlow records what a manual autograd.grad and a manual SGD step give."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lamina.data.base import Preprocess, Split
from lamina.data.gpu_loader import DeviceLoader
from lamina.errors import LaminaError
from lamina.inspection.gradients import GradientFlow, weight_params
from lamina.tasks.classify import Classify
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer

LR, SMOOTHING = 0.2, 0.1


def _model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))


def _split():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 5, generator=g)
    return Split(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())


def _manual(model, split, steps):
    """Per step: (grad norms, weight norms, update ratios) of the weight matrices, with plain SGD by hand."""
    loss_fn = nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
    params = list(model.parameters())
    out = []
    for s in range(steps):
        x, y = split.x[s * 16 : (s + 1) * 16], split.y[s * 16 : (s + 1) * 16]
        grads = torch.autograd.grad(loss_fn(model(x), y), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= LR * g
        rows = [(float(g.norm()), float(p.detach().norm()), float((LR * g).norm() / p.detach().norm()))
                for p, g in zip(params, grads, strict=True) if p.ndim > 1]
        out.append(rows)
    return out


@pytest.mark.parametrize("every", [1, 2])
def test_gradient_flow_equals_manual_autograd(tmp_path, every):
    split = _split()
    path = tmp_path / "inspection" / "gradients.jsonl"
    model = _model()
    trainer = Trainer(model, engine=Engine.create("cpu", "fp32"), optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                      task=Classify(3, label_smoothing=SMOOTHING), callbacks=[GradientFlow(path, every=every)])
    loader = DeviceLoader(split, batch_size=16, device=torch.device("cpu"), preprocess=Preprocess(), shuffle=False)
    trainer.fit(loader, epochs=1)  # 3 steps
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [s for s in (1, 2, 3) if s % every == 0]
    expected = _manual(_model(), split, 3)
    names = [n for n, _ in weight_params(_model())]
    assert names == ["0.weight", "3.weight"]  # no biases, no LayerNorm scale
    for r in records:
        assert [layer["name"] for layer in r["layers"]] == names
        for layer, (g, w, ratio) in zip(r["layers"], expected[r["step"] - 1], strict=True):
            assert layer["grad_norm"] == pytest.approx(g, rel=1e-5)
            assert layer["weight_norm"] == pytest.approx(w, rel=1e-5)
            assert layer["update_ratio"] == pytest.approx(ratio, rel=1e-4)


def test_gradient_flow_appends_and_checks_every(tmp_path):
    with pytest.raises(LaminaError, match="every"):
        GradientFlow(tmp_path / "g.jsonl", every=0)
    path = tmp_path / "g.jsonl"
    for _ in range(2):
        model = _model()
        trainer = Trainer(model, engine=Engine.create("cpu", "fp32"), optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                          task=Classify(3), callbacks=[GradientFlow(path, every=3)])
        trainer.fit(DeviceLoader(_split(), batch_size=16, device=torch.device("cpu"), preprocess=Preprocess()), epochs=2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [3, 6, 3, 6]
