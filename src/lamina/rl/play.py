"""``lamina play``: train a Double DQN on a game into a run folder, resume it, evaluate it, make a GIF.

The run folder is the one ``lamina train`` writes: ``config.yaml`` (the resolved ``RunConfig``,
with ``rl.*``; ``data.task: dqn`` marks a game run, ``data.name`` is the environment),
``metrics.jsonl``, ``energy.jsonl``, ``checkpoints/``, ``returns.jsonl`` (every training episode
and every evaluation), ``model.safetensors`` + ``model.json`` (``artifacts.read_model`` rebuilds
the net) and ``summary.json`` (headline ``eval_return_mean``). ``evaluate_play`` writes
``eval.json``; ``gif_play`` writes an animated GIF of one episode and ``episode_q.json``.
"""

from __future__ import annotations

import json
import math
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from lamina import __version__
from lamina.artifacts import MODEL_FORMAT
from lamina.config import RunConfig, apply_overrides, load_config, to_dict
from lamina.errors import LaminaError
from lamina.models.base import Model
from lamina.models.qnet import REGISTERED as QNETS
from lamina.rl.dqn import DQN
from lamina.rl.envs import VecEnv, check_env_name, make_env, make_envs
from lamina.rl.loop import RLLoop, return_stats, run_episodes
from lamina.rl.replay import ReplayBuffer
from lamina.training import callbacks as cb
from lamina.training import checkpoint
from lamina.training.engine import Engine, enable_determinism, resolve_device, seed_everything
from lamina.training.nan_guard import NanGuard
from lamina.utils.io import atomic_path, default_run_dir, read_json, write_json

