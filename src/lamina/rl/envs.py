"""Environments: one small interface, MinAtar and Atari behind it, and N of them stepped together.

An :class:`Env` is one game: ``reset() -> obs``, ``step(action) -> (obs, reward, terminated,
truncated)``, ``state_dict()``/``load_state_dict()`` and a few attributes (``obs_shape``,
``num_actions``, ``obs_dtype``, ``obs_scale``, ``frame_stack``). A test implements it in a few
lines (a corridor) and trains on it with the same loop. :class:`VecEnv` steps ``n`` of them
together, resets the ones whose episode ended, cuts episodes at ``max_episode_steps`` and keeps
every episode's return.

``make_env("minatar/breakout", n, seed=..., cfg=...)``: MinAtar (Young & Tian 2019), observations
bool (C, 10, 10), sticky actions by MinAtar's own ``sticky_action_prob``; its state is plain
attributes and a ``numpy.random.RandomState``, saved as tensors and numbers, so a resumed run
goes on inside the same episodes. ``make_env("atari/Breakout", ...)``: gymnasium + ale-py with
the standard preprocessing (``AtariPreprocessing``: frame-skip with the last two frames
max-pooled, 84×84 grey, up to ``noop_max`` no-op starts; sticky actions p = ``cfg.sticky`` in the
ALE; ``FrameStackObservation`` of 4). Its state is the ALE's own (``cloneState(include_rng=True)``,
serialised bytes: the emulator and the sticky actions' RNG), the no-op starts' generator and the
two wrappers' frame buffers, so a resumed Atari run also goes on inside the same episodes. A
gymnasium environment of another kind has no saved state: it restarts its episodes (the replay
buffer marks the interrupted ones as cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from lamina.config import RLConfig
from lamina.errors import LaminaError, did_you_mean

MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
MINATAR_EXTRA = "pip install 'lamina[rl]'"
ATARI_EXTRA = "pip install 'lamina[atari]'"
ATARI_EXAMPLES = ("atari/Breakout", "atari/Pong", "atari/SpaceInvaders", "atari/Seaquest")


class Env:
    """One environment. Subclasses set the attributes and implement reset/step (and the state)."""

    obs_shape: tuple[int, ...]  # one observation as the model sees it, e.g. (C, 10, 10) or (4, 84, 84)
    num_actions: int
    obs_dtype: ClassVar[torch.dtype] = torch.uint8  # how the replay buffer stores observations
    obs_scale: ClassVar[float] = 1.0  # the model's input is obs.float() * obs_scale
    frame_stack: ClassVar[int] = 1  # >1: obs is a stack of frames, newest last (the buffer keeps one frame)

    def reset(self) -> np.ndarray:
        raise NotImplementedError

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        """(next observation, reward, terminated, truncated) of one action."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any] | None:
        """Everything needed to go on exactly here (tensors and numbers), or None if it cannot be saved."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def frame(self) -> np.ndarray:
        """The current screen as RGB uint8 (H, W, 3), for GIFs."""
        raise NotImplementedError


# -- MinAtar ------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """A game's state (MinAtar's attributes, Atari's buffers and generator) as checkpointable values
    (tensors, numbers, lists); no pickle."""
    if isinstance(value, np.random.RandomState):
        _, keys, pos, has_gauss, gauss = value.get_state()
        return {"__random__": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": str(value.dtype), "data": torch.from_numpy(value.copy())}
    if isinstance(value, np.generic):
        return {"__scalar__": str(value.dtype), "value": value.item()}
    if isinstance(value, dict):
        return {"__dict__": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"__list__" if isinstance(value, list) else "__tuple__list": [_encode(v) for v in value]}
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return {"__int__": str(value)}  # wider than a checkpoint's numbers (PCG64's 128-bit state)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} of a game's state")


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "__int__" in value:
        return int(value["__int__"])
    if "__random__" in value:
        rs = np.random.RandomState()
        rs.set_state(("MT19937", value["__random__"].numpy().astype(np.uint32), int(value["pos"]),
                      int(value["has_gauss"]), float(value["gauss"])))
        return rs
    if "__ndarray__" in value:
        return value["data"].numpy().astype(value["__ndarray__"]).copy()
    if "__scalar__" in value:
        return np.dtype(value["__scalar__"]).type(value["value"])
    if "__dict__" in value:
        return {k: _decode(v) for k, v in value["__dict__"].items()}
    if "__list__" in value:
        return [_decode(v) for v in value["__list__"]]
    if "__tuple__list" in value:
        return tuple(_decode(v) for v in value["__tuple__list"])
    raise TypeError(f"unknown saved game value {sorted(value)}")


def _cubehelix(n: int) -> np.ndarray:
    """``n`` colours of the cubehelix palette MinAtar's display uses (Green 2011), black first."""
    x = np.linspace(0, 1, n + 2)[1:-1]
    angle = 2 * np.pi * (0.5 / 3 + 1 - 1.5 * x)
    amp = x * (1 - x) / 2
    r = x + amp * (-0.14861 * np.cos(angle) + 1.78277 * np.sin(angle))
    g = x + amp * (-0.29227 * np.cos(angle) - 0.90649 * np.sin(angle))
    b = x + amp * (1.97294 * np.cos(angle))
    rgb = np.clip(np.stack([r, g, b], 1), 0, 1)
    return (np.concatenate([np.zeros((1, 3)), rgb]) * 255).astype(np.uint8)


