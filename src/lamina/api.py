"""The public face of lamina in Python: ``train``, ``resume``, ``load``, ``evaluate``, ``inspect``,
``report``, ``generate``. Every CLI option of ``lamina train`` is a keyword argument here.

>>> run = lamina.train("digits", epochs=5, quiet=True)        # doctest: +SKIP
>>> model = lamina.load(run.dir)                                # doctest: +SKIP
>>> model.predict(images)                                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from lamina.artifacts import Classifier, Predictor, TextGenerator
from lamina.artifacts import load as _load
from lamina.config import RunConfig
from lamina.errors import LaminaError
from lamina.session import Session, evaluate_run, resolve_config, resume_session, validate
from lamina.training import callbacks as cb


@dataclass
class RunResult:
    """What ``train`` returns: the run folder, its ``summary.json`` and its config."""

    dir: Path
    summary: dict[str, Any]
    config: RunConfig = field(repr=False)

    @property
    def test_accuracy(self) -> float:
        """A classifier's test accuracy (a language model has ``val_bpc`` and ``val_loss`` instead)."""
        if "test_accuracy" not in self.summary:
            raise LaminaError(f"this run is a {self.summary.get('task')} run: it has no test accuracy; "
                              "read run.summary")
        return float(self.summary["test_accuracy"])


def train(
    data: str | None = None,
    *,
    config: RunConfig | str | Path | None = None,
    recipe: str | None = None,
    overrides: str | Sequence[str] = (),
    model: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    task: str | None = None,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
    on_nan: str | None = None,
    deterministic: bool | None = None,
    tensorboard: bool | None = None,
    report: bool = False,
    quiet: bool = False,
    console: Console | None = None,
    callbacks: Sequence[cb.Callback] = (),
) -> RunResult:
    """Train a network on ``data`` and write a run folder (the same as ``lamina train``).

    Precedence: defaults < ``recipe`` < ``config`` < keyword arguments < ``overrides``.

    Args:
        data: a registered dataset name, an image folder, a ``.npz`` file, a ``.txt`` file or a
            folder of them (``None``: the config's ``data.name``).
        config: a RunConfig or a YAML file (e.g. another run's ``config.yaml``).
        recipe: a named recipe (``"fast"``, ``"fast-long"``, ``"demo"``, ``"text"``).
        overrides: ``["train.lr=0.05", ...]`` or ``"train.lr=0.05 model.width=64"``.
        model: ``auto``, ``mlp``, ``cnn``, ``resnet``, ``gpt``, ``textcnn``...
        epochs, batch_size, lr, seed, device, out: as ``--epochs`` ... ``--out``.
        task: ``classify`` or ``language-model`` where the data allows both (``auto``: its own).
        checkpoint_every, checkpoint_minutes: extra checkpoints every N steps / M minutes.
        on_nan: ``stop``, ``skip``, ``rollback`` or ``off``.
        deterministic: deterministic algorithms (a resumed CPU run is bit-identical).
        tensorboard: write TensorBoard event files to ``RUN/tensorboard``.
        report: after training, inspect the model and write ``RUN/report.html``.
        quiet: no progress bar or per-epoch lines.
        console: where progress goes (default: standard error).
        callbacks: extra :class:`lamina.training.callbacks.Callback` objects.
    """
    cfg = resolve_config(data, config=config, recipe=recipe, overrides=overrides, model=model, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed, device=device,
                         out=None if out is None else str(out), task=task, checkpoint_every=checkpoint_every,
                         checkpoint_minutes=checkpoint_minutes, on_nan=on_nan, deterministic=deterministic,
                         tensorboard=tensorboard)
    validate(cfg)
    session = Session(cfg, console or Console(stderr=True, quiet=quiet), quiet=quiet, extra=callbacks)
    result = RunResult(session.out, session.run(), session.cfg)
    if report:
        _write_report(result.dir)
    return result


