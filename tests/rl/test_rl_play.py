"""MinAtar environments (state round trip, names, missing packages) and ``lamina play`` end to end:
train, summary and model files, --eval, --gif, resume, bad inputs."""

from __future__ import annotations

import argparse
import builtins
import json
from typing import Any

import numpy as np
import pytest
import torch

from lamina.config import RLConfig, load_config
from lamina.errors import LaminaError

minatar = pytest.importorskip("minatar")

from lamina.cli.play import add_parser, cmd_play  # noqa: E402
from lamina.rl import envs as envs_mod  # noqa: E402
from lamina.rl.envs import make_env  # noqa: E402
from lamina.rl.play import parse_frames  # noqa: E402


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args, extra = parser.parse_known_args(["play", *argv])  # as lamina.cli.main does for train and play
    assert all("=" in e and not e.startswith("-") for e in extra), extra
    args.overrides = [*args.overrides, *extra]
    return cmd_play(args)


TINY = ["rl.envs=4", "rl.learning_starts=500", "rl.eval_every=1500", "rl.eval_episodes=2", "rl.batch_size=32",
        "rl.buffer=4000", "rl.max_episode_frames=300"]


# -- environments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("game", ["breakout", "seaquest", "asterix", "freeway", "space_invaders"])
def test_minatar_state_round_trips_and_the_games_go_on_identically(game: str) -> None:
    from lamina.training import checkpoint

    cfg = RLConfig(sticky=0.25)
    a, b = make_env(f"minatar/{game}", 2, seed=3, cfg=cfg), make_env(f"minatar/{game}", 2, seed=99, cfg=cfg)
    rng = np.random.default_rng(0)
    a.reset()
    for _ in range(150):
        a.step(rng.integers(0, 6, 2))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        checkpoint.save({"envs": a.state_dict()}, f"{d}/ck")
        assert b.load_state_dict(checkpoint.load(f"{d}/ck")["envs"])
    assert a.obs.shape == (2, *a.obs_shape) and a.obs.dtype == bool and np.array_equal(a.obs, b.obs)
    for _ in range(300):
        act = rng.integers(0, 6, 2)
        oa, ra, ta, _ = a.step(act)
        ob, rb, tb, _ = b.step(act)
        assert np.array_equal(oa, ob) and np.array_equal(ra, rb) and np.array_equal(ta, tb)


def test_unknown_environments_are_one_line_errors_with_a_suggestion() -> None:
    with pytest.raises(LaminaError, match="unknown MinAtar game 'breakot': did you mean 'breakout'"):
        make_env("minatar/breakot", 1, seed=0, cfg=RLConfig())
    with pytest.raises(LaminaError, match="unknown environment 'minatr/breakout': did you mean 'minatar/breakout'"):
        make_env("minatr/breakout", 1, seed=0, cfg=RLConfig())


def _without(monkeypatch, *names: str) -> None:
    real = builtins.__import__

    def fake(name: str, *args: Any, **kw: Any) -> Any:
        if name.split(".")[0] in names:
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_missing_packages_name_the_extra(monkeypatch) -> None:
    _without(monkeypatch, "minatar", "ale_py")
    with pytest.raises(LaminaError, match=r"need the minatar package: pip install 'lamina\[rl\]'"):
        make_env("minatar/breakout", 1, seed=0, cfg=RLConfig())
    with pytest.raises(LaminaError, match=r"need ale-py .*pip install 'lamina\[atari\]'"):
        make_env("atari/Breakout", 1, seed=0, cfg=RLConfig())
    _without(monkeypatch, "gymnasium")
    with pytest.raises(LaminaError, match=r"need gymnasium and ale-py: pip install 'lamina\[atari\]'"):
        make_env("atari/Pong", 1, seed=0, cfg=RLConfig())


