"""The sections of a game run (``lamina play``, task ``dqn``): returns over training, the Q-values of
one greedy episode beside its GIF, and what the convolutional layers respond to (saliency).

Read only from the run folder: ``summary.json``, ``returns.jsonl`` (training episodes and
evaluations), ``eval.json`` (``lamina play RUN --eval``), ``episode_q.json`` and ``episode.gif``
(``lamina play RUN --gif``) and ``inspection/saliency.json`` (``lamina inspect RUN``).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lamina.reporting.figures import _figure, _png, _style
from lamina.reporting.html import (
    RunFolder,
    Section,
    duration,
    esc,
    figures_block,
    image,
    note,
    para,
    register_section,
    run_task,
)

TASK = "dqn"
ROLLING = 100  # training episodes in the rolling mean of the training return
MAX_GIF_BYTES = 8 * 2**20  # larger GIFs (long Atari episodes) are not embedded
MAX_LINES = 18  # actions drawn one line each at most; beyond, only the maximum and the chosen action's Q


def rolling_mean(values: Sequence[float], window: int) -> np.ndarray:
    """The mean of the last ``window`` values at each position (fewer at the start).

    >>> rolling_mean([1.0, 3.0, 5.0, 7.0], 2).tolist()
    [1.0, 2.0, 4.0, 6.0]
    """
    v = np.asarray(values, dtype=float)
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def returns_curve(train: Sequence[Mapping[str, Any]], evals: Sequence[Mapping[str, Any]]) -> bytes:
    """The evaluation return against frames (mean, a band of ± std, min and max as faint lines) and the
    training episodes' return (rolling mean over ``ROLLING`` episodes)."""
    fig = _figure(3.4)
    ax = fig.subplots()
    if train:
        fx = [float(r["frames"]) for r in train]
        ax.plot(fx, rolling_mean([float(r["return"]) for r in train], ROLLING), color="0.55", lw=1.2,
                label=f"training (mean of the last {ROLLING} episodes)")
    if evals:
        ex = np.asarray([float(r["frames"]) for r in evals])
        mean = np.asarray([float(r["return"]) for r in evals])
        std = np.asarray([float(r.get("return_std", 0.0)) for r in evals])
        ax.fill_between(ex, mean - std, mean + std, color="C0", alpha=0.2, linewidth=0, label="evaluation ± std")
        for key in ("return_min", "return_max"):
            if all(key in r for r in evals):
                ax.plot(ex, [float(r[key]) for r in evals], color="C0", lw=0.8, alpha=0.45, ls="--")
        ax.plot(ex, mean, "o-", color="C0", lw=2, ms=4, label="evaluation mean (min, max dashed)")
    ax.set_xlabel("frames")
    ax.set_ylabel("episode return")
    ax.set_title("Returns over training")
    _style(ax)
    if ax.has_data():
        ax.legend(loc="best", frameon=False)
    return _png(fig)


