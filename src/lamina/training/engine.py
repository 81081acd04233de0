"""The thin engine: device, precision, compile and memory format. Knows nothing of callbacks.

A hand-written loop can use it as well as the Trainer (the Lightning Fabric split)::

    engine = Engine.create(device="auto", precision="auto")
    model = engine.setup(model)
    with engine.autocast():
        loss = loss_fn(model(x), y)
    engine.backward(loss); engine.step(optimizer)
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lamina.errors import LaminaError
from lamina.training.distributed import Distributed

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA GPU, else Apple MPS, else CPU; an unavailable device is an error."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LaminaError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LaminaError("--device cuda was asked for but no CUDA GPU is available: use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LaminaError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LaminaError("--device mps was asked for but MPS is not available: use --device cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise LaminaError(f"unsupported device '{name}': use auto, cpu, cuda, cuda:N or mps")
    return dev


def has_fast_bf16(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA GPUs that support it and on CPUs with AVX512-BF16 or AMX;
    elsewhere it is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def enable_determinism() -> None:
    """Deterministic kernels everywhere (errors on ops that have none), no cuDNN autotuning."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Engine:
    """Where and how tensors are computed."""

    device: torch.device
    precision: str = "fp32"  # resolved: bf16 | fp16 | fp32
    compile: bool = False
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)
    dist: Distributed = field(default_factory=Distributed)  # the job of processes (see lamina.training.distributed)

    @classmethod
    def create(
        cls,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        channels_last: bool | None = False,
        threads: int = 0,
        *,
        strategy: str = "none",
        seed: int = 0,
        dist_timeout: float = 600.0,
        sync_batchnorm: bool = False,
    ) -> Engine:
        """``strategy`` other than none joins (or starts) the job torchrun launched: see
        :class:`lamina.training.distributed.Distributed`; under torchrun on CUDA the device is
        ``cuda:LOCAL_RANK``."""
        dist, device = Distributed.start(strategy, device, seed=seed, timeout_s=dist_timeout,
                                         sync_batchnorm=sync_batchnorm)
        dev = resolve_device(device)
        if precision not in PRECISIONS:
            raise LaminaError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
        if precision == "auto":
            precision = "bf16" if has_fast_bf16(dev) else "fp32"
        if precision == "fp16" and dev.type != "cuda":
            raise LaminaError("fp16 training needs a CUDA GPU: use --precision bf16 or fp32 on this device")
        if precision == "fp16" and dist.strategy == "fsdp":
            raise LaminaError("fp16 under fsdp is not supported (its loss scaler cannot see sharded gradients): "
                              "use --precision bf16, which FSDP's mixed-precision policy computes in")
        if dev.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
        if threads > 0:
            torch.set_num_threads(threads)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        return cls(dev, precision, compile, bool(channels_last), scaler, dist)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` on the device (and memory format), sharded in place under ``fsdp``: what the
        optimizer must be built on (FSDP replaces the parameters by their shards). Idempotent."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.strategy == "fsdp":
            model = self.dist.shard(model, self.device, self.amp_dtype)
        return model

    def setup(self, model: nn.Module) -> nn.Module:
        """:meth:`prepare` ``model``; return the module to call.

        With ``compile`` the returned module is the compiled wrapper; keep the original for
        ``state_dict`` (the compiled one shares its parameters). In a multi-process job it is the
        strategy's wrapper (``DistributedDataParallel``; under ``fsdp`` the sharded model itself),
        compiled after wrapping.
        """
        model = self.dist.wrap(self.prepare(model), self.device, self.amp_dtype)
        if self.compile:
            return torch.compile(model)  # type: ignore[return-value]
        return model

    def eval_module(self, module: nn.Module, train_model: nn.Module) -> nn.Module:
        """What evaluation calls: the training module itself in one process; under ``ddp`` and
        ``fsdp`` the bare module (compiled too, with ``compile``), because DDP's forward would
        synchronise buffers with ranks that evaluate a different number of batches (``fsdp``
        evaluates inside :meth:`gathered`)."""
        if self.dist.strategy == "none":
            return train_model
        return torch.compile(module) if self.compile else module  # type: ignore[return-value]

    def gathered(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Every parameter whole while the block runs (``fsdp``; see :meth:`Distributed.gathered`)."""
        return self.dist.gathered(model)

    def close(self) -> None:
        """End the process group this engine started (a no-op in one process)."""
        self.dist.close()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def clip_grad(self, params: Iterator[nn.Parameter] | list[nn.Parameter], max_norm: float, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        if self.scaler:
            self.scaler.unscale_(optimizer)
        params = list(params)
        if self.dist.strategy != "fsdp":
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        from lamina.utils.dist import whole

        # sharded gradients: each rank's part of the norm, summed over the ranks (a collective)
        total = whole(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return total

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def rng_state() -> dict[str, Any]:
    """Every RNG state (Python, NumPy, torch CPU and CUDA) as checkpointable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
