"""The sections of a generative run (``vae``, ``diffusion``): the sample grids written during
training, FD-lamina and precision/recall over training against the real train↔test calibration,
the VAE's two loss terms, and its latent space of the test set in 2-D.

Read only from the run folder: ``samples/samples.jsonl`` and its PNGs, ``fidelity.jsonl``,
``metrics.jsonl`` and ``inspection/latent.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lamina.reporting.figures import _figure, _png, _style
from lamina.reporting.html import (
    RunFolder,
    Section,
    class_names,
    figures_block,
    image,
    note,
    para,
    register_section,
    run_task,
    table,
)

GENERATIVE = ("vae", "diffusion")
MAX_GRIDS = 5


def fidelity_curve(records: Sequence[Mapping[str, Any]]) -> bytes:
    """FD-lamina of the samples against the epoch (top), with the real test images' distance as the
    floor a perfect generator reaches; precision and recall (bottom)."""
    ep = [r["epoch"] for r in records]
    fig = _figure(4.6)
    fd_ax, pr_ax = fig.subplots(2, 1, sharex=True)
    fd_ax.plot(ep, [r["fd_lamina"] for r in records], "o-", color="C0", lw=2, label="generated vs train")
    fd_ax.plot(ep, [r["fd_train_test"] for r in records], "--", color="0.4", lw=1.5, label="real test vs train")
    fd_ax.set_ylabel("FD-lamina")
    fd_ax.set_yscale("log")
    for key, color in (("fd_precision", "C1"), ("fd_recall", "C2")):
        pr_ax.plot(ep, [r[key] for r in records], "o-", color=color, lw=2, label=key)
    pr_ax.set_ylim(-0.02, 1.02)
    pr_ax.set_xlabel("epoch")
    for ax in (fd_ax, pr_ax):
        _style(ax)
        ax.legend(loc="best", frameon=False)
    fd_ax.set_title("Sample quality over training")
    return _png(fig)


def loss_terms(records: Sequence[Mapping[str, Any]]) -> bytes:
    """The VAE's reconstruction and KL terms (nats per image) per epoch, on the training and validation sets."""
    epochs = [r for r in records if r.get("kind") == "epoch"]
    fig = _figure(2.8)
    axes = fig.subplots(1, 2)
    for ax, key, name in ((axes[0], "rec", "reconstruction"), (axes[1], "kl", "KL")):
        for split, color in (("train", "C0"), ("val", "C1")):
            pts = [(r["epoch"], r[f"{split}_{key}"]) for r in epochs if isinstance(r.get(f"{split}_{key}"), float)]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", color=color, lw=2, ms=4, label=split)
        ax.set_title(f"{name} (nats per image)")
        ax.set_xlabel("epoch")
        _style(ax)
        if ax.has_data():
            ax.legend(loc="best", frameon=False)
    return _png(fig)


def latent_map(points: Sequence[Sequence[float]], labels: Sequence[int], classes: Sequence[str] | None,
               explained: Sequence[float]) -> bytes:
    """The test set's latent means projected on their first two principal components, by class."""
    xy, y = np.asarray(points, dtype=float), np.asarray(labels, dtype=int)
    fig = _figure(4.4)
    ax = fig.subplots()
    for c in np.unique(y):
        sel = y == c
        name = classes[c] if classes and 0 <= c < len(classes) else str(c)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=5, alpha=0.6, linewidths=0, label=name, color=f"C{int(c) % 10}")
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%})")
    _style(ax)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=3)
    return _png(fig)


@register_section
def section_generated(run: RunFolder) -> Section | None:
    if run_task(run) not in GENERATIVE:
        return None
    grids = [r for r in run.jsonl("samples/samples.jsonl") or [] if run.has(f"samples/{r.get('png')}")]
    s = run.summary
    body = ""
    if isinstance(s.get("fd_lamina"), int | float):
        body += para(f"FD-lamina of {s.get('fd_samples')} samples ({s.get('sample_steps')} sampler steps) from the "
                     f"final model: {s['fd_lamina']:.2f}, against {s['fd_train_test']:.2f} for as many real test images "
                     f"(the floor: a perfect generator's distance). Precision {s['fd_precision']:.2f} (samples that look "
                     f"like real images), recall {s['fd_recall']:.2f} (how much of the real variety the samples cover); "
                     f"real test images: {s['fd_precision_test']:.2f} and {s['fd_recall_test']:.2f}.")
        body += note(f"FD-lamina is the Fréchet distance in the feature space of the classifier "
                     f"{s.get('fd_classifier')} (lamina's, trained on this dataset), not Inception's: compare it only "
                     "with runs scored by the same classifier, never with published FIDs.")
    figs = []
    shown = grids if len(grids) <= MAX_GRIDS else [grids[round(i * (len(grids) - 1) / (MAX_GRIDS - 1))]
                                                  for i in range(MAX_GRIDS)]
    for r in shown:
        png = (run.path / "samples" / str(r["png"])).read_bytes()
        figs.append(image(png, f"samples after epoch {r.get('epoch')}", f"after epoch {r.get('epoch')} "
                          f"(step {r.get('step')})"))
    if figs:
        body += para("The same starting noise (seed 0) sampled after these epochs, so the grids show one set of "
                     "samples improving as the model trains.") + figures_block(*figs)
    fidelity = [r for r in run.jsonl("fidelity.jsonl") or [] if isinstance(r.get("fd_lamina"), int | float)]
    if fidelity:
        body += figures_block(image(fidelity_curve(fidelity), "FD-lamina, precision and recall against the epoch",
                                    "Lower FD is better; the dashed line is real test images' distance."))
        body += table([(r["epoch"], f"{r['fd_lamina']:.2f}", f"{r['fd_train_test']:.2f}", f"{r['fd_precision']:.2f}",
                        f"{r['fd_recall']:.2f}") for r in fidelity],
                      ["epoch", "FD-lamina", "real test", "precision", "recall"])
    if not body:
        return None
    return Section("generated", "Generated images", body)


@register_section
def section_loss_terms(run: RunFolder) -> Section | None:
    records = run.jsonl("metrics.jsonl") or []
    if run_task(run) != "vae" or not any("train_kl" in r for r in records):
        return None
    s = run.summary
    text = ""
    if isinstance(s.get("test_nelbo"), int | float):
        text = (f"Test negative ELBO {s['test_nelbo']:.2f} nats per image ({s.get('test_bpd', float('nan')):.4f} bits "
                f"per dimension): reconstruction {s.get('test_rec', float('nan')):.2f} + KL "
                f"{s.get('test_kl', float('nan')):.2f}.")
    fig = image(loss_terms(records), "reconstruction and KL terms against the epoch",
                "The ELBO's two terms: how well images are rebuilt, and how far the codes are from the prior.")
    return Section("loss-terms", "The ELBO's terms", para(text) + figures_block(fig))


@register_section
def section_latent(run: RunFolder) -> Section | None:
    lat = run.json("inspection/latent.json")
    if not isinstance(lat, dict) or not lat.get("points"):
        return None
    fig = image(latent_map(lat["points"], lat["labels"], class_names(run), lat["explained"]),
                "the test set's latent means in 2-D", "Principal components of the posterior means, one dot per "
                "test image, coloured by its class (which the VAE never saw).")
    intro = para(f"{len(lat['points']):,} test images encoded into {lat.get('latent')} latent dimensions; the "
                 f"first two principal components hold {sum(lat['explained'][:2]):.0%} of their variance.")
    return Section("latent", "Latent space", intro + figures_block(fig))
