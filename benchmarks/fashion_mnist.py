"""Time to accuracy on Fashion-MNIST, four ways, on one device in one process, with the same seeds.

Contenders raced to each target accuracy, interleaved per seed (a, b, c, a, b, c, ...):

  lamina          (a) ``lamina.train(..., recipe="fast")``: the data on the device, batched augmentation, ...
  pytorch         (b) a plain loop in the style of the official PyTorch MNIST example (pytorch/examples,
                      mnist/main.py): a torch Dataset converting each example (ToTensor + Normalize) in
                      ``__getitem__``, ``DataLoader(batch_size=64, shuffle=True, num_workers=1)``, Adadelta
                      (lr 1.0) with StepLR(step_size=1, gamma=0.7), fp32; the same network as (a).
  lightning       (c) PyTorch Lightning's ``Trainer`` with (b)'s network, DataLoader and optimizer.

and, after the race, the Trainer's own overhead:

  lamina_trainer  (d) lamina's ``Trainer`` with exactly (b)'s model, DataLoader and recipe, timed against
                      (b) in pairs (b d, d b, ...) over the same batches; both must end with the same weights.

Times are training wall-clock (the device synchronized at the end of each epoch), without the per-epoch
test evaluation and without the one-time ``torch.compile`` (a warm-up run in the same process, reported
as ``compile_seconds``). The test split is evaluated after every epoch, so time-to-X% is the training
time at the end of the first epoch whose test accuracy is at least X. (b) and (c) stop at ``--stop-at``.

    python benchmarks/fashion_mnist.py --device cpu               # -> results/fashion_mnist_cpu.json (<= 15 min)
    python benchmarks/fashion_mnist.py --device cpu --seeds 3 --out benchmarks/results/fashion_mnist_cpu_3seeds.json
    python benchmarks/fashion_mnist.py --device cuda --seeds 10   # -> benchmarks/results/fashion_mnist_cuda.json
    python benchmarks/fashion_mnist.py --device cpu --profile     # -> benchmarks/results/profile_cpu.txt
    python benchmarks/fashion_mnist.py --toy --out /tmp/x.json    # 2,000 examples: seconds
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import device_kind, environment, result_path, write
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, record_function

import lamina
from lamina.config import DataConfig, to_dict
from lamina.data.base import Preprocess, Split, build_dataset, channel_stats
from lamina.data.gpu_loader import make_loader
from lamina.models import create_model
from lamina.session import resolve_config
from lamina.tasks.classify import Classify, evaluate
from lamina.training.callbacks import Callback
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer

try:
    import lightning as L
except ImportError:  # pragma: no cover - the `bench` extra
    raise SystemExit("benchmarks/fashion_mnist.py needs PyTorch Lightning: pip install -e '.[bench]'") from None

CONTENDERS = ("lamina", "pytorch", "lightning")  # raced to each target; (d) runs in overhead_pairs
TARGETS = (0.92, 0.93, 0.94)  # test accuracy
TOY_TRAIN, TOY_TEST = 2000, 1000  # examples


# -- data --------------------------------------------------------------------------------------------
@dataclass
class Data:
    train: Split  # raw uint8 (N, 1, 28, 28)
    test: Split
    name: str  # what lamina.train is given: "fashion-mnist", or a .npz of the toy subset
    overrides: list[str] = field(default_factory=list)  # the toy .npz needs flips switched on by hand
    preprocess: Preprocess = field(default_factory=Preprocess)  # the baselines' Normalize: lamina's statistics


def load_data(toy: bool, tmp: Path) -> Data:
    ds = build_dataset(DataConfig(name="fashion-mnist", val_fraction=0.0))
    train, test, name, overrides = ds.train, ds.test, "fashion-mnist", []
    assert test is not None
    if toy:
        g = torch.Generator().manual_seed(0)
        train = train.take(torch.randperm(len(train), generator=g)[:TOY_TRAIN].sort().values)
        test = test.take(torch.randperm(len(test), generator=g)[:TOY_TEST].sort().values)
        name, overrides = str(_npz(tmp / "fashion-mnist-toy.npz", train, test, ds.classes)), ["data.flip=true"]
    mean, std = channel_stats(train.x, 255.0)  # what lamina computes from the same training examples
    pre = Preprocess(kind="image", scale=255.0, mean=mean, std=std, channels=1, size=(28, 28))
    return Data(train, test, name, overrides, pre)


def _npz(path: Path, train: Split, test: Split | None, classes: list[str]) -> Path:
    arrays = {"x_train": train.x.numpy(), "y_train": train.y.numpy(), "classes": np.array(classes)}
    if test is not None:
        arrays |= {"x_test": test.x.numpy(), "y_test": test.y.numpy()}
    np.savez(path, **arrays)
    return path


class ExampleDataset(torch.utils.data.Dataset[tuple[Tensor, int]]):
    """torchvision's FashionMNIST with ``Compose([ToTensor(), Normalize(mean, std)])``, without torchvision:
    each item becomes a PIL image and is converted on its own, in the DataLoader's worker."""

    def __init__(self, split: Split, pre: Preprocess) -> None:
        self.x, self.y = split.x[:, 0], split.y  # (N, H, W) uint8, as torchvision keeps them
        self.mean, self.std = pre.mean[0], pre.std[0]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = Image.fromarray(self.x[i].numpy())  # torchvision.datasets.MNIST.__getitem__
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(1, img.size[1], img.size[0])
        x = x.float().div(255)  # ToTensor
        return (x - self.mean) / self.std, int(self.y[i])  # Normalize


