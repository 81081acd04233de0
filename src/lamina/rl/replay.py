"""The replay buffer: on the training device, each observation stored once, n-step returns at sampling.

Each of the ``E`` environments has a ring of ``L = capacity // E`` rows; the rows of all
environments are written together (one ``add`` per vectorised step). Row ``t`` of an environment
holds the observation acted on at its step ``t``, the action, the reward and whether that step
ended the episode (``term``: a terminal state; ``trunc``: cut by a time limit). The next
observation is row ``t + 1``, so observations are stored once, not as obs and next_obs. After an
episode ends, row ``t + 1`` is the first observation of the next episode: a terminal step never
bootstraps from it, and a cut step is never the start of a sample (its true next state was not
kept) and ends the n-step sums that reach it, which bootstrap from the last observation kept.

Frame stacks (Atari: 4 frames of 84×84) keep only the newest frame per row and rebuild the stack
from the rows before, repeating an episode's first frame before its start, exactly as gymnasium's
``FrameStackObservation(padding_type="reset")`` does: 7 KB a transition instead of 56 KB.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lamina.errors import LaminaError

_GB = 1024**3


def free_memory(device: torch.device) -> int:
    """Bytes free for a new buffer on ``device``: CUDA's free memory, else the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown (not Linux, no psutil): do not refuse


def bytes_per_transition(obs_shape: tuple[int, ...], obs_dtype: torch.dtype, frame_stack: int = 1) -> int:
    """Bytes one row takes: one observation (one frame of a stack), action, reward, two flags."""
    frame = obs_shape[1:] if frame_stack > 1 else obs_shape
    itemsize = torch.empty((), dtype=obs_dtype).element_size()
    return math.prod(frame) * itemsize + 8 + 4 + 1 + 1


