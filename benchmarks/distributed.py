"""2 processes against 1 on the same 2-core CPU (gloo): the loss trajectory, the final accuracy, and
what the second process costs per step (issue 14).

    python benchmarks/distributed.py            # writes benchmarks/results/distributed_cpu.json
    python benchmarks/distributed.py --strategy fsdp   # the same for FSDP2: distributed_fsdp_cpu.json

- **Trajectory.** The same run on 1 process with the global batch B and on 2 ranks (torchrun) with
  B/2 each: the global batch's running loss after every step, for 60 steps, without BatchNorm (they
  must match), and with BatchNorm, whose statistics each rank takes over its own B/2 examples (they
  drift apart: the reason for SyncBatchNorm, which PyTorch runs on GPUs only). Reported: the largest
  relative difference.
- **Accuracy.** Test accuracy after 10 epochs, 3 seeds each, 1 process and 2: mean and std.
- **Overhead.** Training seconds per step of 2 processes (1 thread each) over 1 process (2 threads),
  alternating 1, 2, 2, 1, ... On one machine with 2 cores this is communication and synchronisation,
  not a speed-up: there is no more compute to be had. Beside it, the same ratio for a hand-written
  loop (the network, batch shape and optimizer of the run, DDP on 2 ranks): what DDP itself costs
  here, against what lamina's job adds to it.

With ``--strategy fsdp`` the 2 ranks shard the model (FSDP2) instead of replicating it; the
hand-written comparison is DDP's alone.

The data is scikit-learn's digits (1,797 8x8 images; ``lamina train digits``); the model lamina's
``mlp``, no dropout, no augmentation, deterministic kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import environment, mean_std, result_path, write

# one run of either kind: no dropout, no augmentation, deterministic kernels
OVERRIDES = ["model.dropout=0", "data.translate=0", "data.cutout=0", "data.flip=false", "train.gradient_flow_every=0",
             "energy.meter=off", "train.precision=fp32"]  # bf16 is auto on CPUs with AVX512-BF16: fp32 everywhere


def worker(args: argparse.Namespace) -> None:
    """One lamina run (on every rank under torchrun), recording the global running loss per step."""
    import lamina
    from lamina.training.callbacks import Callback

    losses: list[float] = []

    class Record(Callback):
        def batch_end(self, trainer: Any) -> None:
            losses.append(trainer.running()["loss"])  # summed over the ranks: every rank calls it

    lamina.train("digits", out=args.run, seed=args.seed, epochs=args.epochs, batch_size=args.batch,
                 overrides=[*OVERRIDES, *args.overrides], model="mlp", deterministic=True, quiet=True,
                 callbacks=[Record()] if args.record else [])  # recording costs collectives: not when timed
    if os.environ.get("RANK", "0") == "0":  # rank 0 (or the single process) writes
        Path(args.run, "losses.json").write_text(json.dumps(losses))


def raw_worker(args: argparse.Namespace) -> None:
    """The reference: a hand-written loop over the same network and batch shape, DDP on torchrun's
    ranks (plain in one process), timed the same way (seconds of training per step)."""
    import time

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lamina.models import create_model

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(args.seed)
    model = create_model("mlp", (1, 8, 8), 10, norm="none", dropout=0.0)
    net = DDP(model) if world > 1 else model
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    b = args.batch // world
    x, y = torch.randn(b, 1, 8, 8), torch.randint(0, 10, (b,))
    steps = 420
    for i in range(steps + 20):
        if i == 20:
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / steps
    if world > 1:
        dist.destroy_process_group()
    if os.environ.get("RANK", "0") == "0":
        args.run.mkdir(parents=True, exist_ok=True)
        (args.run / "summary.json").write_text(json.dumps({"train_seconds": per_step * steps, "steps": steps}))


def launch(nproc: int, run: Path, *, seed: int, epochs: int, batch: int, overrides: list[str],
           record: bool = False, raw: bool = False) -> dict[str, Any]:
    me = [str(Path(__file__).resolve()), "--worker", "--folder", str(run), "--seed", str(seed), "--epochs", str(epochs),
          "--batch", str(batch), *[f"--set={o}" for o in overrides], *(["--record"] if record else []),
          *(["--hand-written"] if raw else [])]
    if nproc == 1:
        cmd = [sys.executable, *me]
        env = dict(os.environ, OMP_NUM_THREADS="2")
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *me]
        env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    summary = json.loads((run / "summary.json").read_text())
    if record:
        summary["losses"] = json.loads((run / "losses.json").read_text())
    return summary


def max_rel_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="default: benchmarks/results/distributed[_fsdp]_cpu.json")
    p.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp", help="what the 2-rank runs use")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timed pairs for the overhead")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--folder", dest="run", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hand-written", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        raw_worker(args) if args.hand_written else worker(args)
        return {}
    out = args.out or result_path("distributed" if args.strategy == "ddp" else "distributed_fsdp", "cpu")
    two = [f"train.strategy={args.strategy}"]  # the 2-rank runs' strategy (the 1-process runs: none)
    tmp = Path(tempfile.mkdtemp(prefix="lamina-dist-"))
    try:
        record: dict[str, Any] = {"benchmark": "distributed", **environment("cpu"), "data": "digits", "model": "mlp",
                                  "global_batch": 32, "seeds": list(range(args.seeds)), "strategy": args.strategy}
        # 1. trajectories: 60 steps (2 epochs of 1,437 / 32 = 44 steps, the first 60 kept)
        traj = {}
        for name, one_set, two_set in (("no_batchnorm", ["model.norm=none"], ["model.norm=none"]),
                                       ("batchnorm_per_rank", ["model.norm=batch"], ["model.norm=batch"])):
            a = launch(1, tmp / f"{name}-1", seed=0, epochs=2, batch=32, overrides=one_set, record=True)
            b = launch(2, tmp / f"{name}-2", seed=0, epochs=2, batch=32, overrides=[*two_set, *two], record=True)
            la, lb = a["losses"][:60], b["losses"][:60]
            traj[name] = {"steps": len(la), "max_relative_loss_difference": max_rel_diff(la, lb),
                          "final_loss_1": la[-1], "final_loss_2": lb[-1], "world_size_2": b["world_size"]}
            print(f"{name}: {len(la)} steps, max relative difference {traj[name]['max_relative_loss_difference']:.2e}")
        record["trajectory"] = traj
        # 2. accuracy after 10 epochs, and 3. seconds per step, interleaved 1, 2, 2, 1, ...
        acc: dict[int, list[float]] = {1: [], 2: []}
        per_step: dict[int, list[float]] = {1: [], 2: []}
        order = []
        for i in range(max(args.seeds, args.repeats)):
            order += [1, 2] if i % 2 == 0 else [2, 1]
        for i, nproc in enumerate(order):
            seed = i // 2
            s = launch(nproc, tmp / f"acc-{i}-{nproc}", seed=seed, epochs=10, batch=32,
                       overrides=["model.norm=none", *(two if nproc == 2 else [])])
            if len(acc[nproc]) < args.seeds:
                acc[nproc].append(s["test_accuracy"])
            per_step[nproc].append(s["train_seconds"] / s["steps"])
            print(f"seed {seed}, {nproc} process(es): accuracy {s['test_accuracy']:.4f}, "
                  f"{1e3 * per_step[nproc][-1]:.2f} ms/step")
        ratios = [b / a for a, b in zip(per_step[1], per_step[2], strict=True)]
        record["accuracy"] = {"one_process": mean_std(acc[1]), "two_processes": mean_std(acc[2]), "epochs": 10}
        record["seconds_per_step"] = {"one_process_2_threads": mean_std(per_step[1]),
                                      "two_processes_1_thread_each": mean_std(per_step[2]),
                                      "ratio_two_over_one": mean_std(ratios),
                                      "median_ratio": statistics.median(ratios)}
        if args.strategy == "ddp":  # the same two set-ups as a hand-written loop (DDP on 2 ranks), interleaved
            hand: dict[int, list[float]] = {1: [], 2: []}
            for i, nproc in enumerate(order):
                s = launch(nproc, tmp / f"hand-{i}-{nproc}", seed=i // 2, epochs=0, batch=32, overrides=[], raw=True)
                hand[nproc].append(s["train_seconds"] / s["steps"])
                print(f"hand-written loop, {nproc} process(es): {1e3 * hand[nproc][-1]:.2f} ms/step")
            hand_ratios = [b / a for a, b in zip(hand[1], hand[2], strict=True)]
            record["seconds_per_step"] |= {"hand_written_one_process": mean_std(hand[1]),
                                           "hand_written_two_processes_ddp": mean_std(hand[2]),
                                           "hand_written_ratio_two_over_one": mean_std(hand_ratios),
                                           "lamina_over_hand_written_two_processes": mean_std(
                                               [a / b for a, b in zip(per_step[2], hand[2], strict=True)])}
        write(out, record)
        print(f"wrote {out}")
        return record
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