def example_loader(data: Data, seed: int, device: torch.device, limit: int | None = None
                   ) -> torch.utils.data.DataLoader[Any]:
    """The MNIST example's training DataLoader, shuffled by a seeded generator (same order for b, c, d);
    ``limit``: only the first that many training examples."""
    split = data.train if limit is None else data.train.take(torch.arange(min(limit, len(data.train))))
    return torch.utils.data.DataLoader(ExampleDataset(split, data.preprocess), batch_size=64, shuffle=True,
                                       num_workers=1, pin_memory=device.type == "cuda",
                                       generator=torch.Generator().manual_seed(seed))


def test_loader(data: Data, pre: Preprocess, device: torch.device) -> Any:
    return make_loader(data.test, kind="device", batch_size=1024, device=device, preprocess=pre, train=False)


# -- bookkeeping shared by every contender -----------------------------------------------------------
@dataclass
class Budget:
    """When a baseline stops: at ``stop_at`` test accuracy, after ``epochs``, or before an epoch that would,
    at the mean pace so far, end past ``max_seconds`` of training (so a slow contender cannot overrun)."""

    epochs: int
    max_seconds: float  # of training
    stop_at: float  # test accuracy

    def reason(self, epochs: list[list[float]]) -> str | None:
        seconds, acc = epochs[-1]
        if acc >= self.stop_at:
            return "target"
        if len(epochs) >= self.epochs:
            return "epochs"
        return "max_seconds" if seconds * (len(epochs) + 1) / len(epochs) > self.max_seconds else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def record(contender: str, seed: int, epochs: list[list[float]], stopped: str, **extra: Any) -> dict[str, Any]:
    r = {"contender": contender, "seed": seed, "epochs": epochs, "compile_seconds": 0.0,
         "final_acc": epochs[-1][1] if epochs else None, "stopped": stopped, **extra}
    reached = {f"{round(t * 100)}": time_to(epochs, t) for t in TARGETS}
    print(f"  {contender:<15} seed {seed}: {len(epochs)} epochs, {r['final_acc']:.4f} test accuracy, "
          f"{epochs[-1][0]:.1f} s of training; time to 92/93/94 %: "
          + " / ".join("-" if v is None else f"{v:.1f} s" for v in reached.values()), flush=True)
    return r


def time_to(epochs: list[list[float]], target: float) -> float | None:
    return next((seconds for seconds, acc in epochs if acc >= target), None)


