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
character after 10 minutes of training. The long race runs lamina twice against the same nanoGPT
run: its character model (the defaults), and a byte-level BPE model (``data.vocab=bpe``, 1,024
tokens trained on the training split, the same model otherwise), whose loss is turned into nats
per *character* of the same tail (its token losses summed over the tail, divided by the tail's
characters), so both are judged by the same number. BPE's tokenizer training (about 10 s) is data
preparation, outside the training time, like nanoGPT's ``prepare.py``.

    NANOGPT_SRC=/path/to/nanoGPT python benchmarks/austen_lm.py       # both races, ~35 min on 2 CPU cores
    python benchmarks/austen_lm.py --races short                      # ~5 min (clones nanoGPT from GitHub)
"""

from __future__ import annotations

import argparse
import json
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
from lamina.config import to_dict
from lamina.data.austen import read_austen
from lamina.training.callbacks import Callback

LN2 = math.log(2)
COMMON = ["data.vocab=char", "data.val_fraction=0.1", "train.checkpoint_every=0"]
# The short race: a 3-block model at a high learning rate, 600 steps of 32 windows of 64 characters
# (chosen by hand from trial runs of this script's short race; no script records that search).
SHORT = [*COMMON, "data.context=64", "data.batch_size=32", "model.width=128", "model.depth=3", "model.heads=2",
         "train.lr=5e-3", "train.warmup=0.1", "data.steps_per_epoch=50", "train.epochs=12"]
# The long race: lamina's own CPU defaults for a language model (tasks/language.py), trained for
# --long-minutes (the number of steps, and so the cosine schedule, sized from the measured speed).
LONG = [*COMMON]
# The long race again with byte-level BPE tokens (about 3.5 characters each): the same model reads
# and predicts 3.5x the characters per step (benchmarks/README.md).
LONG_BPE = [*COMMON, "data.vocab=bpe", "data.vocab_size=1024"]


class Curve(Callback):
    """(training seconds, whole-tail validation loss) after every epoch; ``val_loss_per_char`` is
    in nats per character (the token loss for a character vocabulary)."""

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []

    def epoch_end(self, trainer: Any) -> None:
        m = trainer.last_epoch
        self.points.append({"seconds": round(m["seconds"], 3), "step": m["step"], "val_loss": m["val_loss"],
                            "val_bpc": m["val_bpc"], "val_loss_per_char": m["val_bpc"] * LN2})


class StepClock(Callback):
    """Seconds per step between step ``start`` and the end (the first steps warm kernels up)."""

    def __init__(self, start: int = 20) -> None:
        self.start, self.t0, self.t1, self.steps = start, 0.0, 0.0, 0

    def batch_end(self, trainer: Any) -> None:
        if trainer.step == self.start:
            self.t0 = trainer.elapsed
        elif trainer.step > self.start:
            self.t1, self.steps = trainer.elapsed, trainer.step - self.start


def steps_per_second(text_file: Path, out: Path, overrides: list[str], seed: int, steps: int = 120) -> float:
    """lamina's training speed on this machine now, from a short run of the same model (not counted)."""
    clock = StepClock()
    lamina.train(str(text_file), out=str(out), quiet=True, seed=seed, console=Console(quiet=True), callbacks=[clock],
                 overrides=[*overrides, f"data.steps_per_epoch={steps}", "train.epochs=1"])
    return clock.steps / (clock.t1 - clock.t0)


def race_lamina(text_file: Path, out: Path, overrides: list[str], *, seed: int, minutes: float | None = None,
                steps_per_epoch: int = 150) -> dict[str, Any]:
    """Train with ``overrides``; with ``minutes``, for about that long: the number of epochs is sized
    from the measured speed, and a time limit 10 % above ``minutes`` stops a run that turns out slower."""
    extra: list[str] = []
    speed = None
    if minutes is not None:
        speed = steps_per_second(text_file, out.with_name(out.name + "-calibration"), overrides, seed)
        epochs = max(1, int(minutes * 60 * speed / steps_per_epoch))
        extra = [f"data.steps_per_epoch={steps_per_epoch}", f"train.epochs={epochs}",
                 f"train.max_minutes={minutes * 1.1}"]
    curve = Curve()
    run = lamina.train(str(text_file), out=str(out), quiet=True, seed=seed, callbacks=[curve],
                       overrides=[*overrides, *extra], console=Console(quiet=True))
    return {"curve": curve.points, "summary": run.summary, "overrides": [*overrides, *extra],
            "config": json.loads(json.dumps(to_dict(run.config))), "calibrated_steps_per_second": speed}


