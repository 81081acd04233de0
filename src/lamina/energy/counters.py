"""Energy counters: where a run's joules come from (NVML on NVIDIA GPUs, RAPL on CPUs, else an estimate).

A counter is anything with ``read() -> float`` (cumulative joules, as the hardware reports them;
they may wrap around) and five attributes that say what the number is:

* ``method``: ``"nvml"``, ``"rapl"`` or ``"estimate"``;
* ``device``: the name of what is measured;
* ``wrap``: the counter's range in joules (it restarts at 0 after it), or None;
* ``min_interval``: the counter's update period in seconds: a difference over a shorter window
  is mostly quantisation, so the meter never reads more often than this;
* ``note``: one line on how the number is produced.

The meter (:mod:`lamina.energy.meter`) only ever takes differences of reads over windows of at
least ``interval`` seconds; it never extrapolates a short sample to a whole run (the mistake of
CodeCarbon issue #117), and a counter that cannot be read is reported as unavailable, not guessed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from lamina.errors import LaminaError, did_you_mean

KINDS = ("auto", "nvml", "rapl", "estimate")  # what energy.meter may say besides "off"
POWERCAP = Path("/sys/class/powercap")

# The estimate's power model. A busy x86 core draws roughly its package's TDP divided by its cores:
# AMD EPYC 7763 280 W / 64 cores = 4.4 W, Xeon Platinum 8380 270 W / 40 = 6.8 W, Core i9-13900K
# 253 W (PL2) / 24 = 10.5 W, a 28 W laptop part with 4 cores 7 W. 10 W per busy core sits at the high
# end on purpose: an estimate that errs should err towards more energy, not less.
DEFAULT_CPU_WATTS_PER_CORE = 10.0
# A CUDA GPU without NVML: its board power taken as the TDP of a common data-centre part (V100 SXM2,
# A100 PCIe and L40S are 300 W, 300 W and 350 W), drawn for the whole wall time the counter exists.
DEFAULT_GPU_WATTS = 300.0


class CounterUnavailable(LaminaError):
    """The counter asked for cannot be read here (no package, no device, no permission)."""


@runtime_checkable
class Counter(Protocol):
    """A cumulative energy counter (see the module docstring for what each attribute means)."""

    method: str
    device: str
    wrap: float | None
    min_interval: float
    note: str

    def read(self) -> float:
        """Cumulative joules since some origin; may wrap around after ``wrap`` joules."""
        ...


# -- NVML -------------------------------------------------------------------------------------------

_NVML: list[Any] = []  # the initialised module, once it has started (NVML stays up for the process)


def _pynvml() -> Any:
    """The initialised ``pynvml`` module (package ``nvidia-ml-py``), or CounterUnavailable saying why."""
    if _NVML:
        return _NVML[0]
    try:
        import pynvml
    except ImportError:
        raise CounterUnavailable("NVML needs the nvidia-ml-py package: pip install nvidia-ml-py") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise CounterUnavailable(f"NVML cannot start here: {e}") from None
    _NVML.append(pynvml)
    return pynvml


def _nvml_handle(index: int) -> tuple[Any, Any]:
    nvml = _pynvml()
    try:
        return nvml, nvml.nvmlDeviceGetHandleByIndex(index)  # a lookup in NVML's table: cheap
    except nvml.NVMLError as e:
        raise CounterUnavailable(f"NVML has no GPU {index}: {e}") from None


class NvmlCounter:
    """The GPU's own energy counter, ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded).

    It is the board's energy (GPU and its memory; not the CPU, DRAM or the rest of the host), kept
    by the GPU itself for Volta and newer. It advances every ~20-100 ms (Zeus, "Thermally stable
    profiling", ml.energy: "NVML updates its energy counters ... approximately every 100 ms"), so
    ``min_interval`` is 0.1 s. Prefer it to integrating sampled power: Yang et al., "Part-time
    Power Measurements: nvidia-smi's Lack of Attention" (arXiv 2312.02741) find that the A100/H100
    power sensors sample only ~25 % of the runtime, so integrated power is a noisy check and the
    counter is the number. It is a uint64 of millijoules (2^64 mJ is 584 million years at 1 kW):
    it does not wrap, and a smaller read means the driver reloaded (the meter re-bases).

    Args:
        index: the NVML device index (not always the CUDA index: see :func:`nvml_index`).
    """

    method = "nvml"
    wrap: float | None = None
    min_interval = 0.1

    def __init__(self, index: int) -> None:
        self._nvml, self._handle = _nvml_handle(index)
        name = self._nvml.nvmlDeviceGetName(self._handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        self.index, self.device = index, f"gpu {index} ({name})"
        self.note = f"NVML total energy counter of {self.device} (board only: CPU and DRAM not counted)"
        try:
            self.read()
        except self._nvml.NVMLError as e:  # pre-Volta GPUs have no energy counter
            raise CounterUnavailable(f"NVML cannot read the energy counter of {self.device}: {e}") from None

    def read(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0


def sampled_power_w(index: int) -> float:
    """The GPU's instantaneous board power in watts (``NVML_FI_DEV_POWER_INSTANT``), for checks only.

    ``nvmlDeviceGetPowerUsage`` is a 1 s average on Ampere and newer, too smooth to integrate over a
    few seconds; the field value is the sensor's latest sample. It sees ~25 % of the runtime on
    A100/H100 (Yang et al., arXiv 2312.02741), so its integral is a noisy check of :class:`NvmlCounter`.

    Args:
        index: the NVML device index.
    """
    nvml, handle = _nvml_handle(index)
    (value,) = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])
    if value.nvmlReturn != nvml.NVML_SUCCESS:
        raise CounterUnavailable(f"NVML has no instantaneous power for GPU {index}: {nvml.nvmlErrorString(value.nvmlReturn)}")
    kinds = {nvml.NVML_VALUE_TYPE_DOUBLE: "dVal", nvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
             nvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal", nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
             nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal", nvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal"}
    return float(getattr(value.value, kinds.get(value.valueType, "uiVal"))) / 1000.0  # milliwatts


def nvml_index(device: torch.device) -> int:
    """The NVML index of a CUDA device: NVML numbers every GPU, CUDA only the visible ones, in
    ``CUDA_VISIBLE_DEVICES`` order, so the two are matched by UUID (else by the plain index)."""
    cuda_index = device.index if device.index is not None else torch.cuda.current_device()
    nvml = _pynvml()
    try:
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        return int(nvml.nvmlDeviceGetIndex(handle))
    except (AttributeError, RuntimeError, nvml.NVMLError):
        return cuda_index


# -- RAPL -------------------------------------------------------------------------------------------

_PACKAGE = re.compile(r"^(intel|amd)-rapl:(\d+)$")  # a top-level domain; "intel-rapl:0:0" is inside it


class RaplCounter:
    """The CPU packages' RAPL energy counters, from the powercap tree (``energy_uj``).

    Only top-level package domains are summed: ``intel-rapl:N`` (or ``amd-rapl:N``) whose ``name``
    is ``package-*``. Sub-domains ``intel-rapl:N:M`` (core, uncore, dram) are inside their package,
    and adding them counts the same joules twice (CodeCarbon issue #1274, multi-die AMD); ``psys``
    covers the whole platform and ``intel-rapl-mmio:N`` is a second view of package N, so both are
    left out too. Each package wraps at its own ``max_energy_range_uj``; since several packages can
    wrap in one window, their sum cannot be unwrapped afterwards, so each is unwrapped here against
    its own range and ``read`` returns their exact sum (``wrap`` is then None). RAPL measures the
    whole package (every process on it), updated about every millisecond. The files are often
    root-only (since CVE-2020-8694, Platypus); unreadable ones make the counter unavailable.

    Args:
        root: the powercap folder (None: ``/sys/class/powercap``; a fake tree in tests).
    """

    method = "rapl"
    wrap: float | None = None
    min_interval = 0.01

    def __init__(self, root: str | Path | None = None) -> None:
        root = Path(root) if root is not None else POWERCAP
        if not root.is_dir():
            raise CounterUnavailable(f"no RAPL here: {root} does not exist")
        self.domains: list[Path] = []
        self._ranges: list[float] = []
        for d in sorted(root.iterdir(), key=lambda p: p.name):
            if not _PACKAGE.match(d.name) or not (d / "energy_uj").exists():
                continue
            name = _read_text(d / "name") if (d / "name").exists() else "package"
            if not name.startswith("package"):
                continue
            self.domains.append(d)
            rng = d / "max_energy_range_uj"
            self._ranges.append(float(_read_text(rng)) / 1e6 if rng.exists() else 0.0)
        if not self.domains:
            raise CounterUnavailable(f"no RAPL package domain under {root}")
        self.device = "cpu (" + ", ".join(d.name for d in self.domains) + ")"
        self.note = (f"RAPL energy counters of {len(self.domains)} CPU package(s), summed (whole package: every "
                     "process on it; DRAM and GPUs not counted)")
        self._last = self._raw()
        self._total = 0.0

    def _raw(self) -> list[float]:
        return [float(_read_text(d / "energy_uj")) / 1e6 for d in self.domains]

    def read(self) -> float:
        raw = self._raw()
        for prev, now, rng in zip(self._last, raw, self._ranges, strict=True):
            delta = now - prev
            self._total += delta + rng if delta < 0 and rng > 0 else max(delta, 0.0)
        self._last = raw
        return self._total


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError:
        raise CounterUnavailable(f"{path} is readable only by root (since CVE-2020-8694)") from None
    except OSError as e:
        raise CounterUnavailable(f"cannot read {path}: {e.strerror or e}") from None


# -- the labelled estimate ----------------------------------------------------------------------------

class EstimateCounter:
    """An estimate where no counter exists: the process's CPU time times a power per busy core.

    joules = (user + system CPU seconds of this process, all its threads) x ``cpu_watts_per_core``
    [+ wall seconds since the counter was made x ``gpu_watts``, for a CUDA device without NVML].
    The default 10 W per busy core is the TDP per core of current x86 parts at the high end (see
    ``DEFAULT_CPU_WATTS_PER_CORE``); the GPU model is its board power for the whole wall time
    (``DEFAULT_GPU_WATTS``, 300 W). Idle power, DRAM, other processes and data-loader worker
    processes are not counted. It is always labelled ``estimate``, never presented as measured.

    Args:
        cpu_watts_per_core: watts per busy core; 0 takes the default.
        gpu_watts: the GPU's assumed board power; 0: no GPU term.
        device: the name of what is estimated.
        times: returns (user, system) CPU seconds of this process (injected in tests).
        clock: wall seconds, for the GPU term (injected in tests).
    """

    method = "estimate"
    wrap: float | None = None
    min_interval = 0.01  # os.times() counts in clock ticks of 10 ms

    def __init__(self, cpu_watts_per_core: float = 0.0, *, gpu_watts: float = 0.0, device: str = "cpu",
                 times: Callable[[], tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (cpu_watts_per_core >= 0 and gpu_watts >= 0):
            raise LaminaError(f"power model must be 0 or more watts, not {cpu_watts_per_core} W per core and {gpu_watts} W")
        self.watts_per_core = cpu_watts_per_core or DEFAULT_CPU_WATTS_PER_CORE
        self.gpu_watts, self.device = gpu_watts, device
        self._times = times or _process_cpu_seconds
        self._clock = clock
        self._t0 = clock()
        source = "energy.cpu_watts_per_core" if cpu_watts_per_core else "the default"
        self.note = (f"estimated: process CPU time x {self.watts_per_core:g} W per busy core ({source})"
                     + (f" + wall time x {gpu_watts:g} W for the GPU (no NVML)" if gpu_watts else "")
                     + "; idle power, DRAM and other processes not counted")

    def read(self) -> float:
        user, system = self._times()
        gpu = (self._clock() - self._t0) * self.gpu_watts if self.gpu_watts else 0.0
        return (user + system) * self.watts_per_core + gpu


def _process_cpu_seconds() -> tuple[float, float]:
    t = os.times()
    return t.user, t.system


# -- choosing one --------------------------------------------------------------------------------------

def choose_counter(kind: str, device: torch.device, *, cpu_watts_per_core: float = 0.0) -> Counter:
    """The counter ``energy.meter`` asks for on ``device``.

    ``auto``: NVML on a CUDA device when it works, else RAPL when readable, else the labelled
    estimate (with a GPU power model on a CUDA device). An explicit ``nvml`` or ``rapl`` that cannot
    be read is a one-line error saying why. ``off`` is the caller's business (no counter at all).

    Args:
        kind: auto | nvml | rapl | estimate.
        device: the training device.
        cpu_watts_per_core: the estimate's watts per busy core (0: the default).

    >>> choose_counter("estimate", torch.device("cpu")).method
    'estimate'
    """
    if kind not in KINDS:
        raise LaminaError(f"unknown energy meter '{kind}': {did_you_mean(kind, (*KINDS, 'off'))}")
    cuda = device.type == "cuda"
    if kind in ("nvml", "auto") and cuda:
        try:
            return NvmlCounter(nvml_index(device))
        except CounterUnavailable as e:
            if kind == "nvml":
                raise LaminaError(f"energy.meter=nvml is not available: {e}", hint="use energy.meter=auto") from None
    elif kind == "nvml":
        raise LaminaError(f"energy.meter=nvml needs a CUDA device, not {device}", hint="use energy.meter=auto")
    if kind == "rapl" or (kind == "auto" and not cuda):
        try:
            return RaplCounter()
        except CounterUnavailable as e:
            if kind == "rapl":
                raise LaminaError(f"energy.meter=rapl is not available: {e}", hint="use energy.meter=auto") from None
    name = f"{device} (estimated)" if cuda else "cpu (estimated)"
    return EstimateCounter(cpu_watts_per_core, gpu_watts=DEFAULT_GPU_WATTS if cuda else 0.0, device=name)
