"""Classification: cross-entropy on logits (B, K), accuracy as the headline, a confusion matrix."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lamina.config import DataConfig, ModelConfig, RunConfig
from lamina.data.augment import Augment
from lamina.data.base import Dataset, Split
from lamina.data.gpu_loader import make_loader
from lamina.models import MODELS, Model, create_model
from lamina.tasks.base import Batch, Sums, Task
from lamina.utils import dist


class Classify(Task):
    """One label per example.

    Args:
        num_classes: the number of classes (logits per example).
        label_smoothing: of the training loss (evaluation uses the plain cross-entropy).
        tta_flip: evaluate with test-time flips (:func:`flip_tta_log_probs`); only for images.
        classes: the class names, recorded in ``model.json``.
    """

    name: ClassVar[str] = "classify"
    headline: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0, tta_flip: bool = False,
                 classes: list[str] | None = None) -> None:
        self.num_classes, self.tta_flip = int(num_classes), tta_flip
        self.classes = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.loss_fn(outputs.float(), targets)

    def sums(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> Sums:
        n = len(targets)
        return {"count": n, "loss_sum": loss.detach() * n,
                "correct": (outputs.argmax(dim=1) == targets).sum()}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["count"], 1)
        return {"loss": sums["loss_sum"] / n, "accuracy": sums.get("correct", 0.0) / n}

    def evaluate(self, model: nn.Module, loader: Iterable[Batch], *,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                 ) -> dict[str, Any]:
        return evaluate(model, loader, num_classes=self.num_classes, tta_flip=self.tta_flip, autocast=autocast)

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "classes": list(self.classes), "tta_flip": bool(self.tta_flip)}

    # -- what a run of this task is made of ------------------------------------------------------
    @classmethod
    def from_data(cls, ds: Dataset, cfg: RunConfig) -> Classify:
        # Test-time flips only where a mirror image keeps the label (the dataset's flip, or data.flip).
        tta = bool(cfg.train.tta_flip and ds.flip and ds.modality == "image")
        return cls(ds.num_classes, label_smoothing=cfg.train.label_smoothing, tta_flip=tta, classes=ds.classes)

    def build_model(self, m: ModelConfig, ds: Dataset) -> Model:
        return build_model_for(m, ds, ds.num_classes)

    def loaders(self, ds: Dataset, d: DataConfig, *, device: torch.device, seed: int,
                channels_last: bool) -> dict[str, Any]:
        """Training batches shuffled and augmented (as the data declares: ``Dataset.augment``, or for
        images from ``data.*``); evaluation batches of at least 1,024 examples, in order."""
        return split_loaders(ds, d, device=device, seed=seed, channels_last=channels_last,
                             augment=training_augment(ds, d))

    def eval_loader(self, split: Split, ds: Dataset, d: DataConfig, *, device: torch.device,
                    channels_last: bool = False) -> Any:
        return eval_split_loader(split, ds, d, device=device, channels_last=channels_last)

    def final_metrics(self, model: nn.Module, loaders: dict[str, Any], *,
                      autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                      ) -> dict[str, Any]:
        """The run's ``summary.json`` metrics: the test split's accuracy first (the headline)."""
        m = self.evaluate(model, loaders["test"], autocast=autocast)
        f1 = per_class_f1(m["confusion"])
        return {"test_accuracy": m["accuracy"], "test_macro_f1": f1["macro_f1"], "test_loss": m["loss"],
                "per_class_accuracy": dict(zip(self.classes, m["per_class_accuracy"], strict=True)),
                "per_class": dict(zip(self.classes, f1["per_class"], strict=True)),
                "confusion": m["confusion"], "test_examples": m["examples"], "tta_flip": self.tta_flip}


# The model of a modality when neither model.name nor the dataset (``Dataset.default_model``) names one.
DEFAULT_MODELS = {"text": "textcnn", "audio": "melcnn", "sequence": "seqresnet", "table": "tabmlp"}


def build_model_for(m: ModelConfig, ds: Dataset, outputs: int) -> Model:
    """The network ``m`` names (``auto``: the data's default) for ``ds``, with ``outputs`` outputs.

    The arguments the data fixes (``Dataset.model_kwargs``, e.g. a vocabulary size) are passed
    along with those ``m`` sets (:meth:`~lamina.config.ModelConfig.given`).
    """
    kw = m.given("width", "depth", "act", "norm", "dropout", "heads", "positions")  # the rest: the model's defaults
    if ds.codec is not None and ds.modality == "text":  # token ids in: the model embeds them
        kw["vocab"] = ds.codec.size
    name = m.name
    if name == "auto":
        name = ds.default_model or DEFAULT_MODELS.get(ds.modality, "auto")
    cls = MODELS.get(name) if name in MODELS else None
    if cls is not None and m.norm == "batch" and (getattr(cls, "feature_layout", "") == "tokens"
                                                  or getattr(cls, "norm_per_token", False)):
        # a Transformer over tokens (or a table's feature tokens) normalises per position (layer norm):
        # lamina's default "batch" (for convolutions) means the model's own default there
        kw.pop("norm")
    if cls is not None:  # the data's arguments that this model takes (a k-mer MLP takes no alphabet)
        takes = getattr(cls, "hparams", ())
        for k in ("act", "norm"):  # their config defaults are names, never unset: left at them, they say nothing
            if k in kw and k not in takes and kw[k] == getattr(ModelConfig, k):
                kw.pop(k)
        kw.update({k: v for k, v in ds.model_kwargs.items() if k in takes})
    return create_model(name, ds.input_shape, outputs, **kw)


def split_loaders(ds: Dataset, d: DataConfig, *, device: torch.device, seed: int, channels_last: bool,
                  augment: Any = None) -> dict[str, Any]:
    """Every split's loader for a task of one target per example (classify, regress): training
    batches shuffled and augmented, evaluation batches in order (:func:`eval_split_loader`)."""
    loaders: dict[str, Any] = {
        "train": make_loader(ds.train, kind=d.loader, batch_size=d.batch_size, device=device,
                             preprocess=ds.preprocess, train=True, augment=augment, seed=seed,
                             channels_last=channels_last, workers=d.workers)}
    for name, split in ds.splits().items():
        if name != "train":
            loaders[name] = eval_split_loader(split, ds, d, device=device, channels_last=channels_last)
    return loaders


def eval_split_loader(split: Split, ds: Dataset, d: DataConfig, *, device: torch.device,
                      channels_last: bool = False) -> Any:
    """One split's evaluation batches: in order, not augmented, at least 1,024 examples each."""
    return make_loader(split, kind=d.loader, batch_size=max(d.batch_size, 1024), device=device,
                       preprocess=ds.preprocess, train=False, channels_last=channels_last, workers=d.workers)


def training_augment(ds: Dataset, d: DataConfig) -> Any:
    """The augmentation of training batches: the dataset's own, or for images flips, translations
    and cutout from ``data.*``; None for data without one."""
    if ds.augment is not None:
        return ds.augment
    if ds.modality == "image":
        return Augment(translate=d.translate, flip=ds.flip, cutout=d.cutout)
    return None


class ClassificationMetrics:
    """Sum of losses and a confusion matrix, updated per batch without host syncs.

    ``confusion[i, j]`` counts examples of true class ``i`` predicted as ``j``.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, logits: Tensor, targets: Tensor, loss_sum: Tensor) -> None:
        """``loss_sum``: the batch's summed (not mean) loss."""
        pred = logits.argmax(dim=1)
        k = self.num_classes
        self.confusion += torch.bincount(targets * k + pred, minlength=k * k).view(k, k)
        self.loss_sum += loss_sum.detach().double()

    def reduce(self) -> None:
        """Add every rank's confusion matrix and loss sum (a job's ranks each scored their shard)."""
        r = dist.reduce_sums({"confusion": self.confusion, "loss_sum": self.loss_sum})
        self.confusion, self.loss_sum = r["confusion"], r["loss_sum"]  # type: ignore[assignment]

    def compute(self) -> dict[str, Any]:
        cm = self.confusion.cpu()
        n = int(cm.sum())
        per_class = (cm.diag().double() / cm.sum(1).clamp_min(1).double()).tolist()
        return {
            "loss": float(self.loss_sum) / max(n, 1),
            "accuracy": float(cm.diag().sum()) / max(n, 1),
            "per_class_accuracy": per_class,
            "confusion": cm.tolist(),
            "examples": n,
        }


def per_class_f1(confusion: list[list[int]]) -> dict[str, Any]:
    """Precision, recall, F1 and support of each class, and their unweighted mean F1 (macro-F1),
    from a confusion matrix (rows: true class, columns: predicted), as scikit-learn defines them
    (a class never predicted has precision 0; a class absent from the data is left out of the mean).

    >>> per_class_f1([[2, 0], [1, 1]])["macro_f1"]
    0.7333333333333334
    """
    cm = torch.tensor(confusion, dtype=torch.float64)
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), torch.zeros_like(tp))
    present = support > 0
    macro = float(f1[present].mean()) if bool(present.any()) else 0.0
    rows = [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for p, r, f, n in zip(precision, recall, f1, support, strict=True)]
    return {"macro_f1": macro, "per_class": rows}


