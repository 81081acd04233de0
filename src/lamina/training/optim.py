"""Optimizers by name, with weight decay kept off norm and bias parameters."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from lamina.registry import Registry

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


def param_groups(model: nn.Module | Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups of ``model``'s parameters (or of a list of them): weights that decay, and 1-D
    parameters (norm scales, biases) that do not."""
    decay, no_decay = [], []
    for p in model.parameters() if isinstance(model, nn.Module) else model:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _fused_ok(model: nn.Module, *, cpu: bool = False) -> bool:
    """The fused kernel where every parameter is on CUDA (or, with ``cpu``, on the CPU too)."""
    kinds = {"cuda", "cpu"} if cpu else {"cuda"}
    return all(p.device.type in kinds for p in model.parameters())


@OPTIMIZERS.register("sgd")
def sgd(model: nn.Module, *, lr: float, weight_decay: float, momentum: float, beta2: float = 0.999
        ) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (fused kernel on CUDA)."""
    return torch.optim.SGD(
        param_groups(model, weight_decay),
        lr=lr,
        momentum=momentum,
        nesterov=momentum > 0,
        fused=_fused_ok(model) or None,
    )


@OPTIMIZERS.register("adamw")
def adamw(model: nn.Module, *, lr: float, weight_decay: float, momentum: float, beta2: float = 0.999
          ) -> torch.optim.Optimizer:
    """AdamW; ``momentum`` is beta1 (fused kernel on CUDA and on the CPU, where it took a small
    Transformer's optimizer step from 6.6 to 1.4 ms)."""
    return torch.optim.AdamW(
        param_groups(model, weight_decay),
        lr=lr,
        betas=(momentum, beta2),
        fused=_fused_ok(model, cpu=True) or None,
    )


# Peak learning rates that work across lamina's models, per 256 examples in a batch.
_DEFAULT_LR_PER_256 = {"sgd": 0.1, "adamw": 2e-3, "muon": 2e-3}  # muon: RMS-matched to AdamW


def default_lr(name: str, batch_size: int) -> float:
    """Linear scaling for SGD, square-root scaling for AdamW and Muon, from a 256-example reference."""
    base = _DEFAULT_LR_PER_256[name]
    ratio = batch_size / 256
    return base * (ratio if name == "sgd" else math.sqrt(ratio))


def create_optimizer(
    name: str, model: nn.Module, *, lr: float, weight_decay: float, momentum: float, beta2: float = 0.999
) -> torch.optim.Optimizer:
    """A registered optimizer for ``model`` (``beta2``: Adam's second-moment decay; SGD ignores it)."""
    return OPTIMIZERS.get(name)(model, lr=lr, weight_decay=weight_decay, momentum=momentum, beta2=beta2)


def muon_params(model: nn.Module) -> list[nn.Parameter]:
    """The hidden weight matrices Muon should update: the 2-D weights inside the network, not those of
    embeddings or of the output head (``model.head``, which a language model ties to its embedding)."""
    outside = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        outside |= {id(p) for p in head.parameters()}
    return [p for p in model.parameters() if p.requires_grad and p.ndim == 2 and id(p) not in outside]


# Newton-Schulz coefficients of torch.optim.Muon (Keller Jordan's quintic iteration).
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


def orthogonalize(g: torch.Tensor, *, steps: int = 5, dtype: torch.dtype = torch.float32, eps: float = 1e-7
                  ) -> torch.Tensor:
    """``g``'s nearest semi-orthogonal matrix, roughly (U S' V^T with S' in about [0.5, 1.5]), by
    torch.optim.Muon's quintic Newton-Schulz iteration, computed in ``dtype``.

    torch's Muon always computes it in bf16, right on a GPU, but on a CPU without bf16 arithmetic
    (AVX2) that made a small Transformer's training step several times slower; lamina uses fp32 there."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the hidden weight matrices and AdamW for the rest, as one optimizer.

    Muon (Jordan et al. 2024) orthogonalises each matrix's Nesterov momentum (:func:`orthogonalize`);
    with Moonshot's scaling (the update times ``0.2 sqrt(max(rows, cols))``, Liu et al. 2025, "Muon
    is Scalable for LLM Training", ``adjust_lr_fn="match_rms_adamw"`` in torch.optim.Muon) its update
    has AdamW's RMS, so both halves share one learning rate and one weight decay, and a schedule
    scales both. Embeddings, the head, norms, biases and conv kernels (not 2-D) stay with AdamW (a
    ``torch.optim.AdamW`` that shares this optimizer's groups and state), as Muon's authors advise.
    The Muon step is torch.optim.Muon's (tested equal to it in bf16), with the Newton-Schulz
    iteration in fp32 on a CPU. Under FSDP each matrix's update is gathered whole, orthogonalised, and
    cut back to this rank's shard. ``state_dict`` is one ordinary optimizer state.
    """

    def __init__(self, model: nn.Module, *, lr: float, weight_decay: float, momentum: float, beta2: float,
                 muon_momentum: float = 0.95, ns_dtype: torch.dtype | None = None) -> None:
        hidden = muon_params(model)
        ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        # AdamW's groups first: param_groups[0]["lr"] is the learning rate the logs show.
        self._adam = torch.optim.AdamW([g for g in param_groups(rest, weight_decay) if g["params"]], lr=lr,
                                       betas=(momentum, beta2), fused=_fused_ok(model, cpu=True) or None)
        muon = [{"params": hidden, "weight_decay": weight_decay, "muon": True}] if hidden else []
        super().__init__(self._adam.param_groups + muon, {"lr": lr, "momentum": muon_momentum, "muon": False})
        self.ns_dtype = ns_dtype
        self._bind()

    def _bind(self) -> None:
        """Point the AdamW half at this optimizer's groups and state (after init and every load)."""
        self._adam.param_groups = [g for g in self.param_groups if not g["muon"]]
        self._adam.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._bind()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._adam.step()
        for group in self.param_groups:
            if not group["muon"]:
                continue
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                dtype = self.ns_dtype or (torch.bfloat16 if p.device.type == "cuda" else torch.float32)
                update = p.grad.lerp(buf, mu)  # Nesterov
                if isinstance(update, DTensor):  # FSDP: orthogonalise the whole matrix, keep this rank's shard
                    whole = orthogonalize(update.full_tensor(), dtype=dtype)
                    update = distribute_tensor(whole, update.device_mesh, update.placements, src_data_rank=None)
                else:
                    update = orthogonalize(update, dtype=dtype)
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape[0], p.shape[1])))
        return loss


@OPTIMIZERS.register("muon")
def muon(model: nn.Module, *, lr: float, weight_decay: float, momentum: float, beta2: float = 0.999
         ) -> torch.optim.Optimizer:
    """Muon for the hidden weight matrices and AdamW (``momentum`` as beta1) for the rest, at one
    learning rate (:class:`MuonAdamW`)."""
    return MuonAdamW(model, lr=lr, weight_decay=weight_decay, momentum=momentum, beta2=beta2)