TASK = "dqn"  # config.yaml's data.task of a game run (how `lamina resume` tells it apart)
MODALITY = "game"
GIF_SCALE = {1: 16, 4: 2}  # GIF upscaling by frame stack: MinAtar's 10×10 cells 16× (nearest), Atari 2×
GIF_MAX_STEPS = 5000
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_frames(text: str | int | float) -> int:
    """``5M``, ``200k``, ``1e6`` or ``3000`` as a positive number of frames.

    >>> [parse_frames(x) for x in ("5M", "200k", "1e6", "3000", "1.5k")]
    [5000000, 200000, 1000000, 3000, 1500]
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)\s*", str(text).lower())
    value = float(m.group(1)) * _SUFFIX[m.group(2)] if m else math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise LaminaError(f"--frames must be a positive number of frames, e.g. 200k, 5M or 1e6; got '{text}'")
    return int(value)


def default_model(env: str) -> str:
    return "minatar-dqn" if env.startswith("minatar/") else "nature-dqn"


def resolve_play_config(env: str | None = None, *, config: str | Path | None = None, overrides: Sequence[str] = (),
                        frames: str | int | None = None, **kw: Any) -> RunConfig:
    """Defaults < config file < arguments (``seed``, ``device``, ``out``, ``deterministic``, ``max_minutes``,
    ``checkpoint_every``, ``checkpoint_minutes``, ``tensorboard``, ``on_nan``) < ``a.b=c`` overrides; then
    checked and resolved (model name, run folder) as config.yaml records it."""
    from lamina.session import SHORT_KEYS

    base = load_config(config) if config else RunConfig()
    items = [] if env is None else [f"rl.env={json.dumps(env)}"]
    if frames is not None:
        items.append(f"rl.frames={parse_frames(frames)}")
    for k, v in kw.items():
        if k not in SHORT_KEYS:
            raise LaminaError(f"unknown argument '{k}' of lamina play")
        if v is not None:
            items.append(f"{SHORT_KEYS[k]}={json.dumps(v) if isinstance(v, str) else v}")
    explicit = [*items, *overrides]
    cfg = apply_overrides(base, explicit)
    file_keys = Path(config).read_text() if config else ""
    norm_set = any(o.startswith("model.norm=") for o in overrides) or re.search(r"^\s+norm:", file_keys, re.M)
    rl = cfg.rl
    check_play_config(cfg)
    model = cfg.model.name if cfg.model.name != "auto" else default_model(rl.env)
    _, game = check_env_name(rl.env)
    out = cfg.out or str(default_run_dir(f"{game}", model))
    return replace(cfg, out=out, data=replace(cfg.data, name=rl.env, task=TASK),
                   model=replace(cfg.model, name=model, norm=cfg.model.norm if norm_set else "none"))


def check_play_config(cfg: RunConfig) -> None:
    """One-line errors for a bad ``rl`` section and the run options a game run uses."""
    from lamina.energy.meter import check_config as check_energy

    rl = cfg.rl
    check_env_name(rl.env)
    names = [c.name for c in QNETS]
    if cfg.model.name not in ("auto", *names):
        raise LaminaError(f"model '{cfg.model.name}' is not a Q-network: use {' or '.join(names)}")
    checks = [
        (rl.frames >= 1, f"--frames must be a positive number of frames, got {rl.frames}"),
        (rl.envs >= 1, "rl.envs must be at least 1"),
        (rl.batch_size >= 1, "rl.batch_size must be at least 1"),
        (rl.frames_per_update >= 1, "rl.frames_per_update must be at least 1"),
        (rl.lr > 0, "rl.lr must be positive"),
        (0 < rl.gamma <= 1, "rl.gamma is a discount: use a value in (0, 1]"),
        (rl.n_step >= 1, "rl.n_step must be at least 1"),
        (rl.target_period >= 1, "rl.target_period must be at least 1 update"),
        (rl.learning_starts >= 0 and rl.eps_frames >= 0, "rl.learning_starts and rl.eps_frames are frames, 0 or more"),
        (0 <= rl.eps_end <= 1 and 0 <= rl.eps_start <= 1 and 0 <= rl.eval_eps <= 1, "epsilons must lie in [0, 1]"),
        (0 <= rl.sticky < 1, "rl.sticky is a probability: use a value in [0, 1)"),
        (rl.eval_every >= 0 and rl.eval_episodes >= 0, "rl.eval_every and rl.eval_episodes must be 0 or more"),
        (rl.frame_skip >= 1 and rl.noop_max >= 0, "rl.frame_skip must be at least 1 and rl.noop_max 0 or more"),
        (rl.max_episode_frames >= 0, "rl.max_episode_frames must be 0 (never cut) or more"),
    ]
    for ok, message in checks:
        if not ok:
            raise LaminaError(message)
    resolve_device(cfg.train.device)
    NanGuard(cfg.train.on_nan)
    check_energy(cfg.energy)


def build_qnet(cfg: RunConfig, obs_shape: Sequence[int], num_actions: int) -> Model:
    """The Q-network ``cfg.model`` names, for these observations and actions (0/"" keep its defaults)."""
    cls = {c.name: c for c in QNETS}[cfg.model.name]
    m = cfg.model
    model = cls(tuple(obs_shape), num_actions, **m.given("width", "depth", "act", "norm", "dropout"))
    if m.heads or m.positions:
        raise LaminaError(f"model '{cls.name}' takes no heads or positions")
    return model


class PlaySession:
    """One game run built from a resolved config: environments, Q-network, replay, loop, callbacks."""

    def __init__(self, cfg: RunConfig, console: Console, *, quiet: bool, resuming: bool = False) -> None:
        self.t_start = time.perf_counter()
        self.console, self.out = console, Path(cfg.out)
        t, rl = cfg.train, cfg.rl
        if t.deterministic:
            enable_determinism()
        seed_everything(t.seed)
        # tiny networks: on a CPU one thread is faster than several fighting over the cores (see RLConfig)
        threads = t.threads or (1 if resolve_device(t.device).type == "cpu" else 0)
        # auto precision is fp32 here: the nets are small, and bf16 Q-values (8-bit mantissas) blur the targets
        precision = "fp32" if t.precision == "auto" else t.precision
        self.engine = engine = Engine.create(t.device, precision, False, False, threads)
        self.envs = make_env(rl.env, rl.envs, seed=t.seed, cfg=rl)
        model = build_qnet(cfg, self.envs.obs_shape, self.envs.num_actions)
        a = model.arch
        cfg = replace(cfg, model=replace(cfg.model, width=a["width"], depth=a["depth"], act=a["act"], norm=a["norm"],
                                         dropout=a["dropout"]))
        self.cfg, self.model = cfg, model.to(engine.device)
        from lamina.session import claim_run

        self.lock = claim_run(self.out, cfg, resuming)  # one writer per run folder, until run() ends
        self.replay = ReplayBuffer(rl.buffer, rl.envs, self.envs.obs_shape, self.envs.obs_dtype, device=engine.device,
                                   n_step=rl.n_step, gamma=rl.gamma, frame_stack=self.envs.frame_stack)
        autocast = engine.autocast if engine.amp_dtype is not None else None
        self.agent = DQN(self.model, rl, obs_scale=self.envs.obs_scale, autocast=autocast)
        ckpt = cb.Checkpoint(self.out / "checkpoints", to_dict(replace(cfg, out="")), keep=t.keep_checkpoints,
                             every_steps=t.checkpoint_every, every_minutes=t.checkpoint_minutes)
        callbacks: list[cb.Callback] = [cb.MetricsLogger(self.out / "metrics.jsonl"), ckpt]
        if not quiet:
            callbacks.append(cb.ProgressBar(console))
        if t.max_minutes > 0:
            callbacks.append(cb.TimeLimit(t.max_minutes * 60))
        if t.tensorboard:
            callbacks.append(cb.TensorBoard(self.out / "tensorboard"))
        from lamina.energy.meter import EnergyMeter

        self.meter = EnergyMeter.from_config(cfg.energy, engine.device, self.out)
        if self.meter is not None:
            callbacks.append(self.meter)
        self.loop = RLLoop(self.agent, self.envs, self.replay, rl, engine=engine, seed=t.seed,
                           eval_envs=lambda seeds: make_envs(rl.env, seeds, cfg=rl),
                           returns_path=self.out / "returns.jsonl", on_nan=t.on_nan, rollback=ckpt.newest_state,
                           callbacks=callbacks)

    def describe(self) -> str:
        rl = self.cfg.rl
        return (f"[bold]lamina[/] play: Double DQN, {self.cfg.model.name} ({self.model.num_params():,} parameters) "
                f"on {rl.env} ({rl.envs} environments, {self.envs.num_actions} actions) for {rl.frames:,} frames on "
                f"{self.engine.device} [{self.engine.precision}]  -> {self.out}")

    def run(self) -> dict[str, Any]:
        """Train, evaluate the final network, save it, write ``summary.json``."""
        self.console.print(self.describe())
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> dict[str, Any]:
        loop, rl = self.loop, self.cfg.rl
        seconds_before = loop.train_seconds
        loop.fit()
        if loop.stop_reason:
            self.console.print(f"stopped early: {loop.stop_reason}")
        last = loop.last_epoch
        if last.get("frames") == loop.frames and "val_return" in last:
            returns_mean, returns_std, episodes = last["val_return"], last["val_return_std"], last["val_episodes"]
        else:  # stopped between evaluations, or no evaluations during training
            stats = return_stats(loop.evaluate(max(1, rl.eval_episodes)))
            returns_mean, returns_std, episodes = stats["return"], stats["return_std"], max(1, rl.eval_episodes)
        save_qnet(self.model, self.out, self.envs, self.cfg)
        summary = {
            "task": TASK, "env": rl.env, "run": str(self.out), "eval_return_mean": returns_mean, "eval_return_std": returns_std,
            "eval_episodes": episodes, "eval_eps": rl.eval_eps,
            "train_return_recent": float(np.mean(loop.recent)) if loop.recent else None,
            "frames": loop.frames, "fps": loop.frames / loop.train_seconds if loop.train_seconds > 0 else None,
            "updates": loop.step, "episodes": loop.episodes, "train_seconds": loop.train_seconds,
            "total_seconds": seconds_before + time.perf_counter() - self.t_start, "epochs": loop.epoch,
            "skipped_steps": loop.nan_guard.skipped, "stop_reason": loop.stop_reason,
            "params": self.model.num_params(), "model": self.cfg.model.name,
            **(self.meter.summary() if self.meter is not None else {"energy_method": "off"}),
            "device": _device_name(self.engine.device), "precision": self.engine.precision,
            "torch": torch.__version__, "python": platform.python_version(), "seed": self.cfg.train.seed,
            "lamina": __version__,
        }
        write_json(self.out / "summary.json", summary)
        return summary


def _device_name(device: torch.device) -> str:
    from lamina.session import _device_name as name

    return name(device)


def save_qnet(model: Model, folder: Path, envs: VecEnv, cfg: RunConfig) -> None:
    """``model.safetensors`` + ``model.json`` (``artifacts.MODEL_FORMAT``): the net and how to feed it."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {"format": MODEL_FORMAT, "arch": model.arch, "task": TASK, "modality": MODALITY, "env": envs.name,
            "obs_shape": list(envs.obs_shape), "num_actions": envs.num_actions, "obs_scale": envs.obs_scale,
            "obs_dtype": str(envs.obs_dtype).removeprefix("torch."), "frame_stack": envs.frame_stack,
            "lamina": __version__, "torch": torch.__version__}
    write_json(folder / "model.json", meta)


