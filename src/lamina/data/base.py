"""The data contract every modality meets, and the registry of datasets.

A loader turns a source (a name, a folder, a file) into a :class:`Dataset`: tensors of raw
examples (``uint8`` images or ``float32`` arrays; or :class:`Examples` decoded on access, for
folders too large for memory) with ``int64`` labels where the task has labels, class names, and
the :class:`Preprocess` that maps raw examples to model inputs. The dataset **declares** its task
(``classify``, ``language-model``) and its modality (``image``, ``signal``, ``vector``, ``text``):
nothing downstream guesses them from a tensor's rank. The session, the model factory and
``predict`` only ever see this contract, so a new modality adds a loader and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from lamina.config import DataConfig
from lamina.errors import LaminaError
from lamina.registry import Registry


@dataclass(frozen=True)
class Preprocess:
    """Raw example -> model input. Stored in ``model.json`` so predict needs no training config.

    ``(x / scale - mean) / std``, with ``mean``/``std`` per channel (dim 1 of a batch).
    """

    kind: str = "array"  # "image" (decode files with PIL) | "array" | "tokens" (ids, passed through as they are)
    scale: float = 1.0  # raw values are divided by this first (255 for uint8 pixels)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: int | None = None  # images: 1 (grey) or 3 (RGB)
    size: tuple[int, int] | None = None  # images: (H, W) every input is resized to

    def apply(self, x: Tensor) -> Tensor:
        """Normalise a batch ``(B, C, ...)`` of raw examples to float32 model inputs (token ids pass through)."""
        if self.kind == "tokens":
            return x
        x = x.float()
        if self.scale != 1.0:
            x = x / self.scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, device=x.device).view(shape)
        std = torch.tensor(self.std, device=x.device).view(shape)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["size"] = list(self.size) if self.size else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            kind=str(d["kind"]),
            scale=float(d["scale"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            channels=None if d.get("channels") is None else int(d["channels"]),
            size=None if d.get("size") is None else (int(d["size"][0]), int(d["size"][1])),
        )


class Examples(Protocol):
    """A split's examples when they are not one tensor, e.g. images decoded from files on access
    (:class:`lamina.data.images.LazyImages`): indexing gives tensors, ``take`` a subset."""

    @property
    def shape(self) -> torch.Size: ...

    def __len__(self) -> int: ...

    def __getitem__(self, idx: Any) -> Tensor: ...

    def take(self, idx: Tensor) -> Examples: ...


@dataclass
class Split:
    """Examples ``x`` (N, ...) and labels ``y`` (N,) int64 (None for unlabelled data, such as the
    token stream of a language model), both on the CPU.

    ``x`` is a tensor, or :class:`Examples` decoded on access (too large to hold in memory).
    """

    x: Tensor | Examples
    y: Tensor | None = None

    def __post_init__(self) -> None:
        if self.y is not None and len(self.x) != len(self.y):
            raise LaminaError(
                f"{len(self.x)} examples but {len(self.y)} labels: x and y must have the same length"
            )

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: Tensor) -> Split:
        # Only non-tensors use take: Tensor.take indexes the flattened tensor, which is not a subset.
        x = self.x[idx] if isinstance(self.x, Tensor) else self.x.take(idx)
        return Split(x, None if self.y is None else self.y[idx])


TASKS = ("classify", "regress", "language-model", "vae", "diffusion")
GENERATIVE_TASKS = ("vae", "diffusion")  # image generators: labelled image data, split as for a classifier
MODALITIES = ("image", "audio", "text", "sequence", "table", "signal", "vector")


class Codec(Protocol):
    """How a modality's raw inputs (WAV files, FASTA records, CSV rows) become raw examples, saved in
    ``model.json`` (``to_dict``) so that ``predict`` reads new inputs exactly as training read its
    data. Each modality's module has ``codec_from_dict`` (see :mod:`lamina.data.codecs`)."""

    kind: str  # the modality: "audio", "sequence", "table"

    def to_dict(self) -> dict[str, Any]: ...

    def read(self, inputs: Any) -> tuple[Tensor, list[str]]:
        """User inputs (paths, strings, rows, arrays) -> raw examples ``(N, *input_shape)`` and a
        name for each (the file, the record id, the row number)."""
        ...


