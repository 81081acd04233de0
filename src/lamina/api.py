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
from lamina.config import RunConfig, load_config
from lamina.errors import LaminaError
from lamina.session import (
    Session,
    adversarial_overrides,
    evaluate_run,
    resolve_config,
    restart_session,
    resume_session,
    validate,
)
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
    adversarial: str | Sequence[str] | None = None,
    max_minutes: float | None = None,
    max_energy_kwh: float | None = None,
    grid_intensity: str | float | None = None,
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
        adversarial: adversarial training, ``"pgd eps=0.1 steps=7"`` or ``"fgsm-rs eps=0.1"``
            (the ``adversarial.*`` config keys; eps in raw input units, pixels in [0, 1]).
        max_minutes: stop training gracefully after this many minutes.
        max_energy_kwh: stop training gracefully once the energy meter has counted this much.
        grid_intensity: gCO2e per kWh, or a country code (needs codecarbon), for ``co2e_g``.
        report: after training, inspect the model and write ``RUN/report.html``.
        quiet: no progress bar or per-epoch lines.
        console: where progress goes (default: standard error).
        callbacks: extra :class:`lamina.training.callbacks.Callback` objects.
    """
    if isinstance(overrides, str):
        overrides = overrides.split()
    if adversarial is not None:
        overrides = [*adversarial_overrides(adversarial), *overrides]
    cfg = resolve_config(data, config=config, recipe=recipe, overrides=overrides, model=model, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed, device=device,
                         out=None if out is None else str(out), task=task, checkpoint_every=checkpoint_every,
                         checkpoint_minutes=checkpoint_minutes, on_nan=on_nan, deterministic=deterministic,
                         tensorboard=tensorboard, max_minutes=max_minutes, max_energy_kwh=max_energy_kwh,
                         grid_intensity=None if grid_intensity is None else str(grid_intensity))
    validate(cfg)
    console = console or Console(stderr=True, quiet=quiet)
    # torchrun --max-restarts started this job again after a failure: it resumes its run folder
    session = (restart_session(cfg, console, quiet=quiet, extra=callbacks)
               or Session(cfg, console, quiet=quiet, extra=callbacks))
    result = RunResult(session.out, session.run(), session.cfg)
    if report and session.dist.is_main:
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
    from lamina.rl.play import is_play_run, resume_play

    console = console or Console(stderr=True, quiet=quiet)
    if is_play_run(run):  # a game run of lamina play
        summary = resume_play(run, console=console, quiet=quiet)
        return RunResult(Path(run), summary, load_config(Path(run) / "config.yaml"))
    session = resume_session(Path(run), console, quiet=quiet, extra=callbacks)
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


def attack(run: str | Path, *, method: str = "pgd", eps: float | Sequence[float] = (0.05, 0.1, 0.2), steps: int = 20,
           restarts: int = 1, step_size: float | None = None, norm: str = "linf", n: int | None = None,
           split: str = "test", device: str = "cpu") -> dict[str, Any]:
    """How easily adversarial inputs fool a classifier run: ``RUN/robustness.json`` (the same as
    ``lamina attack``), with the gradient-masking checks, and adversarial examples for the report.

    Args:
        run: a classifier's run folder.
        method: ``pgd`` or ``fgsm``.
        eps: the radii, in raw input units (pixel values in [0, 1] for images).
        steps, restarts: of PGD (FGSM: one step).
        step_size: of each PGD step, as a fraction of eps (None: 2.5 / steps).
        norm: ``linf`` or ``l2``.
        n: attack the first ``n`` examples of the split (None: all of them).
        split: ``test``, ``val`` or ``train``.
        device: where the attack runs.
    """
    from lamina.robustness.run import attack_run

    radii = (float(eps),) if isinstance(eps, int | float) else tuple(float(e) for e in eps)
    with _status("attacking") as show:
        return attack_run(Path(run), method=method, eps=radii, steps=steps, restarts=restarts, step_size=step_size,
                          norm=norm, n=n, split=split, device=device, progress=show)


def curve(data: str | None = None, *, fractions: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0), seeds: int = 3,
          compare: Sequence[str] = (), out: str | Path | None = None, config: RunConfig | str | Path | None = None,
          recipe: str | None = None, overrides: str | Sequence[str] = (), quiet: bool = False,
          console: Console | None = None) -> dict[str, Any]:
    """A sample-efficiency curve (the same as ``lamina curve``): test accuracy against the number of
    training examples, on nested stratified subsets, ``seeds`` runs a point, with a power-law fit
    of the error; writes ``OUT/curve.json``, ``OUT/curve.html`` and a run folder per point.

    Args:
        data: the dataset (as for :func:`train`).
        fractions: of the training split, each in (0, 1].
        seeds: runs per point.
        compare: variants, each ``"key=value"`` overrides (e.g. ``["data.translate=0", "data.translate=2"]``).
        out: the curve's folder (default ``runs/curve-<data>-<time>``); rerun with the same one to resume.
        config, recipe, overrides: as for :func:`train`.
        quiet, console: as for :func:`train`.
    """
    from lamina.reporting.curve import write_curve_report
    from lamina.studies.curve import run_curve

    try:
        result = run_curve(data, fractions=tuple(fractions), seeds=seeds, compare=tuple(compare),
                           out=None if out is None else Path(out), config=config, recipe=recipe,
                           overrides=overrides, console=console or Console(stderr=True, quiet=quiet), quiet=quiet)
    except cb.Interrupted as stop:  # the points done so far are in curve.json: show them too
        if stop.checkpoint is not None and (stop.checkpoint.parents[3] / "curve.json").is_file():
            write_curve_report(stop.checkpoint.parents[3])  # OUT/<variant>/<point>/checkpoints/step-N
        raise
    write_curve_report(Path(result["out"]))
    return result


def generate(run: str | Path, prompt: str = "", *, max_new_tokens: int = 500, temperature: float = 0.8,
             top_k: int | None = 40, seed: int = 0, device: str = "cpu") -> str:
    """Text from a language-model run: the continuation of ``prompt`` (see
    :meth:`lamina.artifacts.TextGenerator.generate` for the arguments)."""
    model = _load(run, device)
    return model.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)


def sample(run: str | Path, n: int = 64, *, steps: int = 0, seed: int = 0, device: str = "cpu") -> Any:
    """Images (n, C, H, W) in [0, 1] from a VAE or diffusion run (see
    :meth:`lamina.artifacts.ImageSampler.sample`; ``steps``: a diffusion model's sampler steps)."""
    model = _load(run, device)
    if not hasattr(model, "sample"):
        raise LaminaError(f"{run} is a {getattr(model, 'task', '?')} run: only VAE and diffusion runs sample images")
    return model.sample(n, steps=steps, seed=seed)


def play(env: str | None = None, *, quiet: bool = False, console: Console | None = None, **kw: Any) -> RunResult:
    """Train a Double DQN agent on a game and write a run folder (the same as ``lamina play ENV``).

    Args:
        env: ``minatar/breakout`` ... or ``atari/<Game>`` (None: the config's ``rl.env``).
        quiet, console: as for :func:`train`.
        **kw: ``frames``, ``seed``, ``device``, ``out``, ``config``, ``overrides`` ... (see
            :func:`lamina.rl.play.resolve_play_config`).
    """
    from lamina.rl.play import play as _play

    summary = _play(env, console=console, quiet=quiet, **kw)
    folder = Path(summary["run"])
    return RunResult(folder, summary, load_config(folder / "config.yaml"))


__all__ = ["Classifier", "Predictor", "RunResult", "TextGenerator", "attack", "curve", "evaluate", "generate", "inspect", "load",
           "play", "report", "resolve_config", "resume", "sample", "train"]
