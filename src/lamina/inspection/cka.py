"""Centered kernel alignment (linear kernel): how similar two layers' representations are.

``linear_cka`` is the exact CKA of Kornblith et al. (2019) on (N, D) matrices. ``MinibatchCKA``
is the estimator of Nguyen, Raghu & Kornblith (2021), "Do wide and deep networks learn the same
things?": the unbiased HSIC estimator of Song et al. (2012) averaged over minibatches,

    CKA = mean_i HSIC1(K_i, L_i) / sqrt(mean_i HSIC1(K_i, K_i) · mean_i HSIC1(L_i, L_i)),

with K_i = X_i X_iᵀ and L_i = Y_i Y_iᵀ the Gram matrices of minibatch i. Memory is O(batch²)
per stage instead of the O(N²) of the exact form, and the estimate is consistent as the number
of minibatches grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.features import Batches, capped, eval_mode, run_features
from lamina.inspection.hooks import capture, model_stages


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Exact linear CKA of ``x`` (N, D1) and ``y`` (N, D2): ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F), centered.

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    >>> round(linear_cka(x, torch.tensor([[1.0], [0.0], [-1.0]])), 6)
    0.790569
    """
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise LaminaError(f"linear_cka needs two (N, D) matrices with the same N, got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / den) if den > 0 else math.nan


def _gram_terms(feats: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """For each stage's (n, D) features: the Gram matrix with a zeroed diagonal, flattened (S, n²);
    its row sums (S, n); its total (S,). Everything HSIC1 needs, in float64."""
    flat, rows = [], []
    for f in feats.values():
        f = f.double().reshape(len(f), -1)
        k = f @ f.T
        k.fill_diagonal_(0.0)
        flat.append(k.reshape(-1))
        rows.append(k.sum(1))
    r = torch.stack(rows)
    return torch.stack(flat), r, r.sum(1)


def _hsic1(a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor], n: int) -> Tensor:
    """Unbiased HSIC (Song et al. 2012, eq. 5) for every pair of stages: (A, B).

    HSIC1 = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1] / (n(n-3)).
    """
    (fa, ra, sa), (fb, rb, sb) = a, b
    trace = fa @ fb.T  # tr(K̃ L̃) = sum(K̃ ∘ L̃) for symmetric K̃, L̃
    return (trace + sa[:, None] * sb[None, :] / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ra @ rb.T)) / (n * (n - 3))


class MinibatchCKA:
    """Accumulates the minibatch CKA between every stage of ``a`` and every stage of ``b``.

    Call ``update(feats_a, feats_b)`` with the features of the same examples (dicts of (n, D)
    tensors; feature maps are flattened), then ``compute()``. Minibatches of fewer than 4
    examples are skipped: the unbiased estimator needs n ≥ 4.
    """

    def __init__(self) -> None:
        self.names_a: list[str] | None = None
        self.names_b: list[str] | None = None
        self.cross: Tensor | None = None  # sum of HSIC1(K_a, L_b): (A, B)
        self.self_a: Tensor | None = None  # sum of HSIC1(K_a, K_a): (A,)
        self.self_b: Tensor | None = None
        self.batches = 0

    def update(self, feats_a: Mapping[str, Tensor], feats_b: Mapping[str, Tensor]) -> None:
        n = len(next(iter(feats_a.values())))
        if any(len(f) != n for f in (*feats_a.values(), *feats_b.values())):
            raise LaminaError("MinibatchCKA.update needs the features of the same examples for every stage")
        if self.names_a is None:
            self.names_a, self.names_b = list(feats_a), list(feats_b)
        elif list(feats_a) != self.names_a or list(feats_b) != self.names_b:
            raise LaminaError("MinibatchCKA.update got other stages than in its first update")
        if n < 4:
            return
        ta = _gram_terms(feats_a)
        tb = ta if feats_b is feats_a else _gram_terms(feats_b)
        cross = _hsic1(ta, tb, n)
        self_a = cross.diagonal() if feats_b is feats_a else _hsic1(ta, ta, n).diagonal()
        self_b = self_a if feats_b is feats_a else _hsic1(tb, tb, n).diagonal()
        if self.cross is None:
            self.cross, self.self_a, self.self_b = cross, self_a.clone(), self_b.clone()
        else:
            assert self.self_a is not None and self.self_b is not None
            self.cross += cross
            self.self_a += self_a
            self.self_b += self_b
        self.batches += 1

    def compute(self) -> tuple[list[str], list[str], Tensor]:
        """``(names_a, names_b, cka (A, B) float64)``; NaN where a stage's HSIC is not positive."""
        if self.cross is None or self.self_a is None or self.self_b is None:
            raise LaminaError("MinibatchCKA has no minibatch of at least 4 examples: give more examples")
        assert self.names_a is not None and self.names_b is not None
        den = (self.self_a[:, None] * self.self_b[None, :]).clamp_min(0).sqrt()
        cka = torch.where(den > 0, self.cross / den, torch.full_like(den, math.nan))
        return self.names_a, self.names_b, cka


Prep = Callable[[Tensor], Tensor]


def _flat(out: Mapping[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    return {n: out[n].reshape(len(out[n]), -1) for n in names}


def cka_between_stages(
    model: nn.Module, batches: Batches, max_examples: int, *, device: str | torch.device = "cpu"
) -> tuple[list[str], Tensor]:
    """Minibatch CKA between every pair of ``model``'s stages (flattened outputs): ``(names, (S, S))``."""
    names = [n for n, _ in model_stages(model)]
    acc = MinibatchCKA()
    with eval_mode(model), torch.no_grad(), capture(model, names) as out:
        for x, _ in capped(batches, max_examples):
            out.clear()
            run_features(model, x.to(device))
            feats = _flat(out, names)
            acc.update(feats, feats)
    return names, acc.compute()[2]


def cka_between_models(
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Batches,
    max_examples: int,
    *,
    device: str | torch.device = "cpu",
    prep_a: Prep | None = None,
    prep_b: Prep | None = None,
) -> tuple[list[str], list[str], Tensor]:
    """Minibatch CKA between every stage of ``model_a`` and every stage of ``model_b`` on the same inputs.

    ``prep_a``/``prep_b`` map a batch to each model's inputs (two runs may normalise differently);
    None feeds the batch as it is. For two runs of one architecture (e.g. two seeds) the diagonal
    is the same-stage similarity. Returns ``(names_a, names_b, (A, B))``.
    """
    names_a = [n for n, _ in model_stages(model_a)]
    names_b = [n for n, _ in model_stages(model_b)]
    acc = MinibatchCKA()
    with (eval_mode(model_a), eval_mode(model_b), torch.no_grad(),
          capture(model_a, names_a) as out_a, capture(model_b, names_b) as out_b):
        for x, _ in capped(batches, max_examples):
            x = x.to(device)
            out_a.clear()
            out_b.clear()
            run_features(model_a, prep_a(x) if prep_a else x)
            run_features(model_b, prep_b(x) if prep_b else x)
            acc.update(_flat(out_a, names_a), _flat(out_b, names_b))
    return acc.compute()
