from __future__ import annotations

import json

import pytest
import torch

from lamina.errors import LaminaError
from lamina.training import checkpoint


def _tree():
    return {
        "model": {"w": torch.randn(3, 4), "b": torch.arange(4)},
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "rng": {"python": (3, tuple(range(5)), None)},
        "counters": {"step": 7, "name": "x", "flag": True, "none": None},
    }


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b) and a.dtype == b.dtype
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_round_trip_preserves_types_and_int_keys(tmp_path):
    tree = _tree()
    checkpoint.save(tree, tmp_path / "ck")
    assert _equal(checkpoint.load(tmp_path / "ck"), tree)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["manifest.json", "state.json", "tensors.safetensors"]


def test_corruption_is_detected(tmp_path):
    checkpoint.save(_tree(), tmp_path / "ck")
    f = tmp_path / "ck" / "tensors.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(LaminaError, match="checksum"):
        checkpoint.load(tmp_path / "ck")
    (tmp_path / "ck" / "manifest.json").unlink()
    with pytest.raises(LaminaError, match="manifest"):
        checkpoint.load(tmp_path / "ck")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(_tree(), tmp_path / "ck")
    before = (tmp_path / "ck" / "state.json").read_text()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(LaminaError, match=r"No space left.*intact"):
        checkpoint.save({"model": {"w": torch.zeros(1)}}, tmp_path / "ck")
    assert (tmp_path / "ck" / "state.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temp folder left behind


def test_no_pickle_in_a_checkpoint(tmp_path):
    checkpoint.save(_tree(), tmp_path / "ck")
    json.loads((tmp_path / "ck" / "state.json").read_text())  # plain JSON
    with pytest.raises(TypeError):
        checkpoint.save({"obj": object()}, tmp_path / "bad")


def test_prune_keeps_newest(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save({"x": torch.zeros(1)}, tmp_path / f"step-{step:09d}")
    checkpoint.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002", "step-000000003"]
