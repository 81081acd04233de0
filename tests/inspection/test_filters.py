"""First-layer filters and the streamed top-k of channel activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lamina.errors import LaminaError
from lamina.inspection.features import stage_features
from lamina.inspection.filters import first_layer_filters, top_activating
from lamina.models import create_model


def test_first_layer_filters_are_the_first_conv_weights():
    for name in ("cnn", "resnet"):
        model = create_model(name, (3, 8, 8), 3, width=4)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        w = first_layer_filters(model)
        assert tuple(w.shape) == (4, 3, 3, 3)
        assert torch.equal(w, first.weight.detach())
        w += 1  # a copy: the model is untouched
        assert not torch.equal(w, first.weight)
    with pytest.raises(LaminaError, match="no convolution"):
        first_layer_filters(create_model("mlp", (3, 8, 8), 3, width=4))


def test_top_activating_equals_a_full_sort():
    model = create_model("cnn", (1, 8, 8), 3, width=4)
    x = torch.randn(45, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batches = [(x[i : i + 7], torch.zeros(len(x[i : i + 7]), dtype=torch.long)) for i in range(0, 45, 7)]
    top = top_activating(model, batches, "stage2", k=5, channels=3, max_examples=40)
    feats, _ = stage_features(model, batches, max_examples=40, stages=["stage2"])
    assert list(top) == [0, 1, 2]
    for c, idx in top.items():  # values, not indices: an untrained net has ties (channels at 0)
        assert torch.equal(feats["stage2"][idx, c], feats["stage2"][:, c].topk(5).values)
    top1 = top_activating(model, batches, "stage1", k=4, channels=2, max_examples=45)
    feats1, _ = stage_features(model, batches, max_examples=45, stages=["stage1"])
    assert top1 == {c: feats1["stage1"][:, c].topk(4).indices.tolist() for c in range(2)}
    assert all(i < 40 for idx in top.values() for i in idx)
    with pytest.raises(LaminaError, match="no stage"):
        top_activating(model, batches, "nope", max_examples=10)
