"""Registry-driven contract tests: every model in MODELS × every input shape it supports.

Inputs come from ``model.example_input`` (float values or token ids), and outputs are checked by
the model's ``output_kind``: "logits" (B, K) or "token_logits" (B, T, K), so a newly registered
model of either kind gets every test here.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lamina.errors import LaminaError
from lamina.models import (
    DATA_KWARGS,
    MLP,
    MODEL_KWARGS,
    MODELS,
    NORMS,
    TASK_KWARGS,
    BasicBlock,
    Model,
    ResNet,
    create_model,
)

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8), (1, 40), (20,)]
B, K = 3, 5
VOCAB = 50  # for models that take token ids and a vocabulary size besides the classes
SHAPE_OF_KIND = {"values": (1, 28, 28), "tokens": (20,)}  # one shape each input kind takes
# torch.compile imports inductor, which imports a deprecated torch.jit API at import time.
IGNORE_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")


def build(name: str, shape: tuple[int, ...], **kw: object) -> Model:
    """The model, or a skip when it does not take this shape (which must be a LaminaError)."""
    torch.manual_seed(0)
    cls = MODELS.get(name)
    for k, v in getattr(cls, "example_kwargs", {}).items():  # data arguments the model needs (e.g. a table's categories)
        kw.setdefault(k, v)
    if "vocab" in cls.hparams:  # type: ignore[attr-defined]
        kw.setdefault("vocab", VOCAB)
    try:
        return create_model(name, shape, K, **kw)
    except LaminaError as e:
        pytest.skip(f"{name} does not take {shape}: {e}")


def shape_of(name: str) -> tuple[int, ...]:
    """One input shape the model takes: its own ``example_shape``, else one of its input kind."""
    cls = MODELS.get(name)
    return tuple(getattr(cls, "example_shape", None) or SHAPE_OF_KIND[cls.input_kind])  # type: ignore[attr-defined]


def shapes_of(name: str) -> list[tuple[int, ...]]:
    """The shapes every contract test runs on: the common ones (skipped where the model refuses
    them), plus the model's own ``example_shape`` (e.g. a waveform or a table's row)."""
    own = getattr(MODELS.get(name), "example_shape", None)
    return SHAPES + ([tuple(own)] if own and tuple(own) not in SHAPES else [])


def batch(model: Model, n: int = B, seed: int = 1) -> torch.Tensor:
    return model.example_input(n, generator=torch.Generator().manual_seed(seed))


def output_shape(model: Model, x: torch.Tensor, n: int = B) -> tuple[int, ...]:
    if model.output_kind in ("vae", "image"):  # a VAE's reconstruction logits, a denoiser's image: the input's shape
        return (n, *x.shape[1:])
    return (n, x.shape[1], K) if model.output_kind == "token_logits" else (n, K)


def main_output(y: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The tensor the contract checks: the output, or the first field of a tuple output (a VAE's logits)."""
    return y[0] if isinstance(y, tuple) else y


def loss_of(model: Model, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against fixed targets: one per example, or one per token (a denoiser's image: a squared error)."""
    if model.output_kind == "image":
        return (y.float() - 1).square().mean()
    targets = torch.arange(y.shape[:-1].numel()) % K
    return F.cross_entropy(y.reshape(-1, y.shape[-1]), targets)


def warm_up(model: Model) -> None:
    """One train-mode forward so norm running stats are not their initial values."""
    model.train()
    x = batch(model, 4, seed=2)
    with torch.no_grad():
        model(x * 2 + 1 if x.is_floating_point() else x)
    model.eval()


cases = pytest.mark.parametrize(
    "name,shape", [(n, s) for n in MODELS.names() for s in shapes_of(n)], ids=lambda v: str(v).replace(" ", "")
)


@cases
def test_forward_gives_finite_logits(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape)
    assert isinstance(model, Model)
    x = batch(model)
    assert x.shape == (B, *shape)
    y = main_output(model(x))
    assert y.shape == output_shape(model, x)
    assert torch.isfinite(y).all()


@cases
def test_backward_gives_finite_grad_for_every_parameter(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape).train()
    loss_of(model, main_output(model(batch(model)))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@cases
def test_state_dict_round_trip_rebuilds_from_arch(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape)
    warm_up(model)
    arch = json.loads(json.dumps(model.arch))  # arch must be JSON-able
    assert arch["name"] == name and arch["input_shape"] == list(shape) and arch["num_classes"] == K
    assert set(type(model).hparams) <= set(arch) <= {"name", "input_shape", "num_classes", *MODEL_KWARGS, *DATA_KWARGS,
                                                           *TASK_KWARGS}
    torch.manual_seed(123)  # a different init, so equality comes from the state dict
    fresh = create_model(**arch)
    assert fresh.arch == model.arch
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    x = batch(model)
    assert torch.equal(main_output(fresh(x)), main_output(model(x)))


@cases
def test_stage_hooks_fire_in_order_and_last_equals_features(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape).eval()
    stages = model.stages()
    assert stages and len({n for n, _ in stages}) == len(stages)
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.append((n, out))) for n, m in stages]
    x = batch(model)
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
    if model.output_kind == "vae":
        pytest.skip("a VAE's forward is encode, sample, decode: no head on the features")
    x = batch(model)
    assert torch.equal(model.forward_head(model.forward_features(x)), model(x))
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    lead = (B,) if model.output_kind == "image" else output_shape(model, x)[:-1]
    assert pooled.shape == (*lead, model.num_features)


@cases
def test_features_have_the_declared_layout(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape).eval()
    x = batch(model)
    assert x.dtype == (torch.long if model.input_kind == "tokens" else torch.float32)
    feats = model.forward_features(x)
    if model.feature_layout == "tokens":
        assert feats.shape == (B, x.shape[1], model.num_features)
    else:
        assert model.feature_layout == "channels"
        assert feats.shape[:2] == (B, model.num_features)
    assert model.output_kind in ("logits", "token_logits", "vae", "image")


@pytest.mark.parametrize("name", MODELS.names())
def test_channels_last_matches_contiguous(name: str) -> None:
    shape = (3, 32, 32)  # the layout of image batches; other models skip it, or run it as plain memory
    model = build(name, shape, width=8)
    warm_up(model)
    x = batch(model)
    y = model(x)
    model = model.to(memory_format=torch.channels_last)
    y_cl = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS.names())