def play(env: str | None = None, *, console: Console | None = None, quiet: bool = False, **kw: Any) -> dict[str, Any]:
    """Train on ``env`` (see :func:`resolve_play_config` for the arguments); the summary."""
    cfg = resolve_play_config(env, **kw)
    return PlaySession(cfg, console or Console(stderr=True), quiet=quiet).run()


def is_play_run(folder: str | Path) -> bool:
    """Whether ``folder`` is a run of ``lamina play`` (config.yaml's ``data.task`` is ``dqn``)."""
    path = Path(folder) / "config.yaml"
    return path.is_file() and load_config(path).data.task == TASK


def resume_play(folder: str | Path, *, console: Console | None = None, quiet: bool = False) -> dict[str, Any]:
    """Continue an interrupted game run from its newest valid checkpoint, to the end; the summary."""
    from lamina.session import truncate_metrics

    console = console or Console(stderr=True)
    folder = Path(folder)
    if not folder.is_dir():
        raise LaminaError(f"run folder {folder} does not exist")
    if (folder / "summary.json").exists():
        raise LaminaError(f"run {folder} already finished (summary.json exists); nothing to resume")
    if not is_play_run(folder):
        raise LaminaError(f"{folder} is not a lamina play run (its config.yaml has no data.task: {TASK})")
    cfg = replace(load_config(folder / "config.yaml"), out=str(folder))
    found = checkpoint.latest(folder / "checkpoints", on_skip=lambda p, e: console.print(
        f"[yellow]skipping checkpoint[/] {p.name}: {e}; trying the previous one"))
    if found is None:
        raise LaminaError(f"run {folder} has no valid checkpoint to resume from: play it again")
    state, path = found
    session = PlaySession(cfg, console, quiet=quiet, resuming=True)
    session.loop.load_state_dict(state)
    for log in ("metrics.jsonl", "energy.jsonl", "returns.jsonl"):
        truncate_metrics(folder / log, session.loop.step)
    console.print(f"resuming {folder} from {path.name} (frame {session.loop.frames:,}, update {session.loop.step:,})")
    return session.run()


