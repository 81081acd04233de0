"""The diffusion U-Net: shapes at every level, time conditioning, the model contract with a timestep."""

from __future__ import annotations

import json

import pytest
import torch

from lamina.errors import LaminaError
from lamina.models.layers import NORMS
from lamina.models.unet import UNet, timestep_embedding


def net(shape: tuple[int, ...] = (1, 8, 8), **kw: object) -> UNet:
    torch.manual_seed(0)
    return UNet(shape, 1, **{"width": 8, **kw})  # type: ignore[arg-type]


def randomise_output(model: UNet) -> UNet:
    """The output conv starts at zero (the net predicts 0); give it weights so outputs depend on inputs."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (2, 12, 20)])
def test_output_has_the_input_shape(shape: tuple[int, ...]) -> None:
    model = net(shape)
    x = torch.randn(2, *shape)
    y = model(x, torch.tensor([0, 999]))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_levels_halve_the_map_twice_and_come_back() -> None:
    model = net((1, 28, 28)).eval()
    sizes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: sizes.__setitem__(n, tuple(out.shape)))
               for n, m in model.stages()]
    feats = model.forward_features(torch.randn(2, 1, 28, 28), torch.tensor([3, 4]))
    for h in handles:
        h.remove()
    assert list(sizes) == ["enc1", "enc2", "enc3", "mid", "dec3", "dec2", "dec1"]  # the hooks fire in order
    assert sizes["enc1"] == (2, 8, 28, 28) and sizes["enc2"] == (2, 16, 14, 14) and sizes["enc3"] == (2, 32, 7, 7)
    assert sizes["mid"] == (2, 32, 7, 7) and sizes["dec3"] == (2, 32, 14, 14) and sizes["dec2"] == (2, 16, 28, 28)
    assert sizes["dec1"] == tuple(feats.shape) == (2, model.num_features, 28, 28)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


def test_output_starts_at_zero_and_depends_on_the_timestep() -> None:
    model = net()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x, torch.tensor([1, 2, 3])), torch.zeros_like(x))  # zero-initialised output conv
    randomise_output(model).eval()
    assert not torch.allclose(model(x, torch.zeros(3)), model(x, torch.full((3,), 500)))


def test_timesteps_as_int_float_scalar_or_none() -> None:
    model = randomise_output(net()).eval()
    x = torch.randn(2, 1, 8, 8)
    y = model(x, torch.tensor([7, 7]))
    assert torch.equal(model(x, torch.tensor([7.0, 7.0])), y)
    assert torch.equal(model(x, 7), y) and torch.equal(model(x, torch.tensor(7)), y)
    assert torch.equal(model(x), model(x, torch.zeros(2, dtype=torch.long)))  # None: timestep 0
    with pytest.raises(LaminaError, match="one timestep per image"):
        model(x, torch.zeros(3))


def test_timestep_embedding_is_sin_then_cos() -> None:
    e = timestep_embedding(torch.tensor([0, 5]), 8)
    assert e.shape == (2, 8)
    assert torch.equal(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(e[1, 0], torch.sin(torch.tensor(5.0))) and torch.allclose(e[1, 4], torch.cos(torch.tensor(5.0)))
    assert timestep_embedding(torch.tensor([1.0]), 7).shape == (1, 7)


def test_arch_rebuilds_the_same_network() -> None:
    model = randomise_output(net((1, 12, 12), depth=2, heads=2, dropout=0.1, mults="1,2,3", norm="layer")).eval()
    arch = json.loads(json.dumps(model.arch))
    assert arch == {"name": "unet", "input_shape": [1, 12, 12], "num_classes": 1, "width": 8, "depth": 2,
                    "act": "silu", "norm": "layer", "dropout": 0.1, "heads": 2, "mults": [1, 2, 3]}
    torch.manual_seed(1)
    kw = {k: v for k, v in arch.items() if k != "name"}
    fresh = UNet(**kw).eval()
    assert fresh.arch == model.arch
    fresh.load_state_dict(model.state_dict())
    x, t = torch.randn(2, 1, 12, 12), torch.tensor([5, 50])
    assert torch.equal(fresh(x, t), model(x, t))


def test_attention_in_the_middle_only_with_heads() -> None:
    assert isinstance(net().mid.attn, torch.nn.Identity)
    model = randomise_output(net(heads=4))
    assert not isinstance(model.mid.attn, torch.nn.Identity)
    x = torch.randn(2, 1, 8, 8)
    model(x, torch.tensor([1, 2])).square().mean().backward()
    assert model.mid.attn.qkv.weight.grad is not None
    with pytest.raises(LaminaError, match="heads dividing the 32 channels"):
        net(heads=3)


@pytest.mark.parametrize(
    "shape,kw,match",
    [((1, 10, 10), {}, "divisible by 4"), ((1, 8, 8), {"mults": "1,x"}, "integers"),
     ((1, 8, 8), {"mults": [0, 1]}, ">= 1"), ((1, 8, 8), {"heads": -1}, "heads >= 0"),
     ((1, 64), {}, r"images \(C, H, W\)"), ((1, 8, 8), {"width": 0}, "width >= 1"),
     ((1, 8, 8), {"norm": "btach"}, "did you mean 'batch'")],
)  # fmt: skip
def test_bad_shapes_and_hyperparameters_are_errors(shape: tuple[int, ...], kw: dict[str, object], match: str) -> None:
    with pytest.raises(LaminaError, match=match):
        net(shape, **kw)


def test_more_levels_take_more_divisible_sizes() -> None:
    assert net((1, 16, 16), mults=(1, 2, 2, 2))(torch.randn(1, 1, 16, 16), 3).shape == (1, 1, 16, 16)
    with pytest.raises(LaminaError, match="divisible by 8"):
        net((1, 12, 12), mults=(1, 2, 2, 2))
    assert net((1, 6, 6), mults=(1, 2))(torch.randn(1, 1, 6, 6), 3).shape == (1, 1, 6, 6)


def test_a_batch_of_the_wrong_shape_is_an_error() -> None:
    with pytest.raises(LaminaError, match=r"built for images \(1, 8, 8\)"):
        net()(torch.randn(2, 1, 12, 12), torch.zeros(2))


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_and_trains(norm: str) -> None:
    model = randomise_output(net(norm=norm)).train()
    model(torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 100, 999])).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.arch["norm"] == norm


def test_channels_last_matches_contiguous() -> None:
    model = randomise_output(net((3, 16, 16), heads=2)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 300])
    y = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last), t), y, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_forward_and_backward() -> None:
    model = randomise_output(net(heads=2))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 300])
    model.eval()
    y32 = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = model(x, t)
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=0.1, rtol=0.1)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x, t)
    y.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_example_input_is_a_seeded_image_batch() -> None:
    model = net()
    x = model.example_input(3, torch.Generator().manual_seed(7))
    assert torch.equal(x, torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(7)))
    assert model(x).shape == x.shape
    assert (model.input_kind, model.feature_layout, model.output_kind) == ("values", "channels", "image")


def test_default_size_is_the_cpu_recipe() -> None:
    model = UNet((1, 28, 28), 1, width=16)
    assert model.arch["mults"] == [1, 2, 4] and model.arch["heads"] == 0 and model.arch["depth"] == 1
    assert model.num_params() == 619_697