# -- (a) lamina's recipe through lamina.train ---------------------------------------------------------
class EpochTest(Callback):
    """After each epoch: the test accuracy of what the run would save (EMA weights if any, fp32, the
    run's test-time flips), next to the training seconds so far. Runs outside the timed loop."""

    def __init__(self, test: Split, preprocess: Preprocess | None = None) -> None:
        self.test, self.preprocess = test, preprocess
        self.epochs: list[list[float]] = []

    def fit_start(self, trainer: Trainer) -> None:
        pre = self.preprocess or trainer.train_loader.preprocess  # lamina's own statistics for (a)
        self.loader = make_loader(self.test, kind="device", batch_size=1024, device=trainer.engine.device,
                                  preprocess=pre, train=False)

    def epoch_end(self, trainer: Trainer) -> None:
        model = trainer.ema.module if trainer.ema is not None else trainer.module
        m = trainer.task.evaluate(model, self.loader)  # fp32, with the run's test-time flips
        self.epochs.append([trainer.train_seconds, m["accuracy"]])


def run_lamina(seed: int, data: Data, a: argparse.Namespace, out: Path, compile_seconds: float) -> dict[str, Any]:
    cb = EpochTest(data.test)
    run = lamina.train(data.name, recipe=a.recipe, device=a.device, seed=seed, epochs=a.lamina_epochs,
                       out=str(out / f"lamina-{seed}"), quiet=True, callbacks=[cb], overrides=data.overrides)
    return record("lamina", seed, cb.epochs, run.summary["stop_reason"] or "epochs", compile_seconds=compile_seconds,
                  run_test_accuracy=run.test_accuracy, precision=run.summary["precision"])


def lamina_warmup(data: Data, a: argparse.Namespace, out: Path) -> float:
    """With ``train.compile``: one short lamina.train in this process first, so the timed runs reuse the
    compiled graphs (torch.compile caches them per process); returns its training seconds (compile + a few steps)."""
    cfg = resolve_config(data.name, recipe=a.recipe, device=a.device, overrides=data.overrides)
    if not cfg.train.compile:
        return 0.0
    n = min(len(data.train), 4 * (cfg.data.batch_size or 256))
    small = _npz(out / "warmup.npz", data.train.take(torch.arange(n)), data.test, [str(i) for i in range(10)])
    run = lamina.train(str(small), recipe=a.recipe, device=a.device, epochs=1, out=str(out / "warmup"), quiet=True,
                       overrides=["data.flip=true"])
    return float(run.summary["train_seconds"])


# -- (b) the PyTorch MNIST example's loop -------------------------------------------------------------
def network(a: argparse.Namespace, data: Data) -> nn.Module:
    """(a)'s network, freshly initialised (the recipe's model section, resolved for this device)."""
    m = resolve_config(data.name, recipe=a.recipe, device=a.device, overrides=data.overrides).model
    return create_model(m.name, (1, 28, 28), 10, width=m.width, depth=m.depth, act=m.act, norm=m.norm,
                        dropout=m.dropout)


def example_setup(seed: int, data: Data, a: argparse.Namespace) -> tuple[nn.Module, torch.optim.Optimizer]:
    """(b)'s network from ``seed`` on the device, and its optimizer: Adadelta, lr 1.0."""
    torch.manual_seed(seed)
    model = network(a, data).to(torch.device(a.device))
    return model, torch.optim.Adadelta(model.parameters(), lr=1.0)


def example_epoch(model: nn.Module, loader: torch.utils.data.DataLoader[Any], optimizer: torch.optim.Optimizer,
                  device: torch.device) -> None:
    """One epoch of the MNIST example's ``train()``, without its logging."""
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()


