"""``lamina export RUN``: the saved network for other runtimes, through PyTorch's own exporters.

- ``onnx``: ``torch.onnx.export(..., dynamo=True)`` (needs ``pip install lamina[export]``: onnx,
  onnxscript; onnxruntime to run it), with a dynamic batch dimension;
- ``torch-export``: ``torch.export.export`` saved as a ``.pt2`` program (``torch.export.load``).

The exported graph is the network alone: its input is what the network takes (normalised
images, token ids), so a user applies ``model.json``'s ``preprocess`` first, as ``predict`` does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from lamina.artifacts import read_model
from lamina.errors import LaminaError

FORMATS = {"onnx": "model.onnx", "torch-export": "model.pt2"}


def export_run(run: str | Path, *, fmt: str = "onnx", out: str | Path | None = None) -> Path:
    """Export the model of a finished run; returns the file written.

    Args:
        run: the run folder.
        fmt: ``onnx`` or ``torch-export``.
        out: the file to write (default ``RUN/model.onnx`` or ``RUN/model.pt2``).
    """
    if fmt not in FORMATS:
        raise LaminaError(f"unknown export format '{fmt}': use {' or '.join(FORMATS)}")
    folder = Path(run)
    model, _ = read_model(folder)
    path = Path(out) if out else folder / FORMATS[fmt]
    example = model.example_input(2, torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    shapes = ({0: batch},)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' own deprecation and tracing notes
            if fmt == "torch-export":
                program = torch.export.export(model, (example,), dynamic_shapes=shapes)
                torch.export.save(program, str(path))
            else:
                _need("onnx", "onnxscript")
                torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=shapes,
                                  input_names=["input"], output_names=["output"], verbose=False)
    except LaminaError:
        raise
    except OSError as e:
        raise LaminaError(f"cannot write {path}: {e.strerror}") from None
    except Exception as e:  # the exporters raise many types; one line with the cause
        first = (str(e).splitlines() or [""])[0][:160]
        raise LaminaError(f"exporting {folder} to {fmt} failed ({type(e).__name__}: {first}); "
                          "try the other format") from None
    return path


def _need(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise LaminaError(f"ONNX export needs {', '.join(missing)}: pip install {' '.join(missing)} "
                          "(or lamina[export])")
