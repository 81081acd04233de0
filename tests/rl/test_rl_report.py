"""A game run's inspection (greedy episode, activations, saliency) and report sections: a tiny real
``lamina play`` run made once for the module, hand-written run files, and saliency against a hand
check on a linear Q-network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lamina.inspection.rl import channel_names, saliency, spread
from lamina.reporting import render_report
from lamina.reporting.html import RunFolder
from lamina.reporting.rl import gif_image, rolling_mean

TINY = ["rl.envs=4", "rl.learning_starts=300", "rl.eval_every=1000", "rl.eval_episodes=2", "rl.batch_size=32",
        "rl.buffer=3000", "rl.max_episode_frames=200"]



@pytest.fixture(scope="module")
def game_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2,000-frame MinAtar Breakout run with --gif, --eval and lamina inspect done."""
    pytest.importorskip("minatar")
    from lamina.inspection.run import inspect_run
    from lamina.rl.play import evaluate_play, gif_play, play

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("game") / "run"
    play("minatar/breakout", frames=2000, out=str(out), quiet=True, overrides=TINY)
    gif_play(out, max_steps=200)
    evaluate_play(out, episodes=3, progress=False)
    inspect_run(out, max_examples=200, batch_size=16)
    torch.set_num_threads(before)
    return out


def _sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))


# -- saliency and helpers -------------------------------------------------------------------------


def test_saliency_of_a_linear_q_net_is_the_greedy_actions_weight_row() -> None:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    x = torch.rand(5, 2, 3, 3, generator=g)
    w = net[1].weight.detach()
    best = net(x).argmax(1)  # Q = W x + b: d max_a Q / d x = W[argmax]
    got = saliency(net, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, w[best].abs().view(5, 2, 3, 3))
    assert all(p.grad is None for p in net.parameters())  # only the input's gradient was taken


