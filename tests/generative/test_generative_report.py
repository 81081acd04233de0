"""The generative run's report sections, image grids and latent map, from hand-made run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lamina.inspection.generative import latent_pca
from lamina.reporting import render_report
from lamina.reporting.html import RunFolder
from lamina.utils.grid import image_grid, save_grid


def test_image_grid_places_each_image_and_pads_white() -> None:
    imgs = torch.stack([torch.full((1, 2, 3), v) for v in (0.0, 0.5, 1.0)])  # 3 images 2x3
    g = image_grid(imgs, nrow=2, pad=1)
    assert g.shape == (1 + 2 * 3, 1 + 2 * 4, 1) and g.dtype == torch.uint8
    assert int(g[1, 1, 0]) == 0 and int(g[1, 5, 0]) == 128 and int(g[4, 1, 0]) == 255
    assert int(g[0, 0, 0]) == 255 and int(g[4, 5, 0]) == 255  # padding, and the empty fourth cell
    with pytest.raises(ValueError):
        image_grid(torch.zeros(2, 2, 4, 4))


def test_save_grid_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    path = save_grid(torch.rand(4, 3, 5, 5), tmp_path / "g" / "x.png", scale=2)
    with Image.open(path) as img:
        assert img.size == (2 + 2 * 12, 2 + 2 * 12) and img.mode == "RGB"


def test_latent_pca_matches_the_covariance_eigenvectors() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g) * torch.tensor([3.0, 1.0, 0.1])
    pts, ev = latent_pca(x)
    cov = torch.cov(x.double().T)
    evals = torch.linalg.eigvalsh(cov).flip(0)
    assert ev == pytest.approx((evals / evals.sum()).tolist(), abs=1e-6)
    assert pts.var(0).tolist() == pytest.approx(evals[:2].tolist(), rel=1e-4)


def _run(tmp_path: Path, task: str) -> Path:
    run = tmp_path / task
    (run / "samples").mkdir(parents=True)
    (run / "inspection").mkdir()
    summary = {"task": task, "dataset": "toy", "model": task, "params": 10, "train_seconds": 3.0, "epochs": 2,
               "fd_lamina": 12.5, "fd_train_test": 1.5, "fd_precision": 0.6, "fd_recall": 0.4, "fd_precision_test": 0.9,
               "fd_recall_test": 0.8, "fd_samples": 100, "sample_steps": 20, "fd_classifier": "runs/cls",
               "test_nelbo": 250.0, "test_bpd": 0.46, "test_rec": 230.0, "test_kl": 20.0, "test_loss": 0.05}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "toy"}, "train": {}}))
    (run / "model.json").write_text(json.dumps({"task": task, "classes": ["a", "b"]}))
    metrics = [{"kind": "epoch", "epoch": e, "step": 10 * e, "train_loss": 3.0 - e, "val_loss": 3.1 - e,
                "train_rec": 2.0, "train_kl": 1.0 / e, "val_rec": 2.1, "val_kl": 1.1 / e} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    for e in (1, 2):
        save_grid(torch.rand(4, 1, 6, 6), run / "samples" / f"epoch_{e:03d}.png")
    (run / "samples" / "samples.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "step": 10 * e, "png": f"epoch_{e:03d}.png"}) + "\n" for e in (1, 2)))
    (run / "fidelity.jsonl").write_text("".join(json.dumps(
        {"epoch": e, "step": 10 * e, "fd_lamina": 20.0 / e, "fd_train_test": 1.5, "fd_precision": 0.3 * e,
         "fd_recall": 0.2 * e}) + "\n" for e in (1, 2)))
    if task == "vae":
        (run / "inspection" / "latent.json").write_text(json.dumps(
            {"latent": 4, "points": [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], "labels": [0, 1, 1],
             "explained": [0.6, 0.3, 0.1], "split": "test"}))
    return run


@pytest.mark.parametrize("task", ["vae", "diffusion"])
def test_report_shows_samples_fd_and_for_a_vae_its_terms_and_latent_map(tmp_path: Path, task: str) -> None:
    html = render_report(RunFolder(_run(tmp_path, task)))
    assert "Generated images" in html and "FD-lamina" in html and "never with published FIDs" in html
    assert html.count("data:image/png;base64") >= 4  # two grids, the FD curve, the learning curves
    assert ("The ELBO" in html and "Latent space" in html) == (task == "vae")
    assert "could not be drawn" not in html
