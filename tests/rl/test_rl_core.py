"""The RL core on CPU: n-step replay against hand computations, frame stacks, the target period,
the ε schedule, the loop on a corridor written here (learns the optimum; bit-identical resume),
the NaN guard and the buffer-size check."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from lamina.config import RLConfig
from lamina.errors import LaminaError
from lamina.models import create_model
from lamina.rl import replay as replay_mod
from lamina.rl.dqn import DQN, epsilon
from lamina.rl.envs import Env, VecEnv
from lamina.rl.loop import RLLoop, run_episodes
from lamina.rl.replay import ReplayBuffer
from lamina.training import callbacks as cb
from lamina.training import checkpoint
from lamina.training.engine import Engine, enable_determinism
from lamina.training.loop import Loop
from lamina.training.nan_guard import NonFiniteError

CPU = torch.device("cpu")


class Corridor(Env):
    """Cells 0..L-1, start at 0; action 1 moves right, 0 left; reaching L-1 pays 1 and ends the episode.
    The optimum (always right) earns 1 in L-1 steps; episodes are cut after ``limit`` steps."""

    obs_dtype = torch.uint8

    def __init__(self, length: int = 6, seed: int = 0) -> None:
        self.length, self.pos = length, 0
        self.obs_shape, self.num_actions = (length,), 2
        self.rng = np.random.default_rng(seed)  # a little noise in the start, so the state matters

    def _obs(self) -> np.ndarray:
        o = np.zeros(self.length, np.uint8)
        o[self.pos] = 1
        return o

    def reset(self) -> np.ndarray:
        self.pos = int(self.rng.integers(0, 2))
        return self._obs()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        done = self.pos == self.length - 1
        return self._obs(), float(done), done, False

    def state_dict(self) -> dict[str, Any]:
        s = self.rng.bit_generator.state
        return {"pos": self.pos, "rng": {"state": str(s["state"]["state"]), "inc": str(s["state"]["inc"]),
                                         "has_uint32": s["has_uint32"], "uinteger": s["uinteger"]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])
        r = state["rng"]
        self.rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": int(r["state"]), "inc": int(r["inc"])},
                                        "has_uint32": r["has_uint32"], "uinteger": r["uinteger"]}


def corridors(seeds: list[int], limit: int = 12) -> VecEnv:
    return VecEnv([Corridor(seed=s) for s in seeds], "corridor", max_episode_steps=limit)


CFG = RLConfig(frames=3000, envs=4, buffer=2000, batch_size=32, frames_per_update=4, lr=0.003, gamma=0.9, n_step=2,
               target_period=50, learning_starts=200, eps_start=1.0, eps_end=0.05, eps_frames=1000, eval_every=1000,
               eval_episodes=4)


def make_loop(cfg: RLConfig = CFG, seed: int = 0, callbacks: list[cb.Callback] | None = None, on_nan: str = "stop",
              returns_path: Any = None) -> RLLoop:
    torch.manual_seed(seed)
    envs = corridors([seed * 100 + i for i in range(cfg.envs)])
    model = create_model("mlp", envs.obs_shape, envs.num_actions, width=32, depth=1, norm="none")
    agent = DQN(model, cfg)
    rb = ReplayBuffer(cfg.buffer, cfg.envs, envs.obs_shape, envs.obs_dtype, device=CPU, n_step=cfg.n_step,
                      gamma=cfg.gamma)
    return RLLoop(agent, envs, rb, cfg, engine=Engine.create("cpu", "fp32"), seed=seed,
                  eval_envs=lambda s: corridors(s), callbacks=callbacks or [], on_nan=on_nan,
                  returns_path=returns_path)


# -- replay ---------------------------------------------------------------------------------------


def _buffer(n_step: int = 3, gamma: float = 0.5, rows: int = 20, stack: int = 1) -> ReplayBuffer:
    shape = (stack, 2, 2) if stack > 1 else (1,)
    return ReplayBuffer(rows, 1, shape, torch.uint8, device=CPU, n_step=n_step, gamma=gamma, frame_stack=stack)


def _add(rb: ReplayBuffer, obs: int, r: float, term: bool = False, trunc: bool = False) -> None:
    o = torch.full((1, *rb.obs_shape), obs, dtype=torch.uint8)
    rb.add(o, torch.tensor([obs % 3]), torch.tensor([r]), torch.tensor([term]), torch.tensor([trunc]))


def test_n_step_return_matches_a_hand_computation_with_an_episode_end_inside() -> None:
    rb = _buffer(n_step=3, gamma=0.5)
    # obs 0..5; rewards 1, 2, 4 (terminal at step 2), then a new episode: 8, 16, 32
    for i, (r, term) in enumerate([(1, False), (2, False), (4, True), (8, False), (16, False), (32, False)]):
        _add(rb, i, r, term)
    _add(rb, 6, 0)
    got = rb.gather(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 3]))
    # t=0: 1 + .5*2 + .25*4, ends (terminal) inside the window: no bootstrap
    # t=1: 2 + .5*4, terminal; t=2: 4, terminal; t=3: 8 + .5*16 + .25*32, bootstrap .125 * Q(obs 6)
    assert got["ret"].tolist() == [3.0, 4.0, 4.0, 24.0]
    assert got["discount"].tolist() == [0.0, 0.0, 0.0, 0.125]
    assert got["next_obs"].flatten().tolist() == [3, 3, 3, 6]
    assert got["action"].tolist() == [0, 1, 2, 0]
    assert got["valid"].all()


def test_a_cut_episode_bootstraps_from_the_last_kept_observation() -> None:
    rb = _buffer(n_step=3, gamma=0.5)
    for i, (r, trunc) in enumerate([(1, False), (2, False), (4, True), (8, False)]):
        _add(rb, i, r, trunc=trunc)
    _add(rb, 4, 0)
    _add(rb, 5, 0)
    got = rb.gather(torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 2]))
    # t=0: 1 + .5*2, then the cut step: bootstrap from obs 2 with .25; t=2 starts on the cut step: invalid
    assert got["ret"].tolist()[:2] == [2.0, 2.0]
    assert got["discount"].tolist()[:2] == [0.25, 0.5]
    assert got["next_obs"].flatten().tolist()[:2] == [2, 2]
    assert got["valid"].tolist() == [True, True, False]


def test_frame_stacks_are_rebuilt_with_the_first_frame_repeated_at_an_episode_start() -> None:
    rb = _buffer(n_step=1, stack=4)
    for i in range(6):  # frames 0..5; the episode ends after frame 2, frame 3 starts the next
        _add(rb, i, 0.0, term=i == 2)
    got = rb.gather(torch.zeros(3, dtype=torch.long), torch.tensor([4, 3, 2]))
    firsts = got["obs"][:, :, 0, 0].tolist()  # (B, stack): oldest first
    assert firsts == [[3, 3, 3, 4], [3, 3, 3, 3], [0, 0, 1, 2]]


def test_sampling_stays_inside_what_was_written_and_not_overwritten() -> None:
    rb = _buffer(n_step=2, rows=8)
    for i in range(13):
        _add(rb, i, 0.0)
    g = torch.Generator().manual_seed(0)
    obs = rb.sample(500, g)["obs"].flatten()
    assert int(obs.min()) == 13 - 8 and int(obs.max()) == 12 - 2


def test_replay_state_round_trips_through_a_checkpoint(tmp_path) -> None:
    rb = ReplayBuffer(64, 2, (3, 4, 4), torch.bool, device=CPU, n_step=3, gamma=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        rb.add(torch.rand(2, 3, 4, 4, generator=g) > 0.5, torch.randint(6, (2,), generator=g),
               torch.randn(2, generator=g), torch.rand(2, generator=g) > 0.8, torch.zeros(2, dtype=torch.bool))
    checkpoint.save({"replay": rb.state_dict()}, tmp_path / "ck")
    other = ReplayBuffer(64, 2, (3, 4, 4), torch.bool, device=CPU, n_step=3, gamma=0.9)
    other.load_state_dict(checkpoint.load(tmp_path / "ck")["replay"])
    a, b = rb.sample(16, torch.Generator().manual_seed(5)), other.sample(16, torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_buffer_that_does_not_fit_is_refused_before_allocation(monkeypatch) -> None:
    monkeypatch.setattr(replay_mod, "free_memory", lambda device: 10_000_000)
    with pytest.raises(LaminaError, match=r"needs .* GB \(414 bytes each\).*largest that fits is rl.buffer=19323"):
        ReplayBuffer(1_000_000, 8, (4, 10, 10), torch.bool, device=CPU)


# -- the agent ------------------------------------------------------------------------------------


def test_epsilon_schedule() -> None:
    cfg = RLConfig(learning_starts=1000, eps_start=1.0, eps_end=0.1, eps_frames=10_000)
    assert [epsilon(f, cfg) for f in (0, 999, 1000, 6000, 11_000, 10**9)] == pytest.approx([1, 1, 1, 0.55, 0.1, 0.1])
    assert epsilon(5000, replace(cfg, eps_frames=0)) == 0.1


def test_target_network_is_copied_exactly_every_target_period_updates() -> None:
    cfg = replace(CFG, target_period=3)
    loop = make_loop(cfg)
    agent, rb = loop.agent, loop.replay
    for _ in range(10):
        rb.add(torch.randint(0, 2, (4, 6), dtype=torch.uint8), torch.randint(2, (4,)), torch.randn(4),
               torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    g = torch.Generator().manual_seed(0)

    def same() -> bool:
        return all(torch.equal(a, b) for a, b in zip(agent.online.parameters(), agent.target.parameters(), strict=True))

    assert same()
    seen = []
    for _ in range(7):
        before = [p.clone() for p in agent.target.parameters()]
        agent.update(rb.sample(8, g))
        changed = not all(torch.equal(a, b) for a, b in zip(before, agent.target.parameters(), strict=True))
        seen.append((agent.updates, changed, same()))
    assert [u for u, changed, _ in seen if changed] == [3, 6]
    assert all(s == (u % 3 == 0) for u, _, s in seen)


# -- the loop -------------------------------------------------------------------------------------


def test_the_loop_satisfies_the_loop_protocol_and_learns_the_corridor(tmp_path) -> None:
    loop = make_loop(returns_path=tmp_path / "returns.jsonl")
    assert isinstance(loop, Loop)
    loop.fit()
    assert loop.frames == 3000 and loop.epoch == 3 == loop.epochs
    assert loop.step == loop.total_steps == (3000 - 200) // 4
    greedy = run_episodes(loop.agent, corridors([100, 101, 102, 103]), max_steps=12)
    assert greedy == [1.0] * 4  # the optimum
    assert loop.last_epoch["val_return"] == 1.0 and loop.last_epoch["val_return_std"] == 0.0
    assert set(loop.running()) >= {"loss", "return", "epsilon", "fps"}
    kinds = [line.split('"kind": "')[1][:4] for line in (tmp_path / "returns.jsonl").read_text().splitlines()]
    assert kinds.count("eval") == 3 and kinds.count("trai") > 50


def test_existing_callbacks_serve_the_loop(tmp_path) -> None:
    calls = [cb.MetricsLogger(tmp_path / "metrics.jsonl", every=20), cb.Checkpoint(tmp_path / "ck", {}, handle_signals=False),
             cb.ProgressBar(), cb.TimeLimit(3600)]
    from lamina.energy.counters import EstimateCounter
    from lamina.energy.meter import EnergyMeter

    calls.append(EnergyMeter(tmp_path / "energy.jsonl", EstimateCounter()))
    loop = make_loop(replace(CFG, frames=1200, eval_every=600), callbacks=calls)
    loop.fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in x for x in lines) == 2 and sum('"kind": "step"' in x for x in lines) >= 10
    assert checkpoint.latest(tmp_path / "ck") is not None
    assert '"kind": "total"' in (tmp_path / "energy.jsonl").read_text()


def _weights(loop: RLLoop) -> list[torch.Tensor]:
    return [p.detach().clone() for p in loop.agent.online.parameters()]


def test_deterministic_resume_is_bit_identical(tmp_path) -> None:
    enable_determinism()
    full = make_loop()
    full.fit()

    class StopAt(cb.Callback):
        def batch_end(self, trainer: Any) -> None:
            if trainer.step == 301:
                raise cb.CancelFit("test stop")

    first = make_loop(callbacks=[StopAt()])
    first.fit()
    assert first.stop_reason == "test stop" and first.frames < 3000
    checkpoint.save(first.state_dict(), tmp_path / "ck")
    torch.manual_seed(1234)  # whatever the global RNGs did since: the checkpoint restores them
    np.random.seed(99)
    resumed = make_loop()
    resumed.load_state_dict(checkpoint.load(tmp_path / "ck"))
    resumed.fit()
    assert resumed.frames == full.frames and resumed.step == full.step
    assert all(torch.equal(a, b) for a, b in zip(_weights(full), _weights(resumed), strict=True))
    assert resumed.last_epoch["val_return"] == full.last_epoch["val_return"]


def test_a_non_finite_loss_stops_or_is_skipped_without_changing_the_weights() -> None:
    class Poison(cb.Callback):  # from update 10 on, the rewards in the buffer are NaN
        def batch_end(self, trainer: Any) -> None:
            if trainer.step == 10:
                self.before = _weights(trainer)
                trainer.replay.reward.fill_(float("nan"))

    p = Poison()
    loop = make_loop(replace(CFG, frames=1000), callbacks=[p])
    with pytest.raises(NonFiniteError, match=r"non-finite .* at step 1[12]"):
        loop.fit()
    assert all(torch.equal(a, b) for a, b in zip(p.before, _weights(loop), strict=True))

    p = Poison()
    loop = make_loop(replace(CFG, frames=1000), callbacks=[p], on_nan="skip")
    with pytest.raises(NonFiniteError, match="the run diverged"):
        loop.fit()
    assert loop.nan_guard.skipped > 3
    assert all(torch.equal(a, b) for a, b in zip(p.before, _weights(loop), strict=True))

