"""Inspection of a game run (``lamina play``, task ``dqn``): one greedy episode of the saved Q-network
(seed 0 by default, as ``lamina play RUN --gif`` plays it) and what the network sees in it.

Written into ``RUN/inspection/``:

- ``activations.json``: per-stage activation statistics over the episode's observations (the
  classifier's format, so the report's activations section reads it as it is);
- ``saliency.json``: for a few frames spread over the episode, the screen (the environment's own
  ``frame()`` colour image) and the saliency map ``|∂ max_a Q(s, a) / ∂ s|`` summed over the input
  channels; and per input channel (MinAtar: one object each, e.g. paddle, ball, trail, brick;
  Atari: the stacked frames) the saliency summed over the screen and averaged over the episode,
  as the gradient alone (where a change would move the value) and as gradient × input (what is
  on the screen and moves it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lamina.config import RunConfig
from lamina.errors import LaminaError
from lamina.inspection.activations import activation_stats
from lamina.inspection.features import eval_mode
from lamina.models.base import Model
from lamina.rl.dqn import DQN, as_input
from lamina.rl.envs import Env, make_envs

TASK = "dqn"
FRAMES = 6  # frames of the episode whose saliency maps are kept
MINATAR_ACTIONS = ("no-op", "left", "up", "right", "down", "fire")  # MinAtar's action_map, in order


@dataclass
class GameAgent:
    """A game run's saved Q-network as inspection sees it (what ``artifacts.load`` is for the other tasks)."""

    agent: DQN
    meta: dict[str, Any]
    cfg: RunConfig
    device: torch.device
    task: str = TASK

    @property
    def model(self) -> Model:
        return self.agent.online


def load_agent(folder: Path, device: str = "cpu") -> GameAgent:
    """The saved network of a ``lamina play`` run folder, as ``lamina play RUN --gif`` loads it."""
    from lamina.rl.play import _load_agent

    agent, meta, cfg = _load_agent(folder, device)
    return GameAgent(agent, meta, cfg, next(agent.online.parameters()).device)


@torch.no_grad()
def greedy_episode(agent: DQN, env: Env, *, max_steps: int) -> dict[str, Any]:
    """Play one greedy episode from ``env.reset()``: the observation, screen, Q-values, action and
    reward of every step, and whether it was cut at ``max_steps``."""
    dev = next(agent.online.parameters()).device
    obs, observations, screens, qs, actions, rewards = env.reset(), [], [], [], [], []
    done = False
    with eval_mode(agent.online):
        while not done and len(actions) < max_steps:
            observations.append(np.array(obs, copy=True))
            screens.append(env.frame())
            q = agent.online(as_input(torch.from_numpy(np.ascontiguousarray(obs)[None]).to(dev), agent.obs_scale))[0]
            a = int(q.argmax())
            obs, r, term, trunc = env.step(a)
            qs.append(q.float().cpu())
            actions.append(a)
            rewards.append(float(r))
            done = term or trunc
    return {"obs": torch.from_numpy(np.stack(observations)), "screens": screens, "q": torch.stack(qs),
            "actions": actions, "rewards": rewards, "cut": not done}


def saliency(model: nn.Module, x: Tensor) -> Tensor:
    """``|∂ max_a Q(s, a) / ∂ s|`` for each example of ``x`` (B, *obs): the same shape as ``x``.

    The gradient of each example's own maximum (the network in eval mode, so examples do not mix).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))
    >>> saliency(net, torch.ones(1, 1, 2, 2)).flatten().tolist()  # Q_0 = 2 > Q_1 = 0: |row 0|
    [1.0, 2.0, 0.0, 3.0]
    """
    x = x.detach().float().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        q = model(x).float()  # (B, A)
        (grad,) = torch.autograd.grad(q.amax(1).sum(), x)
    return grad.abs()