def flip_tta_log_probs(model: nn.Module, x: Tensor) -> Tensor:
    """Test-time flip augmentation: log of the mean of the class probabilities of the images ``x``
    (B, C, H, W) and of their mirror images ``x.flip(-1)``, (B, K) in fp32.

    Computed as ``logaddexp(log_softmax(a), log_softmax(b)) - log 2``: exact where a probability
    underflows, and ``exp`` of it is the averaged softmax.
    """
    a = model(x).float().log_softmax(dim=1)
    b = model(x.flip(-1)).float().log_softmax(dim=1)
    return torch.logaddexp(a, b) - math.log(2.0)


def class_log_probs(model: nn.Module, x: Tensor, *, tta_flip: bool = False) -> Tensor:
    """Log class probabilities (B, K) in fp32, averaged over mirror images with ``tta_flip``.

    ``tta_flip`` is the run's declared setting (images whose label a mirror image keeps), never
    inferred from the batch's rank.
    """
    if tta_flip:
        return flip_tta_log_probs(model, x)
    return model(x).float().log_softmax(dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Batch], *, num_classes: int, tta_flip: bool = False,
             engine: Any = None,
             autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
             ) -> dict[str, Any]:
    """Evaluate ``model`` on every batch of ``loader``: see :class:`ClassificationMetrics`.

    With ``tta_flip`` an image batch is scored by the mean of the softmax of ``x`` and of
    ``x.flip(-1)`` (:func:`flip_tta_log_probs`; the loss is the NLL of that mean). ``engine``
    (an :class:`lamina.training.engine.Engine`), when given, supplies the autocast.
    """
    if engine is not None:
        autocast = engine.autocast
    was_training = model.training
    model.eval()
    metrics: ClassificationMetrics | None = None
    for x, y in loader:
        if metrics is None:
            metrics = ClassificationMetrics(num_classes, x.device)
        with autocast():
            logits = flip_tta_log_probs(model, x) if tta_flip else model(x)
        loss = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        metrics.update(logits, y, loss)
    model.train(was_training)
    metrics = metrics or ClassificationMetrics(num_classes)
    if dist.sharded(loader):
        metrics.reduce()
    return metrics.compute()
