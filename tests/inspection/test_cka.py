"""CKA against closed forms and the minibatch estimator against the exact one."""

from __future__ import annotations

import math

import pytest
import torch

from lamina.errors import LaminaError
from lamina.inspection.cka import MinibatchCKA, cka_between_models, cka_between_stages, linear_cka
from lamina.models import create_model


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _orthogonal(d, seed=1):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_g(seed), dtype=torch.float64))
    return q


def test_cka_of_a_matrix_with_itself_is_one():
    x = torch.randn(50, 7, generator=_g())
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x = torch.randn(60, 5, generator=_g(), dtype=torch.float64)
    y = x @ torch.randn(5, 3, generator=_g(2), dtype=torch.float64) + 0.5 * torch.randn(60, 3, generator=_g(3), dtype=torch.float64)
    base = linear_cka(x, y)
    assert 0.1 < base < 0.99
    assert linear_cka(x @ _orthogonal(5), y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, y @ _orthogonal(3, seed=4)) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(base, abs=1e-10)  # centered: offsets do not matter


def test_cka_small_case_computed_by_hand():
    # X and Y are already centered (column means 0):
    #   XᵀX = [[2, 1], [1, 2]]  ->  ||XᵀX||_F = sqrt(4 + 1 + 1 + 4) = sqrt(10)
    #   YᵀY = [[2]]             ->  ||YᵀY||_F = 2
    #   YᵀX = [1·1 + 0·0 + (-1)(-1), 1·0 + 0·1 + (-1)(-1)] = [2, 1]  ->  ||YᵀX||²_F = 5
    #   CKA = 5 / (2 · sqrt(10)) = 0.7905694...
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    y = torch.tensor([[1.0], [0.0], [-1.0]])
    assert linear_cka(x, y) == pytest.approx(5 / (2 * math.sqrt(10)), abs=1e-12)
    # 1-D case: CKA is the squared Pearson correlation. x = 1..4, y = x²:
    #   x - 2.5 = [-1.5, -.5, .5, 1.5], y - 7.5 = [-6.5, -3.5, 1.5, 8.5]
    #   (Σ xy)² / (Σx² Σy²) = 25² / (5 · 129) = 625 / 645
    a = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert linear_cka(a, a**2) == pytest.approx(625 / 645, abs=1e-12)


def test_cka_of_independent_features_is_near_zero_and_shapes_are_checked():
    x = torch.randn(4000, 3, generator=_g(5))
    y = torch.randn(4000, 3, generator=_g(6))
    assert linear_cka(x, y) < 0.01
    with pytest.raises(LaminaError, match="same N"):
        linear_cka(x, y[:10])


def _hsic1_by_the_book(k, g):
    """Song et al. (2012) eq. 5 with explicit matrices."""
    n = len(k)
    k, g = k.clone(), g.clone()
    k.fill_diagonal_(0)
    g.fill_diagonal_(0)
    one = torch.ones(n, 1, dtype=k.dtype)
    t1 = torch.trace(k @ g)
    t2 = (one.T @ k @ one) * (one.T @ g @ one) / ((n - 1) * (n - 2))
    t3 = 2.0 / (n - 2) * (one.T @ k @ g @ one)
    return float((t1 + t2 - t3) / (n * (n - 3)))


def test_minibatch_cka_of_one_batch_equals_the_unbiased_hsic_formula():
    x = torch.randn(12, 4, generator=_g(7), dtype=torch.float64)
    y = torch.randn(12, 6, generator=_g(8), dtype=torch.float64) + x[:, :1]
    acc = MinibatchCKA()
    acc.update({"x": x}, {"y": y})
    _, _, m = acc.compute()
    k, g = x @ x.T, y @ y.T
    expected = _hsic1_by_the_book(k, g) / math.sqrt(_hsic1_by_the_book(k, k) * _hsic1_by_the_book(g, g))
    assert float(m[0, 0]) == pytest.approx(expected, rel=1e-10)


def test_minibatch_cka_is_close_to_exact_cka_on_a_large_sample():
    n = 6000
    x = torch.randn(n, 8, generator=_g(9), dtype=torch.float64)
    ys = {"linear": x @ torch.randn(8, 5, generator=_g(10), dtype=torch.float64)
          + torch.randn(n, 5, generator=_g(11), dtype=torch.float64),
          "noise": torch.randn(n, 5, generator=_g(12), dtype=torch.float64),
          "square": x[:, :3] ** 2}
    acc = MinibatchCKA()
    for i in range(0, n, 200):
        acc.update({"x": x[i : i + 200]}, {k: v[i : i + 200] for k, v in ys.items()})
    names_a, names_b, m = acc.compute()
    assert names_a == ["x"] and names_b == list(ys)
    for j, (name, y) in enumerate(ys.items()):
        assert float(m[0, j]) == pytest.approx(linear_cka(x, y), abs=0.02), name
    # the unbiased estimator is invariant to a constant offset of the features too
    off = MinibatchCKA()
    for i in range(0, 1000, 200):
        off.update({"x": x[i : i + 200] + 3.0}, {"y": ys["linear"][i : i + 200]})
    ref = MinibatchCKA()
    for i in range(0, 1000, 200):
        ref.update({"x": x[i : i + 200]}, {"y": ys["linear"][i : i + 200]})
    torch.testing.assert_close(off.compute()[2], ref.compute()[2])


def test_minibatch_cka_skips_tiny_batches_and_needs_one_usable_batch():
    acc = MinibatchCKA()
    acc.update({"a": torch.randn(3, 2)}, {"b": torch.randn(3, 2)})
    with pytest.raises(LaminaError, match="at least 4"):
        acc.compute()
    with pytest.raises(LaminaError, match="other stages"):
        acc.update({"z": torch.randn(5, 2)}, {"b": torch.randn(5, 2)})


def test_cka_between_stages_and_between_models():
    model = create_model("cnn", (1, 8, 8), 3, width=4)
    x = torch.randn(64, 1, 8, 8, generator=_g(13))
    batches = [(x[i : i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 64, 16)]
    names, m = cka_between_stages(model, batches, 48)
    assert names == ["stage1", "stage2", "stage3"]
    torch.testing.assert_close(m.diagonal(), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(m, m.T)
    a, b, cross = cka_between_models(model, model, batches, 64)
    assert a == b == names
    torch.testing.assert_close(cross, m, atol=0.2, rtol=0)  # more examples, same representations
    torch.testing.assert_close(cross.diagonal(), torch.ones(3, dtype=torch.float64))
