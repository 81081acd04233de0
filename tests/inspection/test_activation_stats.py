"""activation_stats: streamed statistics equal the ones of the whole sample."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lamina.inspection.activations import activation_stats
from lamina.models.base import Model


class _ActOnly(Model):
    """One stage: the activation applied to the inputs themselves, so its outputs are known."""

    name = "act-only-test"

    def __init__(self, act: str, shape=(3, 4, 4)) -> None:
        super().__init__(shape, 2)
        self.add_stage("act", {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}[act]())
        self.set_head(shape[0], 0.0)
        self.arch["act"] = act


def _batches(x, size=5):
    return [(x[i : i + size], torch.zeros(len(x[i : i + size]), dtype=torch.long)) for i in range(0, len(x), size)]


def _inputs(n=23, shape=(3, 4, 4)):
    return 3 * torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "gelu"])
def test_stats_equal_the_whole_sample(act):
    x = _inputs()
    model = _ActOnly(act)
    stats = activation_stats(model, _batches(x), max_examples=20)["act"]
    a = model.act(x[:20]).double()
    assert stats["mean"] == pytest.approx(float(a.mean()), rel=1e-9)
    assert stats["std"] == pytest.approx(float(a.std(correction=0)), rel=1e-9)
    expected_sat = {"tanh": (a.abs() > 0.99), "sigmoid": (a < 0.01) | (a > 0.99)}.get(act)
    if expected_sat is None:
        assert stats["saturation"] is None
    else:
        assert stats["saturation"] == pytest.approx(float(expected_sat.double().mean()), rel=1e-12)
        assert 0 < stats["saturation"] < 1


def test_dead_fraction_counts_channels_never_positive():
    x = _inputs()
    x[:, 1] = -x[:, 1].abs()  # channel 1 never > 0 after the ReLU
    stats = activation_stats(_ActOnly("relu"), _batches(x), max_examples=100)["act"]
    assert stats["dead_fraction"] == pytest.approx(1 / 3)
    vec = torch.randn(30, 5)
    vec[:, [0, 4]] = -1.0
    model = _ActOnly("relu", shape=(5,))
    assert activation_stats(model, _batches(vec), max_examples=100)["act"]["dead_fraction"] == pytest.approx(2 / 5)
