"""The RL loop: environment steps, replay, updates; it satisfies :class:`lamina.training.loop.Loop`.

**A step is one update** (one gradient step on ``rl.batch_size`` transitions), taken every
``rl.frames_per_update`` frames once ``rl.learning_starts`` frames were played; ``batch_size``
(what callbacks multiply steps by for throughput) is therefore ``frames_per_update``: the
progress bar's "samples/s" are frames per second. **An epoch is ``rl.eval_every`` frames**
(all of ``rl.frames`` when 0) and ends with an evaluation (``rl.eval_episodes`` episodes, seed i
for episode i, ε = ``rl.eval_eps``) whose mean/std/min/max return goes into ``last_epoch`` as
``val_return`` etc., and a line into ``returns.jsonl`` (beside one line per training episode).
Frames count all environments together.

Each iteration: one batched forward pass picks every environment's action; the actions come to
the host (the one transfer a step, which also carries the count of non-finite updates); the
environments step; the transitions go into the replay buffer on the device; the updates that are
due run. The same events as the Trainer's go to the same callbacks (progress, metrics,
TensorBoard, time limit, checkpoints, energy). The state (``state_dict``) holds the networks,
the optimizer, the replay buffer, the frame counter (the exploration schedule's position), the
environments and every RNG, so a ``--deterministic`` CPU resume is bit-identical.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lamina.config import RLConfig
from lamina.rl.dqn import DQN, as_input, epsilon
from lamina.rl.envs import VecEnv, to_device
from lamina.rl.replay import ReplayBuffer
from lamina.training.callbacks import Callback, CancelFit
from lamina.training.engine import Engine, rng_state, set_rng_state
from lamina.training.nan_guard import NanGuard
from lamina.utils.io import JsonLines

RECENT = 100  # training episodes averaged in running()["return"]


def return_stats(returns: Sequence[float], prefix: str = "return") -> dict[str, float]:
    """Mean, std, min and max of episode returns as ``{prefix}``, ``{prefix}_std``, ..."""
    a = np.asarray(returns, dtype=np.float64)
    if a.size == 0:
        return {}
    return {prefix: float(a.mean()), f"{prefix}_std": float(a.std()), f"{prefix}_min": float(a.min()),
            f"{prefix}_max": float(a.max())}


@torch.no_grad()
def run_episodes(agent: DQN, envs: VecEnv, *, eps: float = 0.0, seed: int = 0, max_steps: int = 0,
                 progress: Callable[[int], None] | None = None) -> list[float]:
    """One episode in each of ``envs`` (greedy, or ε-greedy with ``eps``); their returns, in order.

    Environments whose episode ended stop; the others are stepped together (one forward pass).
    """
    was_training = agent.online.training
    agent.online.eval()
    device = next(agent.online.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    n = envs.num_envs
    obs = envs.reset()
    returns, alive, steps = np.zeros(n), np.ones(n, bool), 0
    envs.take_finished()
    try:
        while alive.any():
            actions = agent.act(to_device(obs, device), eps, g).cpu().numpy()
            for i in np.flatnonzero(alive):
                o, r, term, trunc = envs.envs[i].step(int(actions[i]))
                returns[i] += r
                obs[i] = o
                if term or trunc or (max_steps and steps + 1 >= max_steps):
                    alive[i] = False
                    if progress is not None:
                        progress(int((~alive).sum()))
            steps += 1
    finally:
        agent.online.train(was_training)
    return returns.tolist()


class RLLoop:
    """Trains ``agent`` on ``envs`` through ``replay`` for ``cfg.frames`` frames.

    Args:
        agent: the learner (networks, optimizer).
        envs: the training environments (``cfg.envs`` of them).
        replay: the buffer on the training device.
        cfg: the RL settings.
        engine: the device (and autocast).
        seed: seeds the exploration and replay-sampling generator.
        eval_envs: seeds -> environments for evaluations (one episode each); None: no evaluation.
        returns_path: ``RUN/returns.jsonl`` (training episodes and evaluations); None: not written.
        on_nan: stop | skip | rollback | off (see :class:`NanGuard`; the check costs no host sync).
        rollback: the newest checkpoint's state, for ``on_nan="rollback"``.
        callbacks: progress, metrics, checkpoints, time limit, energy...
    """

    def __init__(self, agent: DQN, envs: VecEnv, replay: ReplayBuffer, cfg: RLConfig, *, engine: Engine, seed: int = 0,
                 eval_envs: Callable[[list[int]], VecEnv] | None = None, returns_path: str | Path | None = None,
                 on_nan: str = "stop", rollback: Callable[[], dict[str, Any] | None] | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.agent, self.envs, self.replay, self.cfg, self.engine = agent, envs, replay, cfg, engine
        self.module = agent.online  # what NanGuard and checkpoints read
        self.eval_envs, self.returns_path = eval_envs, Path(returns_path) if returns_path else None
        self.nan_guard = NanGuard(on_nan, rollback_source=rollback)
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.device = engine.device
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.step = self.epoch = self.frames = self.episodes = 0
        self.epochs = math.ceil(cfg.frames / cfg.eval_every) if cfg.eval_every > 0 else 1
        self.total_steps = max(0, cfg.frames - cfg.learning_starts) // cfg.frames_per_update
        self.batch_size = cfg.frames_per_update  # frames per step: throughput in frames/s
        self.stop_reason = ""
        self.last_epoch: dict[str, Any] = {}
        self.train_seconds = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT)
        self._t0: float | None = None
        self._obs: Tensor | None = None
        self._bad = torch.zeros((), dtype=torch.long, device=self.device)  # non-finite updates (device count)
        self._bad_seen = 0
        self._last: tuple[Tensor, dict[str, Tensor]] | None = None
        self._new_epoch_sums()
        self._file: JsonLines | None = None

    def _new_epoch_sums(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_n = torch.zeros((), dtype=torch.long, device=self.device)  # finite updates summed
        self._loss_count = 0
        self._epoch_returns: list[float] = []
        self._epoch_frames0 = self.frames
        self._epoch_seconds = 0.0

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> None:
        """Play and learn until ``cfg.frames`` frames (or a callback stops it)."""
        self._file = JsonLines(self.returns_path) if self.returns_path else None
        if self._obs is None:
            self._obs = to_device(self.envs.reset(), self.device)
        self._emit("fit_start")
        try:
            while self.frames < self.cfg.frames:
                self._emit("epoch_start")
                self._run_epoch()
                self.last_epoch = self._epoch_record()
                self.epoch += 1
                self._emit("epoch_end")
                self._new_epoch_sums()
        except CancelFit as stop:
            self.stop_reason = str(stop)
        finally:
            self._emit("fit_end")
            if self._file is not None:
                self._file.close()

    def _epoch_end_frame(self) -> int:
        every = self.cfg.eval_every
        return min(self.cfg.frames, (self.epoch + 1) * every) if every > 0 else self.cfg.frames

    def _run_epoch(self) -> None:
        end = self._epoch_end_frame()
        self._t0 = time.perf_counter()
        try:
            while self.frames < end:
                self._env_step()
                while self._updates_due() > 0:
                    self._update()
                    self.step += 1
                    self._emit("batch_end")
        finally:  # a run stopped inside an epoch still counts that time
            self.engine.synchronize()
            spent = time.perf_counter() - self._t0
            self.train_seconds += spent
            self._epoch_seconds += spent
            self._t0 = None

    def _updates_due(self) -> int:
        if self.frames < self.cfg.learning_starts or not self.replay.can_sample():
            return 0
        return (self.frames - self.cfg.learning_starts) // self.cfg.frames_per_update - self.step

    def _env_step(self) -> None:
        assert self._obs is not None
        actions = self.agent.act(self._obs, epsilon(self.frames, self.cfg), self.generator)
        check = self.nan_guard.policy != "off"
        host = (torch.cat([actions, self._bad.view(1)]) if check else actions).cpu().numpy()  # the one sync
        if check and int(host[-1]) > self._bad_seen:
            self._bad_seen = int(host[-1])
            self._on_non_finite()
        obs, rewards, term, trunc = self.envs.step(host[: self.envs.num_envs])
        self.replay.add(self._obs, actions, to_device(rewards, self.device), to_device(term, self.device),
                        to_device(trunc, self.device))
        self._obs = to_device(obs, self.device)
        self.frames += self.envs.num_envs
        for ret, length in self.envs.take_finished():
            self.episodes += 1
            self.recent.append(ret)
            self._epoch_returns.append(ret)
            if self._file is not None:
                self._file.write({"kind": "train", "step": self.step, "frames": self.frames, "episode": self.episodes,
                                  "return": ret, "length": length})

    def _update(self) -> None:
        check = self.nan_guard.policy != "off"
        if self.nan_guard.policy == "skip":
            self.nan_guard.snapshot_buffers(self.module)
        batch = self.replay.sample(self.cfg.batch_size, self.generator)
        loss, finite = self.agent.update(batch, check=check)
        if check:
            self._bad += (~finite).long()
            self._last = (loss, batch)
            loss = torch.where(finite, loss, torch.zeros_like(loss))  # a skipped update is not in the mean
        self._loss_sum += loss
        self._loss_n += finite
        self._loss_count += 1

    def _on_non_finite(self) -> None:
        """A skipped (non-finite) update came to light with the actions: the guard stops, counts, or rolls back."""
        loss, batch = self._last if self._last is not None else (torch.tensor(float("nan")), None)
        x = as_input(batch["obs"], self.agent.obs_scale) if batch is not None else None
        self.nan_guard.handle(self, loss, x)  # type: ignore[arg-type]

    # -- what callbacks read ------------------------------------------------------------------------
    def _emit(self, event: str) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self)

    def running(self, reduce: bool = True) -> dict[str, float]:
        """The epoch's mean loss, the mean return of the last 100 training episodes, ε and frames/s
        (one sync; one process, so ``reduce`` changes nothing)."""
        count = int(self._loss_n)
        out = {"loss": float(self._loss_sum) / count if count else float("nan")}
        if self.recent:
            out["return"] = float(np.mean(self.recent))
        out["epsilon"] = epsilon(self.frames, self.cfg)
        now = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        seconds = self._epoch_seconds + now
        out["fps"] = (self.frames - self._epoch_frames0) / seconds if seconds > 0 else 0.0
        return out

    def _epoch_record(self) -> dict[str, Any]:
        run = self.running()
        record: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.step, "frames": self.frames,
                                  "train_loss": run["loss"] if self._loss_count else None,
                                  "train_episodes": len(self._epoch_returns)}
        if self._epoch_returns:
            record["train_return"] = float(np.mean(self._epoch_returns))
        record |= {"epsilon": run["epsilon"], "fps": run["fps"], "lr": self.lr, "seconds": self.train_seconds}
        if self.eval_envs is not None and self.cfg.eval_episodes > 0:
            t0 = time.perf_counter()
            returns = self.evaluate(self.cfg.eval_episodes)
            record |= {f"val_{k}": v for k, v in return_stats(returns).items()}
            record["val_episodes"] = len(returns)
            record["eval_seconds"] = time.perf_counter() - t0
            if self._file is not None:
                self._file.write({"kind": "eval", "step": self.step, "frames": self.frames, "epoch": self.epoch + 1,
                                  "returns": returns, **return_stats(returns)})
        return record

    def evaluate(self, episodes: int, progress: Callable[[int], None] | None = None) -> list[float]:
        """``episodes`` evaluation episodes (seed i for episode i); the training RNGs are left as they were."""
        if self.eval_envs is None:
            return []
        envs = self.eval_envs(list(range(episodes)))
        return run_episodes(self.agent, envs, eps=self.cfg.eval_eps, seed=0,
                            max_steps=envs.max_episode_steps, progress=progress)

    @property
    def lr(self) -> float:
        return float(self.agent.optimizer.param_groups[0]["lr"])

    @property
    def elapsed(self) -> float:
        now = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self.train_seconds + now

    # -- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        agent = self.agent.state_dict()
        return {
            "model": agent["model"], "target": agent["target"], "optimizer": agent["optimizer"],
            "counters": {"step": self.step, "epoch": self.epoch, "frames": self.frames, "episodes": self.episodes,
                         "updates": self.agent.updates, "train_seconds": self.elapsed,
                         "skipped_steps": self.nan_guard.skipped, "bad_seen": self._bad_seen},
            "epoch_sums": {"loss_sum": self._loss_sum.clone(), "loss_n": self._loss_n.clone(),
                           "loss_count": self._loss_count,
                           "returns": list(self._epoch_returns), "frames0": self._epoch_frames0,
                           "seconds": self._epoch_seconds + (time.perf_counter() - self._t0 if self._t0 else 0.0)},
            "recent": list(self.recent), "bad": self._bad.clone(),
            "replay": self.replay.state_dict(), "envs": self.envs.state_dict(),
            "generator": self.generator.get_state(), "rng": rng_state(),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks if hasattr(cb, "state_dict")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken (Atari: with restarted episodes)."""
        self.load_weights(state)
        c = state["counters"]
        self.step, self.epoch, self.frames = int(c["step"]), int(c["epoch"]), int(c["frames"])
        self.episodes, self.agent.updates = int(c["episodes"]), int(c["updates"])
        self.train_seconds = float(c["train_seconds"])
        self.nan_guard.skipped, self._bad_seen = int(c["skipped_steps"]), int(c["bad_seen"])
        s = state["epoch_sums"]
        self._loss_sum, self._loss_n = s["loss_sum"].to(self.device), s["loss_n"].to(self.device)
        self._loss_count, self._epoch_returns = int(s["loss_count"]), [float(r) for r in s["returns"]]
        self._epoch_frames0, self._epoch_seconds = int(s["frames0"]), float(s["seconds"])
        self.recent = deque((float(r) for r in state["recent"]), maxlen=RECENT)
        self._bad = state["bad"].to(self.device)
        self.replay.load_state_dict(state["replay"])
        if not self.envs.load_state_dict(state["envs"], restart_seed=self.frames):
            self.replay.mark_cut()  # the episodes restarted: the newest rows' next observations are gone
        self._obs = to_device(self.envs.obs, self.device) if self.envs.obs is not None else None
        self.generator.set_state(state["generator"])
        saved = state.get("callbacks") or {}
        for cb in self.callbacks:
            if hasattr(cb, "load_state_dict") and type(cb).__name__ in saved:
                cb.load_state_dict(saved[type(cb).__name__])
        set_rng_state(state["rng"])

    def load_weights(self, state: dict[str, Any]) -> None:
        """The networks and the optimizer of a checkpoint (a NaN guard's rollback)."""
        self.agent.load_state_dict({"model": state["model"], "target": state["target"],
                                    "optimizer": state["optimizer"], "updates": self.agent.updates})