def test_the_atari_wrapper_steps_a_gymnasium_frame_stack(monkeypatch) -> None:
    """The Atari path without ale-py: a gymnasium env of 84×84 frames behind FrameStackObservation."""
    import gymnasium as gym
    from gymnasium.wrappers import FrameStackObservation

    from lamina.rl.envs import GymEnv, VecEnv

    class Frames(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
        action_space = gym.spaces.Discrete(4)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.full((84, 84), 0, np.uint8), {}

        def step(self, action):
            self.t += 1
            return np.full((84, 84), self.t, np.uint8), 1.0, self.t == 5, False, {}

    vec = VecEnv([GymEnv(FrameStackObservation(Frames(), 4), seed=i) for i in range(2)], "atari/Fake")
    assert vec.obs_shape == (4, 84, 84) and vec.frame_stack == 4 and vec.obs_scale == 1 / 255
    assert vec.reset()[:, :, 0, 0].tolist() == [[0, 0, 0, 0]] * 2
    for _ in range(6):
        obs, *_ = vec.step(np.zeros(2, np.int64))
    assert obs[0, :, 0, 0].tolist() == [0, 0, 0, 1]  # a new episode after the 5th step
    assert vec.take_finished() == [(5.0, 5), (5.0, 5)]
    assert vec.state_dict()["envs"] == [None, None]  # restarts on resume
    assert not vec.load_state_dict(vec.state_dict(), restart_seed=7)


# -- the command ----------------------------------------------------------------------------------


def test_frames_accept_suffixes_and_refuse_non_positive_values() -> None:
    assert parse_frames("5M") == 5_000_000 and parse_frames("200k") == 200_000 and parse_frames("1e6") == 10**6
    for bad in ("0", "-5", "abc", "1.5", ""):
        with pytest.raises(LaminaError, match="--frames must be a positive number of frames"):
            parse_frames(bad)


def test_play_trains_writes_the_run_folder_evaluates_and_makes_a_gif(tmp_path, capsys) -> None:
    from lamina.artifacts import MODEL_FORMAT, read_model

    out = tmp_path / "run"
    assert run_cli("minatar/breakout", "--frames", "3000", "--out", str(out), "--quiet", "--seed", "1", *TINY) == 0
    assert "evaluation return" in capsys.readouterr().out
    for name in ("config.yaml", "metrics.jsonl", "returns.jsonl", "model.safetensors", "model.json", "summary.json",
                 "energy.jsonl"):
        assert (out / name).is_file(), name
    assert any((out / "checkpoints").iterdir())
    cfg = load_config(out / "config.yaml")
    assert cfg.rl.frames == 3000 and cfg.rl.envs == 4 and cfg.data.task == "dqn" and cfg.model.name == "minatar-dqn"
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 3000 and s["updates"] == (3000 - 500) // 8 and s["seed"] == 1
    assert {"eval_return_mean", "eval_return_std", "fps", "train_seconds", "energy_j", "device", "torch", "lamina"} <= set(s)
    meta = json.loads((out / "model.json").read_text())
    assert meta["format"] == MODEL_FORMAT and meta["task"] == "dqn" and meta["modality"] == "game"
    assert meta["obs_shape"] == [4, 10, 10] and meta["num_actions"] == 6 and meta["env"] == "minatar/breakout"
    model, _ = read_model(out)
    assert model(torch.zeros(1, 4, 10, 10)).shape == (1, 6)

    assert run_cli(str(out), "--eval", "--episodes", "3") == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["episodes"] == 3 and len(ev["returns"]) == 3 and ev["mean"] == pytest.approx(np.mean(ev["returns"]))
    assert run_cli(str(out), "--eval", "--episodes", "3") == 0
    assert json.loads((out / "eval.json").read_text())["returns"] == ev["returns"]  # fixed seeds

    assert run_cli(str(out), "--gif", "--out", str(tmp_path / "ep.gif")) == 0
    from PIL import Image

    with Image.open(tmp_path / "ep.gif") as im:
        assert im.size == (160, 160) and im.n_frames >= 2
    q = json.loads((out / "episode_q.json").read_text())
    assert len(q["q"]) == q["steps"] and len(q["q"][0]) == 6


def test_an_interrupted_play_run_resumes_to_the_same_weights(tmp_path) -> None:
    from lamina.rl.play import resume_play
    from lamina.training import callbacks as cb

    common = ["--frames", "2400", "--quiet", "--deterministic", *TINY, "rl.eval_every=1200"]
    assert run_cli("minatar/breakout", "--out", str(tmp_path / "full"), *common) == 0

    real = cb.MetricsLogger.batch_end

    def stop(self, trainer):  # a "kill" at update 120, after a checkpoint there
        real(self, trainer)
        if trainer.step == 120:
            raise cb.Interrupted(2, trainer.step, None)

    cb_ckpt = "--checkpoint-every"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cb.MetricsLogger, "batch_end", stop)
        with pytest.raises(cb.Interrupted):
            run_cli("minatar/breakout", "--out", str(tmp_path / "cut"), *common, cb_ckpt, "40")
    assert not (tmp_path / "cut" / "summary.json").exists()
    resume_play(tmp_path / "cut", quiet=True)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((tmp_path / "full" / "summary.json").read_text())
    sb = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert sa["eval_return_mean"] == sb["eval_return_mean"] and sa["updates"] == sb["updates"]


