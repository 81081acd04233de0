"""The inspection's figures as PNG files in ``RUN/inspection/`` (the report embeds the same ones)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lamina.reporting import figures
from lamina.reporting.html import RunFolder, class_names, run_task
from lamina.utils.io import atomic_write_bytes


def _probes(d: Any) -> bytes:
    if isinstance(d, dict):  # a language model's next-character probes, beside their majority baseline
        return figures.probe_accuracy(d["stages"], baseline=d.get("baseline"), title="Next-character class by depth")
    return figures.probe_accuracy(d)


# file name -> (the JSON it needs, how to draw it); a missing JSON means no figure
FIGURES: dict[str, tuple[str, Callable[[Any, RunFolder], bytes | None]]] = {
    "probes.png": ("inspection/probes.json", lambda d, run: _probes(d)),
    "cka.png": ("inspection/cka.json", lambda d, run: figures.cka_heatmap(d["stages"], d["matrix"])),
    "activations.png": ("inspection/activations.json", lambda d, run: figures.activation_stats(d)),
    "filters.png": ("inspection/filters.json", lambda d, run: figures.filters_grid(d["shape"], d["values"])),
    "top_activations.png": ("inspection/top_activations.json", lambda d, run: figures.top_activations(d)),
    "attributions.png": ("inspection/attributions.json",  # token attributions are text: the report shows them
                         lambda d, run: figures.attributions(d, classes=class_names(run)) if d.get("methods") else None),
    "confusion.png": ("inspection/confusion.json", lambda d, run: figures.confusion_matrix(d["classes"], d["matrix"])),
    "misclassified.png": ("inspection/misclassified.json",
                          lambda d, run: figures.misclassified_grid(d, classes=class_names(run))),
}


def write_figures(run_dir: str | Path) -> list[Path]:
    """Draw every figure whose inspection JSON exists (plus gradient flow, learning curves and, for a
    language model, one ``attention_<stage>.png`` per block)."""
    run = RunFolder(run_dir)
    out = Path(run_dir) / "inspection"
    out.mkdir(exist_ok=True)
    written = []

    def save(name: str, png: bytes | None) -> None:
        if png is not None:
            atomic_write_bytes(out / name, png)
            written.append(out / name)

    for name, (source, draw) in FIGURES.items():
        data = run.json(source)
        if data:
            save(name, draw(data, run))
    gradients = run.jsonl("inspection/gradients.jsonl")
    if gradients:
        save("gradient_flow.png", figures.gradient_flow(gradients))
    attention = run.json("inspection/attention.json")
    if isinstance(attention, dict):
        for st in attention.get("stages", []):
            save(f"attention_{st['stage']}.png", figures.attention_heads(st["stage"], attention["tokens"], st["heads"]))
    metrics = run.jsonl("metrics.jsonl")
    if metrics:
        lm = run_task(run) == "language-model"
        save("learning_curves.png", figures.learning_curves(metrics, metric="bpc" if lm else "accuracy",
                                                            label="bits per character" if lm else None))
    return written
