"""Energy counters: RAPL on a fake powercap tree, the labelled estimate, NVML where absent, choosing one."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch

from lamina.energy import counters
from lamina.energy.counters import (
    DEFAULT_CPU_WATTS_PER_CORE,
    Counter,
    CounterUnavailable,
    EstimateCounter,
    NvmlCounter,
    RaplCounter,
    choose_counter,
)
from lamina.errors import LaminaError


def domain(root: Path, folder: str, name: str, uj: int, max_uj: int = 1_000_000) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def powercap(root: Path) -> dict[str, Path]:
    """Two packages, their core/dram sub-domains, a psys domain and an MMIO copy of package 0."""
    return {
        "p0": domain(root, "intel-rapl:0", "package-0", 900_000),
        "p0core": domain(root, "intel-rapl:0:0", "core", 500_000),
        "p0dram": domain(root, "intel-rapl:0:1", "dram", 100_000),
        "p1": domain(root, "intel-rapl:1", "package-1", 200_000, max_uj=2_000_000),
        "psys": domain(root, "intel-rapl:2", "psys", 5_000_000, max_uj=9_000_000),
        "mmio": domain(root, "intel-rapl-mmio:0", "package-0", 900_000),
    }


def set_uj(d: Path, uj: int) -> None:
    (d / "energy_uj").write_text(f"{uj}\n")


def test_rapl_sums_package_domains_only_and_unwraps_each(tmp_path: Path) -> None:
    tree = powercap(tmp_path)
    rapl = RaplCounter(tmp_path)
    assert isinstance(rapl, Counter) and rapl.method == "rapl" and rapl.wrap is None
    assert [d.name for d in rapl.domains] == ["intel-rapl:0", "intel-rapl:1"]
    assert rapl.read() == 0.0
    set_uj(tree["p0"], 950_000)
    set_uj(tree["p1"], 450_000)
    for sub in ("p0core", "p0dram", "psys", "mmio"):  # inside or beside a package: never added
        set_uj(tree[sub], 10)
    assert rapl.read() == pytest.approx(0.05 + 0.25)
    # package 0 wraps at its range of 1 J (950,000 -> 30,000 uJ is +80,000), package 1 at 2 J in the same window
    set_uj(tree["p0"], 30_000)
    set_uj(tree["p1"], 100_000)  # 450,000 -> 100,000 is +1,650,000 uJ
    assert rapl.read() == pytest.approx(0.30 + 0.08 + 1.65)


def test_amd_style_names_are_packages_too(tmp_path: Path) -> None:
    domain(tmp_path, "amd-rapl:0", "package-0", 10)
    domain(tmp_path, "amd-rapl:0:0", "core", 10)
    assert [d.name for d in RaplCounter(tmp_path).domains] == ["amd-rapl:0"]


def test_rapl_unavailable_without_tree_packages_or_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CounterUnavailable, match=r"does not exist"):
        RaplCounter(tmp_path / "missing")
    domain(tmp_path, "intel-rapl:0:0", "core", 10)  # a sub-domain alone is not a package
    with pytest.raises(CounterUnavailable, match=r"no RAPL package domain"):
        RaplCounter(tmp_path)
    domain(tmp_path, "intel-rapl:0", "package-0", 10)
    real = Path.read_text

    def root_only(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", root_only)
    with pytest.raises(CounterUnavailable, match=r"only by root.*CVE-2020-8694"):
        RaplCounter(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_rapl_unreadable_file_mode(tmp_path: Path) -> None:
    d = domain(tmp_path, "intel-rapl:0", "package-0", 10)
    (d / "energy_uj").chmod(0)
    with pytest.raises(CounterUnavailable, match=r"only by root"):
        RaplCounter(tmp_path)


def test_estimate_is_process_cpu_time_times_watts_and_labelled() -> None:
    cpu = [(1.0, 0.5), (3.0, 1.0)]
    t = [10.0, 10.0, 14.0]
    est = EstimateCounter(4.0, gpu_watts=100.0, times=lambda: cpu.pop(0), clock=lambda: t.pop(0))
    assert est.read() == 1.5 * 4.0  # no wall time yet
    assert est.read() == 4.0 * 4.0 + 4.0 * 100.0
    assert est.method == "estimate" and "estimated" in est.note and "100 W for the GPU" in est.note
    default = EstimateCounter()
    assert default.watts_per_core == DEFAULT_CPU_WATTS_PER_CORE and "the default" in default.note
    with pytest.raises(LaminaError):
        EstimateCounter(-1.0)


def test_estimate_of_real_cpu_time_is_monotone() -> None:
    est = EstimateCounter()
    reads = [est.read()]
    x = torch.randn(256, 256)
    for _ in range(5):
        for _ in range(20):
            x = torch.tanh(x @ x.T / 256)
        reads.append(est.read())
    assert all(b >= a for a, b in itertools.pairwise(reads)) and reads[-1] > reads[0]
    user, system = os.times()[:2]
    assert reads[-1] == pytest.approx((user + system) * DEFAULT_CPU_WATTS_PER_CORE, rel=0.05)


def test_nvml_missing_or_failing_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise CounterUnavailable("NVML needs the nvidia-ml-py package: pip install nvidia-ml-py")

    monkeypatch.setattr(counters, "_pynvml", missing)
    with pytest.raises(CounterUnavailable, match=r"nvidia-ml-py"):
        NvmlCounter(0)


def test_nvml_counter_with_a_fake_library(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeNvml:
        NVMLError = RuntimeError
        energy_mj = 12_345

        def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
            return f"h{index}"

        def nvmlDeviceGetName(self, handle: str) -> bytes:
            return b"Fake H100"

        def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
            return self.energy_mj

    fake = FakeNvml()
    monkeypatch.setattr(counters, "_pynvml", lambda: fake)
    c = NvmlCounter(1)
    assert c.device == "gpu 1 (Fake H100)" and c.read() == 12.345 and c.min_interval == 0.1 and c.wrap is None


def test_choose_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    with pytest.raises(LaminaError, match=r"did you mean 'auto'"):
        choose_counter("atuo", cpu)
    with pytest.raises(LaminaError, match=r"needs a CUDA device.*energy.meter=auto"):
        choose_counter("nvml", cpu)
    monkeypatch.setattr(counters, "_pynvml", lambda: (_ for _ in ()).throw(CounterUnavailable("NVML cannot start")))
    with pytest.raises(LaminaError, match=r"nvml is not available: NVML cannot start.*energy.meter=auto") as err:
        choose_counter("nvml", cuda)
    assert "\n" not in str(err.value)
    gpu_estimate = choose_counter("auto", cuda, cpu_watts_per_core=3.0)
    assert gpu_estimate.method == "estimate" and gpu_estimate.gpu_watts == counters.DEFAULT_GPU_WATTS
    assert "estimated" in gpu_estimate.device

    monkeypatch.setattr(counters, "POWERCAP", tmp_path / "none")
    with pytest.raises(LaminaError, match=r"rapl is not available.*energy.meter=auto"):
        choose_counter("rapl", cpu)
    assert choose_counter("auto", cpu).method == "estimate"
    powercap(tmp_path / "pc")
    monkeypatch.setattr(counters, "POWERCAP", tmp_path / "pc")
    assert choose_counter("auto", cpu).method == "rapl" and choose_counter("rapl", cpu).method == "rapl"
    assert choose_counter("estimate", cpu).method == "estimate"
