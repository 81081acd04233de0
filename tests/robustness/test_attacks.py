"""Attacks against closed forms (linear models), the ε-ball and range, restarts, bf16, the registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lamina.data.base import Preprocess
from lamina.errors import LaminaError
from lamina.robustness.attacks import (
    ATTACKS,
    RawModel,
    accuracy,
    attack,
    fgsm,
    input_bounds,
    max_eps,
    pgd,
    robust_accuracy,
)
from lamina.tasks.classify import flip_tta_log_probs

INF = math.inf


def _linear(d=6, k=2, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, k).eval()


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    x[:4] = 0.0  # examples on the range's edges
    x[4:8] = 1.0
    return x, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("random_start", [False, True])
def test_linf_attacks_find_the_closed_form_optimum_of_a_binary_linear_model(random_start):
    # CE of 2 classes rises as the margin (w_y - w_o).x falls: the L∞ optimum is x - eps * sign(w_y - w_o)
    model = _linear()
    x, y = torch.randn(32, 6), torch.randint(0, 2, (32,))
    w = model.weight.detach()
    optimum = x - 0.3 * torch.sign(w[y] - w[1 - y])
    adv = pgd(model, x, y, eps=0.3, steps=10, lower=-INF, upper=INF, random_start=random_start,
              generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(adv, optimum, atol=1e-6, rtol=0)
    if not random_start:  # FGSM is one full signed step: already the optimum
        torch.testing.assert_close(fgsm(model, x, y, eps=0.3, lower=-INF, upper=INF), optimum, atol=1e-6, rtol=0)
        # FGSM-RS (Wong et al.): delta0 ~ U(-eps, eps), one step of 1.25 eps, clipped to the box
        rs = fgsm(model, x, y, eps=0.3, lower=-INF, upper=INF, random_start=True,
                  generator=torch.Generator().manual_seed(5))
        delta0 = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) - 1) * 0.3
        expected = x + (delta0 - 1.25 * 0.3 * torch.sign(w[y] - w[1 - y])).clamp(-0.3, 0.3)
        torch.testing.assert_close(rs, expected, atol=1e-6, rtol=0)


def test_l2_attacks_find_the_closed_form_optimum_of_a_binary_linear_model():
    model = _linear()
    x, y = torch.randn(32, 6), torch.randint(0, 2, (32,))
    w = model.weight.detach()
    v = w[y] - w[1 - y]
    optimum = x - 0.5 * v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(pgd(model, x, y, eps=0.5, steps=5, norm="l2", lower=-INF, upper=INF,
                                   random_start=False), optimum, atol=1e-5, rtol=0)
    torch.testing.assert_close(fgsm(model, x, y, eps=0.5, norm="l2", lower=-INF, upper=INF), optimum,
                               atol=1e-5, rtol=0)
    # from a random start the projection pulls the orthogonal part in: close to the optimum, never past it
    adv = pgd(model, x, y, eps=0.5, steps=50, norm="l2", lower=-INF, upper=INF, generator=torch.Generator())
    assert ((adv - x).norm(dim=1) <= 0.5 + 1e-5).all()
    margin = lambda u: ((w[y] - w[1 - y]) * u).sum(1)  # noqa: E731
    assert (margin(adv) - margin(optimum)).abs().max() < 0.02 * v.norm(dim=1).max()


def test_pgd_robust_accuracy_of_a_multiclass_linear_model_is_bounded_by_the_exact_one():
    # A linear model is robust at x iff every margin survives the worst shift: m_j - eps * |w_y - w_j|_1 > 0.
    model = _linear(d=8, k=4, seed=2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 8, generator=g)
    y = model(x).argmax(1).detach()  # every example clean-correct
    w, b = model.weight.detach(), model.bias.detach()
    eps = 0.15
    margins = (x @ w.T + b).gather(1, y[:, None]) - (x @ w.T + b)  # (N, K)
    worst = margins - eps * (w[y][:, None, :] - w[None]).abs().sum(-1)
    worst[torch.arange(len(y)), y] = INF
    exact = float((worst.min(1).values > 0).float().mean())
    got = robust_accuracy(model, (x, y), eps=eps, steps=20, lower=-INF, upper=INF, generator=torch.Generator())
    # An attack can only overstate robustness; cross-entropy (not the margin of the nearest class)
    # leaves some examples of a multiclass linear model unbroken.
    assert exact <= got <= exact + 0.15, (exact, got)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("name", ["fgsm", "fgsm-rs", "pgd"])
def test_every_adversarial_example_lies_in_the_ball_and_the_range(name, norm, eps):
    model, (x, y) = _cnn(), _images()
    adv = attack(name, model, x, y, eps=eps, norm=norm, lower=0.0, upper=1.0, steps=5, restarts=2,
                 generator=torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and adv.dtype == torch.float32 and not adv.requires_grad
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    assert (size > 0).any()  # it moved


def test_restarts_are_never_worse_than_the_first_restart():
    model, (x, y) = _cnn(), _images(n=128)
    y = model(x).argmax(1).detach()  # all correct: every fooled example is the attack's work
    out = {}
    for r in (1, 4):
        adv = pgd(model, x, y, eps=0.03, steps=3, restarts=r, lower=0.0, upper=1.0,
                  generator=torch.Generator().manual_seed(7))
        out[r] = model(adv).argmax(1) != y
    assert (out[4] | ~out[1]).all()  # every example one restart fools, four restarts fool too
    assert out[4].sum() >= out[1].sum() and out[1].sum() < len(y)


def test_bf16_autocast_keeps_delta_in_fp32_and_leaves_parameter_grads_alone():
    model, (x, y) = _cnn(), _images()

    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    adv = pgd(model, x, y, eps=0.1, steps=3, lower=0.0, upper=1.0, autocast=bf16, generator=torch.Generator())
    assert adv.dtype == torch.float32
    delta = adv - x
    assert delta.abs().max() <= 0.1 + 1e-6 and (delta != 0).any()
    # fp32 deltas: not all on the bf16 grid (8 bits of mantissa)
    assert not torch.equal(delta, delta.bfloat16().float())
    assert all(p.grad is None for p in model.parameters())


def test_the_attack_keeps_the_callers_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    x, y = _images()
    model.train()
    pgd(model, x, y, eps=0.1, steps=2, lower=0.0, upper=1.0)
    assert model.training and int(model[2].num_batches_tracked) == 2  # train mode: BN saw both steps' passes
    model.eval()
    pgd(model, x, y, eps=0.1, steps=2, lower=0.0, upper=1.0)
    assert not model.training and int(model[2].num_batches_tracked) == 2


def test_bad_names_and_radii_are_one_line_errors():
    model, (x, y) = _cnn(), _images(8)
    with pytest.raises(LaminaError, match="did you mean 'pgd'"):
        attack("pgdd", model, x, y, eps=0.1, lower=0.0, upper=1.0)
    with pytest.raises(LaminaError, match="unknown norm 'l3'"):
        pgd(model, x, y, eps=0.1, steps=1, norm="l3", lower=0.0, upper=1.0)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(LaminaError, match="eps must be a positive"):
            fgsm(model, x, y, eps=bad, lower=0.0, upper=1.0)
    with pytest.raises(LaminaError, match="at least 1 step"):
        pgd(model, x, y, eps=0.1, steps=0, lower=0.0, upper=1.0)
    assert ATTACKS.names() == ["fgsm", "fgsm-rs", "pgd"]


def test_raw_model_is_the_classifier_with_its_preprocessing_inside():
    net = _cnn()
    pre = Preprocess(kind="image", scale=255.0, mean=(0.3,), std=(0.2,), channels=1, size=(6, 6))
    raw8 = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8)
    u = raw8.float() / 255
    expected = net(pre.apply(raw8)).log_softmax(1)
    torch.testing.assert_close(RawModel(net, pre)(u), expected)
    torch.testing.assert_close(RawModel(net, pre, tta_flip=True)(u), flip_tta_log_probs(net, pre.apply(raw8)))
    with pytest.raises(LaminaError, match="continuous inputs"):
        RawModel(net, Preprocess(kind="tokens"))


def test_input_bounds():
    assert input_bounds(Preprocess(kind="image", scale=255.0), "image") == (0.0, 1.0)
    data = torch.tensor([[-2.0, 3.0], [0.5, 1.0]])
    assert input_bounds(Preprocess(scale=2.0), "vector", data) == (-1.0, 1.5)
    with pytest.raises(LaminaError, match="pass them as data"):
        input_bounds(Preprocess(), "signal")
    with pytest.raises(LaminaError, match="continuous inputs"):
        input_bounds(Preprocess(kind="tokens"), "text")
    assert max_eps("linf", 0.0, 1.0, 64) == 1.0 and max_eps("l2", 0.0, 1.0, 64) == 8.0


def test_robust_accuracy_is_the_same_over_tensors_and_batches_of_any_size():
    model, (x, y) = _cnn(), _images(n=50)
    kw = dict(method="fgsm", eps=0.05, lower=0.0, upper=1.0)
    whole = robust_accuracy(model, (x, y), batch_size=500, **kw)
    assert robust_accuracy(model, (x, y), batch_size=7, **kw) == whole
    assert robust_accuracy(model, list(zip(x.split(16), y.split(16), strict=True)), **kw) == whole
    first = robust_accuracy(model, (x, y), batch_size=7, max_examples=20, **kw)
    assert first == robust_accuracy(model, (x[:20], y[:20]), **kw)
    assert accuracy(model, (x, y)) == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    assert whole <= accuracy(model, (x, y))
