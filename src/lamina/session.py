"""One run assembled from a config: data, task, model, engine, callbacks, Trainer; shared by
``train`` and ``resume``. Also the config resolution (defaults < recipe < file < arguments)."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from lamina import __version__
from lamina.artifacts import save_model
from lamina.config import RunConfig, apply_overrides, from_dict, load_config, save_config, to_dict
from lamina.data.base import TASKS as DATA_TASKS
from lamina.data.base import Dataset, build_dataset
from lamina.errors import LaminaError, did_you_mean
from lamina.tasks import TASKS
from lamina.tasks.base import Task
from lamina.tasks.generative import ImageGenerator
from lamina.training import callbacks as cb
from lamina.training import checkpoint
from lamina.training.engine import Engine, enable_determinism, resolve_device, seed_everything
from lamina.training.nan_guard import NanGuard
from lamina.training.optim import create_optimizer, default_lr
from lamina.training.schedules import create_scheduler
from lamina.training.trainer import Trainer
from lamina.utils import dist as dist_utils
from lamina.utils.io import atomic_write_bytes, default_run_dir, write_json
from lamina.utils.lock import RunLock

# The keyword arguments of ``lamina.train`` that are config keys: the CLI's short names.
SHORT_KEYS = {"model": "model.name", "epochs": "train.epochs", "batch_size": "data.batch_size", "lr": "train.lr",
              "seed": "train.seed", "device": "train.device", "out": "out", "checkpoint_every": "train.checkpoint_every",
              "checkpoint_minutes": "train.checkpoint_minutes", "on_nan": "train.on_nan",
              "deterministic": "train.deterministic", "tensorboard": "train.tensorboard", "task": "data.task",
              "max_minutes": "train.max_minutes", "max_energy_kwh": "energy.max_kwh",
              "grid_intensity": "energy.grid_intensity"}


# What a modality trains with where nothing else is set (under recipes, config files and arguments).
# Keyword spotting: small log-mel CNNs on a few thousand clips want a higher SGD learning rate than
# lamina's batch-size rule gives (0.2 at batch 128 reached 98.5 % on the keyword benchmark; the rule's
# 0.05 trained far slower), for 10 epochs.
# Sequences: AdamW on 6-mer frequencies (the 16S benchmark: above the RDP-style naive Bayes at phylum
# and class level); label smoothing off, dropout 0.3 (5,000 sequences, 4,096 features).
MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "audio": {"train": {"lr": 0.2, "epochs": 10}},
    "sequence": {"train": {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.05, "epochs": 20},
                 "model": {"dropout": 0.3}},
}


def resolve_config(
    data: str | None = None,
    *,
    config: RunConfig | str | Path | None = None,
    recipe: str | None = None,
    overrides: str | Sequence[str] = (),
    **kw: Any,
) -> RunConfig:
    """Defaults < recipe < config file < keyword arguments < ``a.b=c`` overrides.

    Keyword arguments are the CLI's names (see :data:`SHORT_KEYS`, e.g. ``model="mlp", epochs=3``).
    ``recipe`` names one of :func:`lamina.recipes.names` (e.g. ``"fast"``); its ``cuda:`` section
    applies when the device the rest resolves to is a CUDA GPU. Under a recipe, a ``RunConfig``
    passed as ``config`` overrides the recipe only where it differs from the defaults. ``overrides``
    is a list of ``"a.b=c"`` strings, or one string of them separated by spaces.
    """
    from lamina import recipes
    from lamina.data.sources import declared

    if isinstance(overrides, str):
        overrides = overrides.split()
    items = [] if data is None else [f"data.name={json.dumps(str(data))}"]
    for k, v in kw.items():
        if k not in SHORT_KEYS:
            raise LaminaError(f"unknown argument '{k}': use one of {', '.join(SHORT_KEYS)} or overrides=['a.b=c']")
        if v is not None:
            items.append(f"{SHORT_KEYS[k]}={json.dumps(v) if isinstance(v, str) else v}")
    if recipe is None and not isinstance(config, RunConfig):
        load_config(config) if config else None  # one-line errors for a bad file, before anything else
    explicit = _explicit_config(config) if recipe is not None or not isinstance(config, RunConfig) else None

    def build(device: str | None, task: str | None, modality: str = "") -> RunConfig:
        base = task_defaults(task, device) if task else {}
        base = recipes.merge(base, MODALITY_DEFAULTS.get(modality, {}))
        if recipe is not None:
            base = recipes.merge(base, recipes.recipe_dict(recipe, device))
        if explicit is None:  # a RunConfig object without a recipe: every field of it counts
            return apply_overrides(config, [*items, *overrides])  # type: ignore[arg-type]
        return apply_overrides(from_dict(recipes.merge(base, explicit)), [*items, *overrides])

    # Two passes: the device decides whether a recipe's cuda overlay applies, and the data's task
    # (known without loading it) which task defaults lie under everything else.
    first = build(None, None)
    return build(first.train.device, *declared(first.data))


def task_defaults(task: str, device: str | None) -> dict[str, Any]:
    """The config a task trains with where nothing else is set, for ``device`` (``cpu``/``cuda``
    sections of the task's ``defaults`` apply on that kind of device only)."""
    from lamina import recipes

    defaults = TASKS.get(task).defaults
    out = {k: v for k, v in defaults.items() if k not in ("cpu", "cuda")}
    kind = recipes.device_kind(device)
    return recipes.merge(out, defaults.get(kind, {})) if kind in defaults else out


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
    from lamina.training.distributed import STRATEGIES

    if cfg.train.strategy not in STRATEGIES:
        raise LaminaError(f"unknown train.strategy '{cfg.train.strategy}': {did_you_mean(cfg.train.strategy, STRATEGIES)}")
    if not cfg.train.dist_timeout > 0:
        raise LaminaError("train.dist_timeout is in seconds: use a positive number (600 is the default)")
    if cfg.data.loader not in ("auto", "device", "torch"):
        raise LaminaError(f"unknown data.loader '{cfg.data.loader}': use auto, device or torch")
    if cfg.data.task not in ("auto", *DATA_TASKS):
        raise LaminaError(f"unknown data.task '{cfg.data.task}': use auto, {', '.join(DATA_TASKS)}")
    if cfg.data.vocab not in ("char", "byte", "bpe"):
        raise LaminaError(f"unknown data.vocab '{cfg.data.vocab}': use char, byte or bpe")
    modalities = ("auto", "image", "audio", "text", "sequence", "table", "array")
    if cfg.data.modality not in modalities:
        raise LaminaError(f"unknown data.modality '{cfg.data.modality}': {did_you_mean(cfg.data.modality, modalities)}")
    if cfg.data.alphabet not in ("auto", "dna", "rna", "protein"):
        raise LaminaError(f"unknown data.alphabet '{cfg.data.alphabet}': use auto, dna, rna or protein")
    d = cfg.data
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be at least 1"),
        (cfg.train.gradient_flow_every >= 0, "train.gradient_flow_every is a number of steps, 0 (off) or more"),
        (cfg.data.batch_size >= 0, "data.batch_size must be positive (0: automatic)"),
        (cfg.data.context >= 0, "data.context is a number of tokens, 0 (the model's default) or more"),
        (cfg.train.lr is None or cfg.train.lr > 0, "train.lr must be positive"),
        (0 <= cfg.train.warmup < 1, "train.warmup is a fraction of all steps: use a value in [0, 1)"),
        (0 <= cfg.train.label_smoothing < 1, "train.label_smoothing must lie in [0, 1)"),
        (0 <= cfg.train.ema < 1, "train.ema is a decay: use 0 (off) or a value like 0.999"),
        (0 <= cfg.data.val_fraction < 1, "data.val_fraction must lie in [0, 1)"),
        (0 < cfg.data.test_fraction < 1, "data.test_fraction must lie in (0, 1)"),
        (cfg.data.translate >= 0 and cfg.data.cutout >= 0, "data.translate and data.cutout are pixels, 0 or more"),
        (d.sample_rate >= 1000, "data.sample_rate is in Hz: use 1000 or more (16000 for speech)"),
        (d.clip_seconds > 0, "data.clip_seconds must be positive"),
        (0 <= d.time_shift < 1, "data.time_shift is a fraction of a clip: use a value in [0, 1)"),
        (0 <= d.noise <= 1, "data.noise is a probability: use a value in [0, 1]"),
        (d.noise_snr_min <= d.noise_snr_max, "data.noise_snr_min must not exceed data.noise_snr_max"),
        (d.spec_masks >= 0, "data.spec_masks is a number of masks, 0 (off) or more"),
        (d.min_class_examples >= 0, "data.min_class_examples is a number of examples, 0 (never merge) or more"),
        (-1 <= d.kmer <= 12, "data.kmer is a k-mer length 1..12, 0 (one-hot residues) or -1 (automatic)"),
        (d.max_length >= 0, "data.max_length is a number of residues, 0 (the longest record) or more"),
    ]
    g = cfg.generate
    checks += [
        (g.latent >= 1, "generate.latent is a number of latent dimensions, 1 or more"),
        (g.beta >= 0, "generate.beta weighs the KL term: use 0 or more (1: the true ELBO)"),
        (g.timesteps >= 2, "generate.timesteps is the diffusion chain's length: use 2 or more (1000 is usual)"),
        (1 <= g.sample_steps <= g.timesteps, f"generate.sample_steps must lie in 1..{g.timesteps} (generate.timesteps)"),
        (g.samples >= 0, "generate.samples is a number of images per grid, 0 (none) or more"),
        (g.fd_samples >= 10, "generate.fd_samples is a number of generated images, 10 or more (2000 is usual)"),
    ]
    for ok, message in checks:
        if not ok:
            raise LaminaError(message)
    for key, value, allowed in (("decoder", g.decoder, ("bernoulli", "gaussian")),
                                ("noise_schedule", g.noise_schedule, ("cosine", "linear")),
                                ("prediction", g.prediction, ("eps", "v"))):
        if value not in allowed:
            raise LaminaError(f"unknown generate.{key} '{value}': {did_you_mean(value, allowed)}")
    if cfg.adversarial.method:
        from lamina.robustness.training import check_config

        check_config(cfg.adversarial)
    from lamina.energy import meter

    meter.check_config(cfg.energy)