@pytest.mark.parametrize("argv,match", [
    (["minatar/breakout", "--frames", "0"], "--frames must be a positive number"),
    (["minatar/pong"], "unknown MinAtar game 'pong'"),
    (["minatar/breakout", "rl.envs=0"], "rl.envs must be at least 1"),
    (["minatar/breakout", "model.name=cnn"], "not a Q-network"),
    (["minatar/breakout", "rl.buffer=1000000000000"], r"largest that fits is rl.buffer="),
])
def test_bad_inputs_are_one_line_errors(tmp_path, argv: list[str], match: str) -> None:
    with pytest.raises(LaminaError, match=match):
        run_cli(*argv, "--out", str(tmp_path / "x"), "--quiet")


def test_atari_without_ale_py_names_the_extra(tmp_path, monkeypatch) -> None:
    _without(monkeypatch, "ale_py")
    with pytest.raises(LaminaError, match=r"lamina\[atari\]"):
        run_cli("atari/Breakout", "--frames", "1000", "--out", str(tmp_path / "x"), "--quiet")


def test_envs_module_reports_its_extras() -> None:
    assert envs_mod.MINATAR_EXTRA == "pip install 'lamina[rl]'" and envs_mod.ATARI_EXTRA == "pip install 'lamina[atari]'"


def test_lamina_main_runs_play(tmp_path) -> None:
    from lamina.cli import main as cli_main

    out = tmp_path / "run"
    assert cli_main.main(["play", "minatar/breakout", "--frames", "3000", "--out", str(out), "--quiet", *TINY]) == 0
    assert (out / "summary.json").is_file()
    assert cli_main.main(["play", "minatar/breakout", "--frames", "0", "--out", str(tmp_path / "y")]) == 2


def test_the_python_api_plays_and_resumes_a_game_run(tmp_path) -> None:
    import lamina

    run = lamina.play("minatar/breakout", frames=1500, out=str(tmp_path / "g"), quiet=True, overrides=TINY)
    assert run.dir == tmp_path / "g" and run.summary["frames"] == 1500 and run.config.data.task == "dqn"
    with pytest.raises(LaminaError, match="already finished"):
        lamina.resume(run.dir, quiet=True)


def test_atari_without_opencv_names_the_extra(monkeypatch) -> None:
    pytest.importorskip("ale_py")
    _without(monkeypatch, "cv2")
    with pytest.raises(LaminaError, match=r"need OpenCV .*pip install 'lamina\[atari\]'"):
        make_env("atari/Breakout", 1, seed=0, cfg=RLConfig())
