"""``lamina play``: train a Double DQN on a game (``minatar/breakout``, ``atari/Pong``), or, given a
run folder, resume it (``--resume``), evaluate it (``--eval --episodes 100``) or make a GIF (``--gif``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lamina.errors import LaminaError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``play`` sub-command to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser("play", help="train a Double DQN on a game -> a run folder; or evaluate / GIF / resume one",
                       description="Train on ENV (minatar/breakout|seaquest|asterix|freeway|space_invaders, or "
                                   "atari/<Game> with lamina[atari]), or act on an existing RUN folder: --resume, "
                                   "--eval [--episodes N], --gif [--out PATH]. Trailing key=value pairs override "
                                   "any config key, e.g. rl.envs=16.")
    p.add_argument("target", metavar="ENV|RUN", help="an environment name, or a play run folder")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. rl.lr=0.001")
    p.add_argument("--frames", help="environment frames to train for: 200k, 5M, 1e6 (default rl.frames)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--out", help="run folder (default runs/<game>-<model>-<time>); with --gif: the GIF's path")
    p.add_argument("--config", help="YAML config file (any subset of the keys in a run's config.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms (bit-identical resume on CPU)")
    p.add_argument("--max-minutes", type=float, metavar="MIN", help="stop training gracefully after MIN minutes")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every STEPS updates")
    p.add_argument("--checkpoint-minutes", type=float, metavar="MIN", help="also checkpoint every MIN minutes")
    p.add_argument("--on-nan", choices=["stop", "skip", "rollback", "off"], help="what a NaN/inf loss does")
    p.add_argument("--tensorboard", action="store_true", default=None, help="write TensorBoard event files")
    p.add_argument("--resume", action="store_true", help="RUN: continue an interrupted run")
    p.add_argument("--eval", action="store_true", help="RUN: evaluate the saved network -> RUN/eval.json")
    p.add_argument("--episodes", type=int, default=100, help="--eval: episodes (seed i for episode i; default 100)")
    p.add_argument("--gif", action="store_true", help="RUN: a GIF of one episode (and RUN/episode_q.json)")
    return p


def cmd_play(a: argparse.Namespace) -> int:
    """Run ``lamina play`` with parsed arguments; 0 on success."""
    from rich.console import Console

    from lamina.rl import play

    console = Console(stderr=True)
    folder = Path(a.target)
    device = a.device or "cpu"
    if a.eval or a.gif or a.resume:
        if not folder.is_dir():
            raise LaminaError(f"--eval, --gif and --resume act on a run folder; {a.target} is not one")
        if a.eval:
            r = play.evaluate_play(folder, episodes=a.episodes, device=device)
            print(f"{folder}: {r['env']} return {r['mean']:.2f} ± {r['std']:.2f} (median {r['median']:.1f}, "
                  f"min {r['min']:.1f}, max {r['max']:.1f}) over {r['episodes']} episodes, eps {r['eps']:g}  "
                  f"-> {folder / 'eval.json'}")
        if a.gif:
            r = play.gif_play(folder, out=a.out, device=device)
            print(f"{folder}: one episode, return {r['return']:g} in {r['steps']} steps -> {r['gif']} "
                  f"(Q-values in {folder / 'episode_q.json'})")
        if a.resume:
            print_summary(play.resume_play(folder, console=console, quiet=a.quiet), folder)
        return 0
    if folder.is_dir() and (folder / "config.yaml").is_file():
        raise LaminaError(f"{folder} is a run folder: use --resume, --eval or --gif (or give an environment "
                          "such as minatar/breakout)")
    summary = play.play(a.target, console=console, quiet=a.quiet, config=a.config, overrides=list(a.overrides),
                        frames=a.frames, seed=a.seed, device=a.device, out=a.out, deterministic=a.deterministic,
                        max_minutes=a.max_minutes, checkpoint_every=a.checkpoint_every,
                        checkpoint_minutes=a.checkpoint_minutes, tensorboard=a.tensorboard, on_nan=a.on_nan)
    print_summary(summary, None)
    return 0


def print_summary(s: dict[str, Any], folder: Path | None = None) -> None:
    """One line: the evaluation return, frames, updates, speed and the run folder."""
    fps = f"{s['fps']:,.0f} frames/s" if s.get("fps") else "-"
    print(f"{s['env']}: evaluation return {s['eval_return_mean']:.2f} ± {s['eval_return_std']:.2f} over "
          f"{s['eval_episodes']} episodes after {s['frames']:,} frames ({s['updates']:,} updates, {fps}, "
          f"{s['train_seconds']:.1f}s on {s['device']})  run folder: {folder or s['run']}")
