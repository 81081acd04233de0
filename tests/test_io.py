"""utils/io: the JSON-lines writer behind metrics.jsonl and gradients.jsonl."""

from __future__ import annotations

import contextlib
import json
import math

import pytest

from lamina.errors import LaminaError
from lamina.utils.io import JsonLines


def test_json_lines_appends_flushed_lines_and_creates_the_folder(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    log = JsonLines(path)
    log.write({"step": 1, "loss": 0.5})
    assert json.loads(path.read_text()) == {"step": 1, "loss": 0.5}  # on disk before close: flushed
    log.close()
    again = JsonLines(path)  # a resumed run appends
    again.write({"step": 2, "loss": math.nan})
    again.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["step"] == 1 and math.isnan(json.loads(lines[1])["loss"])


def test_json_lines_can_refuse_nan(tmp_path):
    log = JsonLines(tmp_path / "g.jsonl", allow_nan=False)
    with pytest.raises(ValueError):
        log.write({"norm": math.inf})
    log.close()


def test_json_lines_errors_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LaminaError, match="could not open"):
        JsonLines(blocker / "metrics.jsonl")  # a file where the folder should be
    log = JsonLines(tmp_path / "m.jsonl")
    log.file.close()
    log.file = open("/dev/full", "w")  # every write fails with ENOSPC
    try:
        with pytest.raises(LaminaError, match="free disk space"):
            log.write({"step": 1})
    finally:
        with contextlib.suppress(OSError):  # closing flushes the refused line again
            log.file.close()
