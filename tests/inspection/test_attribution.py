"""Attributions through captum: shapes, finiteness, and pixels a model never reads get none."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.attribution import attributions, last_conv_stage
from lamina.models import create_model
from lamina.models.base import Model

pytest.importorskip("captum")


class _LeftHalf(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-1] // 2] = 1
        return x * mask


class _LeftReader(Model):
    """Zeroes the right half of the image, then 1×1 convs (no spatial mixing): the right half is never read."""

    name = "left-reader-test"

    def __init__(self) -> None:
        super().__init__((2, 8, 8), 3)
        self.add_stage("mask", _LeftHalf())
        self.add_stage("conv", nn.Sequential(nn.Conv2d(2, 6, 1), nn.BatchNorm2d(6), nn.ReLU()))
        self.set_head(6, 0.0)


def test_saliency_and_integrated_gradients_are_zero_where_the_model_does_not_look():
    torch.manual_seed(0)
    model = _LeftReader()
    model.train()
    x = torch.randn(4, 2, 8, 8)
    maps = attributions(model, x, torch.tensor([0, 1, 2, 0]))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert set(maps) == {"saliency", "integrated_gradients", "grad_cam"}
    for m in maps.values():
        assert tuple(m.shape) == (4, 8, 8) and torch.isfinite(m).all()
    for method in ("saliency", "integrated_gradients"):
        assert torch.all(maps[method][:, :, 4:] == 0), method
        assert maps[method][:, :, :4].sum() > 0, method
    assert (maps["grad_cam"] >= 0).all()


def test_attributions_of_lamina_models():
    cnn = create_model("cnn", (1, 12, 12), 3, width=4)
    x = torch.randn(3, 1, 12, 12)
    maps = attributions(cnn, x, 1, steps=8)
    assert last_conv_stage(cnn)[0] == "stage3"
    assert {k: tuple(v.shape) for k, v in maps.items()} == {k: (3, 12, 12) for k in maps} and len(maps) == 3
    mlp = create_model("mlp", (1, 12, 12), 3, width=8, depth=2)
    maps = attributions(mlp, x, torch.tensor([0, 1, 2]), methods=("saliency", "grad_cam"))
    assert set(maps) == {"saliency"}  # no conv stage: grad_cam is skipped
    signal = create_model("cnn", (2, 16), 3, width=4)
    maps = attributions(signal, torch.randn(2, 2, 16), 0, steps=4)
    assert {k: tuple(v.shape) for k, v in maps.items()} == {k: (2, 16) for k in maps} and "grad_cam" in maps


def test_bad_method_and_missing_captum(monkeypatch):
    model = create_model("mlp", (4,), 3, width=8, depth=1)
    with pytest.raises(LaminaError, match="unknown attribution method 'lime'"):
        attributions(model, torch.randn(2, 4), 0, methods=("lime",))
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(LaminaError, match=r"pip install captum \(or lamina\[inspect\]\)"):
        attributions(model, torch.randn(2, 4), 0)
