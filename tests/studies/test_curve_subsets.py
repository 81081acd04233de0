"""Nested, stratified subsets and the per-point training length, batch size and learning rate."""

from __future__ import annotations

import doctest
import itertools

import pytest
import torch

import lamina.studies.curve as curve_module
import lamina.studies.fit as fit_module
from lamina.errors import LaminaError
from lamina.studies import nested_subsets, point_batch_size, point_epochs, point_lr
from lamina.training.optim import default_lr

FRACTIONS = [0.01, 0.03, 0.1, 0.3, 1.0]


def _labels() -> torch.Tensor:
    # 3 unequal classes (500, 300, 200), shuffled: proportions must survive the subsetting
    y = torch.cat([torch.full((500,), 0), torch.full((300,), 1), torch.full((200,), 2)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]


def test_subsets_are_stratified_with_the_rounding_rule():
    y = _labels()
    for f, idx in zip(FRACTIONS, nested_subsets(y, FRACTIONS, seed=0), strict=True):
        assert len(torch.unique(idx)) == len(idx)  # no repeats
        counts = torch.bincount(y[idx], minlength=3).tolist()
        assert counts == [max(1, round(f * n)) for n in (500, 300, 200)]


def test_smaller_subsets_lie_inside_larger_ones():
    subsets = nested_subsets(_labels(), FRACTIONS, seed=3)
    for small, large in itertools.pairwise(subsets):
        assert set(small.tolist()) < set(large.tolist())
    assert subsets[-1].tolist() == list(range(1000))  # fraction 1: everything


def test_subsets_are_deterministic_in_the_seed_and_differ_between_seeds():
    y = _labels()
    a, b, c = (nested_subsets(y, [0.1, 0.5], seed=s) for s in (7, 7, 8))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    # the order of the fractions asked for does not change a subset
    assert torch.equal(nested_subsets(y, [0.5, 0.1], seed=7)[1], a[0])


def test_every_class_keeps_at_least_one_example():
    y = torch.tensor([0] * 98 + [1, 2])
    idx = nested_subsets(y, [0.01], seed=0)[0]
    assert sorted(y[idx].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("f", [0.0, -0.1, 1.5, float("nan"), True])
def test_bad_fractions_are_one_line_errors(f):
    with pytest.raises(LaminaError, match=r"must lie in \(0, 1\]") as info:
        nested_subsets(torch.tensor([0, 1]), [f], seed=0)
    assert "\n" not in str(info.value)


def test_epochs_follow_the_inverse_square_root_rule_with_its_cap():
    assert [point_epochs(6, f, 10.0) for f in FRACTIONS] == [60, 35, 19, 11, 6]
    assert point_epochs(6, 0.0001, 10.0) == 60  # capped at 10x
    assert point_epochs(6, 0.01, 1.0) == 6  # cap 1: no scaling
    assert point_epochs(1, 0.25, 10.0) == 2  # exactly 2: no float error rounds it up to 3
    # the cost rule of the docstring: examples processed per seed, in full runs, for the default fractions
    cost = sum(f * point_epochs(60, f, 10.0) for f in FRACTIONS) / 60
    assert 2.0 < cost < 2.3


def test_batch_size_and_learning_rate_per_point():
    assert point_batch_size(256, 60_000) == 256
    assert point_batch_size(256, 600) == 16  # >= 32 steps an epoch (600 / 32 = 18.75 ... 16)
    assert point_batch_size(64, 6_000) == 64  # never above the base batch
    assert point_lr(0.2, "sgd", 256, 16) == pytest.approx(0.2 * 16 / 256)  # linear for SGD
    assert point_lr(0.01, "adamw", 256, 64) == pytest.approx(0.01 * 0.5)  # square root for AdamW
    assert point_lr(None, "sgd", 256, 32) == default_lr("sgd", 32)


def test_docstring_examples_run():
    for module in (curve_module, fit_module):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
