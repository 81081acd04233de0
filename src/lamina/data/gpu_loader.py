"""Batches from a split: resident on the device (fast path) or through a torch DataLoader.

The device-resident loader keeps the raw uint8 examples on the training device, shuffles an
index each epoch and augments and normalises whole batches there (airbench style): no worker
processes, no host-to-device copies per step. The randomness of batch ``i`` of epoch ``e`` is a
pure function of ``(seed, e, i)``, so a run resumed mid-epoch sees exactly the same batches.

In a job of several processes (:meth:`Shardable.shard`) every loader still walks the **global**
batches of the same seeded order, and each rank takes its slice of each: a training batch of B
examples gives each of W ranks B/W of them (so W ranks see, per step, exactly the examples one
process sees with batch B); an evaluation batch is split as evenly as it goes (uneven shards: the
metrics are sums, added over the ranks). Augmentation is drawn per rank, from ``(seed, e, i, rank)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from lamina.data.augment import Augment
from lamina.data.base import Preprocess, Split
from lamina.errors import LaminaError

Batch = tuple[Tensor, Tensor]


def _seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64-style, stable across runs and machines)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class Resumable:
    """A loader's place: the epoch, the batches of it already handed out, and the seed; what a
    checkpoint saves so that a resumed run goes on with the very next batch. ``position`` counts
    global batches, so the state means the same on any number of processes."""

    epoch: int
    position: int
    seed: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])


class Shardable:
    """A loader whose every batch is split over the ranks of a job: rank ``rank`` of ``world`` gets
    its slice (:meth:`local`). ``train`` batches split into equal parts (the batch size must divide);
    evaluation batches as evenly as they go."""

    rank: int = 0
    world: int = 1
    batch_size: int
    train_split: bool = False

    def shard(self, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        if self.train_split and self.batch_size % world:
            raise LaminaError(f"data.batch_size {self.batch_size} is the global batch and must divide evenly over "
                              f"{world} processes: use a multiple of {world}")
        self.rank, self.world = rank, world

    def local(self, items: Tensor) -> Tensor:
        """This rank's part of one global batch's indices (or rows)."""
        if self.world == 1:
            return items
        if self.train_split:
            b = len(items) // self.world
            return items[self.rank * b : (self.rank + 1) * b]
        return torch.tensor_split(items, self.world)[self.rank]


class _Loader(Resumable, Shardable):
    """What both loaders share: epoch/position bookkeeping and the per-batch transform."""

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        device: torch.device,
        preprocess: Preprocess,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.preprocess = preprocess
        self.shuffle = shuffle
        self.drop_last = drop_last and self.n > batch_size
        self.train_split = self.drop_last  # training batches: equal parts per rank
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.channels_last = channels_last
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=g)

    def _finish(self, x: Tensor, y: Tensor, index: int) -> Batch:
        """Augment (training only), normalise and lay out one raw batch already on the device."""
        if self.augment is not None:
            parts = (self.seed, self.epoch, index, 1) + ((self.rank,) if self.world > 1 else ())
            g = torch.Generator(device=self.device).manual_seed(_seed(*parts))
            x = self.augment(x, g)
        x = self.preprocess.apply(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


class DeviceLoader(_Loader):
    """The whole split on ``device``; each epoch a new permutation, batches sliced from it."""

    def __init__(self, split: Split, **kw: Any) -> None:
        if not isinstance(split.x, Tensor):
            raise LaminaError(
                f"this split ({len(split)} examples of {tuple(split.x.shape[1:])}) is decoded from files on access"
                " and does not fit the device loader, which holds a whole split in memory; use data.loader=torch"
            )
        super().__init__(len(split), **kw)
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        order = self._order().to(self.device)
        for i in range(self.position, len(self)):
            idx = self.local(order[i * self.batch_size : (i + 1) * self.batch_size])
            self.position = i + 1
            if len(idx):  # an evaluation batch smaller than the world leaves some ranks without examples
                yield self._finish(self.x[idx], self.y[idx], i)
        self.set_epoch(self.epoch + 1)


class SplitDataset(torch.utils.data.Dataset[Batch]):
    """Map-style view of a split: ``(x[i], y[i])``. Lazily decoded examples decode in the workers."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> Batch:
        return self.split.x[i], self.split.y[i]


class TorchLoader(_Loader):
    """A ``torch.utils.data.DataLoader`` over any map-style dataset of ``(raw_x, label)``.

    For data that does not fit in device memory: workers decode on the CPU, and the batch is
    moved to the device, where it is augmented and normalised exactly as in :class:`DeviceLoader`.
    """

    def __init__(self, split: Split | torch.utils.data.Dataset, *, workers: int = 0, **kw: Any) -> None:
        data = SplitDataset(split) if isinstance(split, Split) else split
        super().__init__(len(data), **kw)  # type: ignore[arg-type]
        self.data = data
        self.workers = workers

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        # this rank's part of each global batch still to come (the same global batches on every rank)
        steps = range(self.position, len(self))
        parts = [self.local(order[i * self.batch_size : (i + 1) * self.batch_size]).tolist() for i in steps]
        kept = [(i, p) for i, p in zip(steps, parts, strict=True) if p]
        batches = [p for _, p in kept]
        dl = torch.utils.data.DataLoader(
            self.data,
            batch_sampler=batches,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for (i, _), (x, y) in zip(kept, _unwrap_worker_errors(dl), strict=False):
            self.position = i + 1
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield self._finish(x, y, i)
        self.set_epoch(self.epoch + 1)


def _unwrap_worker_errors(dl: torch.utils.data.DataLoader[Any]) -> Iterator[Any]:
    """Re-raise a worker's LaminaError with its own one-line message, not the worker's traceback."""
    batches = iter(dl)
    try:
        yield from batches
    except LaminaError as e:
        text = str(e)
        if not text.startswith("Caught LaminaError"):
            raise
        raise LaminaError(text.rsplit("LaminaError: ", 1)[-1]) from None
    finally:
        # On an error or an early stop, end the workers now: left to the garbage collector (the
        # worker's exception holds the iterator in a reference cycle) each takes seconds to stop.
        shutdown = getattr(batches, "_shutdown_workers", None)  # only multi-process iterators have it
        if shutdown is not None:
            shutdown()


def make_loader(
    split: Split,
    *,
    kind: str,
    batch_size: int,
    device: torch.device,
    preprocess: Preprocess,
    train: bool,
    augment: Augment | None = None,
    seed: int = 0,
    channels_last: bool = False,
    workers: int = 0,
) -> DeviceLoader | TorchLoader:
    """``kind`` is auto | device | torch; auto keeps the split on the device when it fits easily.

    Splits decoded from files on access (not a tensor) always take the torch loader under auto.
    """
    if kind == "auto":
        kind = "device" if _fits(split, device) else "torch"
    kw: dict[str, Any] = dict(
        batch_size=batch_size,
        device=device,
        preprocess=preprocess,
        shuffle=train,
        drop_last=train,
        augment=augment if train else None,
        seed=seed,
        channels_last=channels_last,
    )
    if kind == "device":
        return DeviceLoader(split, **kw)
    return TorchLoader(split, workers=workers, **kw)


def _fits(split: Split, device: torch.device) -> bool:
    """Raw split under a quarter of free device memory (or 4 GB of host memory on CPU)."""
    if not isinstance(split.x, Tensor):  # decoded on access: never resident
        return False
    nbytes = split.x.element_size() * split.x.nelement()
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes < free // 4
    return nbytes < 4 * 2**30
