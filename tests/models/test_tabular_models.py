"""The table models: forward/backward, state_dict round trip through arch, every norm, bf16, category
indices (embedded, out of range read as unknown), the declared example shape, and bad shapes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lamina.errors import LaminaError
from lamina.models import MODELS, NORMS, create_model
from lamina.models.tabular import REGISTERED, FTTransformer, TabMLP, embedding_dim

NAMES = [cls.name for cls in REGISTERED]


def build(name: str, num_classes: int = 3, **kw: object) -> torch.nn.Module:
    cls = MODELS.get(name)
    torch.manual_seed(0)
    return create_model(name, cls.example_shape, num_classes, **{**cls.example_kwargs, **kw})  # type: ignore[attr-defined]


def rows(model: torch.nn.Module, n: int = 8, seed: int = 1) -> torch.Tensor:
    return model.example_input(n, generator=torch.Generator().manual_seed(seed))  # type: ignore[operator]


def test_registered_with_the_example_contract() -> None:
    assert NAMES == ["tabmlp", "ft-transformer"]
    for cls in (TabMLP, FTTransformer):
        assert MODELS.get(cls.name) is cls and "categories" in cls.hparams
        assert cls.example_shape == (6,) and cls.example_kwargs == {"categories": [3, 4]}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes", [1, 3])
def test_forward_backward_and_state_dict_round_trip(name: str, num_classes: int) -> None:
    model = build(name, num_classes, dropout=0.2)
    x = rows(model)
    assert x.shape == (8, 6) and x[:, 4].max() < 3 and x[:, 5].max() < 4 and torch.equal(x[:, 4:], x[:, 4:].round())
    out = model.train()(x)
    assert out.shape == (8, num_classes) and torch.isfinite(out).all()
    (out.square().mean() if num_classes == 1 else F.cross_entropy(out, torch.arange(8) % 3)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    arch = json.loads(json.dumps(model.arch))
    assert arch["categories"] == [3, 4] and arch["name"] == name
    torch.manual_seed(5)
    fresh = create_model(**arch)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.eval()(x), model(x))
    assert torch.equal(model.forward_head(model.forward_features(x)), model(x))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_trains(name: str, norm: str) -> None:
    model = build(name, width=16, depth=1, norm=norm).train()
    F.cross_entropy(model(rows(model)), torch.arange(8) % 3).backward()
    assert model.arch["norm"] == norm and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_is_close_to_fp32(name: str) -> None:
    model = build(name, width=16).eval()
    x = rows(model)
    y32 = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = model(x)
    torch.testing.assert_close(y16.float(), y32, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_stages_are_named_and_hooks_see_them(name: str) -> None:
    model = build(name).eval()
    names = [n for n, _ in model.stages()]
    assert names[0] in ("embed", "tokenizer") and len(set(names)) == len(names)
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.append(o)) for _, m in model.stages()]
    feats = model.forward_features(rows(model))
    for h in hooks:
        h.remove()
    assert len(seen) == len(names) and torch.equal(seen[-1], feats) and feats.shape == (8, model.num_features)
    if name == "ft-transformer":  # tokens channels-first: (B, C, 1 + D), the [CLS] token first
        assert seen[0].shape == (8, model.arch["width"], 7)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_indices_read_as_unknown(name: str) -> None:
    model = build(name).eval()
    x = rows(model)
    bad = x.clone()
    bad[:, 4], bad[:, 5] = 7.0, -2.0
    zero = x.clone()
    zero[:, 4:] = 0.0
    assert torch.equal(model(bad), model(zero))


def test_categories_change_the_output_and_use_their_embeddings() -> None:
    model = build("tabmlp").eval()
    assert [e.embedding_dim for e in model.embed.embeddings] == [embedding_dim(3), embedding_dim(4)] == [3, 3]
    assert embedding_dim(1000) == 16
    x = rows(model)
    y = x.clone()
    y[:, 4] = (y[:, 4] + 1) % 3
    assert not torch.allclose(model(x), model(y))


@pytest.mark.parametrize("name", NAMES)
def test_all_numeric_rows_work_without_categories(name: str) -> None:
    model = create_model(name, (5,), 2)
    assert model(model.example_input(4)).shape == (4, 2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape,kw,match", [
    ((1, 8, 8), {}, r"table rows of shape \(D,\)"),
    ((2,), {"categories": [3, 4, 5]}, "3 categorical columns but rows have only 2"),
    ((4,), {"categories": [0]}, "cardinality >= 1"),
    ((4,), {"width": -1}, "width >= 1"),
])  # fmt: skip
def test_bad_shapes_and_sizes_are_errors(name: str, shape: tuple[int, ...], kw: dict[str, object], match: str) -> None:
    with pytest.raises(LaminaError, match=match):
        create_model(name, shape, 3, **kw)


def test_ft_transformer_heads_must_divide_width() -> None:
    assert create_model("ft-transformer", (4,), 2, width=32).arch["heads"] == 2
    with pytest.raises(LaminaError, match=r"heads \(3\) must divide width \(32\)"):
        create_model("ft-transformer", (4,), 2, width=32, heads=3)


@pytest.mark.parametrize("name", NAMES)
def test_dropout_zero_is_off_and_unset_is_the_default(name: str) -> None:
    """``model.dropout=0`` turns a table model's default dropout (0.1) off; an unset one keeps it."""
    from lamina.config import ModelConfig, apply_overrides, from_dict

    cfg = apply_overrides(from_dict({}), ["model.dropout=0"])
    assert cfg.model.dropout == 0.0 and from_dict({}).model.dropout is None
    assert cfg.model.given("width", "dropout") == {"dropout": 0.0}
    assert ModelConfig().given("width", "dropout", "positions") == {}
    off, default = build(name, **cfg.model.given("dropout")), build(name, **ModelConfig().given("dropout"))
    assert off.arch["dropout"] == 0.0 and default.arch["dropout"] == 0.1
    drops = [m.p for m in off.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(p == 0.0 for p in drops)  # no mask drawn in training: the forward is deterministic
    off.train()
    x = rows(off)
    torch.testing.assert_close(off(x), off(x))