def check_fits(capacity: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype, device: torch.device, *,
               frame_stack: int = 1, headroom: float = 0.8) -> None:
    """A one-line error, before anything is allocated, when the buffer does not fit (within
    ``headroom`` of the free memory), naming the largest capacity that does."""
    per = bytes_per_transition(obs_shape, obs_dtype, frame_stack)
    free = free_memory(device)
    need = per * capacity
    if need > headroom * free:
        fits = int(headroom * free // per)
        where = "free GPU memory" if device.type == "cuda" else "available RAM"
        raise LaminaError(f"a replay buffer of {capacity:,} transitions needs {need / _GB:.2f} GB ({per:,} bytes "
                          f"each) but only {free / _GB:.2f} GB of {where} is there: the largest that fits is "
                          f"rl.buffer={fits}")


class ReplayBuffer:
    """Transitions of ``num_envs`` environments on ``device``; samples n-step transitions.

    Args:
        capacity: transitions kept (all environments together).
        num_envs: environments writing one row each per :meth:`add`.
        obs_shape: one observation as the model sees it ((C, H, W); with ``frame_stack`` > 1, (S, H, W)).
        obs_dtype: storage dtype (bool for MinAtar, uint8 for Atari).
        device: where everything lives (the training device).
        n_step, gamma: the n-step return sum_{j<n} gamma^j r_{t+j} + gamma^n max Q(s_{t+n}).
        frame_stack: observations are stacks of this many frames; the buffer keeps one frame a row.
    """

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype, *,
                 device: torch.device, n_step: int = 1, gamma: float = 0.99, frame_stack: int = 1) -> None:
        if n_step < 1:
            raise LaminaError(f"rl.n_step must be at least 1, got {n_step}")
        self.rows = capacity // num_envs
        if self.rows < n_step + frame_stack + 1:
            raise LaminaError(f"rl.buffer={capacity} is too small for {num_envs} environments: use at least "
                              f"{(n_step + frame_stack + 1) * num_envs}")
        check_fits(self.rows * num_envs, tuple(obs_shape), obs_dtype, device, frame_stack=frame_stack)
        self.num_envs, self.device, self.n_step, self.gamma = num_envs, device, n_step, gamma
        self.obs_shape, self.frame_stack = tuple(obs_shape), frame_stack
        frame = self.obs_shape[1:] if frame_stack > 1 else self.obs_shape
        e, rows = num_envs, self.rows
        self.obs = torch.zeros(e, rows, *frame, dtype=obs_dtype, device=device)
        self.action = torch.zeros(e, rows, dtype=torch.long, device=device)
        self.reward = torch.zeros(e, rows, dtype=torch.float32, device=device)
        self.term = torch.zeros(e, rows, dtype=torch.bool, device=device)
        self.trunc = torch.zeros(e, rows, dtype=torch.bool, device=device)
        self.count = 0  # rows written per environment (host counter: sampling needs no sync)
        self._env = torch.arange(e, device=device)
        self._gammas = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return min(self.count, self.rows) * self.num_envs

    @property
    def capacity(self) -> int:
        return self.rows * self.num_envs

    def add(self, obs: Tensor, action: Tensor, reward: Tensor, term: Tensor, trunc: Tensor) -> None:
        """One row per environment: the observations acted on (E, *obs_shape), the actions taken, and
        what followed (rewards, terminal and cut flags), all (E,) on the device."""
        p = self.count % self.rows
        self.obs[:, p] = obs[:, -1] if self.frame_stack > 1 else obs
        self.action[:, p] = action
        self.reward[:, p] = reward
        self.term[:, p] = term
        self.trunc[:, p] = trunc
        self.count += 1

    def mark_cut(self) -> None:
        """The episodes of the newest rows were cut (a resume restarted them): never bootstrap past them."""
        if self.count:
            p = (self.count - 1) % self.rows
            self.trunc[:, p] |= ~self.term[:, p]

    def _bounds(self) -> tuple[int, int]:
        lo = max(0, self.count - self.rows) + self.frame_stack - 1  # a stack's older frames must still be there
        hi = self.count - 1 - self.n_step  # row t + n must be written
        return lo, hi

    def can_sample(self) -> bool:
        lo, hi = self._bounds()
        return hi >= lo

    def sample(self, batch: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``batch`` uniformly drawn n-step transitions (device tensors, no host sync):
        ``obs`` and ``next_obs`` (B, *obs_shape) as stored, ``action`` (B,), ``ret`` (B,) the discounted
        n-step reward, ``discount`` (B,) gamma^k of the bootstrap (0 after a terminal state) and
        ``valid`` (B,) False for the (rare) draws that start on a cut step (mask them out)."""
        lo, hi = self._bounds()
        if hi < lo:
            raise LaminaError(f"the replay buffer holds too few transitions to sample ({len(self)})")
        e = torch.randint(self.num_envs, (batch,), generator=generator, device=self.device)
        t = torch.randint(lo, hi + 1, (batch,), generator=generator, device=self.device)
        return self.gather(e, t)

    def gather(self, e: Tensor, t: Tensor) -> dict[str, Tensor]:
        """The n-step transitions starting at rows ``t`` (absolute step numbers) of environments ``e``."""
        n, rows = self.n_step, self.rows
        steps = t[:, None] + torch.arange(n, device=self.device)  # (B, n)
        pos = steps % rows
        ee = e[:, None].expand_as(pos)
        r, term, trunc = self.reward[ee, pos], self.term[ee, pos], self.trunc[ee, pos]  # (B, n)
        # step j counts while no earlier step ended the episode and step j itself was not cut
        cont = ~trunc
        cont[:, 1:] &= ~term[:, :-1]
        included = torch.cumprod(cont.to(torch.int32), dim=1).bool()  # (B, n)
        ret = (r * included * self._gammas[:n]).sum(1)
        k = included.sum(1)  # steps summed: the bootstrap observation is row t + k
        done = (included & term).any(1)
        discount = self._gammas[k] * (~done)
        return {"obs": self._stacked(e, t), "next_obs": self._stacked(e, t + k), "action": self.action[e, t % rows],
                "ret": ret, "discount": discount, "valid": included[:, 0]}

    def _stacked(self, e: Tensor, t: Tensor) -> Tensor:
        """Observations of rows ``t``: the row itself, or its frame stack rebuilt (oldest frame first)."""
        if self.frame_stack == 1:
            return self.obs[e, t % self.rows]
        ended = self.term | self.trunc
        idx, cur = [t], t
        for _ in range(self.frame_stack - 1):
            prev = cur - 1
            start = (prev < 0) | ended[e, prev.clamp(min=0) % self.rows]  # cur is an episode's first row
            cur = torch.where(start, cur, prev)
            idx.append(cur)
        return torch.stack([self.obs[e, i % self.rows] for i in reversed(idx)], dim=1)  # (B, S, H, W)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        used = min(self.count, self.rows)  # an unfilled buffer saves only what it holds
        return {"count": self.count, "rows": self.rows, "obs": self.obs[:, :used], "action": self.action[:, :used],
                "reward": self.reward[:, :used], "term": self.term[:, :used], "trunc": self.trunc[:, :used]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["rows"]) != self.rows or state["obs"].shape[0] != self.num_envs:
            raise LaminaError(f"the checkpoint's replay buffer has {state['obs'].shape[0]} x {state['rows']} rows, "
                              f"this run's {self.num_envs} x {self.rows}: keep rl.buffer and rl.envs as they were")
        used = state["obs"].shape[1]
        for key in ("obs", "action", "reward", "term", "trunc"):
            getattr(self, key)[:, :used] = state[key].to(self.device)
        self.count = int(state["count"])
