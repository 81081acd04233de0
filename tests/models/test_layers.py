"""Layers against torch references: activations, norms, ConvNormAct, BasicBlock."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lamina.errors import LaminaError
from lamina.models import ACTS, NORMS, BasicBlock, ConvNormAct, get_act, get_norm
from lamina.models.layers import act_name, group_count, max_pool

REFERENCE = {
    "relu": (nn.ReLU, F.relu),
    "leaky_relu": (nn.LeakyReLU, F.leaky_relu),
    "gelu": (nn.GELU, F.gelu),
    "silu": (nn.SiLU, F.silu),
    "tanh": (nn.Tanh, torch.tanh),
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
}


def test_reference_covers_every_act() -> None:
    assert set(REFERENCE) == set(ACTS)


@pytest.mark.parametrize("name", sorted(ACTS))
def test_act_maps_to_torch_module_and_matches_functional(name: str) -> None:
    cls, fn = REFERENCE[name]
    assert get_act(name) is cls
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(get_act(name)()(x), fn(x), rtol=0, atol=0)
    assert act_name(cls) == name and act_name(name) == name


def test_get_act_accepts_classes_case_and_dashes_and_torch_names() -> None:
    assert get_act(nn.GELU) is nn.GELU
    assert get_act("ReLU") is nn.ReLU
    assert get_act("Leaky-ReLU") is nn.LeakyReLU
    assert get_act("Mish") is nn.Mish
    assert act_name(nn.Mish) == "Mish"


@pytest.mark.parametrize(
    "bad,match", [("rellu", "did you mean 'relu'"), ("swish", "choose one of"), ("Module", "choose one of")]
)
def test_unknown_act_raises_with_suggestion(bad: str, match: str) -> None:
    with pytest.raises(LaminaError, match=rf"unknown activation '{bad}'.*{match}"):
        get_act(bad)


@pytest.mark.parametrize(
    "name,dims,cls",
    [("batch", 0, nn.BatchNorm1d), ("batch", 1, nn.BatchNorm1d), ("batch", 2, nn.BatchNorm2d),
     ("layer", 0, nn.LayerNorm), ("layer", 1, nn.GroupNorm), ("layer", 2, nn.GroupNorm),
     ("group", 0, nn.GroupNorm), ("group", 1, nn.GroupNorm), ("group", 2, nn.GroupNorm),
     ("none", 0, nn.Identity), ("none", 1, nn.Identity), ("none", 2, nn.Identity)],
)  # fmt: skip
def test_norm_types(name: str, dims: int, cls: type[nn.Module]) -> None:
    norm = get_norm(name, 12, dims)
    assert type(norm) is cls
    x = torch.randn(4, 12, *[6] * dims)
    assert norm(x).shape == x.shape


def test_every_norm_name_is_covered() -> None:
    assert set(NORMS) == {"batch", "layer", "group", "none"}


def test_layer_norm_of_conv_map_normalises_over_c_h_w() -> None:
    x = torch.randn(3, 8, 5, 5) * 3 + 2
    torch.testing.assert_close(get_norm("layer", 8, 2)(x), F.layer_norm(x, x.shape[1:]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(get_norm("layer", 8, 0)(x[:, :, 0, 0]), F.layer_norm(x[:, :, 0, 0], (8,)))


def test_batch_norm_matches_functional() -> None:
    x = torch.randn(6, 4, 3, 3)
    ref = F.batch_norm(x, None, None, training=True, eps=1e-5)
    torch.testing.assert_close(get_norm("batch", 4, 2)(x), ref)


@pytest.mark.parametrize("channels", [1, 3, 7, 8, 12, 30, 32, 48, 64, 96, 100, 256, 257])
def test_group_count_divides_channels(channels: int) -> None:
    g = group_count(channels)
    assert channels % g == 0 and 1 <= g <= 32
    assert not any(channels % h == 0 for h in range(g + 1, min(32, channels) + 1))  # the largest
    assert get_norm("group", channels, 2).num_groups == g


def test_group_count_examples() -> None:
    assert [group_count(c) for c in (64, 48, 7, 30, 257)] == [32, 24, 7, 30, 1]


def test_unknown_norm_and_bad_dims_raise() -> None:
    with pytest.raises(LaminaError, match=r"unknown norm 'btach'.*did you mean 'batch'"):
        get_norm("btach", 8, 2)
    with pytest.raises(LaminaError, match="dims"):
        get_norm("batch", 8, 3)
    with pytest.raises(LaminaError, match="dims"):
        ConvNormAct(3, 8, dims=3)


@pytest.mark.parametrize("norm", NORMS)
def test_conv_bias_only_without_norm(norm: str) -> None:
    block = ConvNormAct(3, 8, 3, norm=norm)
    assert (block.conv.bias is not None) == (norm == "none")


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_norm_act_shapes(dims: int) -> None:
    x = torch.randn(2, 3, *[9] * dims)
    block = ConvNormAct(3, 8, 3, dims=dims, act="silu")
    assert isinstance(block.conv, nn.Conv1d if dims == 1 else nn.Conv2d)
    assert isinstance(block.act, nn.SiLU)
    assert block(x).shape == (2, 8, *[9] * dims)
    assert ConvNormAct(3, 8, 3, 2, dims=dims)(x).shape == (2, 8, *[5] * dims)
    assert not hasattr(ConvNormAct(3, 8, dims=dims, act=None), "act")
    assert max_pool(dims)(x).shape == (2, 3, *[4] * dims)


@pytest.mark.parametrize("dims", [1, 2])
def test_basic_block_identity_shortcut_when_shapes_match(dims: int) -> None:
    block = BasicBlock(8, 8, 1, dims=dims)
    assert isinstance(block.shortcut, nn.Identity)
    # With the last norm's scale at zero (and beta zero) the residual branch is 0: out = act(x).
    block.zero_init_last()
    block.eval()
    x = torch.randn(2, 8, *[6] * dims)
    torch.testing.assert_close(block(x), F.relu(x))


@pytest.mark.parametrize("c_in,c_out,stride", [(8, 16, 1), (8, 8, 2), (8, 16, 2)])
def test_basic_block_projection_when_shape_changes(c_in: int, c_out: int, stride: int) -> None:
    block = BasicBlock(c_in, c_out, stride)
    assert isinstance(block.shortcut, ConvNormAct)
    assert block.shortcut.conv.kernel_size == (1, 1) and block.shortcut.conv.stride == (stride, stride)
    out = block(torch.randn(2, c_in, 8, 8))
    assert out.shape == (2, c_out, 8 // stride, 8 // stride)


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_norm_act_pools_before_the_norm_with_the_same_maxima(dims: int) -> None:
    """conv → pool → norm → act equals conv → norm → act → pool for a positive norm scale (eval-mode
    batch norm is a positive affine map per channel, and max pooling commutes with monotone maps)."""
    torch.manual_seed(0)
    block = ConvNormAct(3, 8, 3, dims=dims, pool=2)
    assert [name for name, _ in block.named_children()] == ["conv", "pool", "norm", "act"]
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 2.0)
        block.norm.bias.normal_()
        block.norm.running_mean.normal_()
        block.norm.running_var.uniform_(0.5, 2.0)
    block.eval()
    x = torch.randn(2, 3, *[8] * dims)
    pool = F.max_pool2d if dims == 2 else F.max_pool1d
    reference = pool(block.act(block.norm(block.conv(x))), 2)
    torch.testing.assert_close(block(x), reference)
    assert block(x).shape == (2, 8, *[4] * dims)
    assert not hasattr(ConvNormAct(3, 8, dims=dims), "pool")  # pool=1: none
