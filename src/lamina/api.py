"""The one-call Python API: ``train`` a run folder, ``load`` it back, ``predict``.

>>> run = lamina.train("digits", epochs=5, quiet=True)        # doctest: +SKIP
>>> model = lamina.load(run.dir)                                # doctest: +SKIP
>>> model.predict(images)                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import load_file, save_file

from lamina import __version__
from lamina.config import RunConfig, apply_overrides, load_config, save_config, to_dict
from lamina.data.augment import Augment
from lamina.data.base import Dataset, Preprocess, Split, build_dataset
from lamina.data.gpu_loader import make_loader
from lamina.errors import LaminaError
from lamina.models import Model, create_model
from lamina.training import callbacks as cb
from lamina.training.engine import Engine, resolve_device, seed_everything
from lamina.training.optim import create_optimizer, default_lr
from lamina.training.schedules import create_scheduler
from lamina.training.trainer import Trainer
from lamina.training.trainer import evaluate as evaluate_model
from lamina.utils.io import atomic_path, default_run_dir, read_json, write_json

MODEL_FORMAT = "lamina-model/1"


@dataclass
class RunResult:
    """What ``train`` returns: the run folder and its summary."""

    dir: Path
    summary: dict[str, Any]
    config: RunConfig = field(repr=False)

    @property
    def test_accuracy(self) -> float:
        return float(self.summary["test_accuracy"])


def resolve_config(
    data: str | None = None,
    *,
    config: RunConfig | str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **kw: Any,
) -> RunConfig:
    """Defaults < config file < keyword arguments < ``a.b=c`` overrides.

    Keyword arguments are the short names of the CLI: model, epochs, batch_size, lr, seed,
    device, out (e.g. ``resolve_config("digits", model="mlp", epochs=3)``).
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config) if config else RunConfig()
    short = {"model": "model.name", "epochs": "train.epochs", "batch_size": "data.batch_size",
             "lr": "train.lr", "seed": "train.seed", "device": "train.device", "out": "out"}
    items = [] if data is None else [f"data.name={json.dumps(str(data))}"]
    for k, v in kw.items():
        if k not in short:
            raise LaminaError(f"unknown argument '{k}': use one of {', '.join(short)} or overrides=['a.b=c']")
        if v is not None:
            items.append(f"{short[k]}={json.dumps(v) if isinstance(v, str) else v}")
    return apply_overrides(cfg, [*items, *overrides])


def validate(cfg: RunConfig) -> None:
    """Check every name and range in ``cfg`` before any data is loaded (fail fast, one line)."""
    from lamina.models import MODELS
    from lamina.training.optim import OPTIMIZERS
    from lamina.training.schedules import SCHEDULES

    if cfg.model.name != "auto":
        MODELS.get(cfg.model.name)
    OPTIMIZERS.get(cfg.train.optimizer)
    SCHEDULES.get(cfg.train.schedule)
    resolve_device(cfg.train.device)
    if cfg.data.loader not in ("auto", "device", "torch"):
        raise LaminaError(f"unknown data.loader '{cfg.data.loader}': use auto, device or torch")
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be at least 1"),
        (cfg.data.batch_size >= 0, "data.batch_size must be positive (0: automatic)"),
        (cfg.train.lr is None or cfg.train.lr > 0, "train.lr must be positive"),
        (0 <= cfg.train.warmup < 1, "train.warmup is a fraction of all steps: use a value in [0, 1)"),
        (0 <= cfg.train.label_smoothing < 1, "train.label_smoothing must lie in [0, 1)"),
        (0 <= cfg.train.ema < 1, "train.ema is a decay: use 0 (off) or a value like 0.999"),
        (0 <= cfg.data.val_fraction < 1, "data.val_fraction must lie in [0, 1)"),
        (0 < cfg.data.test_fraction < 1, "data.test_fraction must lie in (0, 1)"),
        (cfg.data.translate >= 0 and cfg.data.cutout >= 0, "data.translate and data.cutout are pixels, 0 or more"),
    ]
    for ok, message in checks:
        if not ok:
            raise LaminaError(message)


def auto_batch_size(n_train: int) -> int:
    """256, or for small datasets the largest power of two giving at least ~32 steps an epoch (min 16)."""
    b = 256
    while b > 16 and n_train / b < 32:
        b //= 2
    return b


def build_model(cfg: RunConfig, ds: Dataset) -> Model:
    m = cfg.model
    return create_model(m.name, ds.input_shape, ds.num_classes, width=m.width, depth=m.depth,
                        act=m.act, norm=m.norm, dropout=m.dropout)


