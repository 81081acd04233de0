"""Gradient-masking checks: the noise formula, each check on hand-made records, and the checks
passing on an honest model and failing on one that masks its gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lamina.robustness.checks import (
    check_large_eps,
    check_monotone_in_eps,
    check_more_effort,
    check_pgd_vs_fgsm,
    masking_checks,
    noise,
)
from lamina.robustness.run import evaluate_robustness


def _rec(method, eps, acc, role="main", n=200, steps=10, restarts=1, **kw):
    return {"method": method, "norm": "linf", "eps": eps, "steps": steps, "restarts": restarts,
            "robust_accuracy": acc, "examples": n, "role": role, **kw}


def test_noise_is_two_binomial_standard_errors_and_at_least_one_example():
    assert noise(0.5, 100) == pytest.approx(2 * math.sqrt(0.25 / 100))
    assert noise(0.9, 400) == pytest.approx(2 * math.sqrt(0.09 / 400))
    assert noise(1.0, 50) == noise(0.0, 50) == 1 / 50
    assert noise(0.5, 0) == 1.0


def test_each_check_on_hand_made_records():
    good = [_rec("pgd", 0.05, 0.6), _rec("pgd", 0.1, 0.4), _rec("fgsm", 0.05, 0.7, role="fgsm"),
            _rec("fgsm", 0.1, 0.5, role="fgsm")]
    assert check_monotone_in_eps(good)["passed"] and check_pgd_vs_fgsm(good)["passed"]
    # within noise (2 SE of 0.5 on 200 examples is 0.07) is not a failure; beyond it is
    assert check_monotone_in_eps([_rec("pgd", 0.05, 0.40), _rec("pgd", 0.1, 0.45)])["passed"]
    rising = check_monotone_in_eps([_rec("pgd", 0.05, 0.40), _rec("pgd", 0.1, 0.60)])
    assert not rising["passed"] and "rises" in rising["detail"]
    assert not check_pgd_vs_fgsm([_rec("pgd", 0.1, 0.6), _rec("fgsm", 0.1, 0.3, role="fgsm")])["passed"]
    # chance of 10 classes on 200 examples: at most 0.1 + 2 SE = 0.142
    assert check_large_eps([_rec("pgd", 1.0, 0.14, role="large-eps")], 10)["passed"]
    assert not check_large_eps([_rec("pgd", 1.0, 0.16, role="large-eps")], 10)["passed"]
    more = _rec("pgd", 0.1, 0.5, role="more-steps", steps=20, baseline_accuracy=0.3)
    assert not check_more_effort([more])["passed"]
    assert check_more_effort([{**more, "robust_accuracy": 0.29}])["passed"]
    assert check_monotone_in_eps([_rec("pgd", 0.1, 0.5)]) is None  # nothing to compare: left out
    assert set(masking_checks(good, num_classes=10)) == {"monotone_in_eps", "pgd_not_weaker_than_fgsm"}


def _toy(n=256, seed=0):
    """3 classes of 1x4x4 images in [0, 1]: class c has its quadrant c bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.3 + 0.1 * torch.rand(n, 1, 4, 4, generator=g)
    for c in range(3):
        r, col = divmod(c, 2)
        x[y == c, :, 2 * r: 2 * r + 2, 2 * col: 2 * col + 2] += 0.2
    return x, y


def _honest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = _toy()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


class Rounded(nn.Module):
    """Gradient masking by design: the input is rounded to a grid of 1/4 (zero gradient)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, u):
        return self.model(torch.round(u * 4) / 4)


@pytest.fixture(scope="module")
def honest():
    return _honest()


def _evaluate(model):
    x, y = _toy(seed=1)
    return evaluate_robustness(model, x, y, num_classes=3, eps=(0.05, 0.1, 0.2), steps=10, batch_size=128)


def test_the_checks_pass_on_an_honest_model(honest):
    x, y = _toy(seed=1)
    assert float((honest(x).argmax(1) == y).float().mean()) > 0.95
    results, checks, kept = _evaluate(honest)
    assert set(checks) == {"monotone_in_eps", "large_eps_reaches_chance", "pgd_not_weaker_than_fgsm",
                           "more_effort_not_weaker"}
    assert all(c["passed"] for c in checks.values()), checks
    large = next(r for r in results if r["role"] == "large-eps")
    assert large["eps"] == 1.0 and large["robust_accuracy"] <= 1 / 3 and large["random_start"] is False
    assert sorted(kept) == [0.05, 0.1, 0.2] and kept[0.1][0].shape == (8, 1, 4, 4)


def test_the_checks_fail_on_a_model_that_masks_its_gradients(honest):
    masked = Rounded(honest).eval()
    x, y = _toy(seed=1)
    assert float((masked(x).argmax(1) == y).float().mean()) > 0.95  # it still classifies
    results, checks, _ = _evaluate(masked)
    assert not checks["large_eps_reaches_chance"]["passed"], checks
    assert "cannot reach chance" in checks["large_eps_reaches_chance"]["detail"]
    large = next(r for r in results if r["role"] == "large-eps")
    assert large["robust_accuracy"] > 0.9  # PGD made no progress even where any image is allowed
