"""nanoGPT's half of the Austen character-LM race (``benchmarks/austen_lm.py``): fetch, prepare, train, score.

    NANOGPT_SRC=/path/to/nanoGPT.git python benchmarks/nanogpt.py --max-iters 50 --chars 400000

nanoGPT (https://github.com/karpathy/nanoGPT, MIT) is cloned at run time into a temporary folder
and run unmodified, as its README runs it: the text is prepared by a copy of its own
``data/shakespeare_char/prepare.py`` (character vocabulary, first 90 % train, last 10 % val) and
trained by its ``train.py config/train_shakespeare_char.py`` with the README's CPU line. None of its
code is copied into this repository. Two things about that config matter for a race:

* ``always_save_checkpoint = False``: ``ckpt.pt`` is written only at an evaluation (every
  ``eval_interval = 250`` steps, never at step 0) whose 20-batch val loss beats the best so far, so
  the checkpoint is the best-so-far model, not necessarily the last, and a run shorter than
  ``eval_interval`` saves none (pass ``--eval_interval=N`` in ``extra``).
* its "val loss" is a 20-batch random estimate; :func:`whole_tail_loss` scores the saved model on
  every character of the validation tail instead, for a like-for-like comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import environment, write
from torch.nn import functional as F

from lamina.errors import LaminaError

NANOGPT_URL = "https://github.com/karpathy/nanoGPT"
CONFIG = "config/train_shakespeare_char.py"
# The README's "I only have a macbook" line for shakespeare_char, verbatim (commit 3adf61e):
README_CPU = ("python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20"
              " --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128"
              " --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0")

STEP_LINE = re.compile(r"^step (\d+): train loss (\S+), val loss (\S+)$")
ITER_LINE = re.compile(r"^iter (\d+): loss (\S+), time (\S+)ms")


# ---------------------------------------------------------------------------------------- fetch
def fetch_nanogpt(dest: Path) -> Path:
    """Clone nanoGPT into ``dest`` (absent or empty): from ``$NANOGPT_SRC`` if set, else from GitHub.

    ``$NANOGPT_SRC`` may be a URL, a local (bare or mirror) git directory, or a plain folder holding
    nanoGPT's files (copied, without ``.git``). Returns ``dest``; :func:`nanogpt_commit` gives the commit.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise LaminaError(f"{dest} is not empty; give fetch_nanogpt an empty or new folder")
    src = os.environ.get("NANOGPT_SRC") or NANOGPT_URL
    local = Path(src).expanduser()
    if local.exists():
        is_git = (local / ".git").exists() or ((local / "HEAD").is_file() and (local / "objects").is_dir())
        if not is_git:  # a plain folder of files
            if not (local / "train.py").is_file():
                raise LaminaError(f"NANOGPT_SRC={src} holds neither a git repository nor nanoGPT's train.py")
            shutil.copytree(local, dest, ignore=shutil.ignore_patterns(".git", "out*", "*.bin", "*.pkl", "*.pt"),
                            dirs_exist_ok=True)
            return dest
        src = local.resolve().as_uri()  # file://: git honours --depth only for URLs, not plain paths
    done = subprocess.run(["git", "clone", "--quiet", "--depth", "1", src, str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise LaminaError(f"git clone {src} failed: {said}",
                          hint="without internet, set NANOGPT_SRC to a local nanoGPT clone or mirror")
    for f in ("train.py", "model.py", CONFIG, "data/shakespeare_char/prepare.py"):
        if not (dest / f).is_file():
            raise LaminaError(f"{src} has no {f}: it is not nanoGPT (or its layout changed)")
    return dest


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def nanogpt_commit(repo: Path) -> str:
    """The commit the clone is at (``unknown`` for a copied folder)."""
    return _git(["rev-parse", "HEAD"], repo) or "unknown"


# -------------------------------------------------------------------------------------- prepare
def prepare_char(repo: Path, text: str, name: str = "austen_char") -> Path:
    """Prepare ``text`` exactly as nanoGPT prepares Shakespeare: returns ``repo/data/<name>/``.

    A copy of ``data/shakespeare_char/prepare.py`` runs beside ``input.txt`` (so it downloads
    nothing) and writes ``train.bin``/``val.bin`` (uint16 ids; first 90 % / last 10 % of the
    characters) and ``meta.pkl`` (``vocab_size``, ``stoi``, ``itos``).
    """
    data = Path(repo) / "data" / name
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(repo) / "data" / "shakespeare_char" / "prepare.py", data / "prepare.py")
    (data / "input.txt").write_bytes(text.encode("utf-8"))
    env = {**os.environ, "PYTHONUTF8": "1"}  # prepare.py opens input.txt with the locale's encoding
    done = subprocess.run([sys.executable, "prepare.py"], cwd=data, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        hint = "pip install requests (prepare.py imports it)" if "requests" in said else None
        raise LaminaError(f"nanoGPT's prepare.py failed in {data}: {said}", hint=hint)
    for f in ("train.bin", "val.bin", "meta.pkl"):
        if not (data / f).is_file():
            raise LaminaError(f"nanoGPT's prepare.py wrote no {f} in {data}")
    return data


# ------------------------------------------------------------------------------------------ run
def cpu_args(device: str = "cpu") -> dict[str, str]:
    """The README's CPU flags as ``{key: value}`` (``--device`` replaced by ``device``)."""
    flags = dict(a.removeprefix("--").split("=", 1) for a in README_CPU.split()[3:])
    return {**flags, "device": device}


def run_nanogpt(
    repo: Path,
    dataset: str,
    *,
    max_iters: int,
    lr_decay_iters: int,
    extra: Sequence[str] = (),
    device: str = "cpu",
    log: Path,
) -> dict[str, Any]:
    """Train nanoGPT with the README's CPU line on ``data/<dataset>``, streaming its output to ``log``.

    Each log line is prefixed with the wall-clock seconds since the process started. ``extra``
    flags (``--key=value``) come last, so they override anything (nanoGPT's configurator: last wins).

    Returns:
        ``curve``: ``[{"seconds", "step", "train_loss", "val_loss"}]`` from its evaluations;
        ``seconds``: the whole run's wall time; ``final_val_loss``: its last 20-batch estimate;
        ``ckpt``: the path of ``ckpt.pt`` (None if it saved none) and ``ckpt_step``, the step it holds;
        ``ms_per_iter_median`` (its own per-iteration timer), ``commit``, ``command``, ``log``.
    """
    repo = Path(repo).resolve()
    flags = {**cpu_args(device), "dataset": dataset, "out_dir": str(repo / f"out-{dataset}"),
             "max_iters": str(max_iters), "lr_decay_iters": str(lr_decay_iters)}
    for a in extra:
        if not a.startswith("--") or "=" not in a:
            raise LaminaError(f"run_nanogpt: extra flag {a!r} must look like --key=value")
        key, value = a.removeprefix("--").split("=", 1)
        flags.pop(key, None)  # re-added last
        flags[key] = value
    out_dir = (repo / flags["out_dir"]).resolve()
    (out_dir / "ckpt.pt").unlink(missing_ok=True)  # never report an earlier run's checkpoint
    cmd = [sys.executable, "-u", "train.py", CONFIG, *(f"--{k}={v}" for k, v in flags.items())]
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    curve: list[dict[str, float]] = []
    iter_ms: list[float] = []
    ckpt_step = last_iter = None
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONUTF8": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as out, subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.perf_counter() - t0
            out.write(f"{t:10.3f} {line}")
            line = line.strip()
            if m := STEP_LINE.match(line):
                curve.append({"seconds": round(t, 3), "step": int(m[1]), "train_loss": float(m[2]),
                              "val_loss": float(m[3])})
            elif m := ITER_LINE.match(line):
                last_iter = int(m[1])
                if last_iter > 0:  # iteration 0 includes start-up
                    iter_ms.append(float(m[3]))
            elif line.startswith("saving checkpoint to") and curve:
                ckpt_step = curve[-1]["step"]
        code = proc.wait()
    seconds = time.perf_counter() - t0
    if code != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-3:])
        raise LaminaError(f"nanoGPT's train.py exited with status {code}: {tail}", hint=f"full log: {log}")
    ckpt = out_dir / "ckpt.pt"
    return {
        "commit": nanogpt_commit(repo),
        "command": cmd[1:],
        "curve": curve,
        "seconds": seconds,
        "final_val_loss": curve[-1]["val_loss"] if curve else math.nan,
        "ckpt": str(ckpt) if ckpt.is_file() else None,
        "ckpt_step": ckpt_step if ckpt.is_file() else None,
        "iterations": 0 if last_iter is None else last_iter + 1,  # steps 0..max_iters: max_iters + 1 of them
        "ms_per_iter_median": statistics.median(iter_ms) if iter_ms else math.nan,
        "log": str(log),
    }


