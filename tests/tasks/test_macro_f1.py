"""Macro-F1 and the per-class table against a hand count and scikit-learn."""

from __future__ import annotations

import pytest

from lamina.tasks.classify import per_class_f1


def test_macro_f1_against_a_hand_count() -> None:
    m = per_class_f1([[8, 2, 0], [0, 10, 0], [0, 5, 5]])
    # precision: 8/8, 10/17, 5/5; recall: 0.8, 1.0, 0.5
    f1 = [2 * 0.8 / 1.8, 2 * (10 / 17) / (10 / 17 + 1), 2 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["per_class"][1]["precision"] == pytest.approx(10 / 17) and m["per_class"][2]["support"] == 10


def test_macro_f1_matches_scikit_learn_with_a_class_never_predicted() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    y = [0, 0, 1, 1, 2, 2, 2, 0, 3]
    p = [0, 1, 1, 1, 0, 2, 2, 1, 2]  # class 3 is never predicted: precision 0, F1 0
    cm = [[0] * 4 for _ in range(4)]
    for a, b in zip(y, p, strict=True):
        cm[a][b] += 1
    ours = per_class_f1(cm)
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(y, p, average="macro", zero_division=0))
    assert [r["f1"] for r in ours["per_class"]] == pytest.approx(list(metrics.f1_score(y, p, average=None, zero_division=0)))
