"""``lamina train ... --nproc N``: start exactly ``torchrun --standalone --nproc-per-node N -m lamina train ...``.

For users who do not want to type torchrun. Several machines go through torchrun itself (its
rendezvous: ``--nnodes``, ``--rdzv-backend c10d``, ``--rdzv-endpoint``), see the README.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from lamina.errors import LaminaError


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def available(device: str | None) -> tuple[int, str]:
    """How many processes this machine can give one device each: its GPUs (when the run trains on
    CUDA), else its CPU cores; and what they are."""
    import torch

    name = (device or "auto").strip().lower()
    if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
        return torch.cuda.device_count(), "CUDA GPU(s)"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return cores, "CPU cores"


def command(argv: Sequence[str], nproc: int) -> list[str]:
    """The torchrun command line that ``lamina <argv> --nproc N`` stands for."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "lamina", *strip_nproc(argv)]


def launch(argv: Sequence[str], nproc: int, device: str | None) -> int:
    """Run ``argv`` (a ``lamina`` command line) on ``nproc`` processes of this machine through torchrun."""
    if nproc < 1:
        raise LaminaError(f"--nproc is a number of processes, 1 or more; got {nproc}")
    have, what = available(device)
    if nproc > have:
        raise LaminaError(f"--nproc {nproc} asks for more processes than this machine has {what} ({have}): "
                          f"use --nproc {have} or fewer (one process per device)")
    env = dict(os.environ)
    if what == "CPU cores":  # share the cores out (torchrun would give each process one thread)
        env.setdefault("OMP_NUM_THREADS", str(max(1, have // nproc)))
    cmd = command(argv, nproc)
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached torchrun and its workers too (one process group):
            continue  # wait while they checkpoint and stop
