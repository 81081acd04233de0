"""What the layers below the engine need of a multi-process run: this process's rank and the world
size, exact all-reduced sums, and agreement on decisions (stop, save) so that every rank takes the
same branch. A no-op in a single process.

The process group itself is set up and torn down by :mod:`lamina.training.distributed` (the
engine's); that module registers a CPU (gloo) *control* group here, which carries the small messages
of this module without a device synchronisation, whatever backend the gradients use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from lamina.errors import LaminaError

T = TypeVar("T")
_control: Any = None  # the gloo group of the running job; None: one process
_votes: dict[str, Callable[[], float]] = {}  # what each step's exchange asks every rank (see vote)
_agreed: dict[str, float] = {}  # what this step's exchange agreed on (empty on a step without one)


def set_control_group(group: Any) -> None:
    global _control
    _control = group


def active() -> bool:
    """A multi-process job is running (its process group is set up)."""
    return _control is not None and dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or a single process: the one that writes the run folder and prints."""
    return rank() == 0


def sharded(loader: Any) -> bool:
    """``loader`` hands each rank its part of a split (its metrics must be all-reduced)."""
    return active() and getattr(loader, "world", 1) > 1


def agree(value: float, op: str = "max") -> float:
    """The max (``op="max"``), min or sum of ``value`` over all ranks, the same on every rank."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    reduce_op = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}[op]
    dist.all_reduce(t, op=reduce_op, group=_control)
    return float(t[0])


def vote(key: str, value: Callable[[], float] | None) -> None:
    """Have every step's :func:`exchange` agree on ``value()`` (its max over the ranks), read with
    :func:`agreed`; None withdraws it. Every rank must register the same keys (the same callbacks)."""
    if value is None:
        _votes.pop(key, None)
        _agreed.pop(key, None)
    else:
        _votes[key] = value


def exchange(**values: float) -> dict[str, float]:
    """On every rank at the same step: ``values`` and every :func:`vote`, each the max over the ranks,
    in **one** all-reduce (a job's control message: a signal, a clock). The loop calls it every few
    steps (:class:`lamina.training.trainer.Trainer`) and :func:`settle` after the step's callbacks."""
    local = {**{k: float(fn()) for k, fn in _votes.items()}, **{k: float(v) for k, v in values.items()}}
    keys = sorted(local)
    if active() and keys:
        t = torch.tensor([local[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control)
        local = dict(zip(keys, t.tolist(), strict=True))
    _agreed.clear()
    _agreed.update(local)
    return local


def settle() -> None:
    """The step's agreement has been acted on: until the next :func:`exchange`, nothing is agreed."""
    _agreed.clear()


def agreed(key: str, local: float) -> float:
    """``key``'s value agreed at this step's :func:`exchange`, the same on every rank; 0 (nothing to
    act on) on a step without one. In one process: ``local``."""
    return _agreed.get(key, 0.0) if active() else local


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (in-process objects only: never data read from a file)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_control)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (small in-process values), in rank order, on every rank."""
    if not active():
        return [obj]
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, obj, group=_control)
    return everyone


def reduce_sums(sums: Mapping[str, Tensor | int | float]) -> dict[str, Tensor | int | float]:
    """``sums`` added over every rank, key by key, exactly (float64 / int64 on the host).

    A rank may hold keys another lacks (it saw no batch): each key's shape and dtype is agreed
    first, the missing ones count as zero. Ints come back as ints, tensors as tensors on their
    own device (the first rank's that has them).
    """
    if not active():
        return dict(sums)
    spec = {k: _spec(v) for k, v in sums.items()}
    everyone = gather(spec)
    keys: dict[str, tuple[str, tuple[int, ...]]] = {}
    for part in everyone:
        for k, s in part.items():
            keys.setdefault(k, s)
    out: dict[str, Tensor | int | float] = {}
    for k in sorted(keys):
        kind, shape = keys[k]
        v = sums.get(k)
        dtype = torch.float64 if kind in ("float", "torch.float16", "torch.bfloat16", "torch.float32",
                                          "torch.float64") else torch.int64
        t = torch.zeros(shape, dtype=dtype) if v is None else torch.as_tensor(v).detach().to("cpu", dtype, copy=True)
        dist.all_reduce(t, group=_control)
        if kind in ("int", "float"):
            out[k] = int(t) if kind == "int" else float(t)
        else:  # a tensor again, where the first rank that has it keeps it, in float64 / int64
            out[k] = t.to(v.device) if isinstance(v, Tensor) else t
    return out


def _spec(v: Tensor | int | float) -> tuple[str, tuple[int, ...]]:
    if isinstance(v, bool):
        raise TypeError("sums are numbers, not flags")
    if isinstance(v, int):
        return "int", ()
    if isinstance(v, float):
        return "float", ()
    return str(v.dtype), tuple(v.shape)


def on_main(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 only (None elsewhere); a :class:`LaminaError` it raises is raised on every
    rank, with the same message, so the whole job stops with it."""
    if not active():
        return fn()
    result, err = None, None
    if is_main():
        try:
            result = fn()
        except LaminaError as e:
            err = str(e)
    err = broadcast(err)
    if err is not None:
        e = LaminaError(err)
        e.echo = not is_main()  # type: ignore[attr-defined]  # rank 0 says it: the others need not repeat it
        raise e
    return result


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks (rank 0 fills the caches they then read); an
    error on rank 0 is raised on every rank."""
    if not active():
        return fn()
    result = on_main(fn)
    return fn() if not is_main() else result  # type: ignore[return-value]


def whole(t: Tensor) -> Tensor:
    """``t`` as one plain tensor: a ``DTensor`` (a norm over sharded gradients, a sharded weight)
    gathered over the ranks (a collective: every rank calls it), any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
