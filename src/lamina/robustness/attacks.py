"""Adversarial attacks as pure functions of a classifier, its inputs and labels.

An attack sees the model in **raw input units** (images: pixel values in [0, 1], the raw
``uint8`` divided by ``preprocess.scale``): :class:`RawModel` puts the run's normalisation (and
its test-time flips) inside the model, so ε is a fraction of the pixel range whatever the
normalisation statistics, and the returned examples are valid images.

- :func:`fgsm`: one signed-gradient step (Goodfellow et al. 2015); with ``random_start`` it is
  FGSM-RS (Wong et al. 2020, "Fast is better than free"): δ ~ U(-ε, ε), one step of α, projected.
- :func:`pgd`: projected gradient descent (Madry et al. 2018) under L∞ (signed steps, clamped to
  the ε-box) or L2 (normalised-gradient steps, projected onto the ε-ball), with random restarts.

Both maximise the fp32 cross-entropy of the model's outputs (logits or log-probabilities: the
cross-entropy of log-probabilities is their NLL) with :func:`torch.autograd.grad` with respect to
δ only, so no parameter's ``.grad`` is touched; the model runs under ``autocast`` (e.g. the
engine's bf16) while δ stays fp32. The model's mode is the caller's: eval to evaluate, train for
adversarial training. Every returned example lies inside the ε-ball around ``x`` and inside
``[lower, upper]`` (``x`` itself must lie in that range).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lamina.data.base import Preprocess
from lamina.errors import LaminaError, did_you_mean
from lamina.registry import Registry
from lamina.tasks.classify import class_log_probs

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]
Bound = float | Tensor
NORMS = ("linf", "l2")


class RawModel(nn.Module):
    """A classifier that takes raw inputs: ``(u - mean) / std`` per channel (dim 1), then the model.

    Returns log class probabilities (B, K) in fp32, averaged over mirror images when the run used
    test-time flips, exactly as :class:`lamina.artifacts.Classifier` scores a normalised batch.

    Args:
        model: the network, taking normalised inputs.
        preprocess: the run's :class:`~lamina.data.base.Preprocess` (``mean``/``std`` are used;
            ``scale`` is the caller's: inputs are already divided by it).
        tta_flip: average the probabilities of each image and its mirror image.

    >>> import torch
    >>> raw = RawModel(torch.nn.Flatten(), Preprocess(mean=(0.5,), std=(0.25,)))
    >>> round(raw(torch.full((1, 1, 2), 0.75)).exp().sum().item(), 4)
    1.0
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, tta_flip: bool = False) -> None:
        super().__init__()
        if preprocess.kind == "tokens":
            raise LaminaError("attacks need a classifier with continuous inputs; this model takes token ids")
        self.model, self.tta_flip = model, bool(tta_flip)
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32), persistent=False)

    def normalise(self, u: Tensor) -> Tensor:
        """Raw inputs (B, C, ...) -> the model's inputs."""
        shape = (1, -1) + (1,) * (u.dim() - 2)
        return (u - self.mean.to(u.device).view(shape)) / self.std.to(u.device).view(shape)

    def forward(self, u: Tensor) -> Tensor:
        return class_log_probs(self.model, self.normalise(u), tta_flip=self.tta_flip)