def train(
    data: str | None = None,
    *,
    config: RunConfig | str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    quiet: bool = False,
    console: Console | None = None,
    **kw: Any,
) -> RunResult:
    """Train a classifier on ``data`` and write a run folder; see :func:`resolve_config`.

    Args:
        data: a registered dataset name, an image folder or a ``.npz`` file.
        config: a RunConfig or a YAML file; ``overrides``: ``["train.lr=0.05", ...]``.
        quiet: no progress bar or per-epoch lines.
    """
    cfg = resolve_config(data, config=config, overrides=overrides, **kw)
    validate(cfg)
    console = console or Console(stderr=True, quiet=quiet)
    t_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    ds = build_dataset(cfg.data, seed=cfg.train.seed)
    channels_last = cfg.train.channels_last if cfg.train.channels_last is not None else len(ds.input_shape) == 3
    engine = Engine.create(cfg.train.device, cfg.train.precision, cfg.train.compile, channels_last, cfg.train.threads)
    model = build_model(cfg, ds)
    cfg = replace(cfg, model=replace(cfg.model, name=model.arch["name"]))
    batch_size = cfg.data.batch_size or auto_batch_size(len(ds.train))
    lr = cfg.train.lr if cfg.train.lr is not None else default_lr(cfg.train.optimizer, batch_size)
    cfg = replace(cfg, data=replace(cfg.data, batch_size=batch_size), train=replace(cfg.train, lr=lr))
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg.data.name, cfg.model.name)
    cfg = replace(cfg, out=str(out))
    _prepare_out(out)
    save_config(cfg, out / "config.yaml")

    loaders = _loaders(cfg, ds, engine)
    optimizer = create_optimizer(cfg.train.optimizer, model.to(engine.device), lr=lr,
                                 weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum)
    scheduler = create_scheduler(cfg.train.schedule, optimizer, total_steps=cfg.train.epochs * len(loaders["train"]),
                                 warmup_fraction=cfg.train.warmup)
    callbacks: list[cb.Callback] = [cb.MetricsLogger(out / "metrics.jsonl"),
                                    cb.Checkpoint(out / "checkpoints", to_dict(cfg))]
    if not quiet:
        callbacks.append(cb.ProgressBar(console))
    if cfg.train.early_stopping > 0:
        callbacks.append(cb.EarlyStopping(cfg.train.early_stopping))
    if cfg.train.max_minutes > 0:
        callbacks.append(cb.TimeLimit(cfg.train.max_minutes * 60))
    trainer = Trainer(model, engine=engine, optimizer=optimizer, scheduler=scheduler, num_classes=ds.num_classes,
                      label_smoothing=cfg.train.label_smoothing, grad_clip=cfg.train.grad_clip,
                      ema_decay=cfg.train.ema, callbacks=callbacks)
    console.print(f"[bold]lamina[/] training {cfg.model.name} ({model.num_params():,} parameters) on {ds.name} "
                  f"({len(ds.train):,} train examples) for {cfg.train.epochs} epochs on {engine.device} "
                  f"[{engine.precision}]  -> {out}")
    trainer.fit(loaders["train"], loaders.get("val"), epochs=cfg.train.epochs)
    if trainer.stop_reason:
        console.print(f"stopped early: {trainer.stop_reason}")

    final = trainer.ema.module if trainer.ema is not None else trainer.module
    # The reported accuracy is that of the saved model as `predict` runs it: fp32, not compiled.
    test = evaluate_model(final, loaders["test"], engine=Engine(engine.device), num_classes=ds.num_classes)
    save_model(final, out, ds)
    summary = {
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "per_class_accuracy": dict(zip(ds.classes, test["per_class_accuracy"], strict=True)),
        "confusion": test["confusion"],
        "train_seconds": trainer.train_seconds, "total_seconds": time.perf_counter() - t_start,
        "epochs": trainer.epoch, "steps": trainer.step, "stop_reason": trainer.stop_reason,
        "params": model.num_params(), "model": cfg.model.name, "dataset": ds.name,
        "train_examples": len(ds.train), "test_examples": test["examples"],
        "device": _device_name(engine.device), "precision": engine.precision,
        "torch": torch.__version__, "python": platform.python_version(), "seed": cfg.train.seed,
        "lamina": __version__,
    }
    write_json(out / "summary.json", summary)
    return RunResult(out, summary, cfg)


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise LaminaError(f"--out {out} exists and is not a folder: choose another --out")
    if (out / "summary.json").exists() or (out / "metrics.jsonl").exists():
        raise LaminaError(f"run folder {out} already holds a run: choose another --out or delete it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LaminaError(f"cannot create run folder {out}: {e.strerror}") from None


def _loaders(cfg: RunConfig, ds: Dataset, engine: Engine) -> dict[str, Any]:
    d = cfg.data
    augment = Augment(translate=d.translate, flip=ds.flip, cutout=d.cutout) if ds.modality == "image" else None
    return {
        name: make_loader(split, kind=d.loader, batch_size=d.batch_size if name == "train" else max(d.batch_size, 1024),
                          device=engine.device, preprocess=ds.preprocess, train=name == "train",
                          augment=augment, seed=cfg.train.seed, channels_last=engine.channels_last,
                          workers=d.workers)
        for name, split in ds.splits().items()
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# -- saved models -------------------------------------------------------------------------------
def save_model(model: Model, folder: Path, ds: Dataset) -> None:
    """``model.safetensors`` (weights) + ``model.json`` (architecture, preprocessing, classes)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(folder / "model.json", {
        "format": MODEL_FORMAT, "arch": model.arch, "preprocess": ds.preprocess.to_dict(),
        "classes": list(ds.classes), "modality": ds.modality, "dataset": ds.name,
        "lamina": __version__, "torch": torch.__version__,
    })


class Predictor:
    """A trained model with its preprocessing: ``predict`` raw inputs (files, arrays, tensors)."""

    def __init__(self, model: Model, preprocess: Preprocess, classes: list[str], modality: str,
                 device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.preprocess, self.classes, self.modality = preprocess, classes, modality

    def to_batch(self, inputs: Any) -> torch.Tensor:
        """Raw inputs -> a batch of raw examples (uint8 images or float arrays), shape (N, *input_shape)."""
        from lamina.data.images import load_image

        if isinstance(inputs, torch.Tensor):
            batch = inputs
        elif self.modality == "image" and isinstance(inputs, list | tuple):
            batch = torch.stack([load_image(item, self.preprocess) for item in inputs])
        else:
            import numpy as np

            batch = torch.as_tensor(np.asarray(inputs))
        if batch.dim() == len(self.model.input_shape):
            batch = batch.unsqueeze(0)
        if tuple(batch.shape[1:]) != tuple(self.model.input_shape):
            raise LaminaError(f"inputs have shape {tuple(batch.shape[1:])} per example, the model expects "
                              f"{tuple(self.model.input_shape)}")
        return batch

    @torch.no_grad()
    def predict_proba(self, inputs: Any, batch_size: int = 1024) -> torch.Tensor:
        """Class probabilities, shape (N, K)."""
        batch = self.to_batch(inputs)
        out = [torch.softmax(self.model(self.preprocess.apply(batch[i : i + batch_size].to(self.device))).float(), 1)
               for i in range(0, len(batch), batch_size)]
        return torch.cat(out).cpu()

    def predict(self, inputs: Any) -> list[str]:
        """The most likely class name of each input."""
        return [self.classes[i] for i in self.predict_proba(inputs).argmax(1).tolist()]

    def top_k(self, inputs: Any, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely classes of each input with their probabilities."""
        p = self.predict_proba(inputs)
        vals, idx = p.topk(min(k, p.shape[1]), dim=1)
        return [[(self.classes[i], float(v)) for v, i in zip(vr, ir, strict=True)]
                for vr, ir in zip(vals.tolist(), idx.tolist(), strict=True)]


def load(run: str | Path, device: str = "cpu") -> Predictor:
    """Load the model saved in a run folder (``model.safetensors`` + ``model.json``)."""
    folder = Path(run)
    if not folder.is_dir():
        raise LaminaError(f"run folder {folder} does not exist")
    meta = read_json(folder / "model.json", "model description")
    if meta.get("format") != MODEL_FORMAT:
        raise LaminaError(f"{folder}/model.json has format {meta.get('format')!r}; this lamina reads {MODEL_FORMAT}")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise LaminaError(f"{weights} does not exist: the run did not finish; train again")
    model = create_model(**meta["arch"])
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise LaminaError(f"{weights} is corrupt or does not match model.json ({str(e).splitlines()[0][:120]})") from None
    return Predictor(model, Preprocess.from_dict(meta["preprocess"]), list(meta["classes"]), meta["modality"],
                     resolve_device(device))


def evaluate(run: str | Path, split: str = "test", device: str = "cpu") -> dict[str, Any]:
    """Re-evaluate a saved run on a split of its dataset (rebuilt from the run's config.yaml)."""
    folder = Path(run)
    cfg = load_config(folder / "config.yaml")
    predictor = load(folder, device)
    ds = build_dataset(cfg.data, seed=cfg.train.seed)
    splits = ds.splits()
    if split not in splits:
        raise LaminaError(f"split '{split}' does not exist for {ds.name}: choose one of {', '.join(splits)}")
    engine = Engine.create(device, precision="fp32")
    loader = make_loader(splits[split], kind=cfg.data.loader, batch_size=1024, device=engine.device,
                         preprocess=predictor.preprocess, train=False)
    m = evaluate_model(predictor.model, loader, engine=engine, num_classes=ds.num_classes)
    return {"split": split, "accuracy": m["accuracy"], "loss": m["loss"], "examples": m["examples"],
            "per_class_accuracy": dict(zip(ds.classes, m["per_class_accuracy"], strict=True)),
            "confusion": m["confusion"]}


__all__ = ["Predictor", "RunResult", "Split", "evaluate", "load", "resolve_config", "train"]