def _load_agent(folder: Path, device: str) -> tuple[DQN, dict[str, Any], RunConfig]:
    from lamina.artifacts import read_model

    model, meta = read_model(folder)
    if meta.get("task") != TASK:
        raise LaminaError(f"{folder} is a {meta.get('task')} run, not a game (lamina play) run")
    cfg = load_config(folder / "config.yaml")
    model = model.to(resolve_device(device))
    return DQN(model, cfg.rl, obs_scale=float(meta.get("obs_scale", 1.0))), meta, cfg


def evaluate_play(folder: str | Path, *, episodes: int = 100, device: str = "cpu", eps: float | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Evaluate a finished game run's saved network on ``episodes`` episodes (seed i for episode i);
    writes and returns ``RUN/eval.json``."""
    from rich.progress import Progress

    if episodes < 1:
        raise LaminaError(f"--episodes must be at least 1, got {episodes}")
    folder = Path(folder)
    agent, meta, cfg = _load_agent(folder, device)
    eps = cfg.rl.eval_eps if eps is None else eps
    envs = make_envs(meta["env"], list(range(episodes)), cfg=cfg.rl)
    t0 = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task(f"evaluating {folder}", total=episodes)
        returns = run_episodes(agent, envs, eps=eps, max_steps=envs.max_episode_steps,
                               progress=lambda done: bar.update(task, completed=done))
    a = np.asarray(returns)
    result = {"env": meta["env"], "episodes": episodes, "eps": eps, "seeds": f"0..{episodes - 1} (seed i for episode i)",
              "mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)), "min": float(a.min()),
              "max": float(a.max()), "returns": returns, "seconds": time.perf_counter() - t0}
    write_json(folder / "eval.json", result)
    return result


@torch.no_grad()
def gif_play(folder: str | Path, *, out: str | Path | None = None, seed: int = 0, device: str = "cpu",
             max_steps: int = GIF_MAX_STEPS) -> dict[str, Any]:
    """An animated GIF of one greedy episode (seed ``seed``) and its Q-values in ``RUN/episode_q.json``."""
    from PIL import Image

    folder = Path(folder)
    agent, meta, cfg = _load_agent(folder, device)
    envs = make_envs(meta["env"], [seed], cfg=cfg.rl)
    env = envs.envs[0]
    dev = next(agent.online.parameters()).device
    obs, frames, qs, actions, rewards = env.reset(), [env.frame()], [], [], []
    for _ in range(max_steps):
        x = torch.from_numpy(np.ascontiguousarray(obs)[None]).to(dev).float() * agent.obs_scale
        q = agent.online.eval()(x)[0].cpu()
        a = int(q.argmax())
        obs, r, term, trunc = env.step(a)
        qs.append([round(float(v), 5) for v in q])
        actions.append(a)
        rewards.append(r)
        frames.append(env.frame())
        if term or trunc:
            break
    scale = GIF_SCALE.get(env.frame_stack, 2)
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    path = Path(out) if out else folder / "episode.gif"
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=60, loop=0)
    record = {"env": meta["env"], "seed": seed, "return": float(sum(rewards)), "steps": len(actions), "gif": str(path),
              "actions": actions, "rewards": rewards, "q": qs}
    write_json(folder / "episode_q.json", record)
    return record


def read_summary(folder: str | Path) -> dict[str, Any]:
    return read_json(Path(folder) / "summary.json", "run summary")
