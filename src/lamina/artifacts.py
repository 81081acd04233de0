"""The saved model: ``model.safetensors`` (weights) + ``model.json`` (what is needed to use them).

The one writer (:func:`save_model`) and reader (:func:`read_model`, :func:`load`) of a run's
model. ``model.json`` records the architecture (``create_model(**arch)`` rebuilds it), the
preprocessing or the text vocabulary, the modality, and what the task needs (``task``; for a
classifier the class names and test-time flips). :func:`load` returns the task's predictor:
:class:`Classifier` (``predict``, ``top_k``, ``predict_proba``) or :class:`TextGenerator`
(``generate``). Below the public API (inspection and export read saved models through here).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lamina import __version__
from lamina.data.base import Dataset, Preprocess
from lamina.errors import LaminaError
from lamina.models import Model, create_model
from lamina.tasks.base import Task
from lamina.tasks.classify import class_log_probs
from lamina.training.engine import resolve_device
from lamina.utils.io import atomic_path, read_json, write_json

MODEL_FORMAT = "lamina-model/1"


def save_model(model: Model, folder: Path, ds: Dataset, task: Task,
               weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``folder`` (atomically, each).
    ``weights``: the state dict to write, when ``model``'s own holds shards (fsdp: gathered first)."""
    state = {k: v.detach().cpu().contiguous() for k, v in (model.state_dict() if weights is None else weights).items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {"format": MODEL_FORMAT, "arch": model.arch, "preprocess": ds.preprocess.to_dict(),
            "modality": ds.modality, "dataset": ds.name, **task.describe(),
            "lamina": __version__, "torch": torch.__version__}
    if ds.target_name:
        meta.setdefault("target", ds.target_name)  # what is predicted: a table's label column
    if ds.codec is not None and ds.modality == "text":
        meta["vocab"] = ds.codec.to_dict()
    elif ds.codec is not None:  # audio, sequences, tables: how predict reads raw inputs
        meta["codec"] = ds.codec.to_dict()
    write_json(folder / "model.json", meta)


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"


def read_meta(folder: Path) -> dict[str, Any]:
    """``model.json`` of a finished run, checked to be a lamina model description."""
    if not folder.is_dir():
        raise LaminaError(f"run folder {folder} does not exist")
    meta = read_json(folder / "model.json", "model description")
    if not isinstance(meta, dict):
        raise LaminaError(f"{folder}/model.json is not a JSON object: it is corrupt; train again")
    if meta.get("format") != MODEL_FORMAT:
        raise LaminaError(f"{folder}/model.json has format {meta.get('format')!r}; this lamina reads {MODEL_FORMAT}")
    meta.setdefault("task", "classify")  # models saved before tasks existed were classifiers
    return meta


def read_model(folder: Path) -> tuple[Model, dict[str, Any]]:
    """Rebuild the saved model (fp32, CPU, eval mode) and return it with its ``model.json``.

    The weights' header is compared with the architecture before anything is allocated, so a
    corrupt or mismatched file is a one-line error, never a huge allocation or a traceback.
    """
    meta = read_meta(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise LaminaError(f"{weights} does not exist: the run did not finish; train again")
    try:
        arch = meta["arch"]
        if not isinstance(arch, dict) or not isinstance(meta["modality"], str):
            raise TypeError("'arch' must be an object and 'modality' a name")
        with torch.device("meta"):  # the architecture without memory: a model.json asking for a huge net costs nothing
            skeleton = create_model(**arch)
    except LaminaError as e:
        raise LaminaError(f"{folder}/model.json describes no valid model: {e}") from None
    except (LookupError, TypeError, ValueError, OverflowError, RuntimeError, AttributeError) as e:
        raise LaminaError(f"{folder}/model.json is corrupt ({_first_line(e)}); train again") from None
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
        raise LaminaError(f"{weights} is corrupt or does not match model.json ({_first_line(e)})") from None
    return model.eval(), meta


class Predictor:
    """A trained model ready to use: the network in eval mode on ``device`` and its ``model.json``."""

    def __init__(self, model: Model, meta: dict[str, Any], device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.task: str = meta.get("task", "classify")
        self.modality: str = meta.get("modality", "")


class InputPredictor(Predictor):
    """A model of raw inputs (not a text generator): reads them as training did, then predicts.

    Inputs are read by the run's codec where it has one (WAV files, FASTA records, CSV rows), else
    as images, token ids of texts, or arrays (see :meth:`to_batch`).
    """

    def __init__(self, model: Model, meta: dict[str, Any], device: torch.device | None = None) -> None:
        super().__init__(model, meta, device)
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.codec: Any = None
        if self.modality == "text":
            from lamina.data.text import codec_from_dict

            self.codec = codec_from_dict(meta.get("vocab"))
        elif "codec" in meta:
            from lamina.data.codecs import codec_from_dict as read_codec

            self.codec = read_codec(meta["codec"])

    def read(self, inputs: Any) -> tuple[torch.Tensor, list[str]]:
        """Raw inputs -> a batch of raw examples and a name for each (``input`` or ``input[i]``)."""
        if self.codec is not None and hasattr(self.codec, "read") and not isinstance(inputs, torch.Tensor):
            batch, names = self.codec.read(inputs)
            return self._checked(batch), names
        batch = self.to_batch(inputs)  # checked there
        items = [inputs] if isinstance(inputs, str | Path) else inputs
        if isinstance(items, list | tuple) and len(items) == len(batch):
            names = [str(i) if isinstance(i, str | Path) else f"[{n}]" for n, i in enumerate(items)]
        else:
            base = str(inputs) if isinstance(inputs, str | Path) else ""
            names = [f"{base}[{n}]" for n in range(len(batch))]
        return batch, names

    def _checked(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() == len(self.model.input_shape):
            batch = batch.unsqueeze(0)
        if tuple(batch.shape[1:]) != tuple(self.model.input_shape):
            raise LaminaError(f"inputs have shape {tuple(batch.shape[1:])} per example, the model expects "
                              f"{tuple(self.model.input_shape)}")
        return batch

    def to_batch(self, inputs: Any) -> torch.Tensor:
        """Raw inputs -> a batch of raw examples (uint8 images or float arrays), shape (N, *input_shape).

        Accepts a tensor or array (one example or a batch), one path or a list of paths (image
        files for an image model, ``.npy`` files otherwise), or a list of arrays.
        """
        from lamina.data.images import load_image

        if isinstance(inputs, torch.Tensor):  # raw examples already
            return self._checked(inputs)
        if self.codec is not None and hasattr(self.codec, "read"):
            return self._checked(self.codec.read(inputs)[0])
        if isinstance(inputs, str | Path):
            inputs = [inputs]
        if self.codec is not None and isinstance(inputs, list | tuple):
            return self._encode_texts(inputs)
        if isinstance(inputs, list | tuple) and inputs and all(isinstance(i, str | Path) for i in inputs):
            if self.modality == "image":
                batch = torch.stack([load_image(item, self.preprocess) for item in inputs])
            else:
                batch = torch.cat([self._read_array(Path(p)) for p in inputs])
        elif self.modality == "image" and isinstance(inputs, list | tuple):
            batch = torch.stack([load_image(item, self.preprocess) for item in inputs])
        else:
            try:
                batch = torch.as_tensor(np.asarray(inputs))
            except (TypeError, ValueError) as e:
                raise LaminaError(f"cannot make a batch of these inputs ({_first_line(e)}): give arrays, tensors "
                                  "or file paths") from None
        return self._checked(batch)

    def _encode_texts(self, inputs: list[Any] | tuple[Any, ...]) -> torch.Tensor:
        """Texts (or ``.txt`` files) -> token ids padded or cut to the model's context."""
        from lamina.data.text import encode_known, read_text

        context = self.model.input_shape[0]
        batch = torch.zeros(len(inputs), context, dtype=torch.long)
        for i, item in enumerate(inputs):
            text = read_text(Path(item), self.codec.kind) if isinstance(item, Path) or (
                isinstance(item, str) and item.endswith(".txt") and Path(item).is_file()) else str(item)
            ids = encode_known(self.codec, text)[:context]
            batch[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return batch

    def _read_array(self, path: Path) -> torch.Tensor:
        """One ``.npy`` file: one example or a batch of examples, as a batch."""
        if path.suffix.lower() != ".npy":
            raise LaminaError(f"{path}: this model takes {self.modality} arrays; give .npy files (or arrays in Python)")
        if not path.is_file():
            raise LaminaError(f"input file {path} does not exist")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise LaminaError(f"{path} is not a readable .npy array ({_first_line(e)})") from None
        t = torch.as_tensor(array)
        return t.unsqueeze(0) if t.dim() == len(self.model.input_shape) else t


class Classifier(InputPredictor):
    """A classifier with its preprocessing: ``predict`` raw inputs (files, arrays, tensors).

    With ``tta_flip`` the probabilities of an image are the mean of those of the image and of its
    mirror image (test-time flips), as the run evaluated them.
    """

    def __init__(self, model: Model, meta: dict[str, Any], device: torch.device | None = None) -> None:
        super().__init__(model, meta, device)
        classes, tta_flip = meta.get("classes"), meta.get("tta_flip", False)
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes) and isinstance(tta_flip, bool)):
            raise LaminaError("model.json is corrupt: 'classes' must be a list of names and 'tta_flip' true or false")
        if len(classes) != model.num_classes:
            raise LaminaError(f"model.json names {len(classes)} classes for a model with {model.num_classes}")
        self.classes: list[str] = classes
        self.tta_flip: bool = tta_flip

    @torch.no_grad()
    def predict_proba(self, inputs: Any, batch_size: int = 1024) -> torch.Tensor:
        """Class probabilities, shape (N, K)."""
        batch = self.to_batch(inputs)
        out = [class_log_probs(self.model, self.preprocess.apply(batch[i : i + batch_size].to(self.device)),
                               tta_flip=self.tta_flip).exp()
               for i in range(0, len(batch), batch_size)]
        return torch.cat(out).cpu()

    def predict(self, inputs: Any) -> list[str]:
        """The most likely class name of each input."""
        return [self.classes[i] for i in self.predict_proba(inputs).argmax(1).tolist()]

    def top_k(self, inputs: Any, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely classes of each input with their probabilities: one list per input."""
        p = self.predict_proba(inputs)
        vals, idx = p.topk(min(k, p.shape[1]), dim=1)
        return [[(self.classes[i], float(v)) for v, i in zip(vr, ir, strict=True)]
                for vr, ir in zip(vals.tolist(), idx.tolist(), strict=True)]

    def generate(self, *args: Any, **kw: Any) -> str:
        raise LaminaError("this run is a classifier: it predicts classes (lamina predict), it does not generate "
                          "text; train a language model on a text file to generate")


class TextGenerator(Predictor):
    """A language model with its vocabulary: ``generate`` text from a prompt."""

    def __init__(self, model: Model, meta: dict[str, Any], device: torch.device | None = None) -> None:
        super().__init__(model, meta, device)
        from lamina.data.text import codec_from_dict

        self.codec = codec_from_dict(meta.get("vocab"))

    def stream(self, prompt: str = "", *, max_new_tokens: int = 500, temperature: float = 0.8,
               top_k: int | None = 40, seed: int = 0, use_cache: bool = True) -> Iterator[str]:
        """Yield the text as it is produced, token by token (for printing as it comes)."""
        if max_new_tokens < 1:
            raise LaminaError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0:
            raise LaminaError(f"temperature must be 0 (greedy) or more, got {temperature}")
        ids = self.codec.encode(prompt) if prompt else [self.codec.start_id]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        g = torch.Generator(device=self.device).manual_seed(seed)
        decoder = self.codec.stream_decoder()
        for token in self.model.iter_generate(idx, max_new_tokens, temperature=temperature,  # type: ignore[operator]
                                              top_k=top_k or None, generator=g, use_cache=use_cache):
            piece = decoder(int(token[0]))
            if piece:
                yield piece

    def generate(self, prompt: str = "", *, max_new_tokens: int = 500, temperature: float = 0.8,
                 top_k: int | None = 40, seed: int = 0, use_cache: bool = True) -> str:
        """The prompt's continuation (without the prompt).

        Args:
            prompt: the text to continue ('' starts from the vocabulary's start token).
            max_new_tokens: how many tokens to add.
            temperature: 0 is greedy; higher is more random.
            top_k: sample among the k most likely tokens only (None: all).
            seed: the sampling seed (same seed, same text).
            use_cache: the key-value cache (each new token costs one position).
        """
        return "".join(self.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   seed=seed, use_cache=use_cache))

    def predict(self, *args: Any, **kw: Any) -> list[str]:
        raise LaminaError("this run is a language model: it generates text (lamina generate RUN --prompt ...), "
                          "it does not predict classes")

    top_k = predict_proba = predict


class Regressor(InputPredictor):
    """A regression model: ``predict`` gives real numbers in the units of the training targets."""

    def __init__(self, model: Model, meta: dict[str, Any], device: torch.device | None = None) -> None:
        super().__init__(model, meta, device)
        mean, std = meta.get("target_mean"), meta.get("target_std")
        if not (isinstance(mean, int | float) and isinstance(std, int | float) and std > 0):
            raise LaminaError("model.json is corrupt: 'target_mean' and 'target_std' (> 0) must be numbers")
        self.target: str = str(meta.get("target", "target"))
        self.mean, self.std = float(mean), float(std)

    @torch.no_grad()
    def predict_values(self, inputs: Any, batch_size: int = 1024) -> torch.Tensor:
        """Predictions (N,) in the targets' units."""
        batch = self.to_batch(inputs)
        out = [self.model(self.preprocess.apply(batch[i : i + batch_size].to(self.device))).float().flatten()
               for i in range(0, len(batch), batch_size)]
        return torch.cat(out).cpu() * self.std + self.mean

    def predict(self, inputs: Any) -> list[float]:  # type: ignore[override]
        """The predicted value of each input."""
        return self.predict_values(inputs).tolist()

    def top_k(self, inputs: Any, k: int = 3) -> list[list[tuple[str, float]]]:
        """One ``(target name, value)`` per input: the shape ``lamina predict`` prints for every task."""
        return [[(self.target, v)] for v in self.predict(inputs)]

    def generate(self, *args: Any, **kw: Any) -> str:
        raise LaminaError("this run is a regression: it predicts values (lamina predict), it does not generate text")


class ImageSampler(Predictor):
    """An image generator (a VAE or a diffusion model): ``sample`` new images; a VAE also
    ``interpolate``s between two images in its latent space."""

    def __init__(self, model: Model, meta: dict[str, Any], device: torch.device | None = None) -> None:
        super().__init__(model, meta, device)
        from lamina.tasks import TASKS

        self.generator_task: Any = TASKS.get(self.task).from_meta(meta)
        self.shape = tuple(self.generator_task.shape)

    def sample(self, n: int = 64, *, steps: int = 0, seed: int = 0) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [0, 1] on the CPU; ``steps``: a diffusion model's sampler steps
        (0: its default; fewer than its chain's length: DDIM); the same ``seed`` gives the same images."""
        if n < 1:
            raise LaminaError(f"--n must be at least 1 image, got {n}")
        if steps < 0:
            raise LaminaError(f"--steps must be positive (0: the model's default), got {steps}")
        g = torch.Generator(device=self.device).manual_seed(seed)
        return self.generator_task.sample(self.model, n, steps=steps, generator=g).cpu()

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, n: int = 10) -> torch.Tensor:
        """Images decoded along the line between the latent codes of raw images ``a`` and ``b``
        (C, H, W uint8 or float in [0, 1]); (n, C, H, W) in [0, 1]. VAEs only."""
        if not hasattr(self.generator_task, "interpolate"):
            raise LaminaError(f"this run is a {self.task} model: only a VAE interpolates in a latent space")
        pair = torch.stack([a, b]).to(self.device)
        pixels = pair.float() / 255 if pair.dtype == torch.uint8 else pair.float()  # (2, C, H, W) in [0, 1]
        lo, hi = self.generator_task.pixel_range
        pair = lo + (hi - lo) * pixels
        return self.generator_task.interpolate(self.model, pair[:1], pair[1:], n).cpu()

    def predict(self, *args: Any, **kw: Any) -> list[str]:
        raise LaminaError(f"this run is a {self.task} model: it generates images (lamina generate RUN --n 64), "
                          "it does not predict classes")

    top_k = predict_proba = predict


PREDICTORS: dict[str, type[Predictor]] = {"classify": Classifier, "regress": Regressor,
                                          "language-model": TextGenerator, "vae": ImageSampler,
                                          "diffusion": ImageSampler}


def load(run: str | Path, device: str = "cpu") -> Predictor:
    """Load the model saved in a run folder as its task's predictor (see the module docstring)."""
    folder = Path(run)
    model, meta = read_model(folder)
    cls = PREDICTORS.get(str(meta["task"]))
    if cls is None:
        raise LaminaError(f"{folder}/model.json names task {meta['task']!r}; this lamina knows "
                          f"{', '.join(PREDICTORS)}")
    try:
        return cls(model, meta, resolve_device(device))
    except LaminaError as e:
        raise LaminaError(f"{folder}/{e}") from None
    except (LookupError, TypeError, ValueError) as e:
        raise LaminaError(f"{folder}/model.json is corrupt ({_first_line(e)}); train again") from None