def seconds_to(curve: list[dict[str, float]], loss: float) -> float | None:
    """The first time the curve is at or below ``loss`` nats per character (None if never)."""
    return next((p["seconds"] for p in curve if p["val_loss_per_char"] <= loss), None)


def one_race(name: str, repo: Path, data_dir: Path, text_file: Path, work: Path, a: argparse.Namespace,
             max_iters: int, overrides: list[str], lamina_minutes: float | None,
             variants: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """nanoGPT for ``max_iters``, then lamina with ``overrides``, and with each of ``variants`` (named
    other overrides) against the same nanoGPT run."""
    print(f"[{name}] nanoGPT, {max_iters} iterations ...", flush=True)
    extra = [f"--eval_interval={max_iters // 4}"] if max_iters < 1000 else []  # smoke runs: still a checkpoint
    ng = run_nanogpt(repo, data_dir.name, max_iters=max_iters, lr_decay_iters=max_iters, extra=extra,
                     log=work / f"nanogpt-{name}.log")
    ng_train = ng["curve"][-1]["seconds"] - ng["curve"][0]["seconds"]
    tail = whole_tail_loss(repo, Path(ng["ckpt"]), data_dir / "val.bin", context=64)
    print(f"[{name}] nanoGPT: {ng_train:.0f} s of training, val {ng['final_val_loss']:.4f} (20 batches), "
          f"{tail:.4f} (whole tail)", flush=True)
    print(f"[{name}] lamina ...", flush=True)
    la = race_lamina(text_file, work / f"lamina-{name}", overrides, minutes=lamina_minutes, seed=a.seed)
    t = seconds_to(la["curve"], tail)
    print(f"[{name}] lamina reached {tail:.4f} at {t} s; final {la['summary']['val_bpc'] * LN2:.4f}", flush=True)
    race = {"nanogpt": {k: v for k, v in ng.items() if k not in ("ckpt",)} | {
                "train_seconds": ng_train, "whole_tail_val_loss": tail, "whole_tail_val_bpc": tail / LN2},
            "lamina": la, "lamina_seconds_to_nanogpt_loss": t,
            "speedup": ng_train / t if t else None}
    for variant, extra in (variants or {}).items():
        print(f"[{name}] lamina, {variant} ...", flush=True)
        lv = race_lamina(text_file, work / f"lamina-{name}-{variant}", extra, minutes=lamina_minutes, seed=a.seed)
        tv = seconds_to(lv["curve"], tail)
        print(f"[{name}] lamina {variant} reached {tail:.4f} at {tv} s; final {lv['summary']['val_bpc'] * LN2:.4f}",
              flush=True)
        race[variant] = {"lamina": lv, "lamina_seconds_to_nanogpt_loss": tv, "speedup": ng_train / tv if tv else None}
    return race


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--races", default="short,long", help="short, long or both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--long-minutes", type=float, default=10.0, help="lamina's training time in the long race")
    p.add_argument("--short-iters", type=int, default=2000, help="nanoGPT's iterations in the short race (README)")
    p.add_argument("--long-iters", type=int, default=15000, help="nanoGPT's iterations in the long race")
    p.add_argument("--no-long-bpe", dest="long_bpe", action="store_false",
                   help="skip the long race's BPE variant (10 more minutes)")
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
                races[name] = one_race(name, repo, data_dir, text_file, work, a, a.short_iters, SHORT, None)
            elif name == "long":
                variants = {"bpe": LONG_BPE} if a.long_bpe else {}
                races[name] = one_race(name, repo, data_dir, text_file, work, a, a.long_iters, LONG, a.long_minutes,
                                       variants)
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
        if "bpe" in r:
            summary |= {"long_bpe_lamina_seconds_to_nanogpt_loss": r["bpe"]["lamina_seconds_to_nanogpt_loss"],
                        "long_bpe_speedup": r["bpe"]["speedup"],
                        "lamina_bpe_10min_val_bpc": r["bpe"]["lamina"]["summary"]["val_bpc"]}
    record = {**environment("cpu"), "seeds": [a.seed], "bench_seconds": time.perf_counter() - t0,
              "summary": summary, "races": races}
    print(f"wrote {write(a.out, record)}")
    for k, v in summary.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
