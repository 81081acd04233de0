"""Inspection of text runs: pooling that follows the feature layout, attention maps replayed from
the attention modules, next-character-class probes of a language model, and a text classifier's
mistakes and token attributions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import lamina
from lamina.config import load_config
from lamina.data.base import build_dataset
from lamina.data.text import BpeVocab, ByteVocab, CharVocab
from lamina.errors import LaminaError
from lamina.inspection import inspect_run
from lamina.inspection.activations import activation_stats
from lamina.inspection.attention import attention_maps, attention_modules, attention_replay, capture_attention
from lamina.inspection.features import pool, stage_features
from lamina.inspection.text import (
    CHAR_CLASSES,
    char_class,
    next_char_probes,
    token_attributions,
    token_classes,
)
from lamina.models import create_model
from lamina.models.base import Model

pytest.importorskip("captum")

TINY = ["data.context=32", "model.width=32", "model.depth=2", "data.batch_size=8", "train.epochs=2"]
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.\n") * 16


def _read(folder: Path, name: str):
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    (root / "book.txt").write_text(TEXT)
    return lamina.train(str(root / "book.txt"), out=str(root / "run"), quiet=True, overrides=TINY).dir


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("texts")
    for c, words in (("happy", "good great fine lovely"), ("sad", "bad awful poor grim")):
        (root / c).mkdir()
        for i in range(30):
            (root / c / f"{i}.txt").write_text(" ".join([*words.split()[i % 4 :], str(i)]))
    return root


@pytest.fixture(scope="module", params=["textcnn", "text-transformer"])
def tc_run(request: pytest.FixtureRequest, text_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tc") / request.param
    over = ["model.width=16", "data.context=24", "train.epochs=2", "data.batch_size=8", f"model.name={request.param}"]
    if request.param == "text-transformer":
        over.append("model.norm=layer")
    return lamina.train(str(text_folder), out=str(out), quiet=True, overrides=over).dir


# -- pooling follows model.feature_layout -----------------------------------------------------------

def _ids(n: int, context: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, vocab, (n, context), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["gpt", "text-transformer"])
def test_token_stages_are_pooled_over_positions_not_channels(name: str):
    kw = {"vocab": 30} if name == "text-transformer" else {}
    model = create_model(name, (12,), 30, width=16, depth=2, norm="layer", **kw).eval()
    x = _ids(10, 12, 30)
    feats, _ = stage_features(model, [(x[:6], torch.zeros(6)), (x[6:], torch.zeros(4))], max_examples=100)
    assert [tuple(f.shape) for f in feats.values()] == [(10, 16)] * 3  # C = 16 features, not T = 12 positions
    with torch.no_grad():
        expected = model.block1(model.embed(x)).mean(dim=1) if name == "gpt" else None
    if expected is not None:
        torch.testing.assert_close(feats["block1"], expected)
    assert tuple(pool(torch.ones(2, 12, 16), "tokens").shape) == (2, 16)
    assert tuple(pool(torch.ones(2, 16, 12)).shape) == (2, 16)  # channels first: (B, C, L) stays as before


class _TokenRelu(Model):
    """One stage, a ReLU on (B, T, C) inputs, declared as a tokens layout: its outputs are known."""

    name = "token-relu-test"
    feature_layout = "tokens"

    def __init__(self) -> None:
        super().__init__((6, 4), 2)
        self.add_stage("act", nn.ReLU())
        self.set_head(4, 0.0)
        self.arch["act"] = "relu"


def test_dead_units_of_a_token_sequence_are_its_channels():
    x = torch.randn(20, 6, 4, generator=torch.Generator().manual_seed(0))
    x[..., 3] = -x[..., 3].abs()  # channel 3 (the last dim) never > 0 after the ReLU
    batches = [(x[i : i + 5], torch.zeros(5, dtype=torch.long)) for i in range(0, 20, 5)]
    assert activation_stats(_TokenRelu(), batches, max_examples=100)["act"]["dead_fraction"] == pytest.approx(1 / 4)


# -- attention maps -------------------------------------------------------------------------------

@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_replayed_attention_reproduces_the_module_output(positions: str):
    """weights @ v must equal what the attention module feeds its output projection."""
    model = create_model("gpt", (16,), 40, width=32, depth=2, heads=4, positions=positions).eval()
    x = _ids(3, 16, 40)
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a: seen.update(x=a[0])) for m in [model.block1.attn]]
    hooks += [model.block1.attn.proj.register_forward_pre_hook(lambda mod, a: seen.update(y=a[0]))]
    with torch.no_grad():
        model(x)
        w, v = attention_replay(model.block1.attn, seen["x"])
    for h in hooks:
        h.remove()
    B, T, C = seen["x"].shape
    torch.testing.assert_close((w @ v).transpose(1, 2).reshape(B, T, C), seen["y"], atol=1e-5, rtol=1e-4)
    assert w.shape == (3, 4, 16, 16)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 16))
    assert torch.all(w.triu(1) == 0)  # causal: nothing above the diagonal


def test_padding_masked_attention_of_an_encoder_and_clean_hooks():
    model = create_model("text-transformer", (10,), 3, vocab=20, width=16, depth=1, heads=2, norm="layer").eval()
    x = _ids(2, 10, 20)
    x[0, 6:] = 0  # padding
    seen: dict[str, torch.Tensor] = {}
    model.block1.attn.proj.register_forward_pre_hook(lambda mod, a: seen.update(y=a[0]))
    before = model(x)
    with capture_attention(model) as maps:
        after = model(x)
    torch.testing.assert_close(before, after)  # the forward path is untouched
    assert not model.block1.attn._forward_pre_hooks
    w = maps["block1"]  # (B, H, T, T)
    assert torch.all(w[0, :, :, 6:] == 0)  # nobody attends to padding
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 10))
    _, v = attention_replay(model.block1.attn, model.block1.ln1(model.embed(x)), x != 0)
    torch.testing.assert_close((w @ v).transpose(1, 2).reshape(2, 10, 16)[:, :6], seen["y"][:, :6], atol=1e-5,
                               rtol=1e-4)
    with pytest.raises(LaminaError, match="no attention layer"):
        attention_maps(create_model("textcnn", (10,), 3, vocab=20, width=8), x)
    assert [n for n, _ in attention_modules(model)] == ["block1"]


# -- next-character classes ---------------------------------------------------------------------

def test_character_classes_of_every_vocabulary():
    assert [CHAR_CLASSES[char_class(c)] for c in "aZ5 \n,!é€"] == [
        "letter", "capital", "digit", "space", "space", "punctuation", "punctuation", "letter", "other"]
    assert char_class("") == -1
    char = CharVocab("ab A,\n", pad=True)
    classes = token_classes(char)
    assert classes[0] == -1  # padding decodes to nothing: skipped
    assert [CHAR_CLASSES[c] for c in classes[1:]] == [CHAR_CLASSES[char_class(c)] for c in char.chars]
    byte = token_classes(ByteVocab())
    assert CHAR_CLASSES[byte[ord("q")]] == "letter" and CHAR_CLASSES[byte[ord("Q")]] == "capital"
    assert CHAR_CLASSES[byte[0xC3]] == "other"  # a lead byte alone decodes to U+FFFD
    pytest.importorskip("tokenizers")
    bpe = BpeVocab.train(TEXT, 300)
    got = token_classes(bpe)
    assert got.tolist() == [char_class(bpe.decode([i])) for i in range(bpe.size)]
    assert CHAR_CLASSES[got[bpe.encode(" truth")[0]]] == "space"  # the first character of the token's text


def test_next_char_probes_on_an_untrained_model_with_bpe():
    pytest.importorskip("tokenizers")
    bpe = BpeVocab.train(TEXT, 300)
    tokens = torch.tensor(bpe.encode(TEXT), dtype=torch.long)
    cut = int(len(tokens) * 0.9)
    model = create_model("gpt", (16,), bpe.size, width=16, depth=1)
    rec = next_char_probes(model, tokens[:cut], tokens[cut:], bpe, max_windows=12, context=16, batch_size=8)
    assert [r["stage"] for r in rec["stages"]] == ["embed", "block1"]
    assert all(0 <= r["accuracy"] <= 1 for r in rec["stages"]) and 0 <= rec["baseline"] <= 1
    assert rec["windows"]["train"] == 12 and 0 < rec["positions"]["train"] <= 12 * 16
    assert sum(rec["counts"]["test"]) == rec["positions"]["test"] > 0
    assert rec["majority"] in CHAR_CLASSES


# -- whole runs -----------------------------------------------------------------------------------

def test_a_language_model_run(lm_run: Path):
    out = inspect_run(lm_run, max_examples=24, batch_size=16)
    assert {"probes.json", "attention.json", "inspection.json"} <= {p.name for p in out.iterdir()}
    probes = _read(out, "probes.json")
    assert [p["stage"] for p in probes["stages"]] == ["embed", "block1", "block2"]
    assert [p["depth"] for p in probes["stages"]] == [1, 2, 3]
    assert all(0 <= p["accuracy"] <= 1 for p in probes["stages"]) and 0 <= probes["baseline"] <= 1
    assert probes["classes"] == list(CHAR_CLASSES) and probes["majority"] in CHAR_CLASSES
    assert probes["windows"]["train"] == 24 and probes["positions"]["test"] > 0
    att = _read(out, "attention.json")
    cfg = load_config(lm_run / "config.yaml")
    val = build_dataset(cfg.data, seed=cfg.train.seed).val.x
    T = len(att["tokens"])
    assert T == len(att["ids"]) == 32 and att["ids"] == val[:T].tolist()  # the context caps the sentence
    assert "".join(att["tokens"]) == lamina.load(lm_run).codec.decode(att["ids"])
    assert [s["stage"] for s in att["stages"]] == ["block1", "block2"]
    for s in att["stages"]:
        w = torch.tensor(s["heads"])
        heads = lamina.load(lm_run).model.arch["heads"]
        assert w.shape == (heads, T, T)
        torch.testing.assert_close(w.sum(-1), torch.ones(heads, T), atol=5e-3, rtol=0)
        assert torch.all(w.triu(1) == 0) and torch.all(w >= 0)
    info = _read(out, "inspection.json")
    assert info["task"] == "language-model" and info["examples"] == {"train": 24, "test": probes["windows"]["test"]}
    assert set(info["seconds"]) == {"load", "probes", "attention", "total"}
    with pytest.raises(LaminaError, match="language-model run"):
        inspect_run(lm_run, max_examples=8, compare_with=lm_run)


def test_a_text_classifier_run(tc_run: Path):
    out = inspect_run(tc_run, max_examples=64, batch_size=16)
    names = {p.name for p in out.iterdir()}
    assert {"probes.json", "cka.json", "activations.json", "attributions.json", "confusion.json",
            "misclassified.json"} <= names
    assert not {"filters.json", "top_activations.json"} & names
    info = _read(out, "inspection.json")
    assert {"filters", "top_activations", "grad_cam"} <= set(info["skipped"])
    probes = _read(out, "probes.json")
    assert probes[0]["stage"] == "embed" and all(0 <= p["accuracy"] <= 1 for p in probes)
    stats = _read(out, "activations.json")
    assert all(0 <= s["dead_fraction"] <= 1 for s in stats.values())
    cfg = load_config(tc_run / "config.yaml")
    test = build_dataset(cfg.data, seed=cfg.train.seed).test
    codec = lamina.load(tc_run).codec
    attr = _read(out, "attributions.json")
    assert attr["kind"] == "tokens" and attr["layer"] == "embed.wte" and "methods" not in attr
    assert len(attr["examples"]) == min(8, len(test))
    for ex in attr["examples"]:
        ids = [t for t in test.x[ex["index"]].tolist() if t != 0]
        assert len(ex["tokens"]) == len(ex["values"]) == len(ids)  # one value per token, padding left out
        assert "".join(ex["tokens"]) == codec.decode(ids)
        assert all(isinstance(v, float) for v in ex["values"]) and any(v != 0 for v in ex["values"])
    for w in _read(out, "misclassified.json"):
        assert w["text"] == codec.decode([t for t in test.x[w["index"]].tolist() if t != 0])
        assert 0 <= w["confidence"] <= 1 and w["true"] != w["predicted"]


def test_token_attributions_add_up_to_the_logit_difference():
    """Completeness of integrated gradients: the values sum to the logit minus the logit with every
    token embedded as padding (the model's padding mask unchanged); padding positions get 0."""
    torch.manual_seed(0)
    model = create_model("textcnn", (12,), 3, vocab=20, width=8, depth=2).eval()  # batch norm: affine in eval
    x = _ids(2, 12, 20)
    x[1, 7:] = 0
    a = token_attributions(model, x, 1, steps=64)
    assert a.shape == (2, 12) and torch.all(a[1, 7:] == 0)
    with torch.no_grad():
        handle = model.embed.wte.register_forward_hook(lambda m, i, out: torch.zeros_like(out))
        at_padding = model(x)[:, 1]
        handle.remove()
        diff = model(x)[:, 1] - at_padding
    torch.testing.assert_close(a.sum(1), diff, atol=2e-2, rtol=5e-2)