def resume(run: str | Path, *, quiet: bool = False, console: Console | None = None,
           callbacks: Sequence[cb.Callback] = ()) -> RunResult:
    """Continue an interrupted run from its newest valid checkpoint (older ones if that is corrupt).

    With ``train.deterministic`` the final weights on CPU are bit-identical to an uninterrupted run.

    Args:
        run: the run folder.
        quiet, console, callbacks: as for :func:`train`.
    """
    session = resume_session(Path(run), console or Console(stderr=True, quiet=quiet), quiet=quiet, extra=callbacks)
    return RunResult(session.out, session.run(), session.cfg)


def load(run: str | Path, device: str = "cpu") -> Predictor:
    """The model saved in a run folder, ready to use: a :class:`~lamina.artifacts.Classifier`
    (``predict``, ``top_k``, ``predict_proba``) or a :class:`~lamina.artifacts.TextGenerator`
    (``generate``), as the run's task says.

    Args:
        run: the run folder (``model.safetensors`` + ``model.json``).
        device: where the model runs (``cpu``, ``cuda``, ``auto``...).
    """
    return _load(run, device)


def evaluate(run: str | Path, split: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Re-evaluate a saved run on a split of its data (rebuilt from the run's config.yaml).

    Args:
        run: the run folder.
        split: ``train``, ``val`` or ``test`` (those the run has; None: ``test``, or a language
            model's validation tail).
        device: where the model runs.
    """
    return evaluate_run(Path(run), split=split, device=device)


def inspect(run: str | Path, *, max_examples: int = 2000, device: str = "cpu", compare: str | Path | None = None,
            stage: str | None = None) -> Path:
    """What each layer learned, as JSON in ``RUN/inspection/`` (the same as ``lamina inspect``).

    Args:
        run: the run folder.
        max_examples: examples per split to inspect (memory stays bounded).
        device: where the model runs.
        compare: another run of the same architecture: adds the same-stage CKA with it.
        stage: the stage whose channels' top-activating examples are shown (default: the deepest).
    """
    from lamina.inspection.run import inspect_run

    with _status("inspecting") as show:
        return inspect_run(run, max_examples=max_examples, device=device, compare_with=compare, top_stage=stage,
                           progress=show)


def report(run: str | Path, *, max_examples: int = 2000, device: str = "cpu", reinspect: bool = False) -> Path:
    """Write ``RUN/report.html``, running the inspection first when the run has none yet.

    Args:
        run: the run folder.
        max_examples, device: for the inspection (see :func:`inspect`).
        reinspect: run the inspection again even if it exists.
    """
    return _write_report(Path(run), max_examples=max_examples, device=device, reinspect=reinspect)


def _write_report(folder: Path, *, max_examples: int = 2000, device: str = "cpu", reinspect: bool = False) -> Path:
    from lamina.inspection.run import inspect_run
    from lamina.reporting import write_report

    if reinspect or not (folder / "inspection" / "inspection.json").is_file():
        with _status("inspecting") as show:
            inspect_run(folder, max_examples=max_examples, device=device, progress=show)
    return write_report(folder)


@contextlib.contextmanager
def _status(what: str) -> Iterator[Callable[[str], None]]:
    """A one-line status on standard error while a long step runs (quiet when it is not a terminal)."""
    console = Console(stderr=True)
    with console.status(what) as status:
        yield lambda part: status.update(f"{what}: {part}")


def generate(run: str | Path, prompt: str = "", *, max_new_tokens: int = 500, temperature: float = 0.8,
             top_k: int | None = 40, seed: int = 0, device: str = "cpu") -> str:
    """Text from a language-model run: the continuation of ``prompt`` (see
    :meth:`lamina.artifacts.TextGenerator.generate` for the arguments)."""
    model = _load(run, device)
    return model.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)


__all__ = ["Classifier", "Predictor", "RunResult", "TextGenerator", "evaluate", "generate", "inspect", "load",
           "report", "resolve_config", "resume", "train"]
