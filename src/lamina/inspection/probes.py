"""Linear probes (Alain & Bengio 2016): how linearly separable each stage's features are.

For every stage a multinomial logistic regression is fit on the pooled, standardised features
of training examples and scored on held-out examples; plotted against depth, the accuracies
show the hierarchy a network builds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.features import Batches, stage_features
from lamina.inspection.hooks import model_stages


def fit_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    *,
    l2: float = 1e-3,
    max_iter: int = 100,
) -> float:
    """Fit a linear softmax classifier on ``train_x`` (N, D) and return its accuracy on ``test_x``.

    The features are standardised with the training mean and std; the weights start at zero and
    are fit by full-batch L-BFGS (strong Wolfe line search) on the mean cross-entropy plus
    ``l2 · ||W||²``, so the result is deterministic and needs no seed; the penalty keeps the
    optimum finite on separable data.

    >>> x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    >>> fit_probe(x, torch.tensor([0, 0, 1, 1]), x, torch.tensor([0, 0, 1, 1]), 2)
    1.0
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise LaminaError(f"probe features must be (N, D) with the same D, got {tuple(train_x.shape)} and {tuple(test_x.shape)}")
    if len(train_x) == 0 or len(test_x) == 0:
        raise LaminaError("a probe needs at least one training and one test example")
    train_x, test_x = train_x.detach().double().cpu(), test_x.detach().double().cpu()
    train_y, test_y = train_y.long().cpu(), test_y.long().cpu()
    mean, std = train_x.mean(0), train_x.std(0, correction=0).clamp_min(1e-8)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(xs.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(xs @ w + b, train_y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (xt @ w + b).argmax(1)
    return float((pred == test_y).double().mean())


def probe_stages(
    model: nn.Module,
    train_batches: Batches,
    test_batches: Batches,
    *,
    max_train: int,
    max_test: int,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """A linear probe on every stage: ``[{"stage", "depth", "accuracy"}]`` in depth order (depth 1-based).

    Args:
        model: a model with ``stages()``.
        train_batches, test_batches: ``(inputs, labels)`` batches to fit and to score the probes on.
        max_train, max_test: caps on the examples read from each.
        num_classes: number of classes (None: ``model.num_classes``, else the largest label + 1).
        device: where the model runs.
    """
    names = [n for n, _ in model_stages(model)]
    train, ytr = stage_features(model, train_batches, max_examples=max_train, device=device)
    test, yte = stage_features(model, test_batches, max_examples=max_test, device=device)
    if len(ytr) == 0 or len(yte) == 0:
        raise LaminaError("probes need training and test examples: both sets of batches are needed and non-empty")
    k = num_classes or getattr(model, "num_classes", None) or int(max(ytr.max(), yte.max())) + 1
    return [{"stage": n, "depth": i, "accuracy": fit_probe(train[n], ytr, test[n], yte, int(k))}
            for i, n in enumerate(names, start=1)]
