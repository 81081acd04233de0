"""``lamina train ... --nproc N``: start exactly ``torchrun --standalone --nproc-per-node N -m lamina train ...``.

For users who do not want to type torchrun. Several machines go through torchrun itself (its
rendezvous: ``--nnodes``, ``--rdzv-backend c10d``, ``--rdzv-endpoint``), see the README.
"""

from __future__ import annotations

import os
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


def torchrun_args(argv: Sequence[str], nproc: int) -> list[str]:
    """torchrun's arguments for ``lamina <argv> --nproc N``: ``torchrun <these>`` is the same job."""
    return ["--standalone", "--nproc-per-node", str(nproc), "-m", "lamina", *strip_nproc(argv)]


def launch(argv: Sequence[str], nproc: int, device: str | None) -> int:
    """Run ``argv`` (a ``lamina`` command line) on ``nproc`` processes of this machine through
    torchrun: its own launcher, run in this process, so that a failed job ends with the workers'
    one-line messages rather than torchrun's traceback and log lines (the workers write to this
    terminal directly). Returns the exit code of the first rank that failed (0: all finished)."""
    if nproc < 1:
        raise LaminaError(f"--nproc is a number of processes, 1 or more; got {nproc}")
    have, what = available(device)
    if nproc > have:
        raise LaminaError(f"--nproc {nproc} asks for more processes than this machine has {what} ({have}): "
                          f"use --nproc {have} or fewer (one process per device)")
    if what == "CPU cores":  # share the cores out (torchrun would give each process one thread)
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, have // nproc)))
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in list(logging.Logger.manager.loggerDict):  # torchrun's chatter (closing signals, exit codes)
        if name.startswith("torch.distributed.elastic") or name.startswith("torch.distributed.run"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(torchrun_args(argv, nproc)))
    except ChildFailedError as e:
        if any(f.exitcode == 2 for f in e.failures.values()):
            return 2  # a lamina error, which the workers have said in one line (the others may have aborted)
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        why = f"signal {failure.signal_name()}" if code < 0 else f"exit code {code}"
        print(f"error: rank {rank} of the job of {nproc} processes ended with {why}: see its messages above",
              file=sys.stderr)
        return code if code > 0 else 1
    except SignalException as e:  # Ctrl-C or a kill reached the launcher: the workers were stopped
        return 128 + int(e.sigval)
    return 0
