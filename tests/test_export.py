"""lamina export: ONNX run in onnxruntime and torch.export programs give the PyTorch model's outputs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from lamina.artifacts import read_model
from lamina.cli.main import main

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "digits", "--epochs", "1", "--out", str(out), "--quiet", "model.width=8"]) == 0
    return out


@pytest.mark.skipif(not HAS_ORT, reason="needs onnx, onnxscript and onnxruntime (lamina[export])")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_onnx_in_onnxruntime_matches_pytorch(digits_run):
    import onnxruntime as ort

    assert main(["export", str(digits_run), "--format", "onnx"]) == 0
    model, _ = read_model(digits_run)
    x = model.example_input(5, torch.Generator().manual_seed(1))  # another batch size than the export's
    session = ort.InferenceSession(str(digits_run / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_torch_export_program_matches_pytorch(digits_run, tmp_path):
    out = tmp_path / "m.pt2"
    assert main(["export", str(digits_run), "--format", "torch-export", "--out", str(out)]) == 0
    model, _ = read_model(digits_run)
    program = torch.export.load(str(out))
    x = model.example_input(3, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-6)


def test_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
