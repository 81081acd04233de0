"""Austen character language model: lamina against nanoGPT, side by side on the same CPU.

nanoGPT is fetched at run time into a temporary folder (``$NANOGPT_SRC``, a local clone or
mirror, else GitHub; never vendored), Austen's six novels are prepared exactly as its
``data/shakespeare_char/prepare.py`` prepares Shakespeare (character vocabulary, first 90 % train,
last 10 % validation), and its ``train.py`` runs with the CPU setting its README documents for
``shakespeare_char``. lamina trains a character model on the same text with the same split
(``data.val_fraction=0.1`` cuts on the same character), and both are judged by the same number:
the mean cross-entropy per character over the **whole** validation tail (nanoGPT's own final
checkpoint scored by ``nanogpt.whole_tail_loss``; lamina's ``val_loss`` after each of its short
epochs). Times: nanoGPT's training time is from its step-0 evaluation to its last one (start-up
excluded, its periodic 20-batch evaluations included); lamina's is its training time
(``train_seconds``, whole-tail evaluations excluded, the model's compile-free CPU path included).

Two races: ``short`` (nanoGPT's README setting, 2,000 iterations) and ``long`` (the same setting
with ``--max_iters=15000 --lr_decay_iters=15000``), the latter also asking for lamina's bits per
character after 10 minutes of training.

    python benchmarks/austen_lm.py                      # both races, ~35 min on 2 CPU cores
    python benchmarks/austen_lm.py --races short        # ~8 min
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import environment, result_path, write
from nanogpt import fetch_nanogpt, prepare_char, run_nanogpt, whole_tail_loss
from rich.console import Console

import lamina
from lamina.data.austen import read_austen
from lamina.training.callbacks import Callback

LN2 = math.log(2)
# lamina's character model for a 2-core CPU (chosen with this script; see benchmarks/README.md)
LAMINA = ["data.vocab=char", "data.val_fraction=0.1", "data.context=128", "data.batch_size=32",
          "model.name=gpt", "model.width=192", "model.depth=4", "model.heads=3", "train.lr=3e-3",
          "train.schedule=cosine", "train.optimizer=adamw", "train.weight_decay=0.1",
          "train.grad_clip=1.0", "train.checkpoint_every=0"]


class Curve(Callback):
    """(training seconds, whole-tail validation loss) after every epoch; stops at ``target`` if given."""

    def __init__(self, target: float | None = None) -> None:
        self.points: list[dict[str, float]] = []
        self.target = target

    def epoch_end(self, trainer: Any) -> None:
        m = trainer.last_epoch
        self.points.append({"seconds": round(m["seconds"], 3), "step": m["step"], "val_loss": m["val_loss"],
                            "val_bpc": m["val_loss"] / LN2})


def steps_per_second(text_file: Path, out: Path, seed: int, steps: int = 60) -> float:
    """lamina's training speed on this machine now, from a short run of the same model (not counted)."""
    run = lamina.train(str(text_file), out=str(out), quiet=True, seed=seed, console=Console(quiet=True),
                       overrides=[*LAMINA, f"data.steps_per_epoch={steps}", "train.epochs=1"])
    return steps / run.summary["train_seconds"]


def race_lamina(text_file: Path, out: Path, *, minutes: float, steps_per_epoch: int, seed: int) -> dict[str, Any]:
    """Train for about ``minutes``: the number of epochs (and so the cosine schedule) is sized from the
    measured speed, and a time limit 10 % above ``minutes`` stops a run that turns out slower."""
    speed = steps_per_second(text_file, out.with_name(out.name + "-calibration"), seed)
    epochs = max(1, int(minutes * 60 * speed / steps_per_epoch))
    curve = Curve()
    run = lamina.train(str(text_file), out=str(out), quiet=True, seed=seed, callbacks=[curve],
                       overrides=[*LAMINA, f"data.steps_per_epoch={steps_per_epoch}",
                                  f"train.max_minutes={minutes * 1.1}", f"train.epochs={epochs}"],
                       console=Console(quiet=True))
    return {"curve": curve.points, "summary": run.summary, "config": LAMINA, "epochs": epochs,
            "calibrated_steps_per_second": speed}


