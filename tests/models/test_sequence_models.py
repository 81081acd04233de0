"""Sequence models (seqresnet, seqtransformer): the contract, one-hot inputs, padding masks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lamina.errors import LaminaError
from lamina.models import MODELS, NORMS, create_model
from lamina.models.sequence import ALPHABETS, REGISTERED, OneHot, get_alphabet

NAMES = [cls.name for cls in REGISTERED]
K = 4


def build(name: str, length: int = 64, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = MODELS.get(name)
    return create_model(name, (length,), K, **{**cls.example_kwargs, "width": 16, **kw})  # type: ignore[attr-defined]


def ids(n: int, length: int, lengths: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 5, (n, length), generator=g)
    return x.masked_fill(torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None], 0)


def test_registered_with_the_contract_attributes() -> None:
    assert NAMES == ["seqresnet", "seqtransformer"]
    for cls in REGISTERED:
        assert cls.name in MODELS and cls.input_kind == "tokens" and cls.output_kind == "logits"
        assert {"vocab", "alphabet"} <= set(cls.hparams)
        assert cls.example_shape == (64,) and cls.example_kwargs["alphabet"] == "dna"


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_arch_round_trip(name: str) -> None:
    model = build(name).train()
    x = model.example_input(3, torch.Generator().manual_seed(1))
    assert x.dtype == torch.long and x.shape == (3, 64) and (x[:, 0] > 0).all()
    F.cross_entropy(model(x), torch.arange(3) % K).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    fresh = create_model(**json.loads(json.dumps(model.arch)))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.eval()(x), model(x))
    assert model.arch["alphabet"] == "dna" and model.arch["vocab"] == ALPHABETS["dna"].vocab


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", NORMS)
def test_padding_does_not_change_a_sequences_output(name: str, norm: str) -> None:
    model = build(name, 96, norm=norm)
    model.train()
    with torch.no_grad():  # move batch-norm running stats off their initial values
        model(ids(8, 96, [96, 50, 20, 70, 33, 96, 10, 64], seed=3))
    model.eval()
    x = ids(3, 96, [41, 17, 29])
    full = model(x)
    for cut in (41, 48, 64):  # the same sequences with less padding after them
        torch.testing.assert_close(model(x[:, :cut]), full, atol=1e-5, rtol=1e-5)
    alone = model(x[1:2])  # and without the other examples of the batch
    torch.testing.assert_close(alone, full[1:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_features_are_zero_at_padding(name: str) -> None:
    model = build(name, 128).eval()
    feats = model.forward_features(ids(2, 128, [128, 30]))
    assert (feats[1, :, 8:] == 0).all() and (feats[0] != 0).any()


def test_soft_one_hot_and_extra_vocab() -> None:
    alpha = get_alphabet("dna")
    onehot = OneHot(alpha, vocab=20, context=8)
    x = torch.tensor([[1, 2, 5, 6, 0, 19]])  # A C N R pad (id past the alphabet)
    out = onehot(x)[0].T  # (T, 4)
    assert out.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0.25] * 4, [0.5, 0, 0.5, 0], [0] * 4, [0] * 4]


def test_protein_and_rna_alphabets() -> None:
    prot = get_alphabet("protein")
    m = create_model("seqresnet", (32,), 3, alphabet="protein", width=8)
    assert m.onehot.table.shape == (prot.vocab, 20)
    assert m(torch.randint(1, prot.vocab, (2, 32))).shape == (2, 3)
    rna = get_alphabet("rna")
    assert rna.letters[rna.complement_ids()[1] - 1] == "U"  # A <-> U
    assert [get_alphabet("dna").letters[i - 1] for i in get_alphabet("dna").complement_ids()[1:].tolist()] == list(
        "TGCANYRSWMKVHDB")
    with pytest.raises(LaminaError, match="no reverse complement"):
        prot.complement_ids()


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_and_arguments_are_lamina_errors(name: str) -> None:
    with pytest.raises(LaminaError, match=r"needs input shape \(context,\)"):
        create_model(name, (4, 64), K, alphabet="dna")
    with pytest.raises(LaminaError, match="needs vocab >= 16"):
        create_model(name, (64,), K, vocab=5, alphabet="dna")
    with pytest.raises(LaminaError, match=r"unknown alphabet 'dan'.*'dna'"):
        create_model(name, (64,), K, alphabet="dan")
    model = build(name)
    with pytest.raises(LaminaError, match="longer than the model's 64"):
        model(torch.ones(1, 65, dtype=torch.long))


def test_transformer_positions_and_regression_head() -> None:
    x = ids(2, 64, [64, 20])
    for positions in ("learned", "sinusoidal", "rotary"):
        m = build("seqtransformer", positions=positions).eval()
        assert m(x).shape == (2, K) and m.arch["positions"] == positions
    with pytest.raises(LaminaError, match="unknown positions"):
        build("seqtransformer", positions="absolute")
    reg = create_model("seqresnet", (64,), 1, alphabet="dna", width=8)
    assert reg(x).shape == (2, 1)


def test_default_sizes_stay_small() -> None:
    for name, most in (("seqresnet", 150_000), ("seqtransformer", 150_000)):
        m = create_model(name, (1600,), 20, alphabet="dna")
        assert m.num_params() < most
