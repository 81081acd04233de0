"""Many processes, one run: the process group's setup and teardown, and the model's wrapper.

This is the only place that starts or ends ``torch.distributed``; the engine owns one
:class:`Distributed` and the Trainer sees the number of processes only through it.

- Launch: ``torchrun --nproc-per-node N -m lamina train ...`` (or ``lamina train ... --nproc N``,
  which starts exactly that). torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
  rendezvous; a process started without them is a job of one.
- Strategies (``train.strategy``): ``ddp`` wraps the model in ``DistributedDataParallel``
  (gradients all-reduced in buckets while backward runs), also in a single process (a job of one);
  ``auto`` is ``ddp`` under torchrun and no wrapper in one process; ``none`` refuses to run under
  torchrun. ``fsdp`` shards the model over the ranks with FSDP2 (``fully_shard`` on every stage, then
  the root; parameters, gradients and optimizer state each held 1/N per rank, gathered block by block
  as the forward and backward passes reach them) for a model that does not fit on one device; with
  bf16, its mixed-precision policy computes in bf16 and reduces gradients in fp32. Evaluation and
  sampling run with every parameter gathered (:meth:`Distributed.gathered`), so ranks may make
  different numbers of forward calls. Checkpoints are sharded, each rank writing its part
  (:mod:`lamina.training.checkpoint`, torch.distributed.checkpoint), and resharded on load, so a run
  sharded on N ranks resumes on any number; the saved model holds full tensors (:func:`full_state`).
- Batch and learning rate: ``data.batch_size`` is the **global** batch, split evenly over the ranks
  (it must divide), and the learning rate is the one the single-process run of that batch uses: a
  run on N ranks takes the same optimisation steps as a run on one (the loss trajectories match).
- Randomness: with more than one process every step reseeds torch from ``(seed, step, rank)``, so
  each rank draws its own dropout and noise, and a resumed run draws the same numbers again.
- Control messages (stop, save, agreed clocks, metric sums) go over a CPU ``gloo`` group beside the
  gradients' group, so they never synchronise a GPU.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lamina.errors import LaminaError
from lamina.utils import dist as dist_utils

STRATEGIES = ("auto", "none", "ddp", "fsdp")


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

    strategy: str = "none"  # resolved: none | ddp | fsdp
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
            raise LaminaError(f"unknown train.strategy '{strategy}': use auto, none, ddp or fsdp")
        world = env_world_size()
        if strategy == "auto":
            strategy = "ddp" if world > 1 else "none"
        if strategy == "none":
            if world > 1:
                raise LaminaError(f"train.strategy=none, but torchrun started {world} processes: "
                                  "use train.strategy=ddp or fsdp, or run one process")
            return cls(seed=seed), device
        if strategy == "fsdp" and sync_batchnorm:
            raise LaminaError("train.sync_batchnorm is for ddp: under fsdp use model.norm=layer, group or none")
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
    def wrap(self, model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None) -> nn.Module:
        """What the training step calls: ``DistributedDataParallel(model)`` for ``ddp`` (with
        ``SyncBatchNorm`` when asked); for ``fsdp`` the model itself, sharded in place (see
        :meth:`shard`); the model itself otherwise."""
        if self.strategy == "fsdp":
            return self.shard(model, device, amp_dtype)
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

    def shard(self, model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None) -> nn.Module:
        """FSDP2 in place: ``fully_shard`` on each of the model's stages (each gathered only while it
        computes), then on the root (what is left: the head, norms). A stage that shares a parameter
        with the rest of the model (a language model's embedding, tied to its output layer) stays in
        the root's group: one tensor must have one owner. With ``amp_dtype`` (bf16) the stages compute
        in it and gradients are reduced in fp32; BatchNorm layers are their own units, kept in fp32.
        Build the optimizer *after* this: the parameters become sharded ``DTensor`` s. Idempotent."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        if isinstance(model, FSDPModule):
            return model
        mesh = init_device_mesh(device.type, (self.world_size,))
        policy = MixedPrecisionPolicy(param_dtype=amp_dtype, reduce_dtype=torch.float32 if amp_dtype else None)
        if amp_dtype is not None:  # BatchNorm keeps fp32 weights beside its fp32 statistics (autocast's rule)
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and any(True for _ in m.parameters()):
                    fully_shard(m, mesh=mesh, mp_policy=MixedPrecisionPolicy())
        stages = model.stages() if callable(getattr(model, "stages", None)) else []
        for _, stage in stages:
            inside = {id(p) for p in stage.parameters()}
            outside = {id(p) for n, p in model.named_parameters(remove_duplicate=False)
                       if id(p) in inside and not _within(n, stage, model)}
            if inside and not outside:
                fully_shard(stage, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model

    @contextlib.contextmanager
    def gathered(self, model: nn.Module) -> Iterator[None]:
        """Under ``fsdp``: every parameter of ``model`` gathered (all-gathered once, on every rank
        together) and kept so until the block ends, so that forward passes inside need no collective
        and the ranks may run different numbers of them (an evaluation over uneven shards, a sample
        written by rank 0 alone). Elsewhere: nothing. Don't save a state dict inside: FSDP reshards."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)] if self.strategy == "fsdp" else []
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for unit in units:  # FSDP2's defaults again: blocks reshard after forward, the root does not
                unit.set_reshard_after_forward(unit is not model, recurse=False)
                unit.reshard()
            if units:
                _forget_forward_order(model)

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


def _within(name: str, stage: nn.Module, model: nn.Module) -> bool:
    """The parameter ``model.<name>`` belongs to ``stage`` (a submodule of ``model``)."""
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return any(owner is m for m in stage.modules())


def _forget_forward_order(model: nn.Module) -> None:
    """Drop the order of the forward calls FSDP recorded inside :meth:`Distributed.gathered`.

    FSDP2 prefetches each unit's parameters in the backward pass from the order in which units ran
    forward since the last backward, a list that forward passes without gradients also extend. Rank
    0's samples (or uneven evaluation shards) would leave each rank a different list, so the ranks
    would prefetch different units in the next backward pass and wait for each other forever. The
    root's iteration reset (meant for recovery after an exception: reshard, clear the trackers)
    empties it; torch versions without it keep the list where we clear it ourselves."""
    state = model._get_fsdp_state()  # type: ignore[operator]
    reset = getattr(state, "_reset_iter_state", None)
    if reset is not None and state._is_root:
        reset()
        return
    state._comm_ctx.post_forward_order.clear()
    for m in model.modules():
        get = getattr(m, "_get_fsdp_state", None)
        for group in get()._fsdp_param_groups if get is not None else ():
            group._post_forward_indices.clear()


def full_state(tree: Any) -> Any:
    """``tree`` (a state dict, nested) with every sharded ``DTensor`` gathered into a full tensor on
    the host: the single-process format. A collective under ``fsdp`` (every rank calls it); without
    DTensors, the same tree."""
    from torch.distributed.tensor import DTensor

    if isinstance(tree, DTensor):
        return dist_utils.whole(tree).cpu()
    if isinstance(tree, dict):
        return {k: full_state(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(full_state(v) for v in tree)
    return tree


def shard_like(full: Any, like: Any) -> Any:
    """``full`` (a tensor every rank read whole, from a checkpoint) as this rank's shard of a
    ``DTensor`` laid out as ``like``; ``full`` itself where ``like`` is a plain tensor. No collective:
    each rank cuts its own part."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor) and isinstance(full, torch.Tensor) and not isinstance(full, DTensor):
        if tuple(full.shape) != tuple(like.shape):
            return full  # load_state_dict names the mismatch
        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements,
                                 src_data_rank=None)
    return full


def shard_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer state dict of full tensors (a single-process checkpoint's) cut to this rank's shards of
    the optimizer's ``DTensor`` parameters: the per-parameter tensors (moments, momentum) are
    distributed like their parameter, scalars (Adam's step) stay whole."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    per_param = {}
    for index, values in (state.get("state") or {}).items():
        like = params[index] if isinstance(index, int) and 0 <= index < len(params) else None
        per_param[index] = {k: shard_like(v, like) if isinstance(v, torch.Tensor) and v.dim() > 0 else v
                            for k, v in values.items()}
    return {**state, "state": per_param}
