from __future__ import annotations

import pytest

from lamina.config import RunConfig, all_keys, apply_overrides, from_dict, load_config, save_config, to_dict
from lamina.errors import LaminaError


def test_round_trip_through_yaml(tmp_path):
    cfg = apply_overrides(RunConfig(), ["train.lr=0.05", "model.name=resnet", "data.flip=true"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert from_dict(to_dict(cfg)) == cfg


def test_overrides_parse_types():
    cfg = apply_overrides(RunConfig(), ["train.epochs=3", "train.lr=1e-3", "train.compile=yes", "data.image_size=null"])
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.compile is True and cfg.data.image_size is None


def test_unknown_key_suggests_nearest():
    with pytest.raises(LaminaError, match=r"unknown config key 'train\.lrr'.*train\.lr"):
        apply_overrides(RunConfig(), ["train.lrr=0.1"])
    with pytest.raises(LaminaError, match=r"train\.epochs"):
        from_dict({"train": {"epoch": 3}})


def test_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(LaminaError, match="must be an integer"):
        apply_overrides(RunConfig(), ["train.epochs=three"])
    with pytest.raises(LaminaError, match="key=value"):
        apply_overrides(RunConfig(), ["train.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(LaminaError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(LaminaError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("train: 3\n")
    with pytest.raises(LaminaError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_all_keys_are_dotted_and_unique():
    keys = all_keys()
    assert len(keys) == len(set(keys)) and "train.lr" in keys and "out" in keys