def test_bf16_autocast_forward_and_backward(name: str) -> None:
    model = build(name, shape_of(name), width=8)
    warm_up(model)
    x = batch(model)
    y32 = main_output(model(x))
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = main_output(model(x))
    assert y.shape == output_shape(model, x) and y.dtype == torch.bfloat16
    loss_of(model, y.float()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = main_output(model(x))
    torch.testing.assert_close(y16.float(), y32, atol=0.1, rtol=0.1)


def _check_compile(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape, width=8)
    warm_up(model)
    x = batch(model)
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


@pytest.mark.slow
@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize("name", [n for n in MODELS.names() if MODELS.get(n).input_kind == "tokens"])  # type: ignore[attr-defined]
def test_compile_matches_eager_token_models(name: str) -> None:
    _check_compile(name, shape_of(name))


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_and_trains(name: str, norm: str) -> None:
    cls = MODELS.get(name)
    own = getattr(cls, "example_shape", None)
    shape = tuple(own) if own else (1, 8, 8) if cls.input_kind == "values" else (20,)  # type: ignore[attr-defined]
    model = build(name, shape, width=8, depth=1, norm=norm).train()  # Transformers refuse batch/group: skipped
    loss_of(model, main_output(model(batch(model)))).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.arch["norm"] == norm


# -- the factory --------------------------------------------------------------------------


def test_default_parameter_counts_for_28x28_10_classes() -> None:
    counts = {n: create_model(n, (1, 28, 28), 10).num_params() for n in ("mlp", "cnn", "resnet")}
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


@pytest.mark.parametrize("num_classes", [0, -1])
def test_no_outputs_is_an_error(num_classes: int) -> None:
    with pytest.raises(LaminaError, match="at least 1 output"):
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
        extra = {"vocab": VOCAB} if "vocab" in MODELS.get(name).hparams else {}  # type: ignore[attr-defined]
        cls = MODELS.get(name)
        own = getattr(cls, "example_shape", None)  # a shape the model takes, where it names one
        shape = tuple(own) if own else (1, 8, 8) if cls.input_kind == "values" else (20,)  # type: ignore[attr-defined]
        (key,) = kw
        want = match if key in cls.hparams else f"model '{name}' takes no '{key}'"  # type: ignore[attr-defined]
        with pytest.raises(LaminaError, match=want):
            create_model(name, shape, 3, **kw, **extra)


def test_bad_input_shape_is_an_error() -> None:
    with pytest.raises(LaminaError, match="positive"):
        create_model("mlp", (0, 4), 3)


def test_act_class_is_accepted_and_recorded_by_name() -> None:
    m = MLP((20,), 3, act=nn.SiLU)
    assert m.arch["act"] == "silu"
    assert create_model(**m.arch).arch == m.arch
    assert create_model("mlp", (20,), 3, act="Mish").arch["act"] == "Mish"


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("kw", [{"heads": 2}, {"positions": "rotary"}, {"vocab": 100}], ids=["heads", "positions", "vocab"])
def test_models_refuse_arguments_they_do_not_take(name: str, kw: dict[str, object]) -> None:
    (arg,) = kw
    with pytest.raises(LaminaError, match=rf"model '{name}' takes no '{arg}'"):
        create_model(name, (1, 8, 8), 3, **kw)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_unset_transformer_arguments_leave_other_models_unchanged(name: str) -> None:
    m = create_model(name, (1, 8, 8), 3, heads=0, positions="", vocab=None)
    assert m.arch == create_model(name, (1, 8, 8), 3).arch
    assert "heads" not in m.arch and "positions" not in m.arch and "vocab" not in m.arch


def test_model_config_defaults_feed_every_value_model() -> None:
    from dataclasses import asdict

    from lamina.config import ModelConfig

    cfg = asdict(ModelConfig())
    assert set(cfg) - {"name"} == set(MODEL_KWARGS)
    for name in ("mlp", "cnn", "resnet"):
        assert create_model(**{**cfg, "name": name}, input_shape=(1, 8, 8), num_classes=3).arch["name"] == name


def test_example_input_of_value_models_is_seeded_normal() -> None:
    m = create_model("cnn", (1, 8, 8), 3)
    x = m.example_input(4, torch.Generator().manual_seed(7))
    assert torch.equal(x, torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(7)))
    assert (m.input_kind, m.feature_layout, m.output_kind) == ("values", "channels", "logits")