# ---------------------------------------------------------------------------------------- score
def load_model(repo: Path, ckpt: Path, device: str = "cpu") -> torch.nn.Module:
    """nanoGPT's ``GPT`` from the fetched ``model.py``, with the weights of ``ckpt``, in fp32 eval mode."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", Path(repo) / "model.py")
    if spec is None or spec.loader is None:
        raise LaminaError(f"cannot import {Path(repo) / 'model.py'}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # weights_only=True works: the checkpoint holds only tensors, dicts, lists, numbers and strings
    # (model and optimizer state, model_args, iter_num, best_val_loss as a 0-d tensor, config).
    checkpoint = torch.load(ckpt, map_location=device, weights_only=True)
    with contextlib.redirect_stdout(io.StringIO()):  # GPT() prints its parameter count
        model = mod.GPT(mod.GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}  # as sample.py does
    model.load_state_dict(state)
    return model.to(device=device, dtype=torch.float32).eval()


@torch.no_grad()
def whole_tail_loss(repo: Path, ckpt: Path, val_bin: Path, context: int, *, batch_size: int = 256,
                    device: str = "cpu") -> float:
    """Mean cross-entropy (nats per character) of nanoGPT's saved model over the whole validation tail.

    The tail ``val`` (N ids) is cut into consecutive non-overlapping windows ``x = val[i*T:(i+1)*T]``,
    ``y = val[i*T+1:(i+1)*T+1]`` (``T = context``), the last one shorter, so that each of the N - 1
    targets is predicted exactly once, with 0 to T - 1 characters of context; fp32, eval mode.
    """
    model = load_model(repo, ckpt, device)
    if context > model.config.block_size:
        raise LaminaError(f"context {context} exceeds the model's block_size {model.config.block_size}")
    val = torch.from_numpy(np.fromfile(val_bin, dtype=np.uint16).astype(np.int64))
    n = len(val) - 1  # targets
    if n < 1:
        raise LaminaError(f"{val_bin} holds {len(val)} ids; need at least 2")
    full = n // context
    windows = [(val[: full * context].view(full, context), val[1 : full * context + 1].view(full, context))]
    if n > full * context:  # the remainder: one shorter window
        windows.append((val[full * context : n][None], val[full * context + 1 : n + 1][None]))
    total = 0.0
    for xs, ys in windows:
        for x, y in zip(xs.split(batch_size), ys.split(batch_size), strict=True):
            logits, _ = model(x.to(device), y.to(device))  # (B, T, V): all positions when targets are given
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum").item()
    return total / n


# ----------------------------------------------------------------------------------- smoke test
def main() -> None:
    p = argparse.ArgumentParser(description="nanoGPT on (a slice of) Jane Austen, as benchmarks/austen_lm.py runs it")
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--eval-interval", type=int, default=25, help="nanoGPT saves ckpt.pt only at an evaluation")
    p.add_argument("--chars", type=int, default=0, help="use the first N characters (0: all six novels)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the result JSON here")
    args = p.parse_args()

    from lamina.data.austen import read_austen

    text = "\n\n".join(read_austen().values())
    if args.chars:
        text = text[: args.chars]
    with tempfile.TemporaryDirectory(prefix="nanogpt-") as tmp:
        repo = fetch_nanogpt(Path(tmp) / "nanoGPT")
        data = prepare_char(repo, text)
        run = run_nanogpt(repo, "austen_char", max_iters=args.max_iters, lr_decay_iters=args.max_iters,
                          extra=[f"--eval_interval={args.eval_interval}"], device=args.device, log=Path(tmp) / "train.log")
        t0 = time.perf_counter()
        tail = whole_tail_loss(repo, Path(run["ckpt"]), data / "val.bin", int(cpu_args()["block_size"]),
                               device=args.device) if run["ckpt"] else math.nan
        record = {**environment(args.device), "nanogpt": run, "characters": len(text),
                  "whole_tail_loss": tail, "whole_tail_seconds": time.perf_counter() - t0,
                  "train_log_tail": Path(run["log"]).read_text().splitlines()[-4:]}
    record["nanogpt"].pop("log")  # the temporary folder is gone
    print(json.dumps(record, indent=2))
    if args.out:
        write(args.out, record)


if __name__ == "__main__":
    main()
