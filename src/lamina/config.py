"""Run configuration: one frozen dataclass per concern, plus ``a.b=c`` overrides.

The resolved :class:`RunConfig` is written to every run folder as ``config.yaml`` and into every
checkpoint, so a run can always be reproduced from its own folder.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lamina.errors import LaminaError, did_you_mean


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how batches are made."""

    name: str = "fashion-mnist"  # a registered dataset, a folder of class folders (images, .wav, .txt), a .npz, .txt,
    # .fasta/.fa/.fna(.gz), .csv/.tsv/.parquet file
    modality: str = "auto"  # auto (detected from the files, and printed) | image | audio | text | sequence | table
    task: str = "auto"  # auto (what the data declares) | classify | regress | language-model
    vocab: str = "char"  # text: char (the training text's characters) | byte (UTF-8 bytes, 256) | bpe (tokenizers)
    vocab_size: int = 1024  # text with vocab=bpe: size of the BPE vocabulary trained on the training split
    context: int = 0  # text: tokens per window (language model) or per example (classifier); 0: the model's default
    steps_per_epoch: int = 0  # language models: batches per epoch (validated after each); 0: one pass's worth of tokens
    text_column: str = "text"  # CSV text classification: the column holding the text
    label_column: str = ""  # tables and CSV texts: the label's column; "": label, target, class or y, else the last
    # audio (folders of .wav files per class)
    sample_rate: int = 16000  # every clip is resampled to this rate (Hz)
    clip_seconds: float = 1.0  # and padded or cut to this length
    time_shift: float = 0.1  # training: random circular shift of up to this fraction of a clip; 0 turns it off
    noise: float = 0.5  # training: probability of mixing background noise into a clip; 0 turns it off
    noise_snr_min: float = 5.0  # the noise's signal-to-noise ratio is drawn uniformly in [min, max] dB
    noise_snr_max: float = 20.0
    spec_masks: int = 2  # log-mel models, training: SpecAugment time masks and frequency masks per clip; 0: off
    # biological sequences (FASTA)
    label_from: str = ""  # "": the lineage rank below; header:REGEX (group 1 of a match on the header); a .csv of id,label
    rank: str = "phylum"  # lineage labels (";"-separated, last tab field of the header): domain..genus, or an index
    min_class_examples: int = 10  # classes with fewer examples are merged into "other" (sequences, tables); 0: never
    kmer: int = -1  # sequences: k-mer frequencies (an MLP's input); -1: 6 for DNA/RNA, 3 for protein; 0: one-hot residues
    max_length: int = 0  # sequences: residues kept per record (longer ones are cut); 0: the longest record, at most 4096
    alphabet: str = "auto"  # sequences: auto | dna | rna | protein
    reverse_complement: bool | None = None  # training: random reverse complements (DNA/RNA); None: on for DNA/RNA
    batch_size: int = 0  # examples per step; 0: auto (256, smaller for small datasets)
    val_fraction: float = 0.05  # of the training split, held out for validation
    test_fraction: float = 0.2  # of all examples, used only when the source has no test split
    split_seed: int = -1  # draws the test and validation splits; -1: train.seed (set it to compare seeds on one split)
    image_size: int | None = None  # image folders: resize to this side (None: most common size)
    translate: int = 2  # random translation in pixels, 0 turns it off
    flip: bool | None = None  # horizontal flip; None: the dataset's own default
    cutout: int = 0  # side of a random square set to zero, in pixels; 0 turns it off
    loader: str = "auto"  # auto | device (whole set on the device) | torch (DataLoader)
    workers: int = 0  # DataLoader worker processes (torch loader only)