def auto_batch_size(n_train: int) -> int:
    """256, or for small datasets the largest power of two giving at least ~32 steps an epoch (min 16)."""
    b = 256
    while b > 16 and n_train / b < 32:
        b //= 2
    return b


def build_task(ds: Dataset, cfg: RunConfig) -> Task:
    """The task the data declares (``Dataset.task``), configured from ``cfg``; with
    ``adversarial.method`` set, wrapped so that it learns from adversarial examples."""
    task = TASKS.get(ds.task).from_data(ds, cfg)
    if isinstance(task, ImageGenerator):
        ds.preprocess = task.preprocess  # what the saved model's inputs are (and the pixel range it samples in)
    if not cfg.adversarial.method:
        return task
    if ds.task != "classify" or ds.modality in ("text", "table") or ds.preprocess.kind == "tokens":
        what = {"text": "text (token ids)", "table": "a table (category indices)"}.get(
            ds.modality, "token ids" if ds.preprocess.kind == "tokens" else f"a {ds.task} task")
        raise LaminaError(f"adversarial training needs a classifier of continuous inputs; {ds.name} is {what}: "
                          "drop --adversarial")
    from lamina.robustness.attacks import input_bounds
    from lamina.robustness.training import AdversarialTraining, check_config

    lower, upper = input_bounds(ds.preprocess, ds.modality, ds.train.x)
    check_config(cfg.adversarial, lower=lower, upper=upper, dims=math.prod(ds.input_shape))  # eps against the range
    return AdversarialTraining(task, cfg.adversarial, ds.preprocess, lower=lower,  # type: ignore[arg-type]
                               upper=upper)