class MinAtarEnv(Env):
    """One MinAtar game; observations bool (C, 10, 10), channels first."""

    obs_dtype = torch.bool

    def __init__(self, game: str, *, seed: int, sticky: float) -> None:
        from minatar import Environment

        self.env = Environment(game, sticky_action_prob=sticky)
        self.env.seed(int(seed))
        self.env.reset()  # the game reset itself once before seeding: start from the seeded state
        h, w, c = self.env.state_shape()
        self.obs_shape = (c, h, w)
        self.num_actions = self.env.num_actions()
        self.palette = _cubehelix(c)

    def _obs(self) -> np.ndarray:
        return self.env.state().transpose(2, 0, 1)  # (C, 10, 10) bool

    def reset(self) -> np.ndarray:
        self.env.reset()
        return self._obs()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        reward, terminated = self.env.act(int(action))
        return self._obs(), float(reward), bool(terminated), False

    def state_dict(self) -> dict[str, Any]:
        game = {k: v for k, v in vars(self.env.env).items() if k != "random"}
        return {"random": _encode(self.env.random), "last_action": int(self.env.last_action),
                "game": {k: _encode(v) for k, v in game.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rs = _decode(state["random"])
        self.env.random = self.env.env.random = rs  # one RandomState, shared as MinAtar's seed() does
        self.env.last_action = int(state["last_action"])
        for k, v in state["game"].items():
            setattr(self.env.env, k, _decode(v))

    def frame(self) -> np.ndarray:
        s = self.env.state()  # (10, 10, C) bool
        idx = np.amax(s * np.arange(1, s.shape[2] + 1)[None, None, :], axis=2)  # the highest channel present
        return self.palette[idx]


# -- Atari (gymnasium + ale-py) -----------------------------------------------------------------------


def _ale_ids() -> list[str]:
    try:
        import gymnasium as gym
    except ImportError:
        raise LaminaError(f"atari/ environments need gymnasium and ale-py: {ATARI_EXTRA}") from None
    try:
        import ale_py
    except ImportError:
        raise LaminaError(f"atari/ environments need ale-py (the Atari emulator): {ATARI_EXTRA}") from None
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise LaminaError("atari/ environments need OpenCV (gymnasium's standard Atari preprocessing resizes "
                          f"frames with it): {ATARI_EXTRA}, or pip install opencv-python-headless") from None
    gym.register_envs(ale_py)
    return sorted(k[4:-3] for k in gym.envs.registry if k.startswith("ALE/") and k.endswith("-v5"))


def _make_ale(game: str, *, sticky: float, max_frames: int) -> Any:
    """The raw ALE environment (no frame skip: AtariPreprocessing does it, max-pooling two frames)."""
    import gymnasium as gym

    return gym.make(f"ALE/{game}-v5", frameskip=1, repeat_action_probability=sticky, full_action_space=False,
                    max_num_frames_per_episode=max_frames or None)


class GymEnv(Env):
    """A gymnasium environment whose observations are uint8 frame stacks (Atari after preprocessing).

    Its state is saved when it is an ALE game behind ``AtariPreprocessing`` and
    ``FrameStackObservation`` (:func:`make_atari`); otherwise ``state_dict`` is None and a resumed
    run restarts its episodes.
    """

    obs_scale = 1 / 255

    def __init__(self, env: Any, *, seed: int, frame_stack: int = 4) -> None:
        self.env, self.seed = env, int(seed)
        self.frame_stack = frame_stack  # type: ignore[misc]
        self.obs_shape = tuple(int(s) for s in env.observation_space.shape)
        self.num_actions = int(env.action_space.n)
        self._first = True
        self._last: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed if self._first else None)
        self._first = False
        self._last = np.asarray(obs)
        return self._last

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        obs, reward, terminated, truncated, _ = self.env.step(int(action))
        self._last = np.asarray(obs)
        return self._last, float(reward), bool(terminated), bool(truncated)

    def _layers(self) -> dict[str, Any]:
        """The wrappers whose state matters, by kind, found by walking ``.env`` down to the game."""
        found: dict[str, Any] = {}
        env = self.env
        while env is not None:
            kind = type(env).__name__
            if kind in ("FrameStackObservation", "AtariPreprocessing", "AtariEnv"):
                found[kind] = env
            env = getattr(env, "env", None)
        return found

    def state_dict(self) -> dict[str, Any] | None:
        """The ALE's state with its RNG (as bytes), the no-op generator and the frame buffers; None
        for a gymnasium environment that is not an ALE game behind the standard wrappers."""
        layers = self._layers()
        if len(layers) < 3 or self._last is None:
            return None
        stack, prep, game = layers["FrameStackObservation"], layers["AtariPreprocessing"], layers["AtariEnv"]
        ale = np.frombuffer(game.ale.cloneState(include_rng=True).serialize(), dtype=np.uint8)
        rng = game.np_random.bit_generator.state  # PCG64
        return {"ale": torch.from_numpy(ale.copy()), "np_random": _encode(rng),
                "obs_buffer": [_encode(b) for b in prep.obs_buffer], "lives": int(prep.lives),
                "game_over": bool(prep.game_over), "queue": _encode(list(stack.obs_queue)),
                "padding": _encode(stack.padding_value), "last": _encode(self._last), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import ale_py

        if self._first:  # gymnasium refuses step() before a first reset()
            self.reset()
        layers = self._layers()
        stack, prep, game = layers["FrameStackObservation"], layers["AtariPreprocessing"], layers["AtariEnv"]
        game.ale.restoreState(ale_py.ALEState(state["ale"].numpy().tobytes()))
        game.np_random.bit_generator.state = _decode(state["np_random"])
        for buf, saved in zip(prep.obs_buffer, state["obs_buffer"], strict=True):
            buf[...] = _decode(saved)
        prep.lives, prep.game_over = int(state["lives"]), bool(state["game_over"])
        stack.obs_queue.clear()
        stack.obs_queue.extend(_decode(state["queue"]))
        stack.padding_value = _decode(state["padding"])
        self._last, self.seed = _decode(state["last"]), int(state["seed"])

    def restart(self, seed: int) -> np.ndarray:
        """A new episode from ``seed`` (after a resume whose checkpoint had no state for it)."""
        self.seed, self._first = int(seed), True
        return self.reset()

    def frame(self) -> np.ndarray:
        grey = self._last[-1] if self._last is not None else np.zeros(self.obs_shape[1:], np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)


def make_atari(game: str, *, seed: int, cfg: RLConfig) -> GymEnv:
    """One preprocessed Atari game (see the module docstring)."""
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    env = _make_ale(game, sticky=cfg.sticky, max_frames=cfg.max_episode_frames)
    env = AtariPreprocessing(env, noop_max=cfg.noop_max, frame_skip=cfg.frame_skip, screen_size=84,
                             terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    env = FrameStackObservation(env, 4)  # pads a new episode with its first frame (padding_type="reset")
    return GymEnv(env, seed=seed, frame_stack=4)


# -- the vector of environments -----------------------------------------------------------------------


class VecEnv:
    """``n`` environments stepped together; an ended episode is reset at once.

    ``step(actions)`` returns the next observations (N, *obs_shape) (for an ended episode: the
    first observation of the next one), the rewards (N,) float32, ``terminated`` and ``truncated``
    (N,) bool. Finished episodes' returns and lengths collect in ``finished`` until read.

    Args:
        envs: the environments (the same game, seeded differently).
        name: e.g. ``minatar/breakout``.
        max_episode_steps: cut (truncate) an episode after this many steps; 0: never.
    """

    def __init__(self, envs: Sequence[Env], name: str = "", *, max_episode_steps: int = 0) -> None:
        if not envs:
            raise LaminaError("a vector of environments needs at least one environment")
        self.envs, self.name, self.max_episode_steps = list(envs), name, max_episode_steps
        first = self.envs[0]
        self.obs_shape, self.num_actions = tuple(first.obs_shape), int(first.num_actions)
        self.obs_dtype, self.obs_scale, self.frame_stack = first.obs_dtype, first.obs_scale, first.frame_stack
        self.returns = np.zeros(len(envs), np.float64)
        self.lengths = np.zeros(len(envs), np.int64)
        self.finished: list[tuple[float, int]] = []  # (return, length) of episodes ended since last read
        self.obs: np.ndarray | None = None

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def reset(self) -> np.ndarray:
        self.returns[:], self.lengths[:] = 0, 0
        self.obs = np.stack([e.reset() for e in self.envs])
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.envs)
        obs, rewards = [], np.zeros(n, np.float32)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            o, r, term, trunc = env.step(int(actions[i]))
            self.returns[i] += r
            self.lengths[i] += 1
            if not term and self.max_episode_steps and self.lengths[i] >= self.max_episode_steps:
                trunc = True
            if term or trunc:
                self.finished.append((float(self.returns[i]), int(self.lengths[i])))
                self.returns[i], self.lengths[i] = 0, 0
                o = env.reset()
            obs.append(o)
            rewards[i], terminated[i], truncated[i] = r, term, trunc and not term
        self.obs = np.stack(obs)
        return self.obs, rewards, terminated, truncated

    def take_finished(self) -> list[tuple[float, int]]:
        out, self.finished = self.finished, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """The environments' states (None for one that cannot be saved), the running returns and the
        current observations."""
        return {"envs": [e.state_dict() for e in self.envs], "returns": torch.from_numpy(self.returns.copy()),
                "lengths": torch.from_numpy(self.lengths.copy()),
                "obs": torch.from_numpy(np.ascontiguousarray(self.obs)) if self.obs is not None else None}

    def load_state_dict(self, state: dict[str, Any], *, restart_seed: int = 0) -> bool:
        """Restore :meth:`state_dict`; True when every environment went on where it was, False when
        some restarted their episodes (their state was not saved: Atari)."""
        saved = state["envs"]
        if len(saved) != len(self.envs):
            raise LaminaError(f"the checkpoint holds {len(saved)} environments, this run has {len(self.envs)}: "
                              "keep rl.envs as it was")
        self.returns[:] = state["returns"].numpy()
        self.lengths[:] = state["lengths"].numpy()
        self.obs = state["obs"].numpy().copy() if state.get("obs") is not None else None
        exact = True
        for i, (env, s) in enumerate(zip(self.envs, saved, strict=True)):
            if s is not None:
                env.load_state_dict(s)
                continue
            exact = False
            self.returns[i], self.lengths[i] = 0, 0
            o = env.restart(restart_seed + i) if hasattr(env, "restart") else env.reset()
            if self.obs is not None:
                self.obs[i] = o
        return exact

    def frame(self, i: int = 0) -> np.ndarray:
        return self.envs[i].frame()


# -- by name ------------------------------------------------------------------------------------------


def env_seeds(seed: int, n: int) -> list[int]:
    """``n`` well-separated environment seeds from one run seed."""
    return [int(s) for s in np.random.SeedSequence(int(seed) % 2**32).generate_state(n)]


def check_env_name(name: str) -> tuple[str, str]:
    """``(kind, game)`` of an environment name, or a one-line error with a suggestion."""
    kind, sep, game = str(name).partition("/")
    examples = [f"minatar/{g}" for g in MINATAR_GAMES] + list(ATARI_EXAMPLES)
    if not sep or kind not in ("minatar", "atari") or not game:
        raise LaminaError(f"unknown environment '{name}': {did_you_mean(str(name), examples)}",
                          hint="minatar/<game> or atari/<Game>")
    if kind == "minatar" and game not in MINATAR_GAMES:
        raise LaminaError(f"unknown MinAtar game '{game}': {did_you_mean(game, MINATAR_GAMES)}")
    return kind, game


def make_env(name: str, n: int, *, seed: int, cfg: RLConfig) -> VecEnv:
    """``n`` environments of the game ``name`` (``minatar/<game>`` or ``atari/<Game>``), seeded from ``seed``.

    >>> from lamina.config import RLConfig
    >>> make_env("minatar/brekout", 2, seed=0, cfg=RLConfig())
    Traceback (most recent call last):
    lamina.errors.LaminaError: unknown MinAtar game 'brekout': did you mean 'breakout'?
    """
    if n < 1:
        raise LaminaError(f"rl.envs must be at least 1, got {n}")
    return make_envs(name, env_seeds(seed, n), cfg=cfg)


def make_envs(name: str, seeds: Sequence[int], *, cfg: RLConfig) -> VecEnv:
    """One environment of ``name`` per seed (evaluation: seed i for episode i)."""
    kind, game = check_env_name(name)
    if kind == "minatar":
        try:
            import minatar  # noqa: F401
        except ImportError:
            raise LaminaError(f"minatar/ environments need the minatar package: {MINATAR_EXTRA}") from None
        envs: list[Env] = [MinAtarEnv(game, seed=s, sticky=cfg.sticky) for s in seeds]
        cap = cfg.max_episode_frames
    else:
        ids = _ale_ids()
        if game not in ids:
            raise LaminaError(f"unknown Atari game '{game}': {did_you_mean(game, ids)}")
        envs = [make_atari(game, seed=s, cfg=cfg) for s in seeds]
        cap = 0  # the ALE cuts episodes itself at max_num_frames_per_episode
    return VecEnv(envs, f"{kind}/{game}", max_episode_steps=cap)


def to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host array on ``device`` without waiting for the device (pinned memory, non-blocking copy on CUDA)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
