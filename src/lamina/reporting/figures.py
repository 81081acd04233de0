"""Matplotlib figures for the report, each from parsed run-folder JSON and returned as PNG bytes.

Every function draws on its own ``Figure`` with an Agg canvas (no pyplot state, so it is
thread-safe and never opens a window). Figures are about 6 inches wide at 100 dpi with 11 pt
text: a phone shows them full width, a laptop two per row. Arrays arrive as nested lists.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure

DPI = 100
WIDTH = 5.0  # inches: 500 px, about 3/4 of it shown on a phone, so 11 pt text stays legible
MAX_GRID = 64  # at most this many filters / images in one grid
_RC = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 9}


def _figure(height: float, width: float = WIDTH) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _style(ax: Axes) -> None:
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    for label in (ax.title, ax.xaxis.label, ax.yaxis.label):
        label.set_fontsize(_RC["axes.titlesize"])
    ax.tick_params(labelsize=10)


def _show(ax: Axes, arr: Any, *, cmap: str = "gray") -> None:
    """Draw one example in [0, 1]: (C,H,W) or (H,W) as an image, (C,L) or (L,) as a signal."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a[:3], (1, 2, 0)) if a.shape[0] in (3, 4) else a.mean(0)
    if a.ndim == 3:
        ax.imshow(np.clip(a, 0.0, 1.0), interpolation="nearest")
    elif a.ndim == 2 and min(a.shape) > 4:
        ax.imshow(a, cmap=cmap, interpolation="nearest", vmin=0.0, vmax=max(1.0, float(a.max())))
    else:
        for row in np.atleast_2d(a):  # a signal: one line per channel
            ax.plot(row, lw=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def learning_curves(records: Sequence[Mapping[str, Any]], *, metric: str = "accuracy",
                    label: str | None = None) -> bytes:
    """Loss (top) and ``metric`` (bottom: accuracy, or ``bpc`` for a language model) against the
    step: per logged step and per epoch; ``label`` names the metric on its axis."""
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    with_step = all("step" in r for r in epochs)
    ex = [r["step"] if with_step else r.get("epoch", i + 1) for i, r in enumerate(epochs)]
    fig = _figure(5.6)
    loss_ax, acc_ax = fig.subplots(2, 1, sharex=with_step)
    for ax, key, name in ((loss_ax, "loss", "loss"), (acc_ax, metric, label or metric)):
        pts = [(r["step"], r[key]) for r in steps if r.get(key) is not None]
        if pts and with_step:
            ax.plot(*zip(*pts, strict=True), color="0.65", lw=1, marker="." if len(pts) < 30 else None,
                    label=f"train {key} (step)")
        for split, color in (("train", "C0"), ("val", "C1")):
            ys = [(x, r[f"{split}_{key}"]) for x, r in zip(ex, epochs, strict=True)
                  if r.get(f"{split}_{key}") is not None]
            if ys:
                ax.plot(*zip(*ys, strict=True), "o-", color=color, lw=2, ms=5, label=f"{split} (epoch)")
        ax.set_ylabel(name)
        _style(ax)
        if ax.has_data():
            ax.legend(loc="best", frameon=False)
    acc_ax.set_xlabel("step" if with_step else "epoch")
    loss_ax.set_title("Learning curves")
    return _png(fig)


def probe_accuracy(probes: Sequence[Mapping[str, Any]], *, baseline: float | None = None,
                   title: str = "Linear separability by depth") -> bytes:
    """Linear-probe accuracy of each stage against its depth; ``baseline``: a dashed line (e.g. the majority class)."""
    probes = sorted(probes, key=lambda p: p["depth"])
    depth = [p["depth"] for p in probes]
    acc = [100.0 * float(p["accuracy"]) for p in probes]
    fig = _figure(3.6)
    ax = fig.subplots()
    if baseline is not None:
        ax.axhline(100.0 * baseline, color="0.45", ls="--", lw=1.5, label=f"majority class {100.0 * baseline:.1f}")
        acc_lo = min([*acc, 100.0 * baseline])
    else:
        acc_lo = min(acc)
    ax.plot(depth, acc, "o-", lw=2, ms=7, color="C2", label="linear probe" if baseline is not None else None)
    for d, a in zip(depth, acc, strict=True):
        ax.annotate(f"{a:.1f}", (d, a), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
    ax.set_xticks(depth, [str(p["stage"]) for p in probes], rotation=30 if len(probes) > 5 else 0)
    ax.set_xlabel("stage (input → output)")
    ax.set_ylabel("probe accuracy (%)")
    ax.set_ylim(max(0.0, acc_lo - 8), 104)
    ax.set_title(title)
    _style(ax)
    if baseline is not None:
        ax.legend(loc="lower right", frameon=False)
    return _png(fig)


def cka_heatmap(stages: Sequence[str], matrix: Sequence[Sequence[float]], *, title: str = "CKA between stages") -> bytes:
    """Heatmap of linear CKA between stages, annotated with values for up to 10 stages."""
    m = np.asarray(matrix, dtype=np.float64)
    n = len(stages)
    size = min(6.0, 2.2 + 0.45 * n)
    fig = _figure(size, width=size + 1.0)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), list(stages), rotation=45, ha="right")
    ax.set_yticks(range(n), list(stages))
    if n <= 10:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="black" if m[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    return _png(fig)


def gradient_flow(records: Sequence[Mapping[str, Any]]) -> bytes:
    """Per-layer gradient norm (top) and update-to-weight ratio (bottom) over steps, log scale."""
    names: list[str] = []
    for r in records:
        for layer in r["layers"]:
            if layer["name"] not in names:
                names.append(layer["name"])
    fig = _figure(6.0)
    axes = fig.subplots(2, 1, sharex=True)
    cmap = matplotlib.colormaps["viridis"]
    for ax, key, label in ((axes[0], "grad_norm", "gradient norm"), (axes[1], "update_ratio", "update / weight")):
        for k, name in enumerate(names):
            pts = [(r["step"], layer[key]) for r in records for layer in r["layers"]
                   if layer["name"] == name and layer.get(key) is not None and layer[key] > 0]
            if pts:
                ax.plot(*zip(*pts, strict=True), lw=1.3, color=cmap(k / max(1, len(names) - 1)),
                        label=name if len(names) <= 8 and key == "grad_norm" else None)
        if ax.has_data():
            ax.set_yscale("log")
        ax.set_ylabel(label)
        _style(ax)
    if len(names) <= 8:
        fig.legend(loc="outside lower center", frameon=False, ncols=2)
    else:
        sm = ScalarMappable(norm=Normalize(0, len(names) - 1), cmap=cmap)
        fig.colorbar(sm, ax=list(axes), label="layer (input → output)", shrink=0.8)
    axes[1].set_xlabel("step")
    axes[0].set_title("Gradient flow")
    return _png(fig)


def activation_stats(stats: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Bars per stage: fraction of dead units, and saturation where the activation saturates."""
    stages = list(stats)
    dead = [100.0 * float(stats[s].get("dead_fraction") or 0.0) for s in stages]
    sat = [stats[s].get("saturation") for s in stages]
    has_sat = any(v is not None for v in sat)
    x = np.arange(len(stages))
    w = 0.4 if has_sat else 0.6
    fig = _figure(3.6)
    ax = fig.subplots()
    ax.bar(x - (w / 2 if has_sat else 0), dead, w, color="C3", label="dead units")
    if has_sat:
        ax.bar(x + w / 2, [100.0 * float(v or 0.0) for v in sat], w, color="C4", label="saturated")
        ax.legend(frameon=False)
    if not any(dead) and not any(float(v or 0.0) for v in sat):
        ax.text(0.5, 0.5, "no dead or saturated units", transform=ax.transAxes, ha="center", va="center")
    ax.set_xticks(x, stages, rotation=30 if len(stages) > 5 else 0)
    ax.set_ylabel("% of units")
    ax.set_ylim(0, max([*dead, *(100.0 * float(v or 0.0) for v in sat), 1.0]) * 1.2)
    ax.set_title("Dead and saturated units per stage")
    _style(ax)
    return _png(fig)


def filters_grid(shape: Sequence[int], values: Any) -> bytes:
    """First-layer filters as a grid: RGB for 3 input channels, otherwise the channel mean."""
    w = np.asarray(values, dtype=np.float64).reshape(tuple(shape))[:MAX_GRID]
    if w.ndim == 3:  # Conv1d (C_out, C_in, k): one row of taps per filter
        fig = _figure(min(6.0, 1.5 + 0.15 * len(w)))
        ax = fig.subplots()
        m = float(np.abs(w.mean(1)).max()) or 1.0
        im = ax.imshow(w.mean(1), cmap="RdBu_r", vmin=-m, vmax=m, aspect="auto", interpolation="nearest")
        ax.set_xlabel("tap")
        ax.set_ylabel("filter")
        fig.colorbar(im, ax=ax)
        ax.set_title("First-layer filters")
        return _png(fig)
    rows, cols = _grid(len(w), 8)
    fig = _figure(0.8 + rows * WIDTH / cols)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, f in zip(axes, w, strict=False):
        if f.shape[0] == 3:
            lo, hi = f.min(), f.max()
            ax.imshow(np.transpose((f - lo) / ((hi - lo) or 1.0), (1, 2, 0)), interpolation="nearest")
        else:
            m = float(np.abs(f.mean(0)).max()) or 1.0
            ax.imshow(f.mean(0), cmap="gray", vmin=-m, vmax=m, interpolation="nearest")
    for ax in axes:
        ax.set_axis_off()
    note = "" if w.shape[1] in (1, 3) else f" (mean over {w.shape[1]} input channels)"
    fig.suptitle(f"First-layer filters{note}")
    return _png(fig)


def image_grid(images: Sequence[Any], titles: Sequence[str], *, ncols: int = 6, title: str = "",
               row_labels: Sequence[str] | None = None) -> bytes:
    """A grid of examples (each (C,H,W) in [0, 1], or a signal) with a short title under each."""
    images = list(images)[:MAX_GRID]
    rows, cols = _grid(len(images), ncols)
    fig = _figure(0.6 + rows * (WIDTH / cols + 0.3))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        if i < len(images):
            _show(ax, images[i])
            if i < len(titles) and titles[i]:
                ax.set_xlabel(titles[i], fontsize=9)
            if row_labels and i % cols == 0 and i // cols < len(row_labels):
                ax.set_ylabel(row_labels[i // cols], fontsize=10)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _png(fig)


def top_activations(top: Mapping[str, Any], *, max_channels: int = 8, k: int = 6) -> bytes | None:
    """For one stage, a row per channel of the test examples that activate it most; None without images."""
    images = top.get("images")
    if not images:
        return None
    chans = list(top["channels"].items())[:max_channels]
    cells: list[Any] = []
    for _, indices in chans:
        row = [images.get(str(i)) for i in list(indices)[:k]]
        cells += [r if r is not None else np.ones((1, 2, 2)) for r in row]
        cells += [np.ones((1, 2, 2))] * (k - len(row))
    k_used = max(1, min(k, max(len(list(idx)) for _, idx in chans))) if chans else k
    cells = [c for j, c in enumerate(cells) if j % k < k_used]
    return image_grid(cells, [], ncols=k_used, title=f"Top-activating test examples, {top.get('stage', '')}",
                      row_labels=[f"ch {c}" for c, _ in chans])


def attributions(attr: Mapping[str, Any], *, classes: Sequence[str] | None = None, max_rows: int = 6) -> bytes:
    """One row per example: input | saliency | integrated gradients | Grad-CAM."""
    methods = {k: v for k, v in attr["methods"].items() if v is not None}
    inputs = attr.get("images")
    cols: list[tuple[str, Any]] = ([("input", inputs)] if inputs is not None else []) + [
        (k.replace("_", " ").replace("grad cam", "Grad-CAM").replace("integrated gradients", "integr. grad."), v)
        for k, v in methods.items()
    ]
    n = min(max_rows, len(cols[0][1]))
    labels, pred = attr.get("labels", []), attr.get("predicted", [])
    cell = WIDTH / max(len(cols), 3)
    fig = _figure(0.5 + n * cell, width=cell * len(cols) + 0.6)
    axes = np.atleast_2d(np.asarray(fig.subplots(n, len(cols), squeeze=False)))
    for i in range(n):
        for j, (name, data) in enumerate(cols):
            ax = axes[i, j]
            if name == "input":
                _show(ax, data[i])
            else:
                a = np.abs(np.asarray(data[i], dtype=np.float64))
                _show(ax, a / (a.max() or 1.0), cmap="inferno")
                if np.ptp(a) <= 1e-9 * max(1.0, float(a.max())):  # say so: a flat map is no explanation
                    ax.text(0.5, 0.5, "all zero" if not a.max() > 0 else "uniform", transform=ax.transAxes,
                            ha="center", va="center", color="white" if not a.max() > 0 else "black", fontsize=9)
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0 and i < len(labels):
                p = f"\n→ {_label(pred[i], classes)}" if i < len(pred) else ""
                ax.set_ylabel(f"{_label(labels[i], classes)}{p}", fontsize=10)
            for side in ax.spines.values():
                side.set_visible(False)
    return _png(fig)


def confusion_matrix(classes: Sequence[str], matrix: Sequence[Sequence[float]]) -> bytes:
    """Row-normalized confusion matrix (rows: true class), annotated in % for up to 12 classes."""
    m = np.asarray(matrix, dtype=np.float64)
    norm = 100.0 * m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
    n = len(classes)
    fig = _figure(WIDTH if n > 4 else 3.8, width=WIDTH if n > 4 else 4.4)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=100.0)
    names = [_short(c) for c in classes]
    ax.set_xticks(range(n), names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), names)
    ax.tick_params(labelsize=10 if n <= 12 else 8)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.5:
                    ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=10 if n <= 8 else 9,
                            color="white" if norm[i, j] > 60 else "black")
    else:
        fig.colorbar(im, ax=ax, shrink=0.8, label="% of true class")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (% of each true class)")
    return _png(fig)


def _short(name: Any, n: int = 10) -> str:
    text = str(name)
    return text if len(text) <= n else text[: n - 1] + "…"


def misclassified_grid(mistakes: Sequence[Mapping[str, Any]], *, classes: Sequence[str] | None = None) -> bytes | None:
    """The most confident mistakes, titled "true → predicted (confidence)"; None without images."""
    shown = [m for m in mistakes if m.get("image") is not None][:24]
    if not shown:
        return None

    titles = [f"{_label(m['true'], classes)}\n→ {_label(m['predicted'], classes)}\n{100 * float(m['confidence']):.0f}%"
              for m in shown]
    return image_grid([m["image"] for m in shown], titles, ncols=4, title="Most confident mistakes (true → predicted)")


def _label(c: Any, classes: Sequence[str] | None) -> str:
    """A class index as its (shortened) name when the names are known."""
    if classes is not None and isinstance(c, int) and 0 <= c < len(classes):
        return _short(classes[c])
    return _short(c)


def token_label(text: str) -> str:
    """A token's text as an axis label: white space made visible, long pieces cut; a token that adds
    no text of its own (a byte of a character that ends later) shows as "…"."""
    shown = text.replace(" ", "·").replace("\n", "↵").replace("\t", "→").replace("\r", "↵")
    return _short(shown, 6) if shown else "…"


def attention_heads(stage: str, tokens: Sequence[str], heads: Sequence[Any], *, max_heads: int = 8) -> bytes:
    """One small heatmap per attention head of a block: row = query token, column = key token.

    Token labels sit on the axes when they fit (at most about 16 per axis), else every k-th one;
    the colour is the square root of the weight (0 to 1 for every head), so weak links show too.
    A character the font lacks (CJK, emoji) is drawn as a box, without a warning per glyph.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font", category=UserWarning)
        return _attention_heads(stage, tokens, heads, max_heads=max_heads)


def _attention_heads(stage: str, tokens: Sequence[str], heads: Sequence[Any], *, max_heads: int) -> bytes:
    maps = [np.asarray(h, dtype=np.float64) for h in list(heads)[:max_heads]]
    n = len(maps)
    rows, cols = _grid(n, 1 if n == 1 else 2 if n <= 4 else 4)
    cell = WIDTH / cols if cols > 1 else 3.6
    fig = _figure(0.7 + rows * (cell + 0.3), width=max(WIDTH, cell * cols) if cols > 1 else 4.2)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    T = maps[0].shape[0] if maps else 0
    fit = max(4, int(16 * cell / 3.6)) if cols > 1 else 24
    step = max(1, math.ceil(T / fit))
    ticks = list(range(0, T, step))
    labels = [token_label(str(tokens[i])) if i < len(tokens) else str(i) for i in ticks]
    size = 9 if step == 1 and T <= 16 else 7
    for k, ax in enumerate(axes):
        if k >= n:
            ax.set_axis_off()
            continue
        ax.imshow(maps[k], cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest")
        ax.set_xticks(ticks, labels, rotation=90, fontsize=size)
        ax.set_yticks(ticks, labels if k % cols == 0 else [], fontsize=size)
        ax.set_title(f"head {k + 1}", fontsize=10)
    more = f" (first {max_heads} of {len(heads)} heads)" if len(heads) > max_heads else ""
    fig.suptitle(f"{stage}: attention of each head{more}", fontsize=11)
    return _png(fig)
