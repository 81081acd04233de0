"""Text classifiers over token ids: padding changes nothing, they learn, they check their arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lamina.errors import LaminaError
from lamina.models import Model, TextBag, TextCNN, create_model
from lamina.models.text import PositionNorm, pool_mask

V, K, CONTEXT = 30, 4, 32
TEXT_MODELS = ["textcnn", "text-transformer", "textbag"]


def build(name: str, **kw: object) -> Model:
    torch.manual_seed(0)
    return create_model(name, (CONTEXT,), K, vocab=V, **{"width": 16, **kw})


def sentences(b: int, t: int, seed: int = 1) -> torch.Tensor:
    """Token ids without padding (1 .. V-1)."""
    return torch.randint(1, V, (b, t), generator=torch.Generator().manual_seed(seed))


def settle(model: Model) -> Model:
    """A train-mode forward (batch norm statistics), then eval mode."""
    with torch.no_grad():
        model.train()(sentences(8, CONTEXT, seed=9))
    return model.eval()


VARIANTS = [
    ("textcnn", {}), ("textcnn", {"norm": "layer", "act": "tanh"}), ("textcnn", {"norm": "group", "act": "gelu"}),
    ("textcnn", {"norm": "none", "depth": 4}), ("text-transformer", {}), ("text-transformer", {"positions": "rotary"}),
    ("textbag", {}), ("textbag", {"dropout": 0.5}),
]  # fmt: skip


@pytest.mark.parametrize("name,kw", VARIANTS, ids=lambda v: str(v).replace(" ", ""))
def test_appended_padding_leaves_the_logits_unchanged(name: str, kw: dict[str, object]) -> None:
    model = settle(build(name, **kw))
    for length in (1, 5, 12, 13):
        x = sentences(3, length)
        padded = torch.cat((x, torch.zeros(3, CONTEXT - length, dtype=torch.long)), dim=1)  # (3, CONTEXT)
        with torch.no_grad():
            torch.testing.assert_close(model(padded), model(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model(padded[:, : length + 3]), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padding_inside_a_batch_does_not_leak_between_examples(name: str) -> None:
    model = settle(build(name))
    x = sentences(2, CONTEXT)
    x[1, 10:] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1], model(x[1:, :10])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_an_example_of_padding_only_gives_finite_logits(name: str) -> None:
    model = settle(build(name))
    x = torch.zeros(2, CONTEXT, dtype=torch.long)
    x[0, :3] = 5
    y = model(x)
    assert torch.isfinite(y).all()
    model.train()
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_one_training_step_lowers_the_loss_on_a_toy_task(name: str) -> None:
    """The class is which of tokens 1..K appears in the example (once, among filler tokens)."""
    g = torch.Generator().manual_seed(0)
    n = 64
    x = torch.randint(K + 1, V, (n, CONTEXT), generator=g)
    y = torch.arange(n) % K
    x[torch.arange(n), torch.randint(0, CONTEXT, (n,), generator=g)] = y + 1
    x[:, 20:] = 0  # padding
    model = build(name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = F.cross_entropy(model(x), y)
    before.backward()
    opt.step()
    opt.zero_grad()
    after = F.cross_entropy(model(x), y)
    assert after < before


def test_textcnn_features_shrink_by_two_per_stage_and_padding_stays_zero() -> None:
    model = settle(build("textcnn", depth=3))
    assert [n for n, _ in model.stages()] == ["embed", "stage1", "stage2", "stage3"]
    x = sentences(2, 19)
    x[:, 9:] = 0
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out)) for n, m in model.stages()]
    with torch.no_grad():
        feats = model.forward_features(x)
    for h in handles:
        h.remove()
    assert [seen[n].shape[-1] for n in ("embed", "stage1", "stage2", "stage3")] == [19, 19, 10, 5]
    assert feats.shape == (2, 16, 5) and torch.equal(seen["stage3"], feats)
    for n, tokens_left in (("stage1", 9), ("stage2", 5), ("stage3", 3)):
        assert torch.all(seen[n][..., tokens_left:] == 0), n  # padding positions are zero
        assert torch.all(seen[n][..., :tokens_left].abs().sum(1) > 0), n


def test_textcnn_head_is_a_masked_max_over_the_tokens() -> None:
    model = build("textcnn", act="tanh").eval()
    feats = -torch.rand(2, 16, 6) - 0.1  # all negative: a plain max would pick padding's zeros
    feats[0, :, 4:] = 0
    pooled = model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled[0], feats[0, :, :4].amax(-1))
    torch.testing.assert_close(pooled[1], feats[1].amax(-1))
    assert torch.equal(model.forward_head(torch.zeros(1, 16, 6), pre_logits=True), torch.zeros(1, 16))


def test_pool_mask_keeps_a_position_when_either_of_its_pair_is_a_token() -> None:
    mask = torch.tensor([[[True, False, False, False, True]]])
    assert pool_mask(mask).tolist() == [[[True, False, True]]]


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_position_norm_normalises_each_position_alone(norm: str) -> None:
    pn = PositionNorm(norm, 8)
    x = torch.randn(2, 8, 5)
    y = pn(x)
    torch.testing.assert_close(pn(x[..., :3]), y[..., :3])  # other positions do not matter
    if norm == "layer":
        torch.testing.assert_close(y, F.layer_norm(x.transpose(1, 2), (8,)).transpose(1, 2))


def test_defaults_arch_and_errors() -> None:
    m = create_model("textcnn", (CONTEXT,), K, vocab=V)
    assert isinstance(m, TextCNN)
    assert m.arch == {
        "name": "textcnn", "input_shape": [CONTEXT], "num_classes": K, "vocab": V,
        "width": 128, "depth": 3, "act": "relu", "norm": "batch", "dropout": 0.0,
    }  # fmt: skip
    assert (m.input_kind, m.feature_layout, m.output_kind) == ("tokens", "channels", "logits")
    t = create_model("text-transformer", (CONTEXT,), K, vocab=V)
    assert (t.input_kind, t.feature_layout, t.output_kind) == ("tokens", "tokens", "logits")
    assert t.arch["heads"] == 2 and t.arch["positions"] == "learned" and t.arch["vocab"] == V
    for name in TEXT_MODELS:
        with pytest.raises(LaminaError, match=f"model '{name}' needs the vocabulary size"):
            create_model(name, (CONTEXT,), K)
        with pytest.raises(LaminaError, match=r"needs input shape \(context,\)"):
            create_model(name, (1, CONTEXT), K, vocab=V)
        with pytest.raises(LaminaError, match="longer than the model's context 32"):
            build(name)(sentences(1, CONTEXT + 1))
    with pytest.raises(LaminaError, match="model 'textcnn' takes no 'heads'"):
        create_model("textcnn", (CONTEXT,), K, vocab=V, heads=2)


def test_textbag_is_the_mean_of_token_and_hashed_bigram_embeddings() -> None:
    """fastText's features by hand: the mean over the tokens and the neighbouring pairs of tokens
    (row ``V + (a·V + b) mod buckets``), padding and pairs that touch it left out; then the linear head."""
    model = build("textbag").eval()
    x = torch.tensor([[3, 7, 7, 2, 0, 0], [5, 0, 0, 0, 0, 0]])
    table, buckets = model.embed.table.weight, TextBag.buckets
    rows = [[3, 7, 7, 2, V + (3 * V + 7) % buckets, V + (7 * V + 7) % buckets, V + (7 * V + 2) % buckets], [5]]
    want = torch.stack([table[r].mean(dim=0) for r in rows])  # (2, C)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), want)
        torch.testing.assert_close(model(x), model.head(want))
    assert model.arch == {"name": "textbag", "input_shape": [CONTEXT], "num_classes": K, "vocab": V, "width": 16,
                          "dropout": 0.0}
    with pytest.raises(LaminaError, match="model 'textbag' takes no 'depth'"):
        create_model("textbag", (CONTEXT,), K, vocab=V, depth=2)


def test_textbag_sees_the_order_of_neighbouring_tokens() -> None:
    """The same tokens in another order: a bag of single tokens could not tell them apart; the bigrams do."""
    model = build("textbag").eval()
    a, b = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[4, 3, 2, 1]])
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b))