def adversarial_overrides(spec: str | Sequence[str]) -> list[str]:
    """``"pgd eps=0.1 steps=7"`` (the CLI's ``--adversarial``) as ``adversarial.*`` overrides."""
    from lamina.config import AdversarialConfig

    words = spec.split() if isinstance(spec, str) else [w for part in spec for w in str(part).split()]
    if not words or "=" in words[0]:
        raise LaminaError("--adversarial needs a method first: pgd or fgsm-rs, then key=value settings, "
                          "e.g. --adversarial pgd eps=0.1 steps=7")
    keys = [f.name for f in dataclasses.fields(AdversarialConfig) if f.name != "method"]
    out = [f"adversarial.method={words[0]}"]
    for w in words[1:]:
        key, sep, value = w.partition("=")
        if not sep or key not in keys:
            raise LaminaError(f"--adversarial setting '{w}' is not one of {', '.join(k + '=...' for k in keys)}"
                              + (f": {did_you_mean(key, keys)}" if sep else ""))
        out.append(f"adversarial.{key}={value}")
    return out


def resolve_run(cfg: RunConfig, ds: Dataset, model_name: str, task: Task) -> RunConfig:
    """Fill in what ``auto``/0/None left open (model name, batch size, lr, run folder, task): the
    result is what config.yaml records, so resuming or repeating the run resolves nothing again."""
    batch_size = cfg.data.batch_size or getattr(task, "default_batch_size", 0) or auto_batch_size(len(ds.train))
    lr = cfg.train.lr if cfg.train.lr is not None else default_lr(cfg.train.optimizer, batch_size)
    out = cfg.out or str(default_run_dir(cfg.data.name, model_name))
    return replace(cfg, model=replace(cfg.model, name=model_name),
                   data=replace(cfg.data, batch_size=batch_size, task=ds.task),
                   train=replace(cfg.train, lr=lr), out=out)


