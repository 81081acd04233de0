"""Double DQN (van Hasselt et al. 2016) with a target network, n-step returns and the Huber loss.

The agent owns the online network, the target network and the optimizer; the loop
(:mod:`lamina.rl.loop`) owns the environments, the replay buffer and the counters. Nothing here
waits for the device: ``act`` returns actions on the device (the loop's one host transfer per
step), ``update`` returns the loss as a device tensor, and a non-finite loss or gradient skips
the update inside the fused Adam kernel (``found_inf``, as the AMP grad scaler does) instead of
asking the host.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.config import RLConfig
from lamina.models.base import Model


def epsilon(frame: int, cfg: RLConfig) -> float:
    """Exploration at ``frame`` (all environments' frames together): 1 (uniform random play) before
    ``learning_starts``, then linear from ``eps_start`` to ``eps_end`` over ``eps_frames`` frames.

    >>> from lamina.config import RLConfig
    >>> cfg = RLConfig(learning_starts=100, eps_start=1.0, eps_end=0.1, eps_frames=1000)
    >>> [round(epsilon(f, cfg), 3) for f in (0, 99, 100, 600, 1100, 5000)]
    [1.0, 1.0, 1.0, 0.55, 0.1, 0.1]
    """
    if frame < cfg.learning_starts:
        return 1.0
    if cfg.eps_frames <= 0:
        return cfg.eps_end
    done = min(1.0, (frame - cfg.learning_starts) / cfg.eps_frames)
    return cfg.eps_start + (cfg.eps_end - cfg.eps_start) * done


def as_input(obs: Tensor, scale: float) -> Tensor:
    """Stored observations (bool or uint8) as the network's float input."""
    x = obs.float()
    return x * scale if scale != 1.0 else x


def grads_finite(loss: Tensor, model: nn.Module) -> Tensor:
    """A device bool: the loss and every gradient are finite (no host sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    peak = torch.nn.utils.get_total_norm(grads, norm_type=math.inf) if grads else loss.new_zeros(())
    return torch.isfinite(loss.detach()) & torch.isfinite(peak)


class DQN:
    """The learner: Q(s, a) by ``model``, targets by a periodically copied target network.

    Args:
        model: the online Q-network (``num_classes`` = the number of actions), already on ``device``.
        cfg: the RL settings (lr, gamma, n_step, double, target_period).
        obs_scale: the network's input is ``obs.float() * obs_scale``.
        autocast: the engine's autocast context factory (bf16 on hardware that has it).
    """

    def __init__(self, model: Model, cfg: RLConfig, *, obs_scale: float = 1.0, autocast: Any = None) -> None:
        self.online, self.cfg, self.obs_scale = model, cfg, obs_scale
        self.target = copy.deepcopy(model).requires_grad_(False)
        device = next(model.parameters()).device
        # fused: one kernel for all parameters, and found_inf skips a step without a host sync
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1.5e-4, fused=True)
        self.autocast = autocast
        self.updates = 0
        self._no_inf = torch.zeros((), device=device)

    @torch.no_grad()
    def act(self, obs: Tensor, eps: float, generator: torch.Generator) -> Tensor:
        """ε-greedy actions (E,) for stored observations (E, *obs_shape), on the device."""
        n = obs.shape[0]
        explore = torch.rand(n, generator=generator, device=obs.device) < eps
        random = torch.randint(self.online.num_classes, (n,), generator=generator, device=obs.device)
        if eps >= 1.0:  # uniform random play: the network is not asked (the draws above keep the RNG stream)
            return random
        with self._autocast():
            greedy = self.online(as_input(obs, self.obs_scale)).argmax(1)
        return torch.where(explore, random, greedy)

    def _autocast(self) -> Any:
        import contextlib

        return self.autocast() if self.autocast is not None else contextlib.nullcontext()

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The Huber loss of Q(s, a) against r + gamma^k Q_target(s', argmax_a Q_online(s', a)) (Double DQN;
        plain DQN: max_a Q_target), averaged over the batch's valid draws."""
        with self._autocast():
            q = self.online(as_input(batch["obs"], self.obs_scale)).float()  # (B, A)
            with torch.no_grad():  # a separate forward: backward through the next states would be wasted work
                nxt = as_input(batch["next_obs"], self.obs_scale)
                q_next_target = self.target(nxt).float()  # (B, A)
                q_next_online = self.online(nxt).float() if self.cfg.double else None
        q = q.gather(1, batch["action"][:, None]).squeeze(1)  # (B,)
        with torch.no_grad():
            if self.cfg.double:
                best = q_next_online.argmax(1, keepdim=True)  # type: ignore[union-attr]
                q_next = q_next_target.gather(1, best).squeeze(1)
            else:
                q_next = q_next_target.amax(1)
            y = batch["ret"] + batch["discount"] * q_next
        valid = batch["valid"].float()
        return (F.smooth_l1_loss(q, y, reduction="none") * valid).sum() / valid.sum().clamp(min=1.0)

    def update(self, batch: dict[str, Tensor], *, check: bool = True) -> tuple[Tensor, Tensor]:
        """One gradient step; returns (loss, finite) as device tensors. With ``check``, a non-finite loss
        or gradient leaves the weights and the optimizer untouched (the step is skipped on the device)."""
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if check:
            finite = grads_finite(loss, self.online)
            self.optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
        else:
            finite = torch.ones((), dtype=torch.bool, device=loss.device)
            self.optimizer.found_inf = self._no_inf  # type: ignore[attr-defined]
        self.optimizer.grad_scale = None  # type: ignore[attr-defined]
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.cfg.target_period == 0:
            self.sync_target()
        return loss.detach(), finite

    @torch.no_grad()
    def sync_target(self) -> None:
        """Copy the online network into the target network."""
        torch._foreach_copy_(list(self.target.parameters()), list(self.online.parameters()))
        for t, o in zip(self.target.buffers(), self.online.buffers(), strict=True):
            t.copy_(o)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.online.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["model"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