def _batches(x: Tensor, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    dummy = torch.zeros(len(x), dtype=torch.long)  # activation_stats reads (inputs, labels) batches
    return [(x[i : i + batch_size], dummy[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def spread(n: int, k: int) -> list[int]:
    """``k`` step indices spread evenly over ``n`` steps, first and last included (fewer if n < k).

    >>> spread(38, 6), spread(3, 6)
    ([0, 7, 15, 22, 30, 37], [0, 1, 2])
    """
    k = min(k, n)
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def channel_names(env: Env) -> list[str]:
    """Names of the observation's channels: MinAtar's objects, or the stacked frames, oldest first."""
    game = getattr(getattr(env, "env", None), "env", None)
    channels = getattr(game, "channels", None)  # MinAtar: {"paddle": 0, "ball": 1, ...}
    c = int(env.obs_shape[0])
    if isinstance(channels, dict) and sorted(channels.values()) == list(range(c)):
        return [name for name, _ in sorted(channels.items(), key=lambda kv: kv[1])]
    if env.frame_stack == c and c > 1:
        return [f"frame t-{c - 1 - i}" if i < c - 1 else "frame t" for i in range(c)]
    return [f"channel {i}" for i in range(c)]


def _screen(img: np.ndarray) -> list[Any]:
    """An RGB screen (H, W, 3) as nested lists; a grey one (Atari) as (H, W)."""
    img = np.asarray(img, dtype=np.uint8)
    if img.ndim == 3 and (img == img[:, :, :1]).all():
        img = img[:, :, 0]
    return img.tolist()


def _round(t: Tensor | Sequence[float], decimals: int) -> list[Any]:
    return torch.round(torch.as_tensor(t).double(), decimals=decimals).tolist()


class GameInspection:
    """One game run folder: a greedy episode of its saved network, then a method per output file."""

    def __init__(self, folder: Path, player: GameAgent, *, max_examples: int, seed: int, batch_size: int,
                 write: Callable[[Path, Any], None]) -> None:
        self.folder, self.player, self.seed, self.batch_size, self.write = folder, player, seed, batch_size, write
        self.model, self.device = player.model, player.device
        env_name = player.meta.get("env")
        if not isinstance(env_name, str):
            raise LaminaError(f"{folder}/model.json names no environment ('env'): it is not a lamina play run")
        self.env_name = env_name
        self.env = make_envs(env_name, [seed], cfg=player.cfg.rl).envs[0]
        if tuple(self.env.obs_shape) != tuple(self.model.input_shape):
            raise LaminaError(f"{env_name} gives observations {tuple(self.env.obs_shape)}, the network of {folder} "
                              f"takes {tuple(self.model.input_shape)}: inspect it with the game it was trained on")
        self.episode = greedy_episode(player.agent, self.env, max_steps=max_examples)
        self.x = as_input(self.episode["obs"], player.agent.obs_scale)  # (T, C, H, W) the network's inputs
        self.skipped: dict[str, str] = {}
        self.out = folder / "inspection"
        self.out.mkdir(exist_ok=True)

    def parts(self, compare_with: Any = None, top_stage: Any = None) -> list[tuple[str, Callable[[], None]]]:
        return [("activations", self.activations), ("saliency", self.saliency)]

    def examples(self) -> dict[str, int]:
        return {"episode_steps": len(self.x)}

    def activations(self) -> None:
        stats = activation_stats(self.model, _batches(self.x, self.batch_size), max_examples=len(self.x),
                                 device=self.device)
        self.write(self.out / "activations.json", stats)

    def saliency(self) -> None:
        ep, x = self.episode, self.x
        maps = torch.cat([saliency(self.model, xb.to(self.device)).cpu() for xb, _ in _batches(x, self.batch_size)])
        grad = maps.flatten(2).sum(2).mean(0)  # (C,) per channel: summed over the screen, averaged over steps
        grad_x_input = (maps * x.abs()).flatten(2).sum(2).mean(0)
        n_actions = int(self.model.num_classes)
        names = list(MINATAR_ACTIONS) if self.env_name.startswith("minatar/") and n_actions == len(MINATAR_ACTIONS) \
            else [f"action {i}" for i in range(n_actions)]
        frames = []
        for t in spread(len(x), FRAMES):
            m = maps[t].sum(0)  # (H, W) summed over channels
            peak = float(m.max())
            frames.append({"step": t, "action": ep["actions"][t], "reward": ep["rewards"][t],
                           "q": _round(ep["q"][t], 4), "screen": _screen(ep["screens"][t]), "peak": round(peak, 6),
                           "saliency": _round(m / peak if peak > 0 else m, 3)})
        self.write(self.out / "saliency.json", {
            "env": self.env_name, "seed": self.seed, "steps": len(x), "return": float(sum(ep["rewards"])),
            "cut": ep["cut"], "method": "|d max_a Q(s,a) / d s|, summed over the input channels",
            "channels": channel_names(self.env), "action_names": names,
            "channel_gradient": _round(grad, 6), "channel_gradient_x_input": _round(grad_x_input, 6),
            "obs_shape": list(x.shape[1:]), "frames": frames})