def return_histogram(returns: Sequence[float], *, title: str) -> bytes:
    """The distribution of evaluation returns, with the mean and the median marked."""
    a = np.asarray(returns, dtype=float)
    fig = _figure(2.8)
    ax = fig.subplots()
    distinct = np.unique(a)
    if len(distinct) <= 30 and np.allclose(distinct, np.round(distinct)):  # integer scores: one bar each
        bins = np.arange(distinct.min() - 0.5, distinct.max() + 1.5)
    else:
        bins = min(30, max(5, len(a) // 4))
    ax.hist(a, bins=bins, color="C0", alpha=0.8)
    ax.axvline(float(a.mean()), color="C3", lw=1.5, label=f"mean {a.mean():.2f}")
    ax.axvline(float(np.median(a)), color="0.3", lw=1.5, ls="--", label=f"median {np.median(a):.2f}")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.set_title(title)
    _style(ax)
    ax.legend(loc="best", frameon=False)
    return _png(fig)


def episode_q(q: Sequence[Sequence[float]], actions: Sequence[int], rewards: Sequence[float],
              names: Sequence[str]) -> bytes:
    """Each action's Q-value against the step (top; the chosen action's as dots) and the action chosen
    (bottom); steps with a reward are marked on both."""
    qa = np.asarray(q, dtype=float)  # (T, A)
    steps, acts = np.arange(len(qa)), np.asarray(actions, dtype=int)
    fig = _figure(4.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    if qa.shape[1] <= MAX_LINES:
        for a in range(qa.shape[1]):
            top.plot(steps, qa[:, a], lw=1, color=f"C{a % 10}", alpha=0.8, label=names[a])
    top.plot(steps, qa.max(1), color="black", lw=1.6, label="max")
    top.scatter(steps, qa[steps, acts], s=9, color=[f"C{a % 10}" for a in acts], zorder=3, linewidths=0)
    bottom.scatter(steps, acts, s=9, color=[f"C{a % 10}" for a in acts], linewidths=0)
    bottom.set_yticks(range(len(names)), list(names) if len(names) <= MAX_LINES else None)
    bottom.set_ylim(-0.5, len(names) - 0.5)
    for t in np.flatnonzero(np.asarray(rewards, dtype=float) != 0):
        for ax in (top, bottom):
            ax.axvline(float(t), color="C2", lw=1, alpha=0.5)
    top.set_ylabel("Q(s, a)")
    top.set_title("Q-values of one greedy episode (green: a reward)")
    bottom.set_ylabel("action")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        _style(ax)
    top.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    return _png(fig)


def saliency_frames(frames: Sequence[Mapping[str, Any]], names: Sequence[str], *, per_row: int = 3) -> bytes:
    """Each kept frame's screen beside its saliency map (each map scaled to its own maximum)."""
    rows = -(-len(frames) // per_row)
    cols = min(per_row, len(frames))
    fig = _figure(1.5 * rows + 0.1, width=min(7.5, 2.5 * cols))
    axes = np.asarray(fig.subplots(rows, 2 * cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for i, f in enumerate(frames):
        left, right = axes[i // per_row, 2 * (i % per_row)], axes[i // per_row, 2 * (i % per_row) + 1]
        screen = np.asarray(f["screen"], dtype=np.uint8)
        left.imshow(screen, cmap="gray" if screen.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        a = int(f.get("action", -1))
        left.set_title(f"step {f.get('step')}: {names[a] if 0 <= a < len(names) else a}", fontsize=9)
        right.imshow(np.asarray(f["saliency"], dtype=float), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        right.set_title("saliency", fontsize=9)
    return _png(fig)


def channel_saliency(channels: Sequence[str], gradient: Sequence[float], gradient_x_input: Sequence[float]) -> bytes:
    """The share of the episode's saliency each input channel holds: gradient, and gradient × input."""
    y = np.arange(len(channels))
    fig = _figure(1.2 + 0.32 * len(channels))
    ax = fig.subplots()
    for k, (vals, label) in enumerate(((gradient, "|gradient|"), (gradient_x_input, "|gradient × input|"))):
        v = np.asarray(vals, dtype=float)
        share = 100.0 * v / v.sum() if v.sum() > 0 else v
        ax.barh(y + (k - 0.5) * 0.38, share, height=0.38, color=f"C{k}", label=label)
    ax.set_yticks(y, list(channels))
    ax.invert_yaxis()
    ax.set_xlabel("share of the episode's saliency (%)")
    ax.set_title("Which input channels move max Q")
    _style(ax)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return _png(fig)


def gif_image(gif: bytes, alt: str, caption: str = "") -> str:
    """A figure with an embedded animated GIF, drawn pixel-sharp at up to twice its own size."""
    width = struct.unpack("<H", gif[6:8])[0] if gif[:6] in (b"GIF87a", b"GIF89a") else 0
    data = base64.b64encode(gif).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    style = f"max-width:{2 * width}px;" if width else ""
    return (f'<figure><img src="data:image/gif;base64,{data}" alt="{esc(alt)}" '
            f'style="{style}image-rendering:pixelated">{cap}</figure>')


def _fmt(x: Any, spec: str) -> str:
    return format(x, spec) if isinstance(x, int | float) and not isinstance(x, bool) else "—"


@register_section
def section_returns(run: RunFolder) -> Section | None:
    if run_task(run) != TASK:
        return None
    s = run.summary
    records = run.jsonl("returns.jsonl") or []
    train = [r for r in records if r.get("kind") == "train" and "frames" in r and "return" in r]
    evals = [r for r in records if r.get("kind") == "eval" and "frames" in r and "return" in r]
    text = (f"After {_fmt(s.get('frames'), ',')} frames of {s.get('env', '?')} ({_fmt(s.get('updates'), ',')} updates, "
            f"{_fmt(s.get('episodes'), ',')} training episodes, {_fmt(s.get('fps'), ',.0f')} frames per second, "
            f"{duration(s.get('train_seconds'))}), the final network's evaluation return is "
            f"{_fmt(s.get('eval_return_mean'), '.2f')} ± {_fmt(s.get('eval_return_std'), '.2f')} over "
            f"{s.get('eval_episodes', '?')} episodes (ε = {s.get('eval_eps', '?')}).")
    figs = []
    if train or evals:
        figs.append(image(returns_curve(train, evals), "episode return against frames",
                          f"Blue: the evaluation episodes after each evaluation period (band: ± one standard "
                          f"deviation; dashed: the worst and best episode); grey: the training episodes (with "
                          f"exploration), a rolling mean over {ROLLING} episodes."))
    ev = run.json("eval.json")
    if isinstance(ev, dict) and ev.get("returns"):
        text += (f" lamina play --eval: {ev.get('episodes', len(ev['returns']))} episodes (ε = {ev.get('eps', '?')}, "
                 f"seeds {str(ev.get('seeds', '?')).split(' (')[0]}) return {_fmt(ev.get('mean'), '.2f')} ± {_fmt(ev.get('std'), '.2f')}, "
                 f"median {_fmt(ev.get('median'), '.2f')}, from {_fmt(ev.get('min'), '.2f')} to "
                 f"{_fmt(ev.get('max'), '.2f')}.")
        figs.append(image(return_histogram(ev["returns"], title=f"Returns of {len(ev['returns'])} evaluation episodes"),
                          "distribution of the evaluation returns", "From eval.json (lamina play RUN --eval)."))
    return Section("returns", "Returns", para(text) + figures_block(*figs))


@register_section
def section_episode(run: RunFolder) -> Section | None:
    if run_task(run) != TASK:
        return None
    ep = run.json("episode_q.json")
    gif = run.path / "episode.gif"
    if not isinstance(ep, dict) and not gif.is_file():
        return None
    body, figs = "", []
    if isinstance(ep, dict) and ep.get("q"):
        q = ep["q"]
        sal = run.json("inspection/saliency.json")
        names = sal.get("action_names") if isinstance(sal, dict) else None
        if not isinstance(names, list) or len(names) != len(q[0]):
            names = [f"action {i}" for i in range(len(q[0]))]
        counts = np.bincount(np.asarray(ep["actions"], dtype=int), minlength=len(names))
        favourite = int(counts.argmax())
        body += para(f"One greedy episode (seed {ep.get('seed', '?')}): return {_fmt(ep.get('return'), 'g')} in "
                     f"{ep.get('steps', len(q))} steps; the agent chose {names[favourite]} most "
                     f"({100.0 * counts[favourite] / max(counts.sum(), 1):.0f} % of the steps).")
        figs.append(image(episode_q(q, ep["actions"], ep.get("rewards", []), names), "Q-values against the step",
                          "Top: each action's Q-value, the maximum in black, the chosen action's as dots; bottom: "
                          "the action taken at each step."))
    if gif.is_file():
        data = gif.read_bytes()
        if len(data) <= MAX_GIF_BYTES:
            figs.append(gif_image(data, "the episode, animated", "The same episode (lamina play RUN --gif)."))
        else:
            body += note(f"episode.gif ({len(data) / 2**20:.0f} MB) is too large to embed; open it beside the report.")
    return Section("episode", "Q-values of an episode", body + figures_block(*figs))


@register_section
def section_saliency(run: RunFolder) -> Section | None:
    sal = run.json("inspection/saliency.json") if run_task(run) == TASK else None
    if not isinstance(sal, dict) or not sal.get("frames"):
        return None
    channels = [str(c) for c in sal["channels"]]
    names = [str(a) for a in sal.get("action_names") or []]
    g = np.asarray(sal["channel_gradient"], dtype=float)
    gx = np.asarray(sal["channel_gradient_x_input"], dtype=float)
    top_g, top_gx = channels[int(g.argmax())], channels[int(gx.argmax())]
    text = (f"The saliency of the greedy network over one episode of {sal.get('env', '?')} (seed {sal.get('seed', '?')}, "
            f"{sal.get('steps', '?')} steps{', cut there' if sal.get('cut') else ''}, return "
            f"{_fmt(sal.get('return'), 'g')}): how much max_a Q(s, a) moves when one input cell changes. "
            f"It is most sensitive to the {top_g} channel; counting only what is on the screen (gradient × input), "
            f"the {top_gx} channel moves it most.")
    figs = [image(saliency_frames(sal["frames"], names), "screens beside their saliency maps",
                  "Left of each pair: the screen at that step and the action taken; right: |∂ max Q / ∂ input| summed "
                  "over the input channels, scaled to its own maximum (bright: the cells the value depends on).",
                  wide=True),
            image(channel_saliency(channels, g, gx), "saliency per input channel",
                  "The saliency summed over the screen, averaged over the episode's steps, as shares of all channels.")]
    return Section("saliency", "What the convolutional layers respond to", para(text) + figures_block(*figs))
