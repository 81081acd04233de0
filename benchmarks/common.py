"""What every benchmark records next to its numbers: command, code version, device, versions."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import lamina

ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_kind(device: str) -> str:
    """``cuda`` for any CUDA device string, else ``cpu``: the suffix of a result file's name."""
    return "cuda" if device.startswith("cuda") else "cpu"


def result_path(stem: str, device: str, suffix: str = ".json") -> Path:
    """Where a benchmark writes its result by default: ``benchmarks/results/<stem>_<kind><suffix>``."""
    return ROOT / "benchmarks" / "results" / f"{stem}_{device_kind(device)}{suffix}"


def environment(device: str) -> dict[str, Any]:
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "code_version": code_version(),
        "lamina": lamina.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": name,
        "cpu": cpu_description(),  # machines differ between runs: which CPU, and which vector units torch uses
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def cpu_description() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), torch's vector kernels (AVX2,
    AVX512), and whether bf16 is native (lamina's precision=auto then trains in bf16 on the CPU)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from lamina.training.engine import has_fast_bf16

    bf16 = "native bf16" if has_fast_bf16(torch.device("cpu")) else "no native bf16"
    return f"{model}; {torch.backends.cpu.get_cpu_capability()}; {bf16}"


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "min": min(values), "max": max(values)}


def write(path: str | Path, record: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
