"""Every figure function returns a small, valid PNG from synthetic run-folder records."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from lamina.reporting import figures

rng = np.random.default_rng(0)
CASES: dict[str, Callable[[], bytes | None]] = {
    "learning_curves": lambda: figures.learning_curves(
        [{"kind": "step", "step": s, "loss": 2.0 / s, "accuracy": 1 - 1 / s} for s in range(1, 20)]
        + [{"kind": "epoch", "epoch": e, "step": 6 * e, "train_loss": 1 / e, "val_loss": 1.1 / e,
            "train_accuracy": 0.3 * e, "val_accuracy": 0.28 * e} for e in (1, 2, 3)]),
    "learning_curves_epochs_only": lambda: figures.learning_curves(
        [{"kind": "epoch", "epoch": e, "train_loss": 1 / e, "val_accuracy": None} for e in (1, 2)]),
    "probe_accuracy": lambda: figures.probe_accuracy(
        [{"stage": "stage2", "depth": 2, "accuracy": 0.8}, {"stage": "stage1", "depth": 1, "accuracy": 0.71}]),
    "cka_small_annotated": lambda: figures.cka_heatmap(["a", "b"], [[1.0, 0.4], [0.4, 1.0]]),
    "cka_large": lambda: figures.cka_heatmap([f"s{i}" for i in range(14)], rng.random((14, 14)).tolist()),
    "gradient_flow_legend": lambda: figures.gradient_flow(
        [{"step": s, "layers": [{"name": f"l{k}", "grad_norm": 0.1 * k + s, "weight_norm": 1.0,
                                 "update_ratio": 1e-3} for k in range(3)]} for s in range(5)]),
    "gradient_flow_colorbar": lambda: figures.gradient_flow(
        [{"step": s, "layers": [{"name": f"l{k}", "grad_norm": 0.0 if k == 0 else 0.1 * k,
                                 "weight_norm": 1.0, "update_ratio": None} for k in range(12)]} for s in range(4)]),
    "activation_stats": lambda: figures.activation_stats(
        {"stage1": {"mean": 0.1, "std": 1.0, "dead_fraction": 0.2, "saturation": None},
         "stage2": {"mean": 0.1, "std": 1.0, "dead_fraction": 0.0, "saturation": None}}),
    "activation_stats_saturating": lambda: figures.activation_stats(
        {"stage1": {"mean": 0.1, "std": 1.0, "dead_fraction": 0.0, "saturation": 0.3}}),
    "filters_grey": lambda: figures.filters_grid([10, 1, 3, 3], rng.normal(size=(10, 1, 3, 3)).tolist()),
    "filters_rgb": lambda: figures.filters_grid([4, 3, 5, 5], rng.normal(size=(4, 3, 5, 5)).tolist()),
    "filters_many_channels": lambda: figures.filters_grid([70, 4, 3, 3], rng.normal(size=(70, 4, 3, 3)).tolist()),
    "filters_conv1d": lambda: figures.filters_grid([6, 1, 5], rng.normal(size=(6, 1, 5)).tolist()),
    "top_activations": lambda: figures.top_activations(
        {"stage": "stage2", "channels": {"0": [1, 2], "1": [2, 3, 9]},  # 9 has no stored pixels
         "images": {str(i): rng.random((3, 8, 8)).tolist() for i in (1, 2, 3)}}),
    "attributions": lambda: figures.attributions(
        {"indices": [4, 5], "labels": [0, 1], "predicted": [0, 0], "images": rng.random((2, 1, 8, 8)).tolist(),
         "methods": {k: rng.normal(size=(2, 8, 8)).tolist() for k in ("saliency", "integrated_gradients", "grad_cam")}},
        classes=["cat", "dog"]),
    "attributions_no_inputs_zero_map": lambda: figures.attributions(
        {"indices": [4], "labels": [0], "predicted": [1],
         "methods": {"saliency": rng.random((1, 6, 6)).tolist(), "grad_cam": np.zeros((1, 6, 6)).tolist()}}),
    "activation_stats_all_zero": lambda: figures.activation_stats(
        {"stage1": {"mean": 0.1, "std": 1.0, "dead_fraction": 0.0, "saturation": None}}),
    "confusion_matrix": lambda: figures.confusion_matrix(["a", "b", "c"], [[5, 1, 0], [0, 0, 0], [2, 2, 9]]),
    "confusion_matrix_many": lambda: figures.confusion_matrix(
        [f"a very long class name {i}" for i in range(20)], rng.integers(0, 9, (20, 20)).tolist()),
    "misclassified_grid": lambda: figures.misclassified_grid(
        [{"index": i, "true": 1, "predicted": 0, "confidence": 0.9, "image": rng.random((1, 8, 8)).tolist()}
         for i in range(5)] + [{"index": 9, "true": 0, "predicted": 1, "confidence": 0.5}], classes=["x", "y"]),
    "misclassified_signals": lambda: figures.misclassified_grid(
        [{"index": 0, "true": "up", "predicted": "down", "confidence": 0.7, "image": rng.random((1, 40)).tolist()}]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_figure_is_a_small_valid_png(name: str) -> None:
    png = CASES[name]()
    assert isinstance(png, bytes)
    im = Image.open(io.BytesIO(png))
    im.load()
    assert im.format == "PNG"
    assert 200 <= im.width <= 900 and 150 <= im.height <= 1200  # ~100 dpi, readable full width on a phone
    assert len(png) < 400_000
    assert len(np.unique(np.asarray(im.convert("L")))) > 5  # something was drawn


def test_figures_without_images_return_none() -> None:
    assert figures.top_activations({"stage": "s", "channels": {"0": [1]}}) is None
    assert figures.misclassified_grid([{"index": 1, "true": 0, "predicted": 1, "confidence": 0.9}]) is None
