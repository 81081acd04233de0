"""``inspect_run``: everything inspection knows about a finished run, as compact JSON in ``run/inspection/``.

Every part streams over a random, seeded sample of at most ``max_examples`` examples of a split,
so time and memory stay bounded on large datasets. Figures are drawn from these files by
``lamina.reporting``; nothing here draws.

What is written follows the run's task. A classifier (images, signals, vectors or texts): probes,
CKA, activations, filters and top activations (images only), attributions, the confusion matrix
and the most confident mistakes (with their pixels or their text). A language model: probes of
the next character's class per block, and the attention maps of a sentence of the validation tail.
A VAE or diffusion model (:mod:`lamina.inspection.generative`): activation statistics and a VAE's
latent map. A game agent (:mod:`lamina.inspection.rl`): activations and saliency over an episode.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lamina import __version__
from lamina.artifacts import Classifier, Regressor, TextGenerator, load, read_meta
from lamina.config import load_config
from lamina.data.base import Dataset, Preprocess, Split, build_dataset
from lamina.data.gpu_loader import make_loader
from lamina.errors import LaminaError
from lamina.inspection.activations import activation_stats
from lamina.inspection.attention import attention_maps, attention_modules
from lamina.inspection.attribution import attributions
from lamina.inspection.cka import cka_between_models, cka_between_stages
from lamina.inspection.features import eval_mode
from lamina.inspection.filters import first_conv, first_layer_filters, top_activating
from lamina.inspection.hooks import model_stages
from lamina.inspection.probes import probe_stages
from lamina.inspection.text import embedding_layer, next_char_probes, token_attributions, token_texts
from lamina.tasks.classify import class_log_probs

REQUIRED = ("config.yaml", "model.json", "model.safetensors")
ATTRIBUTION_EXAMPLES = 8
MISCLASSIFIED = 16
SENTENCE = 48  # tokens of the validation tail whose attention maps are kept
PAD = 0  # the token id of padding in a text classifier's inputs
TASKS = ("classify", "regress", "language-model", "vae", "diffusion", "dqn")


def check_run(folder: Path) -> None:
    """One-line ``LaminaError`` for a missing run folder or missing files of a finished run."""
    if not folder.is_dir():
        raise LaminaError(f"run folder {folder} does not exist")
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise LaminaError(f"run folder {folder} is missing {', '.join(missing)}: inspect a finished run "
                          "(train it first, or resume it if it was interrupted)")


def _load(folder: Path, device: str) -> Any:
    check_run(folder)
    if read_meta(folder).get("task") == "dqn":  # a game run of lamina play: its agent, not a predictor
        from lamina.inspection.rl import load_agent

        predictor: Any = load_agent(folder, device)
    else:
        predictor = load(folder, device)
    task = getattr(predictor, "task", "classify")
    if task not in TASKS:
        raise LaminaError(f"{folder} is a {task} run: lamina inspect describes {' and '.join(TASKS)} runs so far")
    model_stages(predictor.model)
    return predictor


def _sample(split: Split, n: int, seed: int) -> tuple[Split, Tensor]:
    """At most ``n`` examples of ``split``, drawn at random (seeded) and kept in split order, and their indices."""
    idx = torch.arange(len(split))
    if len(split) > n:
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return split.take(idx), idx


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and inf become null (strict JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _write(path: Path, obj: Any) -> None:
    from lamina.utils.io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False).encode())


def _rounded(t: Tensor, decimals: int = 4) -> list[Any]:
    return torch.round(t.double(), decimals=decimals).tolist()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _probs(predictor: Classifier, x: Tensor) -> Tensor:
    """Class probabilities as the saved model predicts them (with test-time flips where it was trained so)."""
    return class_log_probs(predictor.model, x, tta_flip=predictor.tta_flip).exp()


@torch.no_grad()
def _predictions(predictor: Classifier, batches: Iterator[tuple[Tensor, Tensor]], num_classes: int,
                 index: Tensor) -> tuple[Tensor, list[dict[str, Any]]]:
    """Confusion matrix (rows: true, columns: predicted) and the most confident wrong predictions."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    wrong_conf, wrong_rows = torch.zeros(0), torch.zeros(0, 3, dtype=torch.long)  # rows: index, true, predicted
    seen = 0
    with eval_mode(predictor.model):
        for x, y in batches:
            p = _probs(predictor, x).cpu()
            y = y.cpu()
            conf, pred = p.max(1)
            confusion += torch.bincount(y * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
            bad = pred != y
            rows = torch.stack([index[seen : seen + len(y)][bad], y[bad], pred[bad]], dim=1)
            seen += len(y)
            wrong_conf, wrong_rows = torch.cat([wrong_conf, conf[bad]]), torch.cat([wrong_rows, rows])
            top = wrong_conf.topk(min(MISCLASSIFIED, len(wrong_conf))).indices
            wrong_conf, wrong_rows = wrong_conf[top], wrong_rows[top]
    return confusion, [{"index": i, "true": t, "predicted": p, "confidence": round(c, 6)}
                       for (i, t, p), c in zip(wrong_rows.tolist(), wrong_conf.tolist(), strict=True)]


def inspect_run(
    run_dir: str | Path,
    *,
    max_examples: int = 2000,
    device: str = "cpu",
    seed: int = 0,
    compare_with: str | Path | None = None,
    batch_size: int = 256,
    top_stage: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Inspect a finished run and write ``run_dir/inspection/*.json``; returns that folder.

    Args:
        run_dir: a run folder with config.yaml, model.json and model.safetensors.
        max_examples: cap on the training examples (probes) and on the test examples (everything else).
        device: where the model runs (cpu, cuda, auto, ...).
        seed: draws the example samples.
        compare_with: another run folder of the same architecture (e.g. another seed): adds
            its same-stage CKA to ``cka.json``.
        batch_size: examples per forward pass (also the CKA minibatch size: at least 4).
        top_stage: the stage whose channels ``top_activations.json`` describes (None: the last).
        progress: told the name of each part as it starts (e.g. to show a status line).
    """
    t0 = time.perf_counter()
    if max_examples < 1 or batch_size < 4:
        raise LaminaError(f"inspection needs max_examples >= 1 and batch_size >= 4, got {max_examples} and {batch_size}")
    folder = Path(run_dir)
    predictor = _load(folder, device)
    task = getattr(predictor, "task", "classify")
    if task not in ("classify", "regress") and (compare_with is not None or top_stage is not None):
        what = {"language-model": "a language-model", "dqn": "a game"}.get(task, f"a {task}")
        raise LaminaError(f"{folder} is {what} run: comparing runs (--compare) and top activations (--stage) "
                          "are for classifiers so far")
    job: Any
    if task in ("vae", "diffusion"):
        from lamina.inspection.generative import GenerativeInspection

        job = GenerativeInspection(folder, predictor, max_examples=max_examples, seed=seed, batch_size=batch_size,
                                   write=_write)
    elif task == "dqn":
        from lamina.inspection.rl import GameInspection

        job = GameInspection(folder, predictor, max_examples=max_examples, seed=seed, batch_size=batch_size,
                             write=_write)
    elif task == "regress":
        job = _RegressionInspection(folder, predictor, max_examples=max_examples, seed=seed, batch_size=batch_size)
    elif task == "language-model":
        job = _LanguageInspection(folder, predictor, max_examples=max_examples, seed=seed, batch_size=batch_size)
    else:
        job = _Inspection(folder, predictor, max_examples=max_examples, seed=seed, batch_size=batch_size)
    seconds: dict[str, float] = {"load": round(time.perf_counter() - t0, 3)}
    parts = list(job.parts(compare_with, top_stage))
    for i, (name, fn) in enumerate(parts, start=1):
        if progress is not None:
            progress(f"{name} ({i}/{len(parts)})")
        t = time.perf_counter()
        fn()
        seconds[name] = round(time.perf_counter() - t, 3)
    seconds["total"] = round(time.perf_counter() - t0, 3)
    _write(job.out / "inspection.json", {
        "lamina": __version__, "task": getattr(predictor, "task", "classify"), "seconds": seconds,
        "max_examples": max_examples, "peak_rss_mb": _peak_rss_mb(), "examples": job.examples(),
        "device": str(job.device), "seed": seed, "skipped": job.skipped})
    return job.out


class _Inspection:
    """One run folder, its model and seeded samples of its train and test splits; a method per output file."""

    def __init__(self, folder: Path, predictor: Classifier, *, max_examples: int, seed: int, batch_size: int) -> None:
        self.folder, self.max_examples, self.batch_size = folder, max_examples, batch_size
        self.predictor = predictor
        self.model, self.device = self.predictor.model, self.predictor.device
        self.names = [n for n, _ in model_stages(self.model)]
        self.cfg = load_config(folder / "config.yaml")
        self.ds = build_dataset(self.cfg.data, seed=self.cfg.train.seed)
        test = _check_data(folder, self.ds, self.predictor)
        self.train, _ = _sample(self.ds.train, max_examples, seed)
        self.test, self.test_idx = _sample(test, max_examples, seed + 1)  # test_idx: positions in the test split
        self.skipped: dict[str, str] = {}
        self.out = folder / "inspection"
        self.out.mkdir(exist_ok=True)

    def parts(self, compare_with: str | Path | None, top_stage: str | None) -> list[tuple[str, Callable[[], None]]]:
        return [("probes", self.probes), ("cka", lambda: self.cka(compare_with)), ("activations", self.activations),
                ("filters", self.filters), ("top_activations", lambda: self.top(top_stage)),
                ("attributions", self.attributions), ("confusion", self.confusion)]

    def examples(self) -> dict[str, int]:
        return {"train": len(self.train), "test": len(self.test)}

    def batches(self, split: Split, preprocess: Preprocess | None = None) -> Any:
        """A fresh, unshuffled, unaugmented loader (a fresh one per pass: no half-consumed epoch carries over)."""
        return make_loader(split, kind=self.cfg.data.loader, batch_size=self.batch_size, device=self.device,
                           preprocess=preprocess or self.predictor.preprocess, train=False,
                           workers=self.cfg.data.workers)

    def probes(self) -> None:
        rows = probe_stages(self.model, self.batches(self.train), self.batches(self.test), max_train=self.max_examples,
                            max_test=self.max_examples, num_classes=self.ds.num_classes, device=self.device)
        _write(self.out / "probes.json", [{**r, "accuracy": round(r["accuracy"], 6)} for r in rows])

    def cka(self, compare_with: str | Path | None) -> None:
        stages, matrix = cka_between_stages(self.model, self.batches(self.test), self.max_examples, device=self.device)
        record: dict[str, Any] = {"stages": stages, "matrix": _rounded(matrix, 6)}
        if compare_with is not None:
            other = _load(Path(compare_with), str(self.device))
            other_names = [n for n, _ in model_stages(other.model)]
            if other_names != self.names or other.model.input_shape != self.model.input_shape:
                raise LaminaError(f"run {compare_with} has stages {other_names} on inputs {other.model.input_shape}, "
                                  f"this run {self.names} on {self.model.input_shape}: same-stage CKA needs two runs "
                                  "of the same architecture on the same data")
            tokens = self.predictor.preprocess.kind == "tokens"  # token ids are fed as they are
            raw = self.batches(self.test, None if tokens else Preprocess())  # each model normalises raw inputs its own way
            _, _, cross = cka_between_models(self.model, other.model, raw, self.max_examples, device=self.device,
                                             prep_a=self.predictor.preprocess.apply, prep_b=other.preprocess.apply)
            record.update(other_run=str(compare_with), same_stage=_rounded(cross.diagonal(), 6))
        _write(self.out / "cka.json", record)

    def activations(self) -> None:
        stats = activation_stats(self.model, self.batches(self.test), max_examples=self.max_examples, device=self.device)
        _write(self.out / "activations.json", stats)

    def filters(self) -> None:
        if self.is_text:
            self.skipped["filters"] = "a text model: its first layer reads token embeddings, not pixels"
            return
        if first_conv(self.model) is None:
            self.skipped["filters"] = "no convolution in the model"
            return
        w = first_layer_filters(self.model)
        _write(self.out / "filters.json", {"shape": list(w.shape), "values": _rounded(w, 6)})

    def top(self, stage: str | None) -> None:
        if self.is_text:
            self.skipped["top_activations"] = "a text model: top activations are drawn as images"
            return
        stage = stage or self.names[-1]
        found = top_activating(self.model, self.batches(self.test), stage, k=8, channels=8,
                               max_examples=self.max_examples, device=self.device)
        channels = {str(c): self.test_idx[idx].tolist() for c, idx in found.items()}
        record: dict[str, Any] = {"stage": stage, "channels": channels}
        shown = sorted({i for idx in channels.values() for i in idx})
        if self.is_image:  # the report reads only the run folder, so the pixels travel with the indices
            record["images"] = {str(i): self.pixels([i])[0] for i in shown}
        _write(self.out / "top_activations.json", record)

    def attributions(self) -> None:
        n = min(ATTRIBUTION_EXAMPLES, len(self.test))
        picked = _one_per_class(self.test.y, n) if self.ds.modality == "audio" else torch.arange(n)
        x, y = next(iter(self.batches(self.test.take(picked))))
        with torch.no_grad(), eval_mode(self.model):
            pred = _probs(self.predictor, x).argmax(1)
        if self.is_text or self.is_residues:
            self.text_attributions(x, y, pred)
            return
        if self.ds.modality == "audio":
            self.audio_attributions(x, y, pred)
            return
        maps = attributions(self.model, x, pred)
        if "grad_cam" not in maps:
            self.skipped["grad_cam"] = "no convolutional stage" if x.ndim >= 3 else "inputs have no spatial dims"
        _write(self.out / "attributions.json", {
            "indices": self.test_idx[:n].tolist(), "labels": y.cpu().tolist(), "predicted": pred.cpu().tolist(),
            "target": "predicted", "methods": {m: _rounded(a, 4) for m, a in maps.items()},
            **({"images": self.pixels(self.test_idx[:n].tolist())} if self.is_image else {})})

    def text_attributions(self, x: Tensor, y: Tensor, pred: Tensor) -> None:
        """Integrated gradients on the token embedding: one value per token (padding left out)."""
        values = token_attributions(self.model, x, pred, pad=PAD)  # (n, T)
        examples = []
        for i, (ids, v) in enumerate(zip(x.cpu().tolist(), values.tolist(), strict=True)):
            keep = [j for j, t in enumerate(ids) if t != PAD]
            examples.append({"index": int(self.test_idx[i]), "label": int(y[i]), "predicted": int(pred[i]),
                             "tokens": self.token_texts([ids[j] for j in keep]),
                             "values": [round(v[j], 5) for j in keep]})
        self.skipped["grad_cam"] = "token inputs (text, residues) have no spatial dims"
        _write(self.out / "attributions.json", {
            "kind": "tokens", "method": "integrated_gradients", "layer": embedding_layer(self.model)[0],
            "baseline": "padding", "target": "predicted", "examples": examples})

    def audio_attributions(self, x: Tensor, y: Tensor, pred: Tensor) -> None:
        """Log-mel inputs and gradient × input over (mel bin, frame), or frames for a waveform model."""
        from lamina.inspection.audio import audio_attributions

        rate = int(self.model.arch.get("sample_rate") or self.cfg.data.sample_rate)
        found = audio_attributions(self.model, x, pred, sample_rate=rate)
        self.skipped["grad_cam"] = "audio: attributions are drawn over the log-mel's time and frequency"
        _write(self.out / "attributions.json", {
            "kind": "audio", "method": "gradient_x_input", "axes": found["axes"], "target": "predicted",
            "labels": y.cpu().tolist(), "predicted": pred.cpu().tolist(), "hop": found["hop"], "sample_rate": found["sample_rate"],
            "mel": _rounded(found["mel"], 3), "attribution": _rounded(found["attribution"], 5)})

    def confusion(self) -> None:
        matrix, wrong = _predictions(self.predictor, iter(self.batches(self.test)), self.ds.num_classes, self.test_idx)
        _write(self.out / "confusion.json", {"classes": list(self.predictor.classes), "matrix": matrix.tolist()})
        if self.is_image:
            for w in wrong:
                w["image"] = self.pixels([w["index"]])[0]
        if self.is_text:  # the report cannot read the dataset: the text travels with the index
            assert self.ds.test is not None
            for w in wrong:
                w["text"] = self.predictor.codec.decode([t for t in self.ds.test.x[w["index"]].tolist() if t != PAD])
        _write(self.out / "misclassified.json", wrong)

    @property
    def is_text(self) -> bool:
        return self.ds.modality == "text" and getattr(self.predictor, "codec", None) is not None

    @property
    def is_residues(self) -> bool:
        """Biological sequences as residue ids (not k-mer counts)."""
        return self.ds.modality == "sequence" and self.predictor.preprocess.kind == "tokens"

    def token_texts(self, ids: list[int]) -> list[str]:
        """What each token id stands for: text pieces, or residue letters."""
        if self.is_residues:
            from lamina.utils.alphabets import get_alphabet

            letters = get_alphabet(self.predictor.codec.alphabet).letters
            return [letters[i - 1] if 0 < i <= len(letters) else "?" for i in ids]
        return token_texts(self.predictor.codec, ids)

    @property
    def is_image(self) -> bool:
        return self.ds.modality == "image" and self.ds.test is not None and self.ds.test.x.dim() == 4

    def pixels(self, indices: list[int]) -> list[Any]:
        """Raw test images at ``indices`` as (C, H, W) values in [0, 1], 3 decimals (for the report)."""
        x = self.ds.test.x[torch.tensor(indices, dtype=torch.long)].float() / self.predictor.preprocess.scale
        return _rounded(x.clamp(0, 1), 3)


def _one_per_class(y: Tensor | None, n: int) -> Tensor:
    """``n`` positions taking the classes in turn (the first example of each class, then the second...)."""
    if y is None:
        return torch.arange(n)
    order = torch.argsort(y, stable=True)
    rank = torch.empty_like(order)
    for c in torch.unique(y):  # the position of each example within its class
        members = order[y[order] == c]
        rank[members] = torch.arange(len(members))
    return torch.argsort(rank * (int(y.max()) + 1) + y, stable=True)[:n]


def _check_data(folder: Path, ds: Dataset, predictor: Classifier | Regressor) -> Split:
    """The data rebuilt from config.yaml must still be what the model was trained on; returns its test split."""
    shape, classes = tuple(predictor.model.input_shape), getattr(predictor, "classes", [])
    if ds.input_shape != shape or ds.num_classes != len(classes):
        raise LaminaError(f"the data of {folder}/config.yaml ({ds.name}: {ds.num_classes} classes of "
                          f"{ds.input_shape}) no longer matches its model ({len(classes)} classes of {shape})")
    _check_vocab(folder, ds, predictor)
    if ds.test is None:
        raise LaminaError(f"{ds.name} has no test split to inspect")
    return ds.test


def _check_vocab(folder: Path, ds: Dataset, predictor: Any) -> None:
    """Text rebuilt from config.yaml must be encoded with the vocabulary the model was trained with."""
    meta = getattr(predictor, "meta", None) or {}
    if ds.codec is not None and "vocab" in meta and ds.codec.to_dict() != meta["vocab"]:
        raise LaminaError(f"the text of {folder}/config.yaml ({ds.name}) no longer gives the vocabulary of its model "
                          "(the text changed since training?): inspect it with the text it was trained on")


class _RegressionInspection(_Inspection):
    """A regression run: the classifier's parts that do not need classes (CKA, activations, filters,
    top activations, attributions of the predicted value), and predicted against true values."""

    predictor: Regressor  # type: ignore[assignment]

    def parts(self, compare_with: str | Path | None, top_stage: str | None) -> list[tuple[str, Callable[[], None]]]:
        self.skipped["probes"] = "a regression: the probes are linear classifiers of the classes"
        return [("cka", lambda: self.cka(compare_with)), ("activations", self.activations),
                ("filters", self.filters), ("top_activations", lambda: self.top(top_stage)),
                ("attributions", self.attributions), ("predictions", self.predictions)]

    @torch.no_grad()
    def values(self, x: Tensor) -> Tensor:
        """Predictions (B,) in the targets' units, as ``predict`` gives them."""
        with eval_mode(self.model):
            return self.model(x).float().flatten() * self.predictor.std + self.predictor.mean

    def attributions(self) -> None:
        n = min(ATTRIBUTION_EXAMPLES, len(self.test))
        x, y = next(iter(self.batches(self.test.take(torch.arange(n)))))
        maps = attributions(self.model, x, 0)  # the one output: the predicted value
        if "grad_cam" not in maps:
            self.skipped["grad_cam"] = "no convolutional stage" if x.ndim >= 3 else "inputs have no spatial dims"
        _write(self.out / "attributions.json", {
            "indices": self.test_idx[:n].tolist(), "labels": _rounded(y.float(), 4),
            "predicted": _rounded(self.values(x), 4), "target": "predicted value",
            "methods": {m: _rounded(a, 4) for m, a in maps.items()}})

    def predictions(self) -> None:
        true, pred = [], []
        for x, y in self.batches(self.test):
            true.append(y.float().cpu())
            pred.append(self.values(x).cpu())
        t, p = torch.cat(true), torch.cat(pred)
        _write(self.out / "predictions.json", {
            "target": self.predictor.target, "indices": self.test_idx.tolist(), "true": _rounded(t, 5),
            "predicted": _rounded(p, 5)})


class _LanguageInspection:
    """A language-model run: its text rebuilt from config.yaml; probes of the next character and attention maps."""

    def __init__(self, folder: Path, predictor: TextGenerator, *, max_examples: int, seed: int,
                 batch_size: int) -> None:
        self.folder, self.max_examples, self.batch_size, self.seed = folder, max_examples, batch_size, seed
        self.model, self.device, self.codec = predictor.model, predictor.device, predictor.codec
        self.cfg = load_config(folder / "config.yaml")
        self.ds = build_dataset(self.cfg.data, seed=self.cfg.train.seed)
        _check_vocab(folder, self.ds, predictor)
        if self.ds.val is None or not isinstance(self.ds.val.x, Tensor):
            raise LaminaError(f"{self.ds.name} has no validation tail to inspect")
        self.context = int(self.model.input_shape[0])
        self.windows: dict[str, int] = {"train": 0, "test": 0}
        self.skipped: dict[str, str] = {}
        self.out = folder / "inspection"
        self.out.mkdir(exist_ok=True)

    def parts(self, compare_with: str | Path | None, top_stage: str | None) -> list[tuple[str, Callable[[], None]]]:
        return [("probes", self.probes), ("attention", self.attention)]

    def examples(self) -> dict[str, int]:
        return dict(self.windows)

    def probes(self) -> None:
        assert self.ds.val is not None
        rec = next_char_probes(self.model, self.ds.train.x, self.ds.val.x, self.codec, max_windows=self.max_examples,
                               context=self.context, batch_size=self.batch_size, device=self.device, seed=self.seed)
        self.windows = rec["windows"]
        rec["stages"] = [{**r, "accuracy": round(r["accuracy"], 6)} for r in rec["stages"]]
        _write(self.out / "probes.json", {**rec, "baseline": round(rec["baseline"], 6)})

    def attention(self) -> None:
        if not attention_modules(self.model):
            self.skipped["attention"] = "the model has no attention layer"
            return
        assert self.ds.val is not None
        ids = self.ds.val.x[: min(SENTENCE, self.context, len(self.ds.val.x))]
        maps = attention_maps(self.model, ids[None].to(self.device))
        _write(self.out / "attention.json", {
            "source": "validation tail", "start": 0, "ids": ids.tolist(), "tokens": token_texts(self.codec, ids.tolist()),
            "stages": [{"stage": name, "heads": _rounded(w[0], 4)} for name, w in maps.items()]})