def seconds_to(curve: list[dict[str, float]], loss: float) -> float | None:
    """The first time the curve is at or below ``loss`` (None if never)."""
    return next((p["seconds"] for p in curve if p["val_loss"] <= loss), None)


def one_race(name: str, repo: Path, data_dir: Path, text_file: Path, work: Path, a: argparse.Namespace,
             max_iters: int, lamina_minutes: float) -> dict[str, Any]:
    print(f"[{name}] nanoGPT, {max_iters} iterations ...", flush=True)
    ng = run_nanogpt(repo, data_dir.name, max_iters=max_iters, lr_decay_iters=max_iters, log=work / f"nanogpt-{name}.log")
    ng_train = ng["curve"][-1]["seconds"] - ng["curve"][0]["seconds"]
    tail = whole_tail_loss(repo, Path(ng["ckpt"]), data_dir / "val.bin", context=64)
    print(f"[{name}] nanoGPT: {ng_train:.0f} s of training, val {ng['final_val_loss']:.4f} (20 batches), "
          f"{tail:.4f} (whole tail)", flush=True)
    print(f"[{name}] lamina, up to {lamina_minutes:.1f} min ...", flush=True)
    la = race_lamina(text_file, work / f"lamina-{name}", minutes=lamina_minutes, steps_per_epoch=a.steps_per_epoch,
                     seed=a.seed)
    t = seconds_to(la["curve"], tail)
    print(f"[{name}] lamina reached {tail:.4f} at {t} s; final {la['summary']['val_loss']:.4f}", flush=True)
    return {"nanogpt": {k: v for k, v in ng.items() if k not in ("ckpt",)} | {
                "train_seconds": ng_train, "whole_tail_val_loss": tail, "whole_tail_val_bpc": tail / LN2},
            "lamina": la, "lamina_seconds_to_nanogpt_loss": t,
            "speedup": ng_train / t if t else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--races", default="short,long", help="short, long or both")
    p.add_argument("--steps-per-epoch", type=int, default=150, help="lamina: batches between whole-tail evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--long-minutes", type=float, default=10.0, help="lamina's training time in the long race")
    p.add_argument("--out", type=Path, default=result_path("austen_lm", "cpu"))
    a = p.parse_args()
    torch.manual_seed(a.seed)
    texts = read_austen()
    text = "\n\n".join(texts.values())
    races: dict[str, Any] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lamina-nanogpt-") as tmp:
        work = Path(tmp)
        repo = fetch_nanogpt(work / "nanoGPT")
        data_dir = prepare_char(repo, text, "austen_char")
        text_file = work / "austen.txt"
        text_file.write_text(text)
        for name in a.races.split(","):
            if name == "short":
                races[name] = one_race(name, repo, data_dir, text_file, work, a, 2000, lamina_minutes=2.0)
            elif name == "long":
                races[name] = one_race(name, repo, data_dir, text_file, work, a, 15000, a.long_minutes)
            else:
                raise SystemExit(f"unknown race {name!r}: use short and/or long")
    summary: dict[str, Any] = {}
    if "short" in races:
        r = races["short"]
        summary |= {"nanogpt_final_val_loss": r["nanogpt"]["whole_tail_val_loss"],
                    "nanogpt_final_val_loss_20_batches": r["nanogpt"]["final_val_loss"],
                    "nanogpt_seconds": r["nanogpt"]["train_seconds"],
                    "lamina_seconds_to_nanogpt_loss": r["lamina_seconds_to_nanogpt_loss"], "speedup": r["speedup"]}
    if "long" in races:
        r = races["long"]
        summary |= {"long_nanogpt_final_val_loss": r["nanogpt"]["whole_tail_val_loss"],
                    "long_nanogpt_final_val_loss_20_batches": r["nanogpt"]["final_val_loss"],
                    "long_nanogpt_seconds": r["nanogpt"]["train_seconds"],
                    "long_lamina_seconds_to_nanogpt_loss": r["lamina_seconds_to_nanogpt_loss"],
                    "long_speedup": r["speedup"],
                    "lamina_10min_val_bpc": r["lamina"]["summary"]["val_bpc"]}
    record = {**environment("cpu"), "seeds": [a.seed], "bench_seconds": time.perf_counter() - t0,
              "summary": summary, "races": races}
    print(f"wrote {write(a.out, record)}")
    for k, v in summary.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