class Session:
    """Everything one training run needs, built from a config: shared by train and resume.

    Args:
        cfg: the run's config (resolved here where it says ``auto``).
        console: where progress and messages go.
        quiet: no progress bar.
        resuming: the run folder exists and will be continued (it is not prepared again).
        extra: more callbacks.
        dataset: the data, already built from ``cfg.data`` (e.g. a subset of its training split,
            for a sample-efficiency curve); None: built here.
    """

    def __init__(self, cfg: RunConfig, console: Console, *, quiet: bool, resuming: bool = False,
                 extra: Sequence[cb.Callback] = (), dataset: Dataset | None = None) -> None:
        self.t_start = time.perf_counter()
        if cfg.train.deterministic:
            enable_determinism()
        seed_everything(cfg.train.seed)
        t = cfg.train
        # First the job of processes (one, or torchrun's): everything below may need to agree with it.
        self.engine = engine = Engine.create(t.device, t.precision, t.compile, False, t.threads, strategy=t.strategy,
                                             seed=t.seed, dist_timeout=t.dist_timeout,
                                             sync_batchnorm=t.sync_batchnorm)
        self.dist = engine.dist
        self.lock: RunLock | None = None
        try:
            self._assemble(cfg, console, quiet=quiet, resuming=resuming, extra=extra, dataset=dataset)
        except BaseException:  # nothing trains: free the run folder and leave the job's process group
            if self.lock is not None:
                self.lock.release()
            engine.close()
            raise

    def _assemble(self, cfg: RunConfig, console: Console, *, quiet: bool, resuming: bool,
                  extra: Sequence[cb.Callback], dataset: Dataset | None) -> None:
        """Everything of :meth:`__init__` after the job of processes: data, task, model, callbacks."""
        engine, t = self.engine, cfg.train
        if not self.dist.is_main:  # rank 0 prints and writes; the others train quietly beside it
            console, quiet = Console(quiet=True), True
            warnings.simplefilter("ignore")  # the same code runs on every rank: rank 0's warnings are theirs
        self.console = console
        # rank 0 first: it fills the data caches that the others then read
        self.ds = ds = dataset if dataset is not None else dist_utils.main_first(
            lambda: build_dataset(cfg.data, seed=cfg.train.seed))
        self.task = task = build_task(ds, cfg)
        if self.dist.strategy == "fsdp" and t.channels_last:
            raise LaminaError("train.channels_last under fsdp: FSDP shards contiguous parameters only; drop it")
        sharded = self.dist.strategy == "fsdp"  # FSDP cannot shard a channels_last convolution's weight
        engine.channels_last = bool(t.channels_last if t.channels_last is not None
                                    else ds.modality == "image" and not sharded)
        self.model = model = task.build_model(cfg.model, ds)
        if self.dist.strategy == "fsdp":
            dist_utils.on_main(lambda: check_fsdp(cfg, task))  # said once, by rank 0
        cfg = resolve_run(cfg, ds, model.arch["name"], task)
        cfg = replace(cfg, out=dist_utils.broadcast(cfg.out))  # rank 0's folder (a default name holds the time)
        self.cfg, self.out = cfg, Path(cfg.out)
        self.lock = dist_utils.on_main(lambda: claim_run(self.out, cfg, resuming))  # one writer per run folder
        self.loaders = task.loaders(ds, cfg.data, device=engine.device, seed=cfg.train.seed,
                                    channels_last=engine.channels_last)
        for loader in self.loaders.values():
            self.dist.shard_loader(loader)  # each rank its part of every batch
        t = cfg.train
        # on the device, and under fsdp sharded, before the optimizer takes the parameters
        optimizer = create_optimizer(t.optimizer, engine.prepare(model), lr=t.lr,  # type: ignore[arg-type]
                                     weight_decay=t.weight_decay, momentum=t.momentum, beta2=t.beta2)
        scheduler = create_scheduler(t.schedule, optimizer, total_steps=t.epochs * len(self.loaders["train"]),
                                     warmup_fraction=t.warmup)
        saved = to_dict(replace(cfg, out=""))  # a checkpoint's config, like config.yaml, repeats into a new folder
        ckpt = cb.Checkpoint(self.out / "checkpoints", saved, keep=t.keep_checkpoints,
                             every_steps=t.checkpoint_every, every_minutes=t.checkpoint_minutes)
        # Every rank has the same callbacks (they meet at the same steps); only rank 0's write.
        callbacks: list[cb.Callback] = [cb.MetricsLogger(self.out / "metrics.jsonl"), ckpt, *extra]
        main, sharded = self.dist.is_main, self.dist.strategy == "fsdp"
        if not quiet:
            callbacks.append(cb.ProgressBar(console))
        if t.early_stopping > 0:
            callbacks.append(cb.EarlyStopping(t.early_stopping))
        if t.max_minutes > 0:
            callbacks.append(cb.TimeLimit(t.max_minutes * 60))
        if t.gradient_flow_every > 0 and (main or sharded):  # fsdp: each rank its shards' part of a norm
            from lamina.inspection.gradients import GradientFlow

            callbacks.append(GradientFlow(self.out / "inspection" / "gradients.jsonl", every=t.gradient_flow_every))
        if t.tensorboard:
            callbacks.append(cb.TensorBoard(self.out / "tensorboard"))
        # samples written during training, by rank 0 (under fsdp with the model gathered on every rank)
        callbacks += [cb.OnMain(c if main else None, c.order) for c in task.callbacks(self.out)]
        self.reference = (dist_utils.on_main(lambda: self._fidelity_reference(console))
                          if isinstance(task, ImageGenerator) else None)
        if isinstance(task, ImageGenerator):  # rank 0 scores; under fsdp every rank gathers the model for it
            from lamina.fidelity import FidelityScores
            from lamina.tasks.generative import SampleGrids

            if self.reference is not None:
                self.fidelity = FidelityScores(self.reference, self.out / "fidelity.jsonl", n=cfg.generate.fd_samples,
                                               steps=cfg.generate.sample_steps, epochs=SampleGrids.epochs_to_sample)
            callbacks.append(cb.OnMain(self.fidelity if self.reference is not None else None, FidelityScores.order))
        from lamina.energy.meter import EnergyMeter

        self.meter = EnergyMeter.from_config(cfg.energy, engine.device, self.out)
        if self.meter is not None:
            callbacks.append(self.meter)
        self.trainer = Trainer(model, engine=engine, optimizer=optimizer, scheduler=scheduler, task=task,
                               grad_clip=t.grad_clip, ema_decay=t.ema, on_nan=t.on_nan, rollback=ckpt.newest_state,
                               callbacks=callbacks)

    def _fidelity_reference(self, console: Console) -> Any:
        """FD-lamina's real-image features (see :mod:`lamina.fidelity`), or None when it is off."""
        from lamina.fidelity import Features, Reference, classifier_run

        run = classifier_run(self.cfg, console)
        if run is None:
            return None
        return Reference.build(Features(run, self.engine.device), self.ds, seed=self.cfg.train.seed)

    def describe(self) -> str:
        ds, cfg = self.ds, self.cfg
        what = getattr(ds, "summary", "") or f"{len(ds.train):,} train examples"
        a = cfg.adversarial
        adv = f", adversarial {a.method} eps={a.eps:g} ({a.norm})" if a.method else ""
        return (f"[bold]lamina[/] {self.task.name}{adv}: {cfg.model.name} ({self.model.num_params():,} parameters) on "
                f"{ds.name} ({what}) for {cfg.train.epochs} epochs on {self.engine.device} "
                f"[{self.engine.precision}]  -> {self.out}")

    def run(self) -> dict[str, Any]:
        """Train, evaluate the final model as ``load`` will run it, save it, write ``summary.json``."""
        self.console.print(self.describe())
        for note in self.ds.notes:
            self.console.print(f"  {note}", highlight=False)
        try:
            return self._run()
        finally:
            if self.lock is not None:
                self.lock.release()
            self.engine.close()  # the process group ends with the run

    def _run(self) -> dict[str, Any]:
        cfg, ds, trainer, engine, out = self.cfg, self.ds, self.trainer, self.engine, self.out
        seconds_before = trainer.train_seconds  # a resumed run's earlier training time
        try:
            trainer.fit(self.loaders["train"], self.loaders.get("val"), epochs=cfg.train.epochs)
        except (RuntimeError, OSError) as e:
            if self.dist.world_size == 1 or not lost_peers(e):
                raise
            import signal

            # torchrun SIGTERMs the survivors once it sees the dead rank, and the checkpoint callback's
            # handler is gone by now: this rank is ending anyway, and must live to say why and how to resume
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            newest = self.trainer.callbacks and ckpt_of(self.trainer.callbacks)
            from lamina.training.distributed import PeersLost

            raise PeersLost(
                f"rank {self.dist.rank} of {self.dist.world_size}: the other processes of this job stopped answering "
                f"({_first_line(e)}); torchrun's summary names the rank that failed. Resume from "
                f"{newest or 'the newest checkpoint'} with: lamina resume {out} --nproc {self.dist.world_size}") from None
        if trainer.stop_reason:
            self.console.print(f"stopped early: {trainer.stop_reason}")
        final = trainer.ema.module if trainer.ema is not None else trainer.module
        # The reported metrics are those of the saved model as `load` runs it: fp32, not compiled.
        with engine.gathered(trainer.module):  # fsdp: the whole model on every rank, for uneven shards
            metrics = self.task.final_metrics(final, self.loaders)
            if self.reference is not None:  # the final model's FD-lamina: scored after the last epoch, or now
                from lamina.fidelity import score_model

                last = self.fidelity.last
                g = cfg.generate
                metrics |= ({k: v for k, v in last.items() if k not in ("epoch", "step")}
                            if last.get("step") == trainer.step
                            else score_model(self.task, final, self.reference, n=g.fd_samples, steps=g.sample_steps))
        from lamina.training.distributed import full_state

        weights = full_state(final.state_dict())  # fsdp: every rank's shards, gathered
        summary = {
            "task": self.task.name, **metrics,
            "train_seconds": trainer.train_seconds,
            "total_seconds": seconds_before + time.perf_counter() - self.t_start,
            "epochs": trainer.epoch, "steps": trainer.step, "skipped_steps": trainer.nan_guard.skipped,
            "stop_reason": trainer.stop_reason, "params": self.model.num_params(), "model": cfg.model.name,
            **self._energy(),
            "dataset": ds.name, "modality": ds.modality, "train_examples": len(ds.train), "data_notes": ds.notes,
            "device": _device_name(engine.device), "precision": engine.precision,
            "world_size": self.dist.world_size, "strategy": self.dist.strategy,
            "torch": torch.__version__, "python": platform.python_version(), "seed": cfg.train.seed,
            "lamina": __version__,
        }
        if self.dist.is_main:
            save_model(final, out, ds, self.task, weights=weights)
            write_json(out / "summary.json", summary)
        return summary

    def _energy(self) -> dict[str, Any]:
        """The meter's fields of ``summary.json``; several processes: the joules of all of them (a
        package counter, RAPL, is counted once per node: every rank on it reads the same package)."""
        if self.meter is None:
            return {"energy_method": "off"}
        out = self.meter.summary()
        if self.dist.world_size > 1:
            from lamina.energy.co2 import co2e_g

            own = out["energy_j"] if out["energy_method"] != "rapl" or self.dist.local_rank == 0 else 0.0
            out["energy_j"] = dist_utils.agree(own, "sum")
            out["co2e_g"] = co2e_g(out["energy_j"], out["grid_intensity_g_per_kwh"])
            out["energy_note"] = f"{out.get('energy_note') or ''} (summed over {self.dist.world_size} processes)".strip()
        return out


