"""Registry-driven contract tests: every model in MODELS × every input shape it supports."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lamina.errors import LaminaError
from lamina.models import MLP, MODEL_KWARGS, MODELS, NORMS, BasicBlock, Model, ResNet, create_model

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8), (1, 40), (20,)]
B, K = 3, 5
# torch.compile imports inductor, which imports a deprecated torch.jit API at import time.
IGNORE_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")


def build(name: str, shape: tuple[int, ...], **kw: object) -> Model:
    """The model, or a skip when it does not take this shape (which must be a LaminaError)."""
    torch.manual_seed(0)
    try:
        return create_model(name, shape, K, **kw)
    except LaminaError as e:
        pytest.skip(f"{name} does not take {shape}: {e}")


def batch(shape: tuple[int, ...], n: int = B) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def warm_up(model: Model, shape: tuple[int, ...]) -> None:
    """One train-mode forward so norm running stats are not their initial values."""
    model.train()
    with torch.no_grad():
        model(batch(shape, 4) * 2 + 1)
    model.eval()


cases = pytest.mark.parametrize(
    "name,shape", [(n, s) for n in MODELS.names() for s in SHAPES], ids=lambda v: str(v).replace(" ", "")
)


@cases
def test_forward_gives_finite_logits(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape)
    assert isinstance(model, Model)
    y = model(batch(shape))
    assert y.shape == (B, K)
    assert torch.isfinite(y).all()


@cases
def test_backward_gives_finite_grad_for_every_parameter(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape).train()
    F.cross_entropy(model(batch(shape)), torch.arange(B) % K).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@cases
def test_state_dict_round_trip_rebuilds_from_arch(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape)
    warm_up(model, shape)
    arch = json.loads(json.dumps(model.arch))  # arch must be JSON-able
    assert arch["name"] == name and arch["input_shape"] == list(shape) and arch["num_classes"] == K
    assert set(MODEL_KWARGS) <= set(arch)
    torch.manual_seed(123)  # a different init, so equality comes from the state dict
    fresh = create_model(**arch)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    x = batch(shape)
    assert torch.equal(fresh(x), model(x))


@cases
def test_stage_hooks_fire_in_order_and_last_equals_features(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape).eval()
    stages = model.stages()
    assert stages and len({n for n, _ in stages}) == len(stages)
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.append((n, out))) for n, m in stages]
    x = batch(shape)
    try:
        feats = model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
    assert [n for n, _ in seen] == [n for n, _ in stages]
    assert torch.equal(seen[-1][1], feats)
    for n, m in stages:
        assert model.get_submodule(n) is m


@cases
def test_forward_head_of_features_equals_forward(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape, dropout=0.5).eval()
    x = batch(shape)
    assert torch.equal(model.forward_head(model.forward_features(x)), model(x))
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (B, model.num_features)


@pytest.mark.parametrize("name", MODELS.names())
def test_channels_last_matches_contiguous(name: str) -> None:
    shape = (3, 32, 32)
    model = build(name, shape, width=8)
    warm_up(model, shape)
    x = batch(shape)
    y = model(x)
    model = model.to(memory_format=torch.channels_last)
    y_cl = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS.names())
def test_bf16_autocast_forward_and_backward(name: str) -> None:
    shape = (1, 28, 28)
    model = build(name, shape, width=8)
    warm_up(model, shape)
    x = batch(shape)
    y32 = model(x)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (B, K) and y.dtype == torch.bfloat16
    F.cross_entropy(y.float(), torch.arange(B) % K).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = model(x)
    torch.testing.assert_close(y16.float(), y32, atol=0.1, rtol=0.1)


def _check_compile(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape, width=8)
    warm_up(model, shape)
    x = batch(shape)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


@IGNORE_JIT_DEPRECATION
def test_compile_matches_eager_mlp() -> None:
    _check_compile("mlp", (1, 28, 28))


@pytest.mark.slow
@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize(
    "name,shape",
    [("cnn", (1, 8, 8)), ("resnet", (1, 8, 8)), ("cnn", (1, 40))],
    ids=["cnn-2d", "resnet-2d", "cnn-1d"],
)
def test_compile_matches_eager_conv(name: str, shape: tuple[int, ...]) -> None:
    _check_compile(name, shape)


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_and_trains(name: str, norm: str) -> None:
    model = build(name, (1, 8, 8), width=8, depth=1, norm=norm).train()
    F.cross_entropy(model(batch((1, 8, 8))), torch.arange(B) % K).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.arch["norm"] == norm


# -- the factory --------------------------------------------------------------------------


def test_default_parameter_counts_for_28x28_10_classes() -> None:
    counts = {n: create_model(n, (1, 28, 28), 10).num_params() for n in MODELS.names()}
    assert counts == {"mlp": 269_834, "cnn": 94_186, "resnet": 696_042}


@pytest.mark.parametrize(
    "shape,expected", [((1, 28, 28), "cnn"), ((1, 40), "cnn"), ((20,), "mlp"), ((2, 3, 4, 5), "mlp")]
)
def test_auto_picks_by_input_rank(shape: tuple[int, ...], expected: str) -> None:
    model = create_model("auto", shape, 3)
    assert model.arch["name"] == expected
    assert create_model(**model.arch).arch == model.arch


def test_zero_none_and_empty_mean_model_default() -> None:
    m = create_model("resnet", (1, 8, 8), 3, width=0, depth=None, act="", norm=None, dropout=0.0)
    assert m.arch == create_model("resnet", (1, 8, 8), 3).arch
    assert (m.arch["width"], m.arch["depth"], m.arch["act"], m.arch["norm"]) == (32, 2, "relu", "batch")
    assert create_model("mlp", (20,), 3).arch["width"] == 256
    assert create_model("cnn", (1, 8, 8), 3).arch["depth"] == 1


def test_kwargs_are_applied_and_recorded() -> None:
    m = create_model("mlp", (20,), 4, width=16, depth=3, act="gelu", norm="layer", dropout=0.25)
    assert [n for n, _ in m.stages()] == ["layer1", "layer2", "layer3"]
    assert m.arch == {
        "name": "mlp", "input_shape": [20], "num_classes": 4,
        "width": 16, "depth": 3, "act": "gelu", "norm": "layer", "dropout": 0.25,
    }  # fmt: skip
    assert sum(isinstance(x, nn.Dropout) for x in m.modules()) == 3  # 2 between layers + head
    assert isinstance(m.layer2[-2], nn.GELU) and isinstance(m.layer2[1], nn.LayerNorm)


def test_model_config_fields_feed_create_model() -> None:
    from dataclasses import asdict

    from lamina.config import ModelConfig

    m = create_model(**asdict(ModelConfig()), input_shape=(1, 8, 8), num_classes=10)
    assert m.arch["name"] == "cnn"


def test_conv_nets_pick_conv1d_for_signals_and_conv2d_for_images() -> None:
    for name in ("cnn", "resnet"):
        sig = create_model(name, (2, 40), 3)
        img = create_model(name, (2, 8, 8), 3)
        assert any(isinstance(m, nn.Conv1d) for m in sig.modules())
        assert not any(isinstance(m, nn.Conv2d) for m in sig.modules())
        assert any(isinstance(m, nn.Conv2d) for m in img.modules())
        assert sig.forward_features(torch.randn(2, 2, 40)).ndim == 3


@pytest.mark.parametrize("name", ["cnn", "resnet"])
@pytest.mark.parametrize("shape", [(20,), (1, 2, 8, 8)])
def test_conv_nets_reject_other_ranks(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(
        LaminaError, match=rf"model '{name}' needs image \(C,H,W\) or signal \(C,L\).*--model mlp"
    ):
        create_model(name, shape, 3)


def test_small_maps_skip_downsampling() -> None:
    cnn = create_model("cnn", (1, 8, 8), 3).eval()
    assert cnn.forward_features(torch.randn(2, 1, 8, 8)).shape == (2, 128, 1, 1)
    resnet = create_model("resnet", (1, 8, 8), 3).eval()
    assert resnet.forward_features(torch.randn(2, 1, 8, 8)).shape == (2, 128, 2, 2)
    tiny = create_model("resnet", (1, 3, 3), 3).eval()
    assert tiny.forward_features(torch.randn(2, 1, 3, 3)).shape == (2, 128, 3, 3)
    assert create_model("cnn", (1, 1), 3)(torch.randn(2, 1, 1)).shape == (2, 3)


def test_resnet_zero_inits_last_norm_of_each_residual_branch() -> None:
    m = create_model("resnet", (3, 32, 32), 10)
    blocks = [b for b in m.modules() if isinstance(b, BasicBlock)]
    assert len(blocks) == 6
    assert all(torch.all(b.conv2.norm.weight == 0) for b in blocks)
    assert torch.all(m.stem.norm.weight == 1)
    assert isinstance(m, ResNet) and [n for n, _ in m.stages()] == ["stem", "stage1", "stage2", "stage3"]


@pytest.mark.parametrize("num_classes", [0, 1])
def test_fewer_than_two_classes_is_an_error(num_classes: int) -> None:
    with pytest.raises(LaminaError, match="at least 2 classes"):
        create_model("mlp", (20,), num_classes)


def test_unknown_kwarg_names_the_valid_ones() -> None:
    with pytest.raises(
        LaminaError, match=r"unknown model argument 'widht'.*'width'.*width, depth, act, norm, dropout"
    ):
        create_model("mlp", (20,), 3, widht=8)


def test_unknown_model_name_suggests() -> None:
    with pytest.raises(LaminaError, match="did you mean 'resnet'"):
        create_model("resnt", (1, 8, 8), 3)


@pytest.mark.parametrize(
    "kw,match",
    [({"width": -1}, "width >= 1"), ({"depth": -2}, "depth >= 1"), ({"dropout": 1.0}, "dropout"),
     ({"act": "relux"}, "did you mean 'relu'"), ({"norm": "btach"}, "did you mean 'batch'")],
)  # fmt: skip
def test_bad_hyperparameters_are_errors(kw: dict[str, object], match: str) -> None:
    for name in MODELS.names():
        with pytest.raises(LaminaError, match=match):
            create_model(name, (1, 8, 8), 3, **kw)


def test_bad_input_shape_is_an_error() -> None:
    with pytest.raises(LaminaError, match="positive"):
        create_model("mlp", (0, 4), 3)


def test_act_class_is_accepted_and_recorded_by_name() -> None:
    m = MLP((20,), 3, act=nn.SiLU)
    assert m.arch["act"] == "silu"
    assert create_model(**m.arch).arch == m.arch
    assert create_model("mlp", (20,), 3, act="Mish").arch["act"] == "Mish"
