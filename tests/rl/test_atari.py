"""Atari through the real ALE (ale-py, gymnasium, OpenCV; the ``atari`` extra): the standard
preprocessing reaches the emulator, the emulator's state round-trips through a checkpoint so the
games go on identically, and ``lamina play atari/...`` trains, evaluates and resumes bit-identically."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from lamina.config import RLConfig

pytest.importorskip("ale_py")
pytest.importorskip("cv2")
pytest.importorskip("gymnasium")

from lamina.cli.play import add_parser, cmd_play
from lamina.rl.envs import make_env

# Short episodes (400 emulator frames = 100 agent steps), so that every test crosses episode ends.
SHORT = RLConfig(max_episode_frames=400)
TINY = ["rl.envs=2", "rl.learning_starts=400", "rl.batch_size=8", "rl.buffer=2000", "rl.eval_every=600",
        "rl.eval_episodes=1", "rl.max_episode_frames=400", "rl.target_period=20"]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args, extra = parser.parse_known_args(["play", *argv])
    args.overrides = [*args.overrides, *extra]
    return cmd_play(args)


def test_the_standard_preprocessing_reaches_the_emulator() -> None:
    vec = make_env("atari/Breakout", 2, seed=0, cfg=RLConfig())
    obs = vec.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8 and vec.obs_scale == 1 / 255
    game = vec.envs[0]._layers()["AtariEnv"]
    assert game.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)  # Machado et al. 2018
    before = game.ale.getEpisodeFrameNumber()
    vec.step(np.zeros(2, np.int64))
    assert game.ale.getEpisodeFrameNumber() - before == 4  # frame-skip 4
    assert np.array_equal(vec.obs[0, :3], obs[0, 1:])  # the stack shifts by one frame, newest last


def test_the_emulator_state_round_trips_and_the_games_go_on_identically(tmp_path) -> None:
    from lamina.training import checkpoint

    a, b = make_env("atari/Breakout", 2, seed=3, cfg=SHORT), make_env("atari/Breakout", 2, seed=99, cfg=SHORT)
    rng = np.random.default_rng(0)
    a.reset()
    for _ in range(150):  # past the first episodes' ends
        a.step(rng.integers(0, 4, 2))
    checkpoint.save({"envs": a.state_dict()}, tmp_path / "ck")
    assert b.load_state_dict(checkpoint.load(tmp_path / "ck")["envs"])  # exact: no episode restarted
    assert np.array_equal(a.obs, b.obs)
    ends = 0
    for _ in range(300):
        act = rng.integers(0, 4, 2)
        oa, ra, ta, ua = a.step(act)
        ob, rb, tb, ub = b.step(act)
        assert np.array_equal(oa, ob) and np.array_equal(ra, rb) and np.array_equal(ta, tb) and np.array_equal(ua, ub)
        ends += int((ta | ua).sum())
    assert ends >= 2  # the no-op starts of new episodes came from the restored generator too


def test_play_atari_trains_evaluates_and_resumes_to_the_same_weights(tmp_path) -> None:
    from safetensors.torch import load_file

    from lamina.rl.play import resume_play
    from lamina.training import callbacks as cb

    common = ["--frames", "1200", "--quiet", "--deterministic", *TINY]
    full = tmp_path / "full"
    assert run_cli("atari/Breakout", "--out", str(full), *common) == 0
    s = json.loads((full / "summary.json").read_text())
    assert s["frames"] == 1200 and s["updates"] == (1200 - 400) // 8 and "eval_return_mean" in s
    meta = json.loads((full / "model.json").read_text())
    assert meta["obs_shape"] == [4, 84, 84] and meta["num_actions"] == 4 and meta["env"] == "atari/Breakout"

    real = cb.MetricsLogger.batch_end

    def stop(self, trainer):  # a "kill" at update 60, after the checkpoint there
        real(self, trainer)
        if trainer.step == 60:
            raise cb.Interrupted(2, trainer.step, None)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(cb.MetricsLogger, "batch_end", stop)
        with pytest.raises(cb.Interrupted):
            run_cli("atari/Breakout", "--out", str(tmp_path / "cut"), *common, "--checkpoint-every", "20")
    resume_play(tmp_path / "cut", quiet=True)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["eval_return_mean"] == s["eval_return_mean"]

    assert run_cli(str(full), "--eval", "--episodes", "2") == 0
    assert len(json.loads((full / "eval.json").read_text())["returns"]) == 2
