"""Adversarial robustness of classifiers: attacks (pure functions), gradient-masking checks,
robust evaluation of a run folder (``lamina attack``) and adversarial training (a task wrapper).

Attacks work in raw input units (pixels in [0, 1]) on :class:`RawModel`, the network with its
preprocessing inside. Submodules are imported on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.robustness.attacks import ATTACKS as ATTACKS
    from lamina.robustness.attacks import RawModel as RawModel
    from lamina.robustness.attacks import accuracy as accuracy
    from lamina.robustness.attacks import attack as attack
    from lamina.robustness.attacks import attack_batches as attack_batches
    from lamina.robustness.attacks import fgsm as fgsm
    from lamina.robustness.attacks import input_bounds as input_bounds
    from lamina.robustness.attacks import max_eps as max_eps
    from lamina.robustness.attacks import pgd as pgd
    from lamina.robustness.attacks import robust_accuracy as robust_accuracy
    from lamina.robustness.checks import masking_checks as masking_checks
    from lamina.robustness.checks import noise as noise
    from lamina.robustness.run import attack_run as attack_run
    from lamina.robustness.training import AdversarialTraining as AdversarialTraining
    from lamina.robustness.training import check_config as check_config

_WHERE = {
    **dict.fromkeys(("ATTACKS", "RawModel", "accuracy", "attack", "attack_batches", "fgsm", "input_bounds",
                     "max_eps", "pgd", "robust_accuracy"), "attacks"),
    "masking_checks": "checks", "noise": "checks",
    "attack_run": "run",
    "AdversarialTraining": "training", "check_config": "training",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"lamina.robustness.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lamina.robustness' has no attribute {name!r}")