def run_pytorch(seed: int, data: Data, a: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    device = torch.device(a.device)
    model, optimizer = example_setup(seed, data, a)
    loader = example_loader(data, seed, device)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    tests = test_loader(data, data.preprocess, device)
    epochs: list[list[float]] = []
    seconds, stopped = 0.0, None
    while stopped is None:
        sync(device)
        t0 = time.perf_counter()
        example_epoch(model, loader, optimizer, device)
        scheduler.step()
        sync(device)
        seconds += time.perf_counter() - t0
        acc = evaluate(model, tests, engine=Engine(device), num_classes=10)["accuracy"]
        epochs.append([seconds, acc])
        stopped = budget.reason(epochs)
    return record("pytorch", seed, epochs, stopped)


# -- (c) PyTorch Lightning ----------------------------------------------------------------------------
class LitClassifier(L.LightningModule):
    """(b)'s network, loss and optimizer as a LightningModule."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adadelta(self.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class LitTimer(L.Callback):
    """Times each training epoch (synchronized), then evaluates the test split outside the timing.

    The first epoch is timed from ``on_fit_start``: Lightning creates the DataLoader's iterator (starting
    its worker and prefetching a batch) before ``on_train_epoch_start`` of epoch 0, and (b) pays for that.
    """

    def __init__(self, evaluate_fn: Callable[[nn.Module], float], budget: Budget, device: torch.device) -> None:
        self.evaluate_fn, self.budget, self.device = evaluate_fn, budget, device
        self.epochs: list[list[float]] = []
        self.seconds, self.stopped = 0.0, "epochs"

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        sync(self.device)
        self.t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.epochs:  # epoch 0 runs from on_fit_start
            sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        sync(self.device)
        self.seconds += time.perf_counter() - self.t0
        self.epochs.append([self.seconds, self.evaluate_fn(module.net)])
        reason = self.budget.reason(self.epochs)
        if reason is not None:
            self.stopped = reason
            trainer.should_stop = True


def run_lightning(seed: int, data: Data, a: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    device = torch.device(a.device)
    torch.manual_seed(seed)
    module = LitClassifier(network(a, data))
    loader = example_loader(data, seed, device)
    tests = test_loader(data, data.preprocess, device)
    timer = LitTimer(lambda net: evaluate(net, tests, engine=Engine(device), num_classes=10)["accuracy"],
                     budget, device)
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=budget.epochs,
                        enable_progress_bar=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    return record("lightning", seed, timer.epochs, timer.stopped, fit_seconds=time.perf_counter() - t0)


# -- (d) lamina's Trainer on (b)'s everything ---------------------------------------------------------
class ToDevice:
    """(b)'s DataLoader with each batch moved to the device, exactly as (b)'s loop moves it."""

    def __init__(self, loader: torch.utils.data.DataLoader[Any], device: torch.device) -> None:
        self.loader, self.device, self.batch_size = loader, device, loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)


def trainer_epoch(model: nn.Module, loader: torch.utils.data.DataLoader[Any], optimizer: torch.optim.Optimizer,
                  device: torch.device) -> None:
    """What (d) times: one epoch of lamina's Trainer on (b)'s model, batches, optimizer and loss (fp32, no
    NaN check, no callbacks: (b) has neither)."""
    # StepLR(step_size=1 epoch) stepped per batch, as the Trainer steps schedulers: (b)'s learning rates.
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=len(loader), gamma=0.7)
    trainer = Trainer(model, engine=Engine.create(str(device), precision="fp32", channels_last=False),
                      optimizer=optimizer, scheduler=scheduler, task=Classify(10), on_nan="off")
    trainer.fit(ToDevice(loader, device), epochs=1)


def overhead_pairs(data: Data, a: argparse.Namespace) -> list[dict[str, Any]]:
    """(b)'s loop against (d) lamina's Trainer, ``a.overhead_pairs`` times, in A-B/B-A order (b d, d b, ...).

    Each side trains a fresh copy of (b)'s network from the same seed for one pass over the same
    ``a.overhead_steps`` batches of (b)'s DataLoader; the time runs from asking for the first batch to the
    synchronized end (the DataLoader's worker start-up included, as in every epoch of (b)). Both must end
    with the same weights, bit for bit: (d) trains exactly what (b) trains.
    """
    device = torch.device(a.device)
    sides = {"pytorch": example_epoch, "lamina_trainer": trainer_epoch}
    pairs = []
    for i in range(a.overhead_pairs):
        seconds, weights = {}, {}
        for name in (("pytorch", "lamina_trainer") if i % 2 == 0 else ("lamina_trainer", "pytorch")):
            model, optimizer = example_setup(i, data, a)
            loader = example_loader(data, i, device, limit=64 * a.overhead_steps)
            sync(device)
            t0 = time.perf_counter()
            sides[name](model, loader, optimizer, device)
            sync(device)
            seconds[name] = time.perf_counter() - t0
            weights[name] = [p.detach().cpu() for p in model.parameters()]
        b, d = seconds["pytorch"], seconds["lamina_trainer"]
        same = all(torch.equal(u, v) for u, v in zip(weights["pytorch"], weights["lamina_trainer"], strict=True))
        pairs.append({"seed": i, "pytorch_s": b, "lamina_trainer_s": d, "overhead_pct": 100 * (d - b) / b,
                      "same_weights": same})
        print(f"  overhead pair {i}: (b) {b:.2f} s, (d) {d:.2f} s, {100 * (d - b) / b:+.2f} %, "
              f"same weights: {same}", flush=True)
    return pairs


# -- the summary ---------------------------------------------------------------------------------------
def _mean(values: list[float | None]) -> float | None:
    """Mean over seeds; None when any seed has None (a target some run never reached)."""
    return None if not values or any(v is None for v in values) else statistics.fmean(values)  # type: ignore[arg-type]


def _reached_or_spent(run: dict[str, Any], target: float) -> float:
    """Training seconds to ``target``, or all the training seconds of a run that never reached it."""
    t = time_to(run["epochs"], target)
    return run["epochs"][-1][0] if t is None else t


def summarize(runs: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The race's times to each target and final accuracies (mean over seeds), the speed-ups, and the
    Trainer's overhead: the median over the (b)/(d) pairs (a pair is robust to the machine's slow moments)."""
    by = {c: [r for r in runs if r["contender"] == c] for c in CONTENDERS}
    summary: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    for t in TARGETS:
        key = f"time_to_{round(t * 100)}_s"
        per_seed = {c: [time_to(r["epochs"], t) for r in by[c]] for c in CONTENDERS}
        summary[key] = {c: _mean(v) for c, v in per_seed.items()}
        spread[key] = per_seed
    finals = {c: [r["final_acc"] for r in by[c]] for c in CONTENDERS if by[c]}
    summary["final_acc_mean"] = {c: statistics.fmean(v) for c, v in finals.items()}
    summary["final_acc_std"] = {c: statistics.stdev(v) if len(v) > 1 else 0.0 for c, v in finals.items()}
    pct = [p["overhead_pct"] for p in pairs]
    summary["trainer_overhead_pct"] = statistics.median(pct) if pct else None
    summary["trainer_same_weights"] = all(p["same_weights"] for p in pairs) if pairs else None
    spread["trainer_overhead_pct"] = pct
    for t in (0.92, 0.93):
        times = summary[f"time_to_{round(t * 100)}_s"]
        summary[f"speedup_to_{round(t * 100)}"] = {
            f"vs_{c}": times[c] / times["lamina"] if times[c] is not None and times["lamina"] else None
            for c in ("pytorch", "lightning")}
    # A baseline stopped by its budget below 92 % took longer than all the seconds it trained: a lower bound.
    t92 = summary["time_to_92_s"]["lamina"]
    summary["speedup_to_92_at_least"] = {
        f"vs_{c}": statistics.fmean(_reached_or_spent(r, 0.92) for r in by[c]) / t92 if t92 and by[c] else None
        for c in ("pytorch", "lightning")}
    summary["compile_seconds"] = max((r["compile_seconds"] for r in runs), default=0.0)
    return summary, spread


# -- profile -------------------------------------------------------------------------------------------
RANGES = ("data", "forward", "backward", "nan_check", "optimizer")


def _profiled_lamina(a: argparse.Namespace, data: Data, out: Path) -> Callable[[], None]:
    """One step of (a): Trainer.train_step with profiler ranges around its parts."""
    from rich.console import Console

    from lamina.session import Session

    cfg = resolve_config(data.name, recipe=a.recipe, device=a.device, overrides=data.overrides,
                         out=str(out / "profile-lamina"))
    s = Session(cfg, Console(quiet=True), quiet=True)
    t, e = s.trainer, s.engine
    t.module.train()
    batches = iter(s.loaders["train"])

    def step() -> None:
        with record_function("data"):
            x, y = next(batches)
        with record_function("forward"):
            with e.autocast():
                logits = t.model(x)
            loss = t.task.loss(logits, y)
        with record_function("backward"):
            t.optimizer.zero_grad(set_to_none=True)
            e.backward(loss)
        if t.nan_guard.policy != "off":
            with record_function("nan_check"):
                t.nan_guard.finite(loss, t.module)
        with record_function("optimizer"):
            e.step(t.optimizer)
            if t.scheduler is not None:
                t.scheduler.step()
            if t.ema is not None:
                t.ema.update_parameters(t.module)

    return step


def _profiled_pytorch(a: argparse.Namespace, data: Data) -> Callable[[], None]:
    """One step of (b)'s loop with profiler ranges."""
    device = torch.device(a.device)
    model, optimizer = example_setup(0, data, a)
    model.train()
    batches = iter(example_loader(data, 0, device))

    def step() -> None:
        with record_function("data"):
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
        with record_function("forward"):
            loss = F.cross_entropy(model(x), y)
        with record_function("backward"):
            optimizer.zero_grad()
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    return step


def profile(a: argparse.Namespace, data: Data, out: Path) -> str:
    """torch.profiler over the first ``a.profile_steps`` steps of one epoch of (a) and of (b): a table of
    the ranges (data, forward, backward, optimizer) and the top ops."""
    device = torch.device(a.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    warmup = 3  # steps run before recording (first-call allocations, cuDNN autotuning, compile)
    lines = [f"torch.profiler over the first steps of one training epoch; {environment(a.device)}", ""]
    for name, step in ((f"(a) lamina, recipe {a.recipe}", _profiled_lamina(a, data, out)),
                       ("(b) PyTorch MNIST-example loop", _profiled_pytorch(a, data))):
        for _ in range(warmup):
            step()
        sync(device)
        done = 0
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(a.profile_steps):
                try:
                    step()
                except StopIteration:  # a toy epoch is shorter than the profile
                    break
                done += 1
            sync(device)
        events = prof.key_averages()
        cpu = {r: sum(ev.cpu_time_total for ev in events if ev.key == r) for r in RANGES}
        dev = {r: sum(getattr(ev, "device_time_total", 0) for ev in events if ev.key == r) for r in RANGES}
        total = sum(cpu.values()) or 1
        lines += [f"== {name}: {done} steps profiled ==", "range        CPU ms    share   device ms"]
        lines += [f"{r:<10} {cpu[r] / 1e3:8.1f} {100 * cpu[r] / total:7.1f} % {dev[r] / 1e3:10.1f}"
                  for r in RANGES if cpu[r]]
        lines += ["", events.table(sort_by=sort, row_limit=25), ""]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------------
DEFAULTS = {  # per device: seeds, and the most epochs, training seconds and stop-at accuracy of (b) and (c)
    "cpu": {"seeds": 1, "baseline_epochs": 14, "max_seconds_baseline": 900.0, "stop_at": 0.92,
            "overhead_pairs": 4, "overhead_steps": 300},
    "cuda": {"seeds": 3, "baseline_epochs": 14, "max_seconds_baseline": 300.0, "stop_at": 0.93,
             "overhead_pairs": 4, "overhead_steps": 600},
    "toy": {"seeds": 1, "baseline_epochs": 1, "max_seconds_baseline": 60.0, "stop_at": 0.92,
            "overhead_pairs": 2, "overhead_steps": 8, "lamina_epochs": 4},
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda (all contenders run on it)")
    p.add_argument("--seeds", type=int, help="runs per contender, seeds 0..N-1 (cpu 1: the 15-minute run; cuda 3)")
    p.add_argument("--recipe", default="fast", help="lamina's recipe for (a)")
    p.add_argument("--lamina-epochs", type=int, help="(a)'s epochs (default: the recipe's)")
    p.add_argument("--baseline-epochs", type=int,
                   help="most epochs of (b) and (c) (default 14, as the MNIST example)")
    p.add_argument("--max-seconds-baseline", type=float,
                   help="(b) and (c) start no epoch that would end past this many training seconds (cpu 900, cuda 300)")
    p.add_argument("--stop-at", type=float, help="(b) and (c) stop at this test accuracy (cpu 0.92, cuda 0.93)")
    p.add_argument("--overhead-pairs", type=int, help="(b)/(d) pairs timed for the Trainer's overhead (4)")
    p.add_argument("--overhead-steps", type=int, help="steps of 64 examples per side of a pair (cpu 300, cuda 600)")
    p.add_argument("--toy", action="store_true", help=f"{TOY_TRAIN:,} training examples, a few epochs: a smoke test")
    p.add_argument("--profile", action="store_true", help="only profile (a) and (b) (writes profile_<device>.txt)")
    p.add_argument("--profile-steps", type=int, default=50)
    p.add_argument("--out", default=None, help="the JSON (or, with --profile, text) file to write")
    a = p.parse_args(argv)
    kind = device_kind(a.device)
    for key, value in DEFAULTS["toy" if a.toy else kind].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    budget = Budget(a.baseline_epochs, a.max_seconds_baseline, a.stop_at)
    env, started = environment(a.device), time.perf_counter()  # the code version as the run starts
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|log_every_n_steps).*")
    if kind == "cuda":  # the backend flags lamina's engine sets, set once for every contender
        Engine.create(a.device, precision="fp32")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = load_data(a.toy, tmp)
        if a.profile:
            path = Path(a.out or result_path("profile", a.device, ".txt"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(profile(a, data, tmp))
            print(f"wrote {path}")
            return
        compile_seconds = lamina_warmup(data, a, tmp)
        runs: list[dict[str, Any]] = []
        seeds = list(range(a.seeds))
        for seed in seeds:  # interleaved: a, b, c for each seed
            print(f"seed {seed}", flush=True)
            runs.append(run_lamina(seed, data, a, tmp, compile_seconds if seed == seeds[0] else 0.0))
            runs.append(run_pytorch(seed, data, a, budget))
            runs.append(run_lightning(seed, data, a, budget))
        print("the Trainer's overhead: (b) against (d)", flush=True)
        pairs = overhead_pairs(data, a)
        summary, spread = summarize(runs, pairs)
        cfg = resolve_config(data.name, recipe=a.recipe, device=a.device, overrides=data.overrides,
                             epochs=a.lamina_epochs)
    settings = {
        "recipe": a.recipe, "lamina_config": to_dict(cfg), "toy": a.toy,
        "train_examples": len(data.train), "test_examples": len(data.test),
        "baseline": {"batch_size": 64, "num_workers": 1, "optimizer": "adadelta", "lr": 1.0,
                     "step_lr": {"step_size_epochs": 1, "gamma": 0.7}, "precision": "fp32",
                     "max_epochs": budget.epochs, "max_seconds": budget.max_seconds, "stop_at": budget.stop_at},
        "overhead": {"pairs": a.overhead_pairs, "steps_per_side": a.overhead_steps, "batch_size": 64},
        "targets": list(TARGETS),
    }
    path = write(a.out or result_path("fashion_mnist", a.device),
                 {**env, "seeds": seeds, "settings": settings, "summary": summary,
                  "spread": spread, "bench_seconds": time.perf_counter() - started, "runs": runs,
                  "overhead_pairs": pairs})
    print({k: summary[k] for k in ("time_to_92_s", "speedup_to_92", "trainer_overhead_pct", "trainer_same_weights")})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
