"""The one-call Python API: ``train`` a run folder, ``load`` it back, ``predict``.

>>> run = lamina.train("digits", epochs=5, quiet=True)        # doctest: +SKIP
>>> model = lamina.load(run.dir)                                # doctest: +SKIP
>>> model.predict(images)                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lamina import __version__
from lamina.config import RunConfig, apply_overrides, from_dict, load_config, save_config, to_dict
from lamina.data.augment import Augment
from lamina.data.base import Dataset, Preprocess, build_dataset
from lamina.data.gpu_loader import make_loader
from lamina.errors import LaminaError
from lamina.models import Model, create_model
from lamina.training import callbacks as cb
from lamina.training import checkpoint
from lamina.training.engine import Engine, enable_determinism, resolve_device, seed_everything
from lamina.training.optim import create_optimizer, default_lr
from lamina.training.schedules import create_scheduler
from lamina.training.trainer import NanGuard, Trainer, flip_tta_log_probs
from lamina.training.trainer import evaluate as evaluate_model
from lamina.utils.io import atomic_path, atomic_write_bytes, default_run_dir, read_json, write_json

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
    recipe: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **kw: Any,
) -> RunConfig:
    """Defaults < recipe < config file < keyword arguments < ``a.b=c`` overrides.

    Keyword arguments are the short names of the CLI: model, epochs, batch_size, lr, seed,
    device, out (e.g. ``resolve_config("digits", model="mlp", epochs=3)``). ``recipe`` names one of
    :func:`lamina.recipes.names` (e.g. ``"fast"``); its ``cuda:`` section applies when the device the
    rest resolves to is a CUDA GPU. Under a recipe, a ``RunConfig`` passed as ``config`` overrides
    the recipe only where it differs from the defaults.
    """
    short = {"model": "model.name", "epochs": "train.epochs", "batch_size": "data.batch_size",
             "lr": "train.lr", "seed": "train.seed", "device": "train.device", "out": "out"}
    items = [] if data is None else [f"data.name={json.dumps(str(data))}"]
    for k, v in kw.items():
        if k not in short:
            raise LaminaError(f"unknown argument '{k}': use one of {', '.join(short)} or overrides=['a.b=c']")
        if v is not None:
            items.append(f"{short[k]}={json.dumps(v) if isinstance(v, str) else v}")
    if recipe is None:
        cfg = config if isinstance(config, RunConfig) else load_config(config) if config else RunConfig()
        return apply_overrides(cfg, [*items, *overrides])
    from lamina import recipes

    explicit = _explicit_config(config)

    def build(device: str | None) -> RunConfig:
        return apply_overrides(from_dict(recipes.merge(recipes.recipe_dict(recipe, device), explicit)),
                               [*items, *overrides])

    return build(build(None).train.device)  # the device decides whether the recipe's cuda overlay applies


def _explicit_config(config: RunConfig | str | Path | None) -> dict[str, Any]:
    """What a config (file or object) sets explicitly: a file's own keys; a RunConfig's non-defaults."""
    if config is None:
        return {}
    if isinstance(config, RunConfig):
        return _changed(to_dict(config), to_dict(RunConfig()))
    load_config(config)  # checks the file and its keys, with lamina's one-line errors
    data = yaml.safe_load(Path(config).read_text())
    # An empty section (``train:``) sets nothing: it must not reset the recipe's section to the defaults.
    return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else {}


def _changed(d: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _changed(v, default[k])
            if sub:
                out[k] = sub
        elif v != default[k]:
            out[k] = v
    return out


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
    NanGuard(cfg.train.on_nan)  # checks the policy name
    if cfg.data.loader not in ("auto", "device", "torch"):
        raise LaminaError(f"unknown data.loader '{cfg.data.loader}': use auto, device or torch")
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be at least 1"),
        (cfg.train.gradient_flow_every >= 0, "train.gradient_flow_every is a number of steps, 0 (off) or more"),
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
    recipe: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    quiet: bool = False,
    console: Console | None = None,
    callbacks: Sequence[cb.Callback] = (),
    **kw: Any,
) -> RunResult:
    """Train a classifier on ``data`` and write a run folder; see :func:`resolve_config`.

    Args:
        data: a registered dataset name, an image folder or a ``.npz`` file.
        config: a RunConfig or a YAML file; ``overrides``: ``["train.lr=0.05", ...]``.
        recipe: a named recipe (``"fast"``, ``"fast-long"``, ``"demo"``) under the config file.
        quiet: no progress bar or per-epoch lines.
        callbacks: extra :class:`lamina.training.callbacks.Callback` objects.
    """
    cfg = resolve_config(data, config=config, recipe=recipe, overrides=overrides, **kw)
    validate(cfg)
    session = _Session(cfg, console or Console(stderr=True, quiet=quiet), quiet=quiet, extra=callbacks)
    return session.run()


def resume(run: str | Path, *, quiet: bool = False, console: Console | None = None,
           callbacks: Sequence[cb.Callback] = ()) -> RunResult:
    """Continue an interrupted run from its newest valid checkpoint (older ones if that is corrupt).

    With ``train.deterministic`` the final weights on CPU are bit-identical to an uninterrupted run.
    """
    folder = Path(run)
    if not folder.is_dir():
        raise LaminaError(f"run folder {folder} does not exist")
    if (folder / "summary.json").exists():
        raise LaminaError(f"run {folder} already finished (summary.json exists); nothing to resume")
    cfg = load_config(folder / "config.yaml")
    console = console or Console(stderr=True, quiet=quiet)

    def skipped(path: Path, err: LaminaError) -> None:
        console.print(f"[yellow]skipping checkpoint[/] {path.name}: {err}; trying the previous one")

    found = checkpoint.latest(folder / "checkpoints", on_skip=skipped)
    if found is None:
        raise LaminaError(f"run {folder} has no valid checkpoint to resume from: train it again")
    state, path = found
    session = _Session(cfg, console, quiet=quiet, resuming=True, extra=callbacks)
    session.trainer.load_state_dict(state)
    _truncate_metrics(folder / "metrics.jsonl", session.trainer.step)
    console.print(f"resuming {folder} from {path.name} (epoch {session.trainer.epoch + 1}, step {session.trainer.step})")
    return session.run()


def report(run: str | Path, *, max_examples: int = 2000, device: str = "cpu", reinspect: bool = False) -> Path:
    """Write ``RUN/report.html``, running the inspection first when the run has none yet."""
    from lamina.inspection.run import inspect_run
    from lamina.reporting import write_report

    folder = Path(run)
    if reinspect or not (folder / "inspection" / "inspection.json").is_file():
        inspect_run(folder, max_examples=max_examples, device=device)
    return write_report(folder)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())


class _Session:
    """Everything one training run needs, built from a config: shared by train and resume."""

    def __init__(self, cfg: RunConfig, console: Console, *, quiet: bool, resuming: bool = False,
                 extra: Sequence[cb.Callback] = ()) -> None:
        self.t_start = time.perf_counter()
        self.console = console
        if cfg.train.deterministic:
            enable_determinism()
        seed_everything(cfg.train.seed)
        self.ds = ds = build_dataset(cfg.data, seed=cfg.train.seed)
        channels_last = cfg.train.channels_last if cfg.train.channels_last is not None else len(ds.input_shape) == 3
        self.engine = engine = Engine.create(cfg.train.device, cfg.train.precision, cfg.train.compile, channels_last,
                                             cfg.train.threads)
        self.model = model = build_model(cfg, ds)
        cfg = resolve_run(cfg, ds, model.arch["name"])
        self.cfg, self.out = cfg, Path(cfg.out)
        if not resuming:
            _prepare_out(self.out)
            save_config(cfg, self.out / "config.yaml")
        self.loaders = _loaders(cfg, ds, engine)
        t = cfg.train
        # Test-time flips only where a mirror image keeps the label (the dataset's flip, or data.flip).
        self.tta_flip = bool(t.tta_flip and ds.flip and ds.modality == "image")
        optimizer = create_optimizer(t.optimizer, model.to(engine.device), lr=t.lr,  # type: ignore[arg-type]
                                     weight_decay=t.weight_decay, momentum=t.momentum)
        scheduler = create_scheduler(t.schedule, optimizer, total_steps=t.epochs * len(self.loaders["train"]),
                                     warmup_fraction=t.warmup)
        callbacks: list[cb.Callback] = [
            cb.MetricsLogger(self.out / "metrics.jsonl"),
            cb.Checkpoint(self.out / "checkpoints", to_dict(cfg), keep=t.keep_checkpoints,
                          every_steps=t.checkpoint_every, every_minutes=t.checkpoint_minutes),
            *extra,
        ]
        if not quiet:
            callbacks.append(cb.ProgressBar(console))
        if t.early_stopping > 0:
            callbacks.append(cb.EarlyStopping(t.early_stopping))
        if t.max_minutes > 0:
            callbacks.append(cb.TimeLimit(t.max_minutes * 60))
        if t.gradient_flow_every > 0:
            from lamina.inspection.gradients import GradientFlow

            callbacks.append(GradientFlow(self.out / "inspection" / "gradients.jsonl", every=t.gradient_flow_every))
        if t.tensorboard:
            callbacks.append(cb.TensorBoard(self.out / "tensorboard"))
        self.trainer = Trainer(model, engine=engine, optimizer=optimizer, scheduler=scheduler,
                               num_classes=ds.num_classes, label_smoothing=t.label_smoothing, grad_clip=t.grad_clip,
                               ema_decay=t.ema, on_nan=t.on_nan, tta_flip=self.tta_flip, callbacks=callbacks)

    def run(self) -> RunResult:
        cfg, ds, trainer, engine, out = self.cfg, self.ds, self.trainer, self.engine, self.out
        self.console.print(
            f"[bold]lamina[/] training {cfg.model.name} ({self.model.num_params():,} parameters) on {ds.name} "
            f"({len(ds.train):,} train examples) for {cfg.train.epochs} epochs on {engine.device} "
            f"[{engine.precision}]  -> {out}")
        trainer.fit(self.loaders["train"], self.loaders.get("val"), epochs=cfg.train.epochs)
        if trainer.stop_reason:
            self.console.print(f"stopped early: {trainer.stop_reason}")
        final = trainer.ema.module if trainer.ema is not None else trainer.module
        # The reported accuracy is that of the saved model as `predict` runs it: fp32, not compiled.
        test = evaluate_model(final, self.loaders["test"], engine=Engine(engine.device), num_classes=ds.num_classes,
                              tta_flip=self.tta_flip)
        save_model(final, out, ds, tta_flip=self.tta_flip)
        summary = {
            "test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "per_class_accuracy": dict(zip(ds.classes, test["per_class_accuracy"], strict=True)),
            "confusion": test["confusion"],
            "train_seconds": trainer.train_seconds, "total_seconds": time.perf_counter() - self.t_start,
            "epochs": trainer.epoch, "steps": trainer.step, "skipped_steps": trainer.nan_guard.skipped,
            "stop_reason": trainer.stop_reason, "params": self.model.num_params(), "model": cfg.model.name,
            "dataset": ds.name, "train_examples": len(ds.train), "test_examples": test["examples"],
            "device": _device_name(engine.device), "precision": engine.precision, "tta_flip": self.tta_flip,
            "torch": torch.__version__, "python": platform.python_version(), "seed": cfg.train.seed,
            "lamina": __version__,
        }
        write_json(out / "summary.json", summary)
        return RunResult(out, summary, cfg)


def resolve_run(cfg: RunConfig, ds: Dataset, model_name: str) -> RunConfig:
    """Fill in what ``auto``/0/None left open (model name, batch size, lr, run folder): the
    result is what config.yaml records, so resuming or repeating the run resolves nothing again."""
    batch_size = cfg.data.batch_size or auto_batch_size(len(ds.train))
    lr = cfg.train.lr if cfg.train.lr is not None else default_lr(cfg.train.optimizer, batch_size)
    out = cfg.out or str(default_run_dir(cfg.data.name, model_name))
    return replace(cfg, model=replace(cfg.model, name=model_name), data=replace(cfg.data, batch_size=batch_size),
                   train=replace(cfg.train, lr=lr), out=out)


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
def save_model(model: Model, folder: Path, ds: Dataset, *, tta_flip: bool = False) -> None:
    """``model.safetensors`` (weights) + ``model.json`` (architecture, preprocessing, classes, and
    whether predictions average each image with its mirror image: ``tta_flip``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(folder / "model.json", {
        "format": MODEL_FORMAT, "arch": model.arch, "preprocess": ds.preprocess.to_dict(),
        "classes": list(ds.classes), "modality": ds.modality, "dataset": ds.name, "tta_flip": bool(tta_flip),
        "lamina": __version__, "torch": torch.__version__,
    })


class Predictor:
    """A trained model with its preprocessing: ``predict`` raw inputs (files, arrays, tensors).

    With ``tta_flip`` the probabilities of an image are the mean of those of the image and of its
    mirror image (test-time flips), as the run evaluated them.
    """

    def __init__(self, model: Model, preprocess: Preprocess, classes: list[str], modality: str,
                 device: torch.device | None = None, *, tta_flip: bool = False) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.preprocess, self.classes, self.modality = preprocess, classes, modality
        self.tta_flip = tta_flip

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
        out = [self._probs(self.preprocess.apply(batch[i : i + batch_size].to(self.device)))
               for i in range(0, len(batch), batch_size)]
        return torch.cat(out).cpu()

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        if self.tta_flip and x.dim() == 4:
            return flip_tta_log_probs(self.model, x).exp()
        return torch.softmax(self.model(x).float(), 1)

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
    if not isinstance(meta, dict):
        raise LaminaError(f"{folder}/model.json is not a JSON object: it is corrupt; train again")
    if meta.get("format") != MODEL_FORMAT:
        raise LaminaError(f"{folder}/model.json has format {meta.get('format')!r}; this lamina reads {MODEL_FORMAT}")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise LaminaError(f"{weights} does not exist: the run did not finish; train again")

    def first_line(e: BaseException) -> str:
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"

    try:
        arch, classes, modality = meta["arch"], meta["classes"], meta["modality"]
        tta_flip = meta.get("tta_flip", False)  # absent in models saved before test-time flips existed
        if not (isinstance(arch, dict) and isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                and isinstance(modality, str) and isinstance(tta_flip, bool)):
            raise TypeError("'arch' must be an object, 'classes' a list of names, 'modality' a name and "
                            "'tta_flip' true or false")
        preprocess = Preprocess.from_dict(meta["preprocess"])
        with torch.device("meta"):  # the architecture without memory: a model.json asking for a huge net costs nothing
            skeleton = create_model(**arch)
    except LaminaError as e:
        raise LaminaError(f"{folder}/model.json describes no valid model: {e}") from None
    except (LookupError, TypeError, ValueError, OverflowError, RuntimeError, AttributeError) as e:
        raise LaminaError(f"{folder}/model.json is corrupt ({first_line(e)}); train again") from None
    if len(classes) != skeleton.num_classes:
        raise LaminaError(f"{folder}/model.json names {len(classes)} classes for a model with {skeleton.num_classes}")
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    try:  # read the weights' header only, and compare it with the architecture before allocating anything
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        if shapes != expected:
            wrong = sorted(set(shapes) ^ set(expected)) or sorted(k for k in shapes if shapes[k] != expected[k])
            raise ValueError(f"tensors differ from the architecture's, first at '{wrong[0]}'")
        model = create_model(**arch)
        model.load_state_dict(load_file(str(weights)))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise LaminaError(f"{weights} is corrupt or does not match model.json ({first_line(e)})") from None
    return Predictor(model, preprocess, list(classes), modality, resolve_device(device), tta_flip=tta_flip)


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
    m = evaluate_model(predictor.model, loader, engine=engine, num_classes=ds.num_classes, tta_flip=predictor.tta_flip)
    return {"split": split, "accuracy": m["accuracy"], "loss": m["loss"], "examples": m["examples"],
            "per_class_accuracy": dict(zip(ds.classes, m["per_class_accuracy"], strict=True)),
            "confusion": m["confusion"]}


__all__ = ["Predictor", "RunResult", "evaluate", "load", "report", "resolve_config", "resume", "train"]