FSDP_TASKS = ("classify", "regress", "language-model", "diffusion")  # each tested sharded (tests/distributed)


def check_fsdp(cfg: RunConfig, task: Task) -> None:
    """What ``train.strategy=fsdp`` cannot run, as one-line errors before anything is trained."""
    if task.name not in FSDP_TASKS:
        raise LaminaError(f"train.strategy=fsdp runs the {', '.join(FSDP_TASKS)} tasks; this is {task.name}: "
                          "use train.strategy=ddp")
    if cfg.adversarial.method:
        raise LaminaError("adversarial training under fsdp is not supported: use train.strategy=ddp")
    if cfg.train.ema > 0:
        raise LaminaError("train.ema under fsdp is not supported (the average would be a full copy of the model on "
                          "every rank): drop train.ema or use train.strategy=ddp")


def lost_peers(e: BaseException) -> bool:
    """``e`` is a collective that failed because another rank died, hung or went away."""
    import torch.distributed as dist

    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return any(mark in text for mark in ("Connection closed by peer", "Connection reset by peer", "Timed out",
                                         "timed out", "Broken pipe", "NCCL", "gloo"))


def _first_line(e: BaseException) -> str:
    """The gist of a backend's error: its first line without the source location (``[.../pair.cc:537] ``)."""
    import re

    return re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", (str(e).splitlines() or [""])[0]).strip()[:120]


