"""Sharded loaders in one process: each rank's part of every batch, checked for every rank at once
(no process group needed). Every example is seen once per epoch across the ranks, in the global
order of the single-process loader with the same seed."""

from __future__ import annotations

import pytest
import torch

from lamina.data.base import Preprocess, Split
from lamina.data.gpu_loader import make_loader
from lamina.errors import LaminaError
from lamina.tasks.language import TailLoader, WindowLoader
from lamina.utils import dist

pytestmark = pytest.mark.distributed


def _split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n))


def _loader(kind: str, n: int, batch: int, train: bool, rank: int = 0, world: int = 1):
    loader = make_loader(_split(n), kind=kind, batch_size=batch, device=torch.device("cpu"), preprocess=Preprocess(),
                         train=train, seed=7)
    if world > 1:
        loader.shard(rank, world)
    return loader


@pytest.mark.parametrize("kind", ["device", "torch"])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_training_batches_split_the_global_batch(kind: str, world: int) -> None:
    n, batch = 101, 12
    whole = [y for _, y in _loader(kind, n, batch, True)]
    parts = [[y for _, y in _loader(kind, n, batch, True, r, world)] for r in range(world)]
    assert all(len(p) == len(whole) for p in parts)  # the same number of steps on every rank
    for step, y in enumerate(whole):
        assert torch.equal(torch.cat([p[step] for p in parts]), y)  # rank after rank: the global batch
        assert all(len(p[step]) == batch // world for p in parts)


@pytest.mark.parametrize("kind", ["device", "torch"])
def test_evaluation_shards_are_uneven_and_cover_every_example_once(kind: str) -> None:
    n, world = 2051, 2  # 2 batches of 1024 and one of 3, split over 2 ranks
    seen = torch.cat([y for r in range(world) for _, y in _loader(kind, n, 1024, False, r, world)])
    assert sorted(seen.tolist()) == list(range(n))
    sizes = [sum(len(y) for _, y in _loader(kind, n, 1024, False, r, world)) for r in range(world)]
    assert sizes == [1026, 1025]


def test_a_batch_size_that_does_not_divide_is_a_one_line_error() -> None:
    with pytest.raises(LaminaError, match=r"data\.batch_size 12 is the global batch and must divide evenly over 5"):
        _loader("device", 100, 12, True, 0, 5)


def test_resumed_position_means_the_same_on_any_world_size() -> None:
    """A checkpoint's loader state (global batches done) continues the same global order on 2 ranks."""
    one = _loader("device", 101, 12, True)
    it = iter(one)
    for _ in range(3):
        next(it)
    state = one.state_dict()
    rest_one = [y for _, y in one_from(state, 1, 0)]
    rest_two = [torch.cat(ys) for ys in zip(*[[y for _, y in one_from(state, 2, r)] for r in range(2)], strict=True)]
    assert [t.tolist() for t in rest_one] == [t.tolist() for t in rest_two]


def one_from(state: dict, world: int, rank: int):
    loader = _loader("device", 101, 12, True, rank, world)
    loader.load_state_dict(state)
    return loader


def test_language_model_windows_and_tail_shard() -> None:
    tokens = torch.arange(1000)
    whole = WindowLoader(tokens, context=8, batch_size=6, device=torch.device("cpu"), seed=3)
    parts = []
    for r in range(3):
        w = WindowLoader(tokens, context=8, batch_size=6, device=torch.device("cpu"), seed=3)
        w.shard(r, 3)
        parts.append([x for x, _ in w])
    for step, (x, _) in enumerate(whole):
        assert torch.equal(torch.cat([p[step] for p in parts]), x)
    tail = TailLoader(tokens, context=8, batch_size=5, device=torch.device("cpu"))
    targets = []
    for r in range(2):
        t = TailLoader(tokens, context=8, batch_size=5, device=torch.device("cpu"))
        t.shard(r, 2)
        targets += [y.flatten() for _, y in t]
    assert sorted(torch.cat(targets).tolist()) == sorted(torch.cat([y.flatten() for _, y in tail]).tolist())
    assert len(torch.cat(targets)) == len(tokens) - 1  # every token after the first predicted once


def test_one_process_is_not_a_job() -> None:
    assert not dist.active() and dist.world_size() == 1 and dist.is_main()
    sums = {"count": 3, "loss_sum": torch.tensor(1.5)}
    assert dist.reduce_sums(sums) == sums
    assert dist.agree(2.5) == 2.5
    assert dist.on_main(lambda: 4) == 4