def input_bounds(preprocess: Preprocess, modality: str, data: Tensor | None = None) -> tuple[float, float]:
    """The range ``(lower, upper)`` of raw inputs an attack must stay in.

    Images: ``(0.0, 1.0)`` (pixels divided by ``preprocess.scale``); audio: ``(-1.0, 1.0)``, full-scale
    waveforms. Other modalities (signals,
    vectors) have no natural range: it is the min and max of ``data``, raw examples as a split
    stores them (e.g. ``ds.train.x``), divided by ``preprocess.scale``, over every entry.

    Args:
        preprocess: the run's preprocessing.
        modality: ``image``, ``signal`` or ``vector`` (``text``: an error).
        data: raw examples, needed for every modality but images.
    """
    if preprocess.kind == "tokens" or modality == "text":
        raise LaminaError("attacks need a classifier with continuous inputs; this model takes token ids (text)")
    if modality == "image":
        return 0.0, 1.0
    if modality == "audio":  # waveforms in [-1, 1] (full scale)
        return -1.0, 1.0
    if data is None or not isinstance(data, Tensor) or data.numel() == 0:
        raise LaminaError(f"the input range of {modality} data is that of its examples: pass them as data=")
    u = data.float() / preprocess.scale
    lo, hi = float(u.min()), float(u.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise LaminaError(f"the examples span [{lo}, {hi}]: an attack needs a finite range of positive width")
    return lo, hi


def max_eps(norm: str, lower: float, upper: float, dims: int) -> float:
    """The largest meaningful ε: the width of the input range (L∞), or the diameter of the range
    box in ``dims`` dimensions (L2); any larger ball holds no more inputs."""
    span = upper - lower
    return span if norm == "linf" else span * math.sqrt(dims)


# -- the attacks ---------------------------------------------------------------------------------

def _check(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise LaminaError(f"unknown norm '{norm}': {did_you_mean(norm, NORMS)}")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise LaminaError(f"eps must be a positive number of raw input units, got {eps}")


def _per_example(v: Tensor) -> Tensor:
    """Per-example L2 norms (B,) broadcastable back over v's example dims."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def _rand(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None, kind: str) -> Tensor:
    device = generator.device if generator is not None else like.device
    fn = torch.rand if kind == "uniform" else torch.randn
    return fn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device)


def _random_delta(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """δ uniform in the ε-ball: the box for L∞; for L2 a uniform direction at radius ε·U^(1/d)."""
    if norm == "linf":
        return (2 * _rand(x.shape, x, generator, "uniform") - 1) * eps
    direction = _rand(x.shape, x, generator, "normal")
    direction = direction / _per_example(direction).clamp_min(1e-12)
    radius = _rand((len(x),), x, generator, "uniform") ** (1.0 / x[0].numel())
    return direction * eps * radius.view(-1, *([1] * (x.dim() - 1)))


def _project(x: Tensor, delta: Tensor, eps: float, norm: str, lower: Bound, upper: Bound) -> Tensor:
    """δ projected onto the ε-ball, then x + δ clamped to [lower, upper] (which only shrinks |δ|
    coordinate by coordinate, so it stays in the ball): returns the new δ."""
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _per_example(delta).clamp_min(1e-12)).clamp(max=1.0)
    return _clamp(x + delta, lower, upper) - x


def _clamp(u: Tensor, lower: Bound, upper: Bound) -> Tensor:
    lo = lower if isinstance(lower, Tensor) else torch.tensor(float(lower), device=u.device)
    hi = upper if isinstance(upper, Tensor) else torch.tensor(float(upper), device=u.device)
    return torch.maximum(torch.minimum(u, hi.to(u.device, u.dtype)), lo.to(u.device, u.dtype))


def _gradient(model: nn.Module, x: Tensor, delta: Tensor, y: Tensor, autocast: Autocast) -> Tensor:
    """d(summed fp32 cross-entropy)/dδ, and nothing else (no parameter .grad)."""
    delta = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast():
            out = model(x + delta)
        loss = F.cross_entropy(out.float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
    return grad


def _step(delta: Tensor, grad: Tensor, alpha: float, norm: str) -> Tensor:
    if norm == "linf":
        return delta + alpha * grad.sign()
    return delta + alpha * grad / _per_example(grad).clamp_min(1e-12)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", lower: Bound, upper: Bound,
         random_start: bool = False, step_size: float | None = None, autocast: Autocast = contextlib.nullcontext,
         generator: torch.Generator | None = None) -> Tensor:
    """The fast gradient (sign) method: one step up the loss, projected into the ε-ball and the range.

    Args:
        model: takes ``x``'s units and returns logits or log-probabilities (B, K).
        x: clean inputs (B, ...), inside ``[lower, upper]``.
        y: their labels (B,).
        eps: the radius of the ball, in ``x``'s units.
        norm: ``linf`` (a signed step) or ``l2`` (a step along the normalised gradient).
        lower, upper: the input range (numbers, or tensors broadcastable to ``x``).
        random_start: FGSM-RS (Wong et al. 2020): start from δ uniform in the ball.
        step_size: the step as a fraction of ``eps``; None: 1.0, or 1.25 with ``random_start``.
        autocast: the context the model runs under (δ and the loss stay fp32).
        generator: the random start's randomness (None: the global generator).

    Returns:
        the adversarial examples, fp32, detached, the shape of ``x``.
    """
    _check(eps, norm)
    x = x.detach().float()
    alpha = eps * (step_size if step_size is not None else 1.25 if random_start else 1.0)
    delta = _random_delta(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    delta = _project(x, delta, eps, norm, lower, upper)
    delta = _step(delta, _gradient(model, x, delta, y, autocast), alpha, norm)
    return (x + _project(x, delta, eps, norm, lower, upper)).detach()


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, step_size: float | None = None,
        norm: str = "linf", restarts: int = 1, random_start: bool = True, lower: Bound, upper: Bound,
        autocast: Autocast = contextlib.nullcontext, generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient descent (Madry et al. 2018): ``steps`` steps up the loss, each projected.

    With ``restarts`` > 1 the attack runs again from new random starts and keeps, per example, the
    first restart that makes it misclassified (else the one of highest loss): never weaker than
    its first restart, which is the single-restart attack with the same ``generator``.

    Args:
        model: takes ``x``'s units and returns logits or log-probabilities (B, K).
        x: clean inputs (B, ...), inside ``[lower, upper]``.
        y: their labels (B,).
        eps: the radius of the ball, in ``x``'s units.
        steps: gradient steps per restart.
        step_size: each step as a FRACTION of ``eps``; None: 2.5 / steps (Madry et al.), so the
            steps together can cross the ball more than once.
        norm: ``linf`` (signed steps, clamp to the ε-box) or ``l2`` (normalised-gradient steps,
            projection onto the ε-ball per example; random starts uniform in the ball).
        restarts: independent attacks per example (each from a random start when ``random_start``).
        random_start: start from δ uniform in the ball (else from δ = 0).
        lower, upper: the input range (numbers, or tensors broadcastable to ``x``).
        autocast: the context the model runs under (δ and the loss stay fp32).
        generator: the random starts' randomness (None: the global generator).

    Returns:
        the adversarial examples, fp32, detached, the shape of ``x``.
    """
    _check(eps, norm)
    if steps < 1 or restarts < 1:
        raise LaminaError(f"pgd needs at least 1 step and 1 restart, got steps={steps}, restarts={restarts}")
    x = x.detach().float()
    alpha = eps * (step_size if step_size is not None else 2.5 / steps)
    best, best_loss = x.clone(), torch.full((len(x),), -math.inf, device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        delta = _random_delta(x, eps, norm, generator) if random_start else torch.zeros_like(x)
        delta = _project(x, delta, eps, norm, lower, upper)
        for _ in range(steps):
            delta = _project(x, _step(delta, _gradient(model, x, delta, y, autocast), alpha, norm),
                             eps, norm, lower, upper)
        adv = (x + delta).detach()
        if restarts == 1:
            return adv
        with torch.no_grad(), autocast():
            out = model(adv)
        loss = F.cross_entropy(out.float(), y, reduction="none")
        wrong = out.argmax(dim=1) != y
        take = ~fooled & (wrong | (loss > best_loss))
        best[take], best_loss[take] = adv[take], loss[take]
        fooled |= wrong
    return best


# -- a registry of attacks with one calling convention ------------------------------------------

class AttackFn(Protocol):
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, lower: Bound,
                 upper: Bound, steps: int, restarts: int, step_size: float | None, random_start: bool | None,
                 autocast: Autocast, generator: torch.Generator | None) -> Tensor: ...


ATTACKS: Registry[AttackFn] = Registry("attack")


def _fgsm_entry(random: bool) -> AttackFn:
    def run(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, lower: Bound, upper: Bound,
            steps: int, restarts: int, step_size: float | None, random_start: bool | None, autocast: Autocast,
            generator: torch.Generator | None) -> Tensor:
        # one step whatever ``steps``/``restarts`` say: that is what FGSM is
        return fgsm(model, x, y, eps=eps, norm=norm, lower=lower, upper=upper, random_start=random,
                    step_size=step_size, autocast=autocast, generator=generator)

    return run


def _pgd_entry(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, lower: Bound, upper: Bound,
               steps: int, restarts: int, step_size: float | None, random_start: bool | None, autocast: Autocast,
               generator: torch.Generator | None) -> Tensor:
    return pgd(model, x, y, eps=eps, steps=steps, step_size=step_size, norm=norm, restarts=restarts,
               random_start=True if random_start is None else random_start, lower=lower, upper=upper,
               autocast=autocast, generator=generator)


ATTACKS.register("fgsm", _fgsm_entry(False))
ATTACKS.register("fgsm-rs", _fgsm_entry(True))
ATTACKS.register("pgd", _pgd_entry)


def attack(name: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
           lower: Bound, upper: Bound, steps: int = 10, restarts: int = 1, step_size: float | None = None,
           random_start: bool | None = None, autocast: Autocast = contextlib.nullcontext,
           generator: torch.Generator | None = None) -> Tensor:
    """Run the registered attack ``name`` (``fgsm``, ``fgsm-rs``, ``pgd``): see :func:`fgsm`, :func:`pgd`.

    ``steps``/``restarts`` apply to PGD (FGSM takes one step); ``random_start`` None is each
    attack's own default (PGD: on; FGSM: off; FGSM-RS: on). Unknown names are one-line errors.
    """
    return ATTACKS.get(name)(model, x, y, eps=eps, norm=norm, lower=lower, upper=upper, steps=steps,
                             restarts=restarts, step_size=step_size, random_start=random_start,
                             autocast=autocast, generator=generator)


# -- over a whole set of examples -----------------------------------------------------------------

Data = Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _batches(data: Data, batch_size: int, device: torch.device, max_examples: int | None
             ) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        data = zip(x.split(batch_size), y.split(batch_size), strict=True)
    left = math.inf if max_examples is None else max_examples
    if left <= 0:
        return
    for x, y in data:  # type: ignore[misc]
        if len(y) > left:
            x, y = x[: int(left)], y[: int(left)]
        left -= len(y)
        yield x.to(device), y.to(device)
        if left <= 0:  # stop without drawing another batch from the loader
            return


def attack_batches(model: nn.Module, data: Data, *, method: str = "pgd", eps: float, norm: str = "linf",
                   lower: Bound, upper: Bound, steps: int = 10, restarts: int = 1, step_size: float | None = None,
                   random_start: bool | None = None, batch_size: int = 500,
                   autocast: Autocast = contextlib.nullcontext, generator: torch.Generator | None = None,
                   max_examples: int | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Attack every example of ``data`` batch by batch on the model's device: yields
    ``(x_adv, y, predicted)`` per batch (predicted: the model's class for ``x_adv``).

    ``data`` is ``(x, y)`` tensors (split into ``batch_size`` batches) or an iterable of
    ``(x, y)`` batches, in the model's input units; ``max_examples``: the first that many only.
    Other arguments: see :func:`attack`.
    """
    device = model_device(model)
    for x, y in _batches(data, batch_size, device, max_examples):
        adv = attack(method, model, x, y, eps=eps, norm=norm, lower=lower, upper=upper, steps=steps,
                     restarts=restarts, step_size=step_size, random_start=random_start, autocast=autocast,
                     generator=generator)
        with torch.no_grad(), autocast():
            pred = model(adv).argmax(dim=1)
        yield adv, y, pred


def robust_accuracy(model: nn.Module, data: Data, *, method: str = "pgd", eps: float, norm: str = "linf",
                    lower: Bound, upper: Bound, steps: int = 10, restarts: int = 1,
                    step_size: float | None = None, random_start: bool | None = None, batch_size: int = 500,
                    autocast: Autocast = contextlib.nullcontext, generator: torch.Generator | None = None,
                    max_examples: int | None = None) -> float:
    """The fraction of examples still classified correctly after the attack (see :func:`attack_batches`)."""
    correct, n = 0, 0
    for _, y, pred in attack_batches(model, data, method=method, eps=eps, norm=norm, lower=lower, upper=upper,
                                     steps=steps, restarts=restarts, step_size=step_size,
                                     random_start=random_start, batch_size=batch_size, autocast=autocast,
                                     generator=generator, max_examples=max_examples):
        correct += int((pred == y).sum())
        n += len(y)
    if n == 0:
        raise LaminaError("no examples to attack")
    return correct / n


@torch.no_grad()
def accuracy(model: nn.Module, data: Data, *, batch_size: int = 500, autocast: Autocast = contextlib.nullcontext,
             max_examples: int | None = None) -> float:
    """The clean accuracy of ``model`` on ``data`` (same conventions as :func:`robust_accuracy`)."""
    correct, n = 0, 0
    for x, y in _batches(data, batch_size, model_device(model), max_examples):
        with autocast():
            correct += int((model(x).argmax(dim=1) == y).sum())
        n += len(y)
    if n == 0:
        raise LaminaError("no examples to score")
    return correct / n
