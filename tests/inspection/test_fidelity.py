"""The Fréchet distance and improved precision/recall against closed forms, brute force and scipy."""

from __future__ import annotations

import math

import pytest
import torch

from lamina.errors import LaminaError
from lamina.inspection.fidelity import (
    frechet_distance,
    gaussian_stats,
    knn_radii,
    precision_recall,
    sqrtm_trace,
)


def random_cov(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# -- Gaussian statistics and the Fréchet distance ---------------------------------------------------


def test_gaussian_stats_match_numpy_cov() -> None:
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == torch.float64
    torch.testing.assert_close(mu, x.double().mean(0))
    torch.testing.assert_close(sigma, torch.cov(x.double().T))


def test_identical_stats_give_exactly_zero() -> None:
    mu, sigma = torch.randn(6, dtype=torch.float64), random_cov(6, 1)
    assert frechet_distance(mu, sigma, mu.clone(), sigma.clone()) == 0.0


def test_two_large_samples_of_one_gaussian_are_near_zero() -> None:
    d, n = 4, 50_000
    g = torch.Generator().manual_seed(2)
    chol = torch.linalg.cholesky(random_cov(d, 3))
    a = torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T + 1.0
    b = torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T + 1.0
    fd = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    assert 0.0 <= fd < 2e-3  # the sampling error of the statistics, O(d / n) times the scale
    assert fd < 0.01 * frechet_distance(*gaussian_stats(a), *gaussian_stats(b + 0.1))


def test_diagonal_covariances_match_the_closed_form() -> None:
    m1, m2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.0])  # a zero variance too
    expected = float(((m1 - m2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_full_covariances_match_scipy_sqrtm() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    s1, s2 = random_cov(8, 4), random_cov(8, 5)
    m1, m2 = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    root = linalg.sqrtm(s1.numpy() @ s2.numpy())
    expected = float(((m1 - m2) ** 2).sum() + torch.trace(s1) + torch.trace(s2)) - 2 * float(root.real.trace())
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)
    assert float(sqrtm_trace(s1, s2)) == pytest.approx(float(root.real.trace()), rel=1e-10)


def test_frechet_distance_is_symmetric_and_handles_singular_covariances() -> None:
    s1, s2 = random_cov(5, 6), random_cov(5, 7)
    m1, m2 = torch.zeros(5), torch.ones(5)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-10)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(8))  # 3 points in 5-D: rank-2 covariance
    mu, sigma = gaussian_stats(x)
    fd = frechet_distance(mu, sigma, m2, s2)
    assert math.isfinite(fd) and fd > 0


def test_frechet_distance_refuses_mismatched_shapes() -> None:
    with pytest.raises(LaminaError, match="same D"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(LaminaError, match="at least 2"):
        gaussian_stats(torch.zeros(1, 3))
    with pytest.raises(LaminaError, match=r"\(N, D\) matrix"):
        gaussian_stats(torch.zeros(5))


# -- precision and recall ---------------------------------------------------------------------------


def brute_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """The definition, with every pairwise distance at once."""
    def radii(x: torch.Tensor) -> torch.Tensor:
        d = (x[:, None] - x[None]).pow(2).sum(-1).sqrt()
        return d.sort(dim=1).values[:, k]  # column 0: the point itself

    d = (fake[:, None] - real[None]).pow(2).sum(-1).sqrt()  # (M, N)
    precision = (d <= radii(real)[None]).any(1).double().mean()
    recall = (d.T <= radii(fake)[None]).any(1).double().mean()
    return float(precision), float(recall)


def test_identical_sets_have_precision_and_recall_one() -> None:
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_far_apart_sets_have_precision_and_recall_zero() -> None:
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(100, 4, generator=g), torch.randn(80, 4, generator=g) + 100.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_a_subset_by_hand() -> None:
    # reals on a line at 0, 1, 2, 3 and far away at 10, 10.5: with k=1 the real balls have radii 1 and 0.5.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0], [10.5]])
    # fakes: two inside the first cluster's balls, one between the clusters (outside every ball);
    # k=1 among the fakes: radii 0.6 (0.4 <-> 1.0), 0.6, and 5 (6's nearest fake is 1)
    fake = torch.tensor([[0.4], [1.0], [6.0]])
    assert knn_radii(fake, 1).tolist() == pytest.approx([0.6, 0.6, 5.0])
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(2 / 3)
    # reals within 0.6 of 0.4 or 1: 0 and 1; within 5 of 6: 2, 3, 10, 10.5: all six
    assert recall == 1.0
    precision, recall = precision_recall(real, fake[:2], k=1)  # only the two close fakes: radius 0.6 each
    assert precision == 1.0
    assert recall == pytest.approx(2 / 6)  # 0 and 1; 2 is 1 away


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force_on_random_data_in_any_chunk_size(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    real = torch.randn(157, 6, generator=g)
    fake = torch.randn(131, 6, generator=g) * 1.3 + 0.4
    expected = brute_precision_recall(real.double(), fake.double(), k)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    for chunk in (7, 64, 1024):
        p, r = precision_recall(real, fake, k=k, chunk=chunk)
        assert (p, r) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_refuses_bad_inputs() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(LaminaError, match="dimensions"):
        precision_recall(x, torch.randn(10, 4))
    with pytest.raises(LaminaError, match="k=10"):
        precision_recall(x, x, k=10)
    with pytest.raises(LaminaError, match="NaN"):
        precision_recall(x, torch.full((10, 3), float("nan")))