@dataclass
class Dataset:
    """A dataset: splits of raw tensors plus everything needed to use them, and what it is for.

    ``task`` and ``modality`` are declared by the loader that read the data (``data.task``
    overrides the task where the data allows another). ``codec`` is the text vocabulary
    (:mod:`lamina.data.text`) for ``modality == "text"``, and a :class:`Codec` for audio,
    sequences and tables. The loader also declares the model a run uses when ``model.name`` is
    ``auto`` (``default_model``), the model arguments the data fixes (``model_kwargs``: a
    vocabulary size, the categorical columns of a table...), and its training-time augmentation
    (``augment``: a callable ``(x, generator) -> x`` on raw batches, with ``active``).
    """

    name: str
    classes: list[str]
    train: Split
    test: Split | None = None  # None: carved from train by :func:`build_dataset`
    val: Split | None = None
    modality: str = "image"  # image | signal | vector | text
    preprocess: Preprocess = field(default_factory=Preprocess)
    flip: bool = False  # is a horizontal flip label-preserving for this data?
    source: str = ""  # where the examples were read from
    task: str = "classify"  # classify | language-model
    codec: Any = None  # text: the vocabulary (encode/decode), saved with the model
    summary: str = ""  # what was detected, in a line ("text: 4.03 M characters, ...")
    chars_per_token: float = 1.0  # text: characters per token of the validation tail (for bits per character)
    default_model: str = ""  # the model for model.name=auto; "": by modality (see lamina.tasks.classify)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # model arguments the data fixes (create_model's)
    augment: Any = None  # training augmentation of raw batches; None: the modality's default (images: from data.*)
    notes: list[str] = field(default_factory=list)  # what the loader decided (printed, and kept in summary.json)
    target_name: str = ""  # tables: the label column's name (a regression's predictions are in its units)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def splits(self) -> dict[str, Split]:
        return {k: s for k, s in (("train", self.train), ("val", self.val), ("test", self.test)) if s is not None}


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: how to load it, and (optionally) how to fetch it."""

    name: str
    load: Callable[[DataConfig], Dataset]
    description: str
    fetch: Callable[[], str] | None = None  # downloads/installs, returns where the data now is
    task: str = "classify"  # the task its data declares (known before loading: config defaults depend on it)
    modality: str = ""  # and its modality, where lamina has training defaults for it ("" otherwise)


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(
    name: str, description: str, fetch: Callable[[], str] | None = None, task: str = "classify", modality: str = ""
) -> Callable[[Callable[[DataConfig], Dataset]], Callable[[DataConfig], Dataset]]:
    """Decorator: register a ``load(cfg) -> Dataset`` function under ``name`` (whose data is for ``task``)."""

    def deco(fn: Callable[[DataConfig], Dataset]) -> Callable[[DataConfig], Dataset]:
        DATASETS.register(name, DatasetEntry(name, fn, description, fetch, task, modality))
        return fn

    return deco


def check_labels(y: Tensor, num_classes: int, where: str) -> None:
    """Labels must be integers in ``[0, num_classes)`` and there must be at least two classes."""
    if num_classes < 2:
        raise LaminaError(f"{where} has {num_classes} class; a classifier needs at least 2 classes")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise LaminaError(f"{where}: labels must be integers, got {y.dtype}")
    if y.dim() != 1:
        raise LaminaError(f"{where}: labels must have shape (N,), got {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise LaminaError(
            f"{where}: labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}"
        )


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off ``fraction`` of each class (deterministic in ``seed``): returns (rest, held_out)."""
    if not 0.0 < fraction < 1.0:
        raise LaminaError(f"split fraction must lie strictly between 0 and 1, got {fraction}")
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(split.y):
        idx = torch.nonzero(split.y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = round(fraction * len(idx))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        held.append(idx[:n])
        keep.append(idx[n:])
    k = torch.cat(keep).sort().values
    h = torch.cat(held).sort().values
    return split.take(k), split.take(h)


def channel_stats(
    x: Tensor | Examples, scale: float, max_examples: int = 10_000, *, max_lazy: int = 2_000, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (dim 1) mean and std of ``x / scale`` over at most ``max_examples`` examples
    (std 1 for a channel that is constant there).

    Examples decoded on access (not a tensor) are sampled: at most ``max_lazy`` of them, drawn at
    random (deterministic in ``seed``), so the statistics of a huge folder cost a bounded decode.
    """
    if isinstance(x, Tensor):
        x = x[:max_examples]
    else:
        n = len(x)
        idx = torch.arange(n)
        if n > max_lazy:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_lazy].sort().values
        x = x[idx]
    x = x.float() / scale
    if x.dim() == 1:
        x = x[:, None]
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims)
    std = x.std(dim=dims)
    # A channel constant in training (a k-mer never seen, a blank pixel) is only centred: dividing by a
    # vanishing std would turn any value it takes at predict time into an enormous input.
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return tuple(mean.tolist()), tuple(std.tolist())


def build_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Resolve ``cfg.name`` (registered name, image folder or ``.npz``), load it and make splits.

    The test split is carved (stratified) from train only when the source has none; the
    validation split is carved from what remains. Normalisation statistics come from train.
    ``seed`` (the run's) draws the splits unless ``data.split_seed`` is set (>= 0).
    """
    from lamina.data import sources  # registers the built-ins and resolves paths

    if cfg.split_seed >= 0:
        seed = cfg.split_seed
    if cfg.task in GENERATIVE_TASKS:  # before reading: a table's loader would object to the task first
        modality = sources.declared(cfg)[1]
        if modality in ("audio", "text", "sequence", "table"):  # an array's modality is known once it is read
            raise LaminaError(_not_images(cfg.task, cfg.name, modality))
    ds = sources.load(cfg)
    if cfg.task in GENERATIVE_TASKS:  # images to generate: split as a classifier's (labels colour the latent map)
        return _generative_splits(ds, cfg, seed)
    if ds.task == "regress":
        return _regression_splits(ds, cfg, seed)
    if ds.task != "classify":  # the task's own loader made its splits (e.g. a text's contiguous tail)
        return ds
    return build_dataset_splits(ds, cfg, seed)


def build_dataset_splits(ds: Dataset, cfg: DataConfig, seed: int) -> Dataset:
    """A labelled dataset's test and validation splits (stratified, where the source has none), checked,
    with the training split's normalisation statistics."""
    if ds.train.y is None:
        raise LaminaError(f"{ds.name} has no labels, so it cannot be classified: set data.task=language-model")
    check_labels(ds.train.y, ds.num_classes, ds.name)
    if ds.test is None:
        ds.train, ds.test = stratified_split(ds.train, cfg.test_fraction, seed)
    if ds.val is None and cfg.val_fraction > 0:
        ds.train, ds.val = stratified_split(ds.train, cfg.val_fraction, seed + 1)
    for name, s in ds.splits().items():
        if s.y is None:
            raise LaminaError(f"{ds.name}: the {name} split has no labels")
        check_labels(s.y, ds.num_classes, f"{ds.name} ({name} split)")
        if tuple(s.x.shape[1:]) != ds.input_shape:
            raise LaminaError(f"{ds.name}: {name} examples have shape {tuple(s.x.shape[1:])}, train has {ds.input_shape}")
    if len(ds.train) == 0:
        raise LaminaError(f"{ds.name}: no training examples left after splitting; add data or lower data.val_fraction")
    if ds.preprocess.kind != "tokens" and ds.preprocess.mean == (0.0,) and ds.preprocess.std == (1.0,):
        mean, std = channel_stats(ds.train.x, ds.preprocess.scale, seed=seed)
        ds.preprocess = replace(ds.preprocess, mean=mean, std=std)
    if cfg.flip is not None:
        ds.flip = cfg.flip
    return ds


def random_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off ``fraction`` of the examples at random (deterministic in ``seed``): (rest, held_out)."""
    if not 0.0 < fraction < 1.0:
        raise LaminaError(f"split fraction must lie strictly between 0 and 1, got {fraction}")
    n = len(split)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
    return split.take(perm[k:].sort().values), split.take(perm[:k].sort().values)


def _regression_splits(ds: Dataset, cfg: DataConfig, seed: int) -> Dataset:
    """Test and validation splits of real-valued targets: random, not stratified (there are no classes)."""
    for name, s in ds.splits().items():
        if s.y is None or not s.y.dtype.is_floating_point or s.y.dim() != 1:
            raise LaminaError(f"{ds.name}: regression targets of the {name} split must be real numbers, shape (N,)")
        if not torch.isfinite(s.y).all():
            raise LaminaError(f"{ds.name}: the {name} split has NaN or infinite targets; drop or fill those rows")
    if ds.test is None:
        ds.train, ds.test = random_split(ds.train, cfg.test_fraction, seed)
    if ds.val is None and cfg.val_fraction > 0:
        ds.train, ds.val = random_split(ds.train, cfg.val_fraction, seed + 1)
    if len(ds.train) < 2:
        raise LaminaError(f"{ds.name}: fewer than 2 training examples left after splitting; add data")
    return ds


def _generative_splits(ds: Dataset, cfg: DataConfig, seed: int) -> Dataset:
    """The splits of images to generate: those of a classifier of the same data (its test split the
    source's own, else carved stratified), with the task the config asks for."""
    if ds.modality != "image" or len(ds.input_shape) != 3:
        raise LaminaError(_not_images(cfg.task, ds.name, ds.modality))
    ds = build_dataset_splits(ds, cfg, seed)
    ds.task = cfg.task
    return ds


def _not_images(task: str, name: str, modality: str) -> str:
    return (f"data.task={task} generates images, but {name} is {modality or 'not image'} data: give an image "
            "dataset (e.g. fashion-mnist) or a folder of class folders of images")
