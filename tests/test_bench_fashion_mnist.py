"""benchmarks/fashion_mnist.py at toy size: the JSON it writes, its summary arithmetic, its profile."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lamina.config import DataConfig
from lamina.data.base import build_dataset
from lamina.errors import LaminaError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fashion_mnist.py"
CONTENDERS = {"lamina", "pytorch", "lightning"}


@pytest.fixture(scope="module")
def needs_data() -> None:
    pytest.importorskip("lightning")
    try:
        build_dataset(DataConfig(name="fashion-mnist", val_fraction=0.0))
    except LaminaError:
        pytest.skip("Fashion-MNIST is not on this machine (lamina data fetch fashion-mnist)")


def _run(*args: str, device: str = "cpu") -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--toy", "--device", device, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _number_or_null(v: object) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def test_toy_run_writes_the_json_schema(needs_data, tmp_path):
    out = tmp_path / "fm.json"
    _run("--seeds", "1", "--out", str(out))
    r = json.loads(out.read_text())
    for key in ("device", "torch", "lamina", "code_version", "command", "seeds", "settings", "summary", "runs"):
        assert key in r, key
    assert r["seeds"] == [0] and r["settings"]["toy"] is True
    s = r["summary"]
    for key in ("time_to_92_s", "time_to_93_s", "time_to_94_s"):
        assert set(s[key]) == CONTENDERS and all(_number_or_null(v) for v in s[key].values())
    for key in ("final_acc_mean", "final_acc_std"):
        assert set(s[key]) == CONTENDERS and all(_number_or_null(v) for v in s[key].values())
    assert _number_or_null(s["trainer_overhead_pct"]) and s["trainer_overhead_pct"] is not None
    for key in ("speedup_to_92", "speedup_to_93"):
        assert set(s[key]) == {"vs_pytorch", "vs_lightning"}
        assert all(_number_or_null(v) for v in s[key].values())
    assert r["bench_seconds"] > 0
    assert {run["contender"] for run in r["runs"]} == CONTENDERS
    for run in r["runs"]:
        assert run["seed"] == 0 and run["epochs"] and _number_or_null(run["compile_seconds"])
        assert all(len(e) == 2 and e[0] > 0 and 0 <= e[1] <= 1 for e in run["epochs"])
        assert [e[0] for e in run["epochs"]] == sorted(e[0] for e in run["epochs"])  # cumulative training time
        assert run["final_acc"] == run["epochs"][-1][1]
    by = {run["contender"]: run for run in r["runs"]}
    assert by["lamina"]["final_acc"] == pytest.approx(by["lamina"]["run_test_accuracy"])  # what the run reports
    # (b) and (c) train the same network on the same batches with the same optimizer: the same numbers
    assert by["pytorch"]["final_acc"] == by["lightning"]["final_acc"]
    # (d), lamina's Trainer on (b)'s everything, ends each pair with (b)'s weights, bit for bit
    pairs = r["overhead_pairs"]
    assert len(pairs) == 2 and [p["seed"] for p in pairs] == [0, 1]
    assert all(p["same_weights"] and p["pytorch_s"] > 0 and p["lamina_trainer_s"] > 0 for p in pairs)
    assert s["trainer_same_weights"] is True
    assert s["trainer_overhead_pct"] == pytest.approx(statistics.median(p["overhead_pct"] for p in pairs))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_toy_run_on_cuda_compiles_once_and_keeps_the_identities(needs_data, tmp_path):
    out = tmp_path / "fm.json"
    _run("--out", str(out), device="cuda")
    r = json.loads(out.read_text())
    s = r["summary"]
    assert not r["device"].startswith("cpu") and s["compile_seconds"] > 0  # the recipe compiles on CUDA
    assert all(run["compile_seconds"] == 0 for run in r["runs"] if run["contender"] != "lamina")
    assert s["trainer_same_weights"] is not None and s["final_acc_mean"]["lamina"] > 0.5


def test_profile_writes_the_ranges_of_both_loops(needs_data, tmp_path):
    out = tmp_path / "profile.txt"
    _run("--profile", "--profile-steps", "4", "--out", str(out))
    text = out.read_text()
    assert "(a) lamina" in text and "(b) PyTorch" in text
    for rng in ("data", "forward", "backward", "optimizer"):
        assert text.count(f"\n{rng} ") == 2, rng


def test_summary_arithmetic():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fashion_mnist as fm
    except SystemExit:  # no lightning
        pytest.skip("needs lightning")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def run(contender, seed, epochs):
        return {"contender": contender, "seed": seed, "epochs": epochs, "compile_seconds": 0.0,
                "final_acc": epochs[-1][1]}

    runs = [run("lamina", 0, [[10, 0.90], [20, 0.925]]), run("pytorch", 0, [[30, 0.91], [60, 0.921]]),
            run("lightning", 0, [[35, 0.90], [70, 0.91]]),
            run("lamina", 1, [[10, 0.921], [20, 0.93]]), run("pytorch", 1, [[30, 0.92]]),
            run("lightning", 1, [[32, 0.92]])]
    pairs = [{"overhead_pct": v, "same_weights": True} for v in (5.0, -1.0, 0.5)]
    s, spread = fm.summarize(runs, pairs)
    assert s["time_to_92_s"] == {"lamina": 15.0, "pytorch": 45.0, "lightning": None}  # None: one seed never got there
    assert spread["time_to_92_s"]["lightning"] == [None, 32]
    assert s["time_to_93_s"]["lamina"] is None and s["time_to_94_s"]["pytorch"] is None
    assert s["speedup_to_92"] == {"vs_pytorch": 3.0, "vs_lightning": None}
    assert s["speedup_to_93"] == {"vs_pytorch": None, "vs_lightning": None}
    assert s["speedup_to_92_at_least"]["vs_lightning"] == pytest.approx((70 + 32) / 2 / 15)
    assert s["trainer_overhead_pct"] == 0.5 and spread["trainer_overhead_pct"] == [5.0, -1.0, 0.5]  # the median
    assert s["trainer_same_weights"] is True
    assert fm.summarize(runs, [*pairs, {"overhead_pct": 0.0, "same_weights": False}])[0]["trainer_same_weights"] is False
    assert s["final_acc_mean"]["lamina"] == pytest.approx((0.925 + 0.93) / 2)
    budget = fm.Budget(epochs=5, max_seconds=100, stop_at=0.92)
    assert budget.reason([[30, 0.9]]) is None and budget.reason([[40, 0.9], [80, 0.91]]) == "max_seconds"
    assert budget.reason([[30, 0.93]]) == "target" and fm.Budget(1, 1e9, 1.0).reason([[1, 0.5]]) == "epochs"


def test_recipe_sweep_parses_variants():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import recipe_sweep
    except SystemExit:  # no lightning (it imports fashion_mnist)
        pytest.skip("needs lightning")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert recipe_sweep.parse("epochs=5 model.width=24") == (5, ["model.width=24"])
    assert recipe_sweep.parse("") == (None, [])
