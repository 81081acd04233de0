"""Sample quality from feature vectors: the Fréchet distance and improved precision and recall.

Pure functions on feature matrices (N, D) — a classifier's penultimate features of real and of
generated images — so the same code scores FID-style (Inception features) and FD-lamina (a lamina
classifier's features):

- :func:`frechet_distance` of two Gaussians fitted to the features (Heusel et al. 2017, "GANs
  trained by a two time-scale update rule converge to a local Nash equilibrium"):
  ``|mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``;
- :func:`precision_recall`: improved precision and recall (Kynkäänniemi et al. 2019): the share of
  generated features inside the k-NN balls of the real ones (quality), and of real ones inside the
  balls of the generated ones (coverage).

No scipy at run time: the trace of the matrix square root comes from a symmetric eigen-decomposition,
in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamina.errors import LaminaError

CHUNK = 1024  # rows of a distance block: CHUNK × N float64 values at once


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) of ``features`` (N, D), in float64 (the unbiased covariance,
    as ``numpy.cov(rowvar=False)`` and the reference FID code compute it).

    >>> mu, sigma = gaussian_stats(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    >>> mu.tolist(), sigma.tolist()
    ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    f = _matrix(features, "features")
    if len(f) < 2:
        raise LaminaError(f"Gaussian statistics need at least 2 feature vectors, got {len(f)}")
    f = f.double()
    mu = f.mean(dim=0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def sqrtm_trace(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """Tr((S1 S2)^{1/2}) of two symmetric PSD matrices, float64.

    S1 S2 is similar to the symmetric PSD matrix S1^{1/2} S2 S1^{1/2}, so the trace is the sum of
    the square roots of that matrix's eigenvalues (clamped at 0: rounding can make tiny ones
    negative). This is stable where S1 S2 is singular, unlike a general matrix square root.
    """
    s1, s2 = sigma1.double(), sigma2.double()
    w, v = torch.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * w.clamp_min(0).sqrt()) @ v.T  # S1^{1/2}
    m = root1 @ s2 @ root1
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """The Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``, as FID defines it.

    Args:
        mu1, mu2: means (D,).
        sigma1, sigma2: covariances (D, D), symmetric positive semi-definite.

    >>> frechet_distance(torch.zeros(2), torch.eye(2), torch.ones(2), 4 * torch.eye(2))
    4.0
    """
    mu1, mu2 = mu1.double().flatten(), mu2.double().flatten()
    s1, s2 = sigma1.double(), sigma2.double()
    d = len(mu1)
    if len(mu2) != d or s1.shape != (d, d) or s2.shape != (d, d):
        raise LaminaError(f"Fréchet distance: means of {len(mu1)} and {len(mu2)} dimensions with covariances "
                          f"{tuple(s1.shape)} and {tuple(s2.shape)}: they must all describe the same D")
    if torch.equal(mu1, mu2) and torch.equal(s1, s2):
        return 0.0  # the same Gaussian (the general formula leaves rounding residue of ~1e-12 · Tr)
    diff = mu1 - mu2
    fd = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * sqrtm_trace(s1, s2)
    return max(float(fd), 0.0)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, *, chunk: int = CHUNK) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` (M, D) against ``real`` (N, D).

    Each real feature gets the ball whose radius is the distance to its k-th nearest other real
    feature, each fake one likewise among the fakes. Precision: the fraction of fakes inside at least
    one real ball; recall: the fraction of reals inside at least one fake ball. Distances are computed
    in blocks of ``chunk`` rows (float64), so 10k × 10k never needs 10k² values at once.

    Returns:
        ``(precision, recall)``, each in [0, 1].

    >>> real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> precision_recall(real, torch.tensor([[0.5], [9.0]]), k=1)
    (0.5, 1.0)
    """
    r, f = _matrix(real, "real features").double(), _matrix(fake, "fake features").double()
    if r.shape[1] != f.shape[1]:
        raise LaminaError(f"precision/recall: real features have {r.shape[1]} dimensions, fake ones {f.shape[1]}")
    if not 1 <= k < min(len(r), len(f)):
        raise LaminaError(f"precision/recall needs 1 <= k < the number of real ({len(r)}) and fake ({len(f)}) "
                          f"features, got k={k}")
    r_radii, f_radii = knn_radii(r, k, chunk=chunk), knn_radii(f, k, chunk=chunk)
    precision = _inside_any(f, r, r_radii, chunk=chunk).double().mean()
    recall = _inside_any(r, f, f_radii, chunk=chunk).double().mean()
    return float(precision), float(recall)


def knn_radii(x: Tensor, k: int, *, chunk: int = CHUNK) -> Tensor:
    """The distance of each row of ``x`` (N, D) to its k-th nearest other row (N,), float64."""
    x = x.double()
    sq = (x * x).sum(dim=1)
    out = []
    for start in range(0, len(x), chunk):
        d2 = _sq_dists(x[start:start + chunk], x, sq)  # (chunk, N), the row itself at ~0
        out.append(d2.topk(k + 1, dim=1, largest=False).values[:, k])  # index 0: the row itself
    return torch.cat(out).sqrt()


def _inside_any(queries: Tensor, centres: Tensor, radii: Tensor, *, chunk: int) -> Tensor:
    """For each query row, whether it lies in at least one ball (centres[i], radii[i]): (M,) bool."""
    sq = (centres * centres).sum(dim=1)
    r2 = radii * radii
    out = []
    for start in range(0, len(queries), chunk):
        d2 = _sq_dists(queries[start:start + chunk], centres, sq)  # (chunk, N)
        out.append((d2 <= r2[None]).any(dim=1))
    return torch.cat(out)


def _sq_dists(a: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """Squared Euclidean distances (len(a), len(b)) as |a|² + |b|² - 2 a·b, clamped at 0."""
    return ((a * a).sum(dim=1)[:, None] + b_sq[None] - 2 * a @ b.T).clamp_min(0)


def _matrix(t: Tensor, what: str) -> Tensor:
    if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[1] < 1:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise LaminaError(f"{what} must be a (N, D) matrix, got {shape}")
    if not torch.isfinite(t).all():
        raise LaminaError(f"{what} contain NaN or inf values")
    return t
