"""Linear probes on features where the separable stage is known."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.probes import fit_probe, probe_stages
from lamina.models.base import Model


class _Noise(nn.Module):
    """(N, 10) inputs pass as they are: the label is XOR(sign z0, sign z1), so no linear function sees it."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class _Product(nn.Module):
    """sign(z0 · z1) in a few linear combinations: a linear function of the label."""

    def forward(self, z: Tensor) -> Tensor:
        s = torch.sign(z[:, 0] * z[:, 1])
        return torch.stack([s, -2 * s + 1, 0.5 * s], dim=1)


class _Known(Model):
    name = "known-probe-test"

    def __init__(self) -> None:
        super().__init__((10,), 2)
        self.add_stage("noise", _Noise())
        self.add_stage("signal", _Product())
        self.set_head(3, 0.0)


def _xor(n: int, seed: int) -> tuple[Tensor, Tensor]:
    z = torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))
    return z, (z[:, 0] * z[:, 1] > 0).long()


def _batches(x, y, size=64):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_probes_find_the_separable_stage():
    model = _Known()
    rows = probe_stages(model, _batches(*_xor(600, 0)), _batches(*_xor(600, 1)), max_train=500, max_test=500)
    assert [(r["stage"], r["depth"]) for r in rows] == [("noise", 1), ("signal", 2)]
    assert rows[0]["accuracy"] == pytest.approx(0.5, abs=0.08)  # chance
    assert rows[1]["accuracy"] == 1.0


def test_fit_probe_is_deterministic_and_multiclass():
    g = torch.Generator().manual_seed(2)
    centers = 4 * torch.randn(4, 6, generator=g)
    y = torch.arange(400) % 4
    x = centers[y] + torch.randn(400, 6, generator=g)
    a = fit_probe(x[:300], y[:300], x[300:], y[300:], 4)
    assert a == fit_probe(x[:300], y[:300], x[300:], y[300:], 4)
    assert a > 0.95
    # scale does not matter: the features are standardised
    assert fit_probe(1e3 * x[:300], y[:300], 1e3 * x[300:], y[300:], 4) == pytest.approx(a, abs=0.01)
    # a constant feature (zero std) does not break standardisation
    xc = torch.cat([x, torch.ones(400, 1)], dim=1)
    assert fit_probe(xc[:300], y[:300], xc[300:], y[300:], 4) == pytest.approx(a, abs=0.01)


def test_fit_probe_bad_shapes():
    with pytest.raises(LaminaError, match="same D"):
        fit_probe(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4, 3), torch.zeros(4), 2)
    with pytest.raises(LaminaError, match="at least one"):
        fit_probe(torch.zeros(0, 2), torch.zeros(0), torch.zeros(4, 2), torch.zeros(4), 2)
