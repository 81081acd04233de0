"""Many processes, one run: the process group's setup and teardown, and the model's wrapper.

This is the only place that starts or ends ``torch.distributed``; the engine owns one
:class:`Distributed` and the Trainer sees the number of processes only through it.

- Launch: ``torchrun --nproc-per-node N -m lamina train ...`` (or ``lamina train ... --nproc N``,
  which starts exactly that). torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
  rendezvous; a process started without them is a job of one.
- Strategies (``train.strategy``): ``ddp`` wraps the model in ``DistributedDataParallel``
  (gradients all-reduced in buckets while backward runs), also in a single process (a job of one);
  ``auto`` is ``ddp`` under torchrun and no wrapper in one process; ``none`` refuses to run under
  torchrun. (Sharding a model too large for one device, FSDP2, is not built yet.)
- Batch and learning rate: ``data.batch_size`` is the **global** batch, split evenly over the ranks
  (it must divide), and the learning rate is the one the single-process run of that batch uses: a
  run on N ranks takes the same optimisation steps as a run on one (the loss trajectories match).
- Randomness: with more than one process every step reseeds torch from ``(seed, step, rank)``, so
  each rank draws its own dropout and noise, and a resumed run draws the same numbers again.
- Control messages (stop, save, agreed clocks, metric sums) go over a CPU ``gloo`` group beside the
  gradients' group, so they never synchronise a GPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lamina.errors import LaminaError
from lamina.utils import dist as dist_utils

STRATEGIES = ("auto", "none", "ddp")


class PeersLost(LaminaError):
    """A collective failed: another rank of the job died, hung past ``train.dist_timeout`` or went
    away. The process should end at once (``os._exit``): the process group's objects would wait
    for the lost rank while they are torn down."""

    exit_code = 1


def launched() -> bool:
    """This process was started by torchrun (or another launcher that sets the same variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1


@dataclass
class Distributed:
    """This process's place in a job: rank, world size, local rank, and the strategy."""

    strategy: str = "none"  # resolved: none | ddp
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    seed: int = 0
    sync_batchnorm: bool = False
    started: bool = False  # this object initialised the process group (and tears it down)

    @property
    def enabled(self) -> bool:
        return self.strategy != "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, strategy: str, device: str, *, seed: int = 0, timeout_s: float = 600.0,
              sync_batchnorm: bool = False) -> tuple[Distributed, str]:
        """The job this process belongs to, with its process group set up; and the device it trains on
        (under torchrun on CUDA: ``cuda:LOCAL_RANK``)."""
        if strategy not in STRATEGIES:
            raise LaminaError(f"unknown train.strategy '{strategy}': use auto, none or ddp")
        world = env_world_size()
        if strategy == "auto":
            strategy = "ddp" if world > 1 else "none"
        if strategy == "none":
            if world > 1:
                raise LaminaError(f"train.strategy=none, but torchrun started {world} processes: "
                                  "use train.strategy=ddp, or run one process")
            return cls(seed=seed), device
        if timeout_s <= 0:
            raise LaminaError("train.dist_timeout is in seconds: use a positive number (600 is the default)")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = _device_for(device, local, world)
        backend = "nccl" if device.startswith("cuda") else "gloo"
        import torch.distributed as dist

        if not dist.is_available():
            raise LaminaError("this build of torch has no torch.distributed: install the standard torch wheel")
        timeout = datetime.timedelta(seconds=timeout_s)
        started = False
        if not dist.is_initialized():
            if device.startswith("cuda"):
                torch.cuda.set_device(torch.device(device))
            try:
                if launched():
                    dist.init_process_group(backend, store=_job_store(timeout), rank=int(os.environ["RANK"]),
                                            world_size=world, timeout=timeout)
                else:  # a job of one (train.strategy=ddp without torchrun): an in-process store
                    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
            except (RuntimeError, ValueError, KeyError) as e:
                where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
                raise LaminaError(f"could not join the process group at {where} within {timeout_s:g} s "
                                  f"({str(e).splitlines()[0][:160]}): check the rendezvous endpoint and that every "
                                  "node was started") from None
            started = True
        control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
        dist_utils.set_control_group(control)
        return cls(strategy, dist.get_rank(), dist.get_world_size(), local, seed, sync_batchnorm, started), device

    # -- the model ------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """What the training step calls: ``DistributedDataParallel(model)`` for ``ddp`` (with
        ``SyncBatchNorm`` when asked), the model itself otherwise."""
        if self.strategy != "ddp":
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.sync_batchnorm:
            if device.type != "cuda":  # DistributedDataParallel refuses SyncBatchNorm on the CPU
                raise LaminaError("train.sync_batchnorm needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on "
                                  "CPU processes): on the CPU use model.norm=group, layer or none, or drop it")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    # -- per step ---------------------------------------------------------------------------------
    def reseed(self, step: int) -> None:
        """Reseed torch from ``(seed, step, rank)``: each rank its own draws, repeatable on resume."""
        if self.world_size > 1:
            from lamina.data.gpu_loader import _seed

            seed = _seed(self.seed, step, self.rank, 0x5EED)
            torch.default_generator.manual_seed(seed)  # torch.manual_seed costs 0.2 ms: it visits every backend
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.manual_seed(seed)  # this rank's GPU

    def shard_loader(self, loader: Any) -> Any:
        """Give ``loader`` this rank's part of every batch (see :meth:`lamina.data.gpu_loader.Shardable.shard`)."""
        if self.world_size == 1:
            return loader
        if not hasattr(loader, "shard"):
            raise LaminaError(f"{type(loader).__name__} cannot split its batches over processes: "
                              "run this task in one process")
        loader.shard(self.rank, self.world_size)
        return loader

    def close(self) -> None:
        """Tear the process group down (when this object set it up)."""
        dist_utils.set_control_group(None)
        if self.started:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.started = False


def _job_store(timeout: datetime.timedelta) -> Any:
    """The key-value store the ranks meet in: torchrun's (its agent hosts it), or rank 0's when the
    launcher has no agent; keys under a prefix per torchrun attempt (``TORCHELASTIC_RESTART_COUNT``),
    so a job restarted by ``--max-restarts`` never reads the addresses its dead predecessors left there
    (gloo would try to connect to them)."""
    import torch.distributed as dist

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = dist.TCPStore(host, port, world, is_master=not agent and rank == 0, timeout=timeout,
                          multi_tenant=not agent)
    return dist.PrefixStore(f"lamina/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _device_for(device: str, local_rank: int, world: int) -> str:
    name = device.strip().lower()
    if name in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise LaminaError(f"this node runs {local_rank + 1}+ processes but has {n} GPU(s): "
                              f"use --nproc {n} (one process per GPU)")
        return f"cuda:{local_rank}"
    if name == "auto":
        return "cpu"
    if name.startswith("mps"):
        raise LaminaError("multi-process training needs CUDA GPUs or the CPU: MPS has no process-group backend")
    return name

