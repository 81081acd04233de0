"""lamina's Double DQN against the MinAtar reference DQN (``examples/dqn.py``), side by side on one machine.

The reference is cloned at run time into a temporary folder from ``--peer`` (a URL or a local git
repository; never vendored), imported, and its own ``dqn(...)`` is called with ``NUM_FRAMES`` set
to the budget (its code is not edited; its ``train`` is wrapped only to time the first update).
Then lamina's loop plays the same game for the same frames, one after the other in this process
(never concurrently), both with ``--threads`` torch threads and MinAtar's sticky-action
probability of the reference (0.1).

Numbers per seed: frames/s once learning started (the reference: from its first update; lamina:
from its first update, training time without its periodic evaluations), and the mean return of
the training episodes that ended in the last ``--window`` of the frames (both ε = 0.1 by then);
lamina's greedy evaluation return beside it.

    nice -n 19 .venv/bin/python benchmarks/minatar_dqn.py --frames 200000 --seeds 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, mean_std, result_path

PEER = "https://github.com/kenjyoung/MinAtar"
LOCAL_MIRROR = "/work/.mirror/kenjyoung+MinAtar/repo"


def clone(peer: str, into: Path) -> Path:
    dest = into / "MinAtar"
    subprocess.run(["git", "clone", "--quiet", peer, str(dest)], check=True)
    return dest


def tail_mean(frames: list[int], returns: list[float], total: int, window: float) -> float | None:
    lo = total * (1 - window)
    chosen = [r for f, r in zip(frames, returns, strict=True) if f > lo]
    return float(np.mean(chosen)) if chosen else None


def run_reference(repo: Path, game: str, frames: int, seed: int, window: float, work: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("minatar_reference_dqn", repo / "examples" / "dqn.py")
    ref = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(ref)  # type: ignore[union-attr]
    ref.NUM_FRAMES = frames
    first: dict[str, float] = {}
    train = ref.train

    def timed_train(*args: Any, **kw: Any) -> Any:
        first.setdefault("t", time.perf_counter())
        return train(*args, **kw)

    ref.train = timed_train  # its dqn() looks train up in its module: only the first call's time is taken
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    from minatar import Environment

    env = Environment(game)  # the reference's own sticky-action probability (0.1)
    env.seed(seed)
    t0 = time.perf_counter()
    ref.dqn(env, False, False, str(work / f"ref-{seed}"))
    t1 = time.perf_counter()
    data = torch.load(work / f"ref-{seed}_data_and_weights", weights_only=True)
    stamps, returns = [int(f) for f in data["frame_stamps"]], [float(r) for r in data["returns"]]
    learn_frames = frames - ref.REPLAY_START_SIZE
    return {"seconds": t1 - t0, "fps": frames / (t1 - t0), "fps_learning": learn_frames / (t1 - first["t"]),
            "episodes": len(returns), "return_tail": tail_mean(stamps, returns, frames, window)}


def run_lamina(game: str, frames: int, seed: int, window: float, work: Path, threads: int) -> dict[str, Any]:
    from rich.console import Console

    from lamina.rl.play import PlaySession, resolve_play_config
    from lamina.training.callbacks import Callback

    cfg = resolve_play_config(f"minatar/{game}", frames=frames, seed=seed, out=str(work / f"lamina-{seed}"),
                              overrides=["rl.sticky=0.1", f"train.threads={threads}", "energy.meter=off"])
    session = PlaySession(cfg, Console(stderr=True), quiet=True)

    class Clock(Callback):  # training time (without evaluations) from the first update on
        def batch_end(self, loop: Any) -> None:
            if loop.step == 1:
                self.start = (loop.frames, loop.elapsed)

        def fit_end(self, loop: Any) -> None:
            self.end = (loop.frames, loop.elapsed)

    clock = Clock()
    session.loop.callbacks.append(clock)
    t0 = time.perf_counter()
    summary = session.run()
    t1 = time.perf_counter()
    lines = [json.loads(x) for x in (work / f"lamina-{seed}" / "returns.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["kind"] == "train"]
    return {"seconds": t1 - t0, "train_seconds": summary["train_seconds"], "fps": frames / summary["train_seconds"],
            "fps_wall": frames / (t1 - t0),
            "fps_learning": (clock.end[0] - clock.start[0]) / (clock.end[1] - clock.start[1]),
            "episodes": len(train), "updates": summary["updates"],
            "return_tail": tail_mean([x["frames"] for x in train], [x["return"] for x in train], frames, window),
            "eval_return": summary["eval_return_mean"], "eval_return_std": summary["eval_return_std"],
            "eval_curve": [{"frames": x["frames"], "return": x["return"]} for x in lines if x["kind"] == "eval"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--game", default="breakout")
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--seeds", default="0", help="comma-separated")
    p.add_argument("--peer", default=PEER, help=f"the reference's git repository (e.g. the mirror {LOCAL_MIRROR})")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    p.add_argument("--window", type=float, default=0.1, help="fraction of the frames whose episodes are averaged")
    p.add_argument("--out", default=str(result_path("minatar_dqn", "cpu")))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            repo = clone(a.peer, work)
        except subprocess.CalledProcessError:
            print(f"could not clone {a.peer}; trying the local mirror {LOCAL_MIRROR}", file=sys.stderr)
            repo = clone(LOCAL_MIRROR, work)
        peer_rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        runs = []
        for seed in seeds:
            ref = run_reference(repo, a.game, a.frames, seed, a.window, work)
            print(f"seed {seed} reference: {ref['fps_learning']:.0f} frames/s learning, return {ref['return_tail']}",
                  flush=True)
            torch.set_num_threads(a.threads)
            lam = run_lamina(a.game, a.frames, seed, a.window, work, a.threads)
            print(f"seed {seed} lamina: {lam['fps_learning']:.0f} frames/s learning, return {lam['return_tail']}, "
                  f"eval {lam['eval_return']:.2f}", flush=True)
            runs.append({"seed": seed, "reference": ref, "lamina": lam,
                         "speedup": lam["fps_learning"] / ref["fps_learning"]})
    def stat(side: str, key: str) -> dict[str, float] | None:
        vals = [r[side][key] for r in runs if r[side].get(key) is not None]
        return mean_std(vals) if vals else None

    git_head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                              text=True).stdout.strip()
    result = {
        **environment("cpu"), "git_head": git_head, "benchmark": "minatar_dqn", "game": a.game, "frames": a.frames,
        "seeds": seeds, "threads": a.threads, "peer": a.peer, "peer_commit": peer_rev,
        "return_measure": f"mean return of training episodes ending in the last {a.window:.0%} of the frames",
        "runs": runs,
        "summary": {"speedup": mean_std([r["speedup"] for r in runs]),
                    "reference_fps_learning": stat("reference", "fps_learning"),
                    "lamina_fps_learning": stat("lamina", "fps_learning"),
                    "reference_return": stat("reference", "return_tail"), "lamina_return": stat("lamina", "return_tail"),
                    "lamina_eval_return": stat("lamina", "eval_return")},
        "targets": {"speedup_at_least": 3.0, "return_at_least_reference": True},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