@dataclass(frozen=True)
class ModelConfig:
    """Which network, and its shape. 0, "" and None mean the model's own default (see :meth:`given`)."""

    name: str = "auto"  # auto: the data's default (README "Models" lists them all; lamina.models.MODELS.names() in Python)
    width: int = 0  # channels (conv) or units (mlp) of the first stage
    depth: int = 0  # blocks per stage (cnn/resnet) or hidden layers (mlp)
    act: str = "relu"  # relu | leaky_relu | gelu | silu | tanh | sigmoid
    norm: str = "batch"  # batch | layer | group | none
    dropout: float | None = None  # before the classifier (Transformers: in attention and MLP too); None: the model's (0; tables 0.1)
    heads: int = 0  # Transformers: attention heads; 0: width // 64 (at least 1)
    positions: str = ""  # Transformers: learned | rotary | sinusoidal (seqtransformer); empty: the model's default

    def given(self, *names: str) -> dict[str, Any]:
        """The named fields this config sets, as a model's keyword arguments: the others keep the
        model's defaults. A width, depth or head count of 0 and an empty string are unset; a dropout
        is unset only when None, so that ``model.dropout=0`` turns a model's default dropout off."""
        values = {n: getattr(self, n) for n in names}
        return {n: v for n, v in values.items() if (v is not None if n == "dropout" else v)}


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe and the hardware it runs on."""

    epochs: int = 10
    lr: float | None = None  # peak learning rate; None: the optimizer's default for the batch size
    optimizer: str = "sgd"  # sgd (Nesterov) | adamw | muon (Muon: hidden weight matrices; AdamW: the rest)
    momentum: float = 0.9  # SGD's momentum; AdamW's beta1 (and muon's AdamW half; its Muon half uses 0.95)
    beta2: float = 0.999  # AdamW's second-moment decay (language models: 0.99)
    weight_decay: float = 5e-4  # not applied to norm and bias parameters
    schedule: str = "onecycle"  # onecycle | cosine | linear | constant
    warmup: float = 0.2  # fraction of all steps spent warming up
    label_smoothing: float = 0.1
    grad_clip: float = 0.0  # max global gradient norm; 0 turns it off
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 turns it off
    tta_flip: bool = False  # test-time flips: evaluate/predict with the mean of the probabilities of an image and
    # its mirror image (only where a horizontal flip keeps the label: data.flip or the dataset's default)
    early_stopping: int = 0  # stop after this many epochs without a better val loss; 0: never
    max_minutes: float = 0.0  # stop training after this much wall-clock time; 0: no limit
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 where the hardware has it: CUDA, or CPUs with AVX512-BF16/AMX) | bf16 | fp16 | fp32
    compile: bool = False  # torch.compile the model
    channels_last: bool | None = None  # NHWC memory format; None: on for image inputs (faster on GPU and CPU)
    threads: int = 0  # CPU threads for torch; 0: torch's default
    deterministic: bool = False  # deterministic algorithms: a resumed CPU run is bit-identical
    checkpoint_every: int = 0  # also checkpoint every this many steps (always at epoch ends); 0: off
    checkpoint_minutes: float = 0.0  # also checkpoint every this many minutes; 0: off
    keep_checkpoints: int = 2  # how many of the newest checkpoints to keep
    on_nan: str = "stop"  # a NaN/inf loss or gradient: stop | skip | rollback | off (no check)
    gradient_flow_every: int = 50  # record per-layer gradient norms every this many steps; 0: off
    tensorboard: bool = False  # write TensorBoard event files to RUN/tensorboard
    # Several processes (torchrun, or lamina train --nproc N): data.batch_size is the global batch.
    strategy: str = "auto"  # auto (ddp under torchrun, else none) | none | ddp | fsdp (sharded: FSDP2)
    sync_batchnorm: bool = False  # ddp: BatchNorm statistics over the global batch, not each rank's part
    dist_timeout: float = 600.0  # seconds a collective waits for a silent rank before the job fails


@dataclass(frozen=True)
class AdversarialConfig:
    """Adversarial training (classifiers): every training batch is replaced by adversarial
    examples of the current model. eps is in the units of the raw input (pixels in [0, 1])."""

    method: str = ""  # "" (off) | pgd (Madry et al. 2018) | fgsm-rs (FGSM from a random start, Wong et al. 2020)
    eps: float = 0.1  # radius of the perturbation ball, in raw input units
    norm: str = "linf"  # linf | l2
    steps: int = 7  # PGD steps per batch (fgsm-rs: always 1)
    step_size: float = 0.0  # of each step, as a fraction of eps; 0: 2.5 / steps for pgd, 1.25 for fgsm-rs
    eval_examples: int = 1000  # validation examples whose robust accuracy is logged each epoch; 0: off
    eval_steps: int = 10  # PGD steps of that per-epoch robust evaluation


@dataclass(frozen=True)
class EnergyConfig:
    """The energy meter every run has, and what its joules cost in CO2e."""

    meter: str = "auto"  # auto (nvml on NVIDIA GPUs, else rapl where readable, else estimate) | nvml | rapl | estimate | off
    grid_intensity: str = ""  # gCO2e per kWh (a number) or a country code (ISO 3166 alpha-3, needs codecarbon); "": world average
    max_kwh: float = 0.0  # stop training gracefully (with a checkpoint) once this much energy is spent; 0: no limit
    interval: float = 5.0  # seconds between counter reads during an epoch (always read at epoch ends)
    cpu_watts_per_core: float = 0.0  # the estimate's power model: watts per busy core; 0: the default


@dataclass(frozen=True)
class GenerateConfig:
    """Generative image models (``data.task=vae`` or ``diffusion``) and the samples a run writes."""

    latent: int = 16  # VAE: latent dimensions
    beta: float = 1.0  # VAE: weight of the KL term of the ELBO (beta-VAE, Higgins et al. 2017); 1: the true ELBO
    decoder: str = "bernoulli"  # VAE: bernoulli (pixels in [0, 1] as probabilities) | gaussian (unit variance)
    timesteps: int = 1000  # diffusion: steps of the forward noising chain
    noise_schedule: str = "cosine"  # diffusion: cosine (Nichol & Dhariwal 2021) | linear (Ho et al. 2020)
    prediction: str = "eps"  # diffusion: what the U-Net predicts: eps (the noise) | v (Salimans & Ho 2022)
    sample_steps: int = 50  # diffusion: DDIM steps of the samples written during training (and lamina generate's default)
    samples: int = 64  # images in each sample grid written during training
    fd_classifier: str = "auto"  # FD-lamina's feature classifier: a classifier run folder | auto (train one, cached) | off
    fd_samples: int = 2000  # generated images FD-lamina and precision/recall are computed on


@dataclass(frozen=True)
class RLConfig:
    """Reinforcement learning (``lamina play``): Double DQN on vectorised environments."""

    env: str = "minatar/breakout"  # minatar/<game> | atari/<Game> (gymnasium + ale-py)
    frames: int = 1_000_000  # environment frames to train for (all environments together)
    envs: int = 8  # environments stepped together (one batched forward pass picks all their actions)
    buffer: int = 100_000  # replay buffer capacity, in transitions (kept on the training device)
    batch_size: int = 64  # transitions per update
    frames_per_update: int = 8  # environment frames between updates (the replay ratio is batch_size / this)
    # (8 environments, 64 transitions every 8 frames: a replay ratio of 8 where the MinAtar reference has 32, for
    # >= 3x its frames/s on a 2-core CPU at a return as good; benchmarks/results/minatar_dqn_cpu.json)
    lr: float = 0.001  # Adam's learning rate (eps 1.5e-4)
    gamma: float = 0.99  # discount per step
    n_step: int = 3  # n-step returns
    target_period: int = 250  # updates between copies of the online network into the target network
    learning_starts: int = 5000  # frames of random play before the first update
    eps_start: float = 1.0  # exploration: epsilon decays linearly from eps_start ...
    eps_end: float = 0.1  # ... to eps_end ...
    eps_frames: int = 100_000  # ... over this many frames after learning starts
    double: bool = True  # Double DQN targets (van Hasselt et al. 2016); false: plain DQN
    eval_every: int = 50_000  # frames between evaluations during training (the return curve); 0: off
    eval_episodes: int = 10  # episodes of each evaluation during training (lamina play RUN --eval: --episodes)
    eval_eps: float = 0.0  # epsilon of evaluation episodes
    sticky: float = 0.25  # Atari (and MinAtar): probability of repeating the previous action (Machado et al. 2018)
    noop_max: int = 30  # Atari: up to this many no-op actions at the start of an episode
    frame_skip: int = 4  # Atari: frames per action (the last two max-pooled)
    max_episode_frames: int = 108_000  # cut (truncate) an episode after this many frames (MinAtar: steps); 0: never


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    out: str = ""  # run folder; empty: runs/<dataset>-<model>-<time>


C = TypeVar("C")

# What yaml.safe_load raises on bad text: YAMLError, but also the errors of its scalar constructors
# ("2001-13-01": ValueError, "!!bool maybe": KeyError, "!!float ''": IndexError, ...) and deep nesting.
_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, LookupError, AttributeError, OverflowError, RecursionError)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, e.g. ``train.lr``."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        t = hints[f.name]
        if is_dataclass(t):
            keys += all_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def from_dict(data: dict[str, Any], cls: type[C] = RunConfig, prefix: str = "") -> C:  # type: ignore[assignment]
    """Build a config from a (possibly partial) dict; unknown keys are an error with a suggestion."""
    if not isinstance(data, dict):
        raise LaminaError(f"config section '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise LaminaError(
                f"unknown config key '{prefix}{key}': "
                + did_you_mean(prefix + str(key), all_keys(RunConfig) if prefix or cls is RunConfig else names)
            )
        t = hints[key]
        if is_dataclass(t):  # an empty section (``train:`` in YAML) keeps the defaults; ``train: 0`` is an error
            kwargs[key] = from_dict({} if value is None else value, t, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, t, prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, t: Any, key: str) -> Any:
    """Check/convert one value against its annotated type (str, int, float, bool, optional)."""
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif t is float:
        if isinstance(value, int | float | str) and not isinstance(value, bool):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except (ValueError, OverflowError):  # not a number, or an integer beyond any float
                pass
    elif t is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    raise LaminaError(f"config key '{key}' must be {_type_name(t)}, got {value!r}")


def _type_name(t: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, str(t))


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` strings; values are parsed as YAML scalars."""
    data = to_dict(cfg)
    valid = all_keys()
    for item in overrides:
        if "=" not in item:
            raise LaminaError(f"override '{item}' is not of the form key=value, e.g. train.lr=0.1")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            raise LaminaError(f"unknown config key '{key}': {did_you_mean(key, valid)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except _YAML_ERRORS:  # not a YAML scalar (e.g. "2001-13-01"): keep the text
            value = raw
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if isinstance(value, bool) and isinstance(node[leaf], str):  # YAML 1.1 reads off/no/on/yes as booleans
            value = raw.strip()
        node[leaf] = value
    return from_dict(data)


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML config file (partial configs are fine; missing keys keep their defaults)."""
    p = Path(path)
    if not p.is_file():
        raise LaminaError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (OSError, *_YAML_ERRORS) as e:  # UnicodeDecodeError is a ValueError
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise LaminaError(f"config file '{p}' is not valid YAML: {why}") from None
    return from_dict(data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