def ckpt_of(callbacks: Sequence[cb.Callback]) -> str:
    """The newest checkpoint folder this process wrote or read of, for a message ("" if none)."""
    for c in callbacks:
        if isinstance(c, cb.Checkpoint) and c.folder.is_dir():
            found = sorted(p.name for p in c.folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            return found[-1] if found else ""
    return ""


def resume_session(folder: Path, console: Console, *, quiet: bool, extra: Sequence[cb.Callback] = ()) -> Session:
    """The session of an interrupted run, restored from its newest valid checkpoint (older ones
    if that is corrupt), ready to :meth:`Session.run` on."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LaminaError(f"run folder {folder} does not exist")
    if (folder / "summary.json").exists():
        raise LaminaError(f"run {folder} already finished (summary.json exists); nothing to resume")
    cfg = replace(load_config(folder / "config.yaml"), out=str(folder))

    def skipped(path: Path, err: LaminaError) -> None:
        console.print(f"[yellow]skipping checkpoint[/] {path.name}: {err}; trying the previous one")

    found = checkpoint.latest(folder / "checkpoints", on_skip=skipped)
    if found is None:
        raise LaminaError(f"run {folder} has no valid checkpoint to resume from: train it again")
    state, path = found
    session = Session(cfg, console, quiet=quiet, resuming=True, extra=extra)
    session.trainer.load_state_dict(state)
    if session.dist.is_main:
        for log in ("metrics.jsonl", "energy.jsonl", "fidelity.jsonl", "samples/samples.jsonl"):
            truncate_metrics(folder / log, session.trainer.step)
    session.console.print(f"resuming {folder} from {path.name} (epoch {session.trainer.epoch + 1}, step {session.trainer.step})")
    return session


def restart_session(cfg: RunConfig, console: Console, *, quiet: bool, extra: Sequence[cb.Callback] = ()
                    ) -> Session | None:
    """The session of a job torchrun started again (``--max-restarts``; ``TORCHELASTIC_RESTART_COUNT``
    > 0) with the same ``lamina train`` command: it resumes its run folder from the newest checkpoint,
    or trains it again from the start when the failure came before the first one. None: this is not
    a restart, or its folder holds nothing yet (train as usual)."""
    import os

    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) == 0:
        return None
    if not cfg.out:
        raise LaminaError("torchrun restarted this job, but `lamina train` has no --out: give it an --out folder "
                          "when you use --max-restarts, so that a restart finds the run it resumes")
    folder = Path(cfg.out)
    if not (folder / "config.yaml").is_file() or (folder / "summary.json").exists():
        return None
    if checkpoint.latest(folder / "checkpoints") is not None:
        return resume_session(folder, console, quiet=quiet, extra=extra)
    session = Session(replace(load_config(folder / "config.yaml"), out=str(folder)), console, quiet=quiet,
                      resuming=True, extra=extra)
    if session.dist.is_main:  # nothing was checkpointed: the logs of the failed attempt go
        for log in ("metrics.jsonl", "energy.jsonl", "fidelity.jsonl", "samples/samples.jsonl"):
            truncate_metrics(folder / log, 0)
    session.console.print(f"torchrun restarted {folder} before its first checkpoint: training it from the start")
    return session


def evaluate_run(folder: Path, *, split: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Re-evaluate a finished run's saved model on a split of its data, rebuilt from config.yaml
    (``split`` None: the test split, or the validation tail of a language model, which has no other)."""
    from lamina.artifacts import load

    predictor = load(folder, device)
    cfg = load_config(folder / "config.yaml")
    ds = build_dataset(cfg.data, seed=cfg.train.seed)
    splits = ds.splits()
    split = split or ("test" if "test" in splits else "val")
    if split not in splits:
        raise LaminaError(f"split '{split}' does not exist for {ds.name}: choose one of {', '.join(splits)}")
    if hasattr(predictor, "preprocess"):
        ds.preprocess = predictor.preprocess  # evaluate exactly as the saved model predicts
    task = build_task(ds, cfg)  # the run's own config: the same test-time flips as in training
    loader = task.eval_loader(splits[split], ds, cfg.data, device=predictor.device)
    m = task.evaluate(predictor.model, _progress(loader, f"evaluating {folder} on {split}"))
    scalars = task.scalars(m)
    out: dict[str, Any] = {"split": split, **scalars, "examples": m["examples"]}
    if "per_class_accuracy" in m:
        out["per_class_accuracy"] = dict(zip(ds.classes, m["per_class_accuracy"], strict=True))
        out["confusion"] = m["confusion"]
    return out


def _progress(loader: Any, what: str) -> Any:
    """``loader``'s batches, with a transient progress bar on a terminal."""
    from rich.progress import track

    return track(loader, description=what, total=len(loader), transient=True, console=Console(stderr=True))


def claim_run(out: Path, cfg: RunConfig, resuming: bool) -> RunLock:
    """Lock the run folder ``out`` (created if need be) for this run, the one writer until it releases
    the lock; a new run also checks that the folder holds no run yet and writes ``config.yaml``.
    Shared by training (:class:`Session`, rank 0) and game runs (``lamina play``)."""
    if out.exists() and not out.is_dir():
        raise LaminaError(f"--out {out} exists and is not a folder: choose another --out")
    lock = RunLock(out).acquire()
    if not resuming:
        if (out / "summary.json").exists() or (out / "metrics.jsonl").exists():
            lock.release()
            raise LaminaError(f"run folder {out} already holds a run: choose another --out or delete it")
        # without its folder: `lamina train --config RUN/config.yaml` repeats the run into a new one
        save_config(replace(cfg, out=""), out / "config.yaml")
    return lock


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