def test_saliency_examples_do_not_mix_through_a_conv_net() -> None:
    g = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 5))
    x = torch.rand(4, 2, 4, 4, generator=g)
    together = saliency(net, x)
    alone = torch.cat([saliency(net, x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone)


def test_spread_and_rolling_mean() -> None:
    assert spread(1, 6) == [0] and spread(3, 6) == [0, 1, 2] and spread(38, 6) == [0, 7, 15, 22, 30, 37]
    assert rolling_mean([2.0] * 5 + [4.0] * 5, 5).tolist()[-1] == 4.0


def test_gif_image_embeds_a_gif_data_uri(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "a.gif"
    frames = [Image.new("RGB", (12, 8), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=60, loop=0)
    html = gif_image(path.read_bytes(), "an <episode>")
    assert 'src="data:image/gif;base64,' in html and "max-width:24px" in html and "&lt;episode&gt;" in html


# -- a real game run ------------------------------------------------------------------------------


def test_inspection_writes_activations_and_saliency_of_the_gif_episode(game_run: Path) -> None:
    ins = json.loads((game_run / "inspection" / "inspection.json").read_text())
    assert ins["task"] == "dqn" and set(ins["seconds"]) >= {"activations", "saliency"}
    acts = json.loads((game_run / "inspection" / "activations.json").read_text())
    assert list(acts) == ["conv", "fc"] and all(0.0 <= v["dead_fraction"] <= 1.0 for v in acts.values())
    sal = json.loads((game_run / "inspection" / "saliency.json").read_text())
    ep = json.loads((game_run / "episode_q.json").read_text())
    assert sal["channels"] == ["paddle", "ball", "trail", "brick"] and sal["obs_shape"] == [4, 10, 10]
    assert len(sal["action_names"]) == 6 and len(sal["channel_gradient"]) == len(sal["channel_gradient_x_input"]) == 4
    assert sal["seed"] == ep["seed"] == 0 and sal["steps"] == min(ep["steps"], 200)
    assert sal["return"] == sum(ep["rewards"][: sal["steps"]])
    assert [f["step"] for f in sal["frames"]] == spread(sal["steps"], 6)
    for f in sal["frames"]:  # the same greedy episode as --gif plays, frame by frame
        assert f["action"] == ep["actions"][f["step"]]
        assert f["q"] == pytest.approx(ep["q"][f["step"]], abs=1e-3)
        screen, sm = torch.tensor(f["screen"]), torch.tensor(f["saliency"])
        assert screen.shape == (10, 10, 3) and sm.shape == (10, 10)
        assert float(sm.min()) >= 0.0 and float(sm.max()) == pytest.approx(1.0, abs=1e-3)
    assert len(json.dumps(sal)) < 50_000  # compact


def test_report_of_a_game_run_has_its_sections_and_figures(game_run: Path) -> None:
    html = render_report(RunFolder(game_run))
    assert "could not be drawn" not in html
    secs = _sections(html)
    assert {"summary", "learning-curves", "activations", "returns", "episode", "saliency"} <= set(secs)
    assert "evaluation return" in secs["summary"] and "Double DQN" in secs["summary"]
    assert secs["returns"].count("data:image/png") == 2 and "3 episodes" in secs["returns"]  # curve + eval histogram
    assert secs["episode"].count("data:image/png") == 1 and secs["episode"].count("data:image/gif") == 1
    assert secs["saliency"].count("data:image/png") == 2 and "channel" in secs["saliency"]
    assert "test accuracy" not in html


# -- hand-written run folders ---------------------------------------------------------------------


def _hand_run(tmp_path: Path, task: str) -> Path:
    run = tmp_path / task
    run.mkdir()
    summary = {"task": task, "model": "m", "params": 10, "train_seconds": 2.0, "epochs": 2}
    if task == "dqn":
        summary |= {"env": "minatar/breakout", "eval_return_mean": 1.5, "eval_return_std": 0.5, "eval_episodes": 2,
                    "eval_eps": 0.0, "frames": 2000, "fps": 900.0, "updates": 100, "episodes": 40}
        lines = [{"kind": "train", "frames": 50 * i, "return": float(i % 3), "length": 10} for i in range(1, 41)]
        lines += [{"kind": "eval", "frames": f, "returns": [1.0, 2.0], "return": 1.5, "return_std": 0.5,
                   "return_min": 1.0, "return_max": 2.0} for f in (1000, 2000)]
        (run / "returns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    else:
        summary |= {"test_accuracy": 0.9, "test_loss": 0.3}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "toy", "task": task}, "train": {}}))
    return run


def test_a_game_run_without_gif_or_inspection_shows_its_returns_only(tmp_path: Path) -> None:
    html = render_report(RunFolder(_hand_run(tmp_path, "dqn")))
    secs = _sections(html)
    assert "could not be drawn" not in html and "returns" in secs and "eval.json" not in secs["returns"]
    assert secs["returns"].count("data:image/png") == 1 and "1.50 ± 0.50" in secs["returns"]
    assert "episode" not in secs and "saliency" not in secs


def test_game_sections_are_absent_from_a_classifier_report(tmp_path: Path) -> None:
    run = _hand_run(tmp_path, "classify")
    (run / "episode_q.json").write_text(json.dumps({"q": [[0.0, 1.0]], "actions": [1], "rewards": [0.0]}))
    secs = _sections(render_report(RunFolder(run)))
    assert "summary" in secs and not {"returns", "episode", "saliency"} & set(secs)


def test_channel_names_of_a_frame_stack() -> None:
    class Stack:
        obs_shape, frame_stack = (4, 84, 84), 4

    class Plain:
        obs_shape, frame_stack = (2, 5, 5), 1

    assert channel_names(Stack()) == ["frame t-3", "frame t-2", "frame t-1", "frame t"]  # type: ignore[arg-type]
    assert channel_names(Plain()) == ["channel 0", "channel 1"]  # type: ignore[arg-type]
