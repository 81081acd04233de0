"""Shared fixtures: tiny synthetic data, isolated caches, CPU-only determinism."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's cache, and every test starts from the same seed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("LAMINA_DATA", raising=False)
    torch.manual_seed(0)


@pytest.fixture
def sigint_delivered():
    """Python's SIGINT handler for a test that sends itself SIGINT, even where the suite runs under
    nohup or as a background job (SIGINT ignored); what was there is put back after, and yielded."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield before
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory):
    """A tiny .npz of 150 8x8 grey uint8 images of 3 classes, told apart by brightness."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    y = rng.integers(0, 3, 150)
    x = (rng.random((150, 1, 8, 8)) * 80 + y[:, None, None, None] * 60).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("MPLBACKEND", "Agg")
