"""capture() hooks and stage_features: outputs, pooling, the sample cap, cleanup on errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lamina.errors import LaminaError
from lamina.inspection.features import capped, pool, stage_features
from lamina.inspection.hooks import capture, model_stages
from lamina.models import create_model


def _batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_capture_records_stage_outputs_and_removes_hooks():
    model = create_model("cnn", (1, 8, 8), 3, width=4).eval()
    x = torch.randn(5, 1, 8, 8)
    with capture(model, ["stage1", "stage3"]) as out:
        feats = model.forward_features(x)
    assert set(out) == {"stage1", "stage3"}
    assert tuple(out["stage1"].shape) == (5, 4, 4, 4)
    assert torch.equal(out["stage3"], feats)
    assert all(not m._forward_hooks for _, m in model.stages())


def test_capture_cleans_up_when_the_block_raises():
    model = create_model("mlp", (6,), 3, width=8, depth=2)
    with pytest.raises(RuntimeError, match="boom"), capture(model) as out:
        model(torch.randn(2, 6))
        assert set(out) == {"layer1", "layer2"}
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for _, m in model.stages())


def test_capture_rejects_unknown_stages_and_models_without_stages():
    model = create_model("mlp", (6,), 3, width=8, depth=1)
    with pytest.raises(LaminaError, match="no stage 'layer9'"), capture(model, ["layer9"]):
        pass
    assert all(not m._forward_hooks for _, m in model.stages())
    with pytest.raises(LaminaError, match=r"no stages\(\)"):
        model_stages(nn.Linear(2, 2))


def test_stage_features_pools_conv_maps_and_respects_the_cap():
    model = create_model("cnn", (1, 8, 8), 3, width=4)
    model.train()
    x, y = torch.randn(23, 1, 8, 8), torch.randint(0, 3, (23,))
    feats, labels = stage_features(model, _batches(x, y, 4), max_examples=10)
    assert model.training  # the mode is restored
    assert torch.equal(labels, y[:10])
    assert [tuple(f.shape) for f in feats.values()] == [(10, 4), (10, 8), (10, 16)]
    model.eval()
    with torch.no_grad():
        expected = model.stage1(x[:10]).mean(dim=(2, 3))
    torch.testing.assert_close(feats["stage1"], expected)


def test_stage_features_of_an_mlp_are_its_hidden_vectors():
    model = create_model("mlp", (2, 3), 3, width=8, depth=2).eval()
    x, y = torch.randn(7, 2, 3), torch.zeros(7, dtype=torch.long)
    feats, _ = stage_features(model, _batches(x, y, 3), max_examples=100)
    with torch.no_grad():
        torch.testing.assert_close(feats["layer2"], model.forward_features(x))


def test_pool_and_capped():
    assert tuple(pool(torch.ones(2, 3, 4, 5)).shape) == (2, 3)
    assert tuple(pool(torch.ones(2, 3, 4)).shape) == (2, 3)
    assert tuple(pool(torch.ones(2, 3)).shape) == (2, 3)
    parts = list(capped(_batches(torch.arange(10), torch.arange(10), 4), 6))
    assert [len(y) for _, y in parts] == [4, 2]
