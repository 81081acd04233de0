"""``lamina`` on the command line: train, resume, eval, predict, generate, export, attack, curve, inspect,
report, data, play.

Bad input prints one line, ``error: <what is wrong> (<how to fix it>)``, and exits with 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lamina.errors import LaminaError
from lamina.training.callbacks import Interrupted


def _parser() -> argparse.ArgumentParser:
    from lamina import __version__

    p = argparse.ArgumentParser(prog="lamina", description="Raw data in, a trained deep network out.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--version", action="version", version=f"lamina {__version__}")
    # --debug is accepted after the command too (`lamina train digits --debug`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(*args: Any, **kw: Any) -> argparse.ArgumentParser:
        return _add(*args, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    t = sub.add_parser("train", help="train a network and write a run folder",
                       description="Train on DATA (a dataset name, an image folder, a .npz file, a .txt file or a "
                                   "folder of .txt files). Trailing key=value pairs override any config key, "
                                   "e.g. train.lr=0.05.")
    t.add_argument("data", nargs="?", help="dataset name, image folder, .npz, .txt or a folder of .txt files")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. model.width=64")
    t.add_argument("--model", help="auto | mlp | cnn | resnet | gpt | textcnn")
    t.add_argument("--task", choices=["auto", "classify", "regress", "language-model", "vae", "diffusion"],
                   help="what to learn where the data allows more than one (default: what the data declares)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    t.add_argument("--out", help="run folder (default runs/<data>-<model>-<time>)")
    t.add_argument("--config", help="YAML config file (any subset of the keys in a run's config.yaml)")
    t.add_argument("--recipe", metavar="NAME",
                   help="a named recipe under --config and the other flags: fast | fast-long | demo")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every STEPS steps")
    t.add_argument("--checkpoint-minutes", type=float, metavar="MIN", help="also checkpoint every MIN minutes")
    t.add_argument("--on-nan", choices=["stop", "skip", "rollback", "off"], help="what a NaN/inf loss does")
    t.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms (bit-identical resume on CPU)")

    t.add_argument("--tensorboard", action="store_true", default=None, help="write TensorBoard event files")
    t.add_argument("--adversarial", nargs="+", metavar="SPEC",
                   help="adversarial training: pgd eps=0.1 steps=7 | fgsm-rs eps=0.1 (eps in raw units, pixels in [0, 1])")
    t.add_argument("--max-minutes", type=float, metavar="MIN", help="stop training gracefully after MIN minutes")
    t.add_argument("--max-energy-kwh", type=float, metavar="KWH",
                   help="stop training gracefully once the energy meter has counted KWH")
    t.add_argument("--grid-intensity", metavar="G",
                   help="gCO2e per kWh for co2e_g, or a country code such as FRA (needs codecarbon)")
    t.add_argument("--report", action="store_true", help="after training, inspect the model and write report.html")
    t.add_argument("--nproc", type=int, metavar="N",
                   help="train on N processes of this machine (one per GPU, or CPU cores): runs "
                        "torchrun --standalone --nproc-per-node N -m lamina train ...")

    at = sub.add_parser("attack", help="how easily adversarial inputs fool a classifier -> RUN/robustness.json",
                        description="Attack a classifier run's model on its test split (FGSM or PGD), with checks "
                                    "against gradient masking; eps is in raw input units (pixels in [0, 1]).")
    at.add_argument("run")
    at.add_argument("--method", default="pgd", help="pgd | fgsm")
    at.add_argument("--eps", default="0.05,0.1,0.2", help="comma-separated radii (default 0.05,0.1,0.2)")
    at.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    at.add_argument("--restarts", type=int, default=1, help="PGD random restarts (default 1)")
    at.add_argument("--step-size", type=float, help="of each PGD step, as a fraction of eps (default 2.5 / steps)")
    at.add_argument("--norm", default="linf", help="linf | l2")
    at.add_argument("--n", type=int, help="attack the first N examples (default: the whole split)")
    at.add_argument("--split", default="test")
    at.add_argument("--device", default="cpu")
    at.add_argument("--json", action="store_true", help="print robustness.json")

    cu = sub.add_parser("curve", help="sample efficiency: test accuracy against training examples -> OUT/curve.json",
                        description="Train on nested stratified subsets of DATA's training split, several seeds "
                                    "each, and fit a power law of test error against examples. Rerun with the same "
                                    "--out to resume an interrupted curve.")
    cu.add_argument("data", nargs="?", help="dataset name, image folder or .npz")
    cu.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run")
    cu.add_argument("--fractions", default="0.01,0.03,0.1,0.3,1", help="comma-separated fractions in (0, 1]")
    cu.add_argument("--seeds", type=int, default=3, help="runs per point (default 3)")
    cu.add_argument("--compare", nargs="+", metavar="KEY=VALUE",
                    help="one curve per setting, e.g. --compare data.translate=0 data.translate=2")
    cu.add_argument("--out", help="the curve's folder (default runs/curve-<data>-<time>)")
    cu.add_argument("--config", help="YAML config file")
    cu.add_argument("--recipe", metavar="NAME", help="a named recipe: fast | fast-long | demo")
    cu.add_argument("--quiet", action="store_true")

    ins = sub.add_parser("inspect", help="what each layer learned: probes, CKA, activations, attributions -> RUN/inspection/")
    ins.add_argument("run")
    ins.add_argument("--max-examples", type=int, default=2000, help="examples per split to inspect (memory stays bounded)")
    ins.add_argument("--compare", metavar="RUN2", help="also the same-stage CKA with another run (e.g. another seed)")
    ins.add_argument("--stage", help="the stage whose channels' top-activating examples are shown (default: the deepest)")
    ins.add_argument("--device", default="cpu")

    rep = sub.add_parser("report", help="write RUN/report.html (inspects the run first if needed)")
    rep.add_argument("run")
    rep.add_argument("--max-examples", type=int, default=2000)
    rep.add_argument("--device", default="cpu")
    rep.add_argument("--reinspect", action="store_true", help="run the inspection again even if it exists")

    r = sub.add_parser("resume", help="continue an interrupted run from its newest valid checkpoint")
    r.add_argument("run")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--nproc", type=int, metavar="N",
                   help="resume on N processes of this machine (any number: a checkpoint is not tied to one)")

    e = sub.add_parser("eval", help="evaluate a run's saved model on its test split")
    e.add_argument("run")
    e.add_argument("--split", help="train | val | test (default: test; a language model's: val)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", action="store_true", help="print JSON")

    pr = sub.add_parser("predict", help="classify (or, for a regression, predict values of) inputs with a run's model")
    pr.add_argument("run")
    pr.add_argument("inputs", nargs="+", help="what the model was trained on: image files, .wav files, FASTA "
                    "files, a CSV table, .txt files, .npy arrays")
    pr.add_argument("--top-k", type=int, default=3)
    pr.add_argument("--out", help="tables: write the input table with a prediction column appended to this file")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--json", action="store_true", help="print JSON")

    g = sub.add_parser("generate", help="sample images from a VAE or diffusion run, or text from a language model",
                       description="An image run (vae, diffusion): writes a grid of --n samples as a PNG (RUN/generated/ "
                                   "or --out DIR, with one PNG per image); a VAE with --interpolate also decodes the "
                                   "line between two test images. A language-model run: streams text.")
    g.add_argument("run")
    g.add_argument("--n", type=int, help="images: how many to sample (default 64; with --interpolate: 10 along the line)")
    g.add_argument("--steps", type=int, default=0,
                   help="diffusion: sampler steps (fewer than the chain's length: DDIM; 0: the run's default)")
    g.add_argument("--out", help="images: a folder for the grid and one PNG per image (default RUN/generated)")
    g.add_argument("--interpolate", nargs="*", type=int, metavar="I",
                   help="VAE: decode the latent line between test images I and J (default 0 1)")
    g.add_argument("--prompt", default="", help="the text to continue")
    g.add_argument("--max-new-tokens", type=int, default=500)
    g.add_argument("--temperature", type=float, default=0.8, help="0: greedy; higher: more random")
    g.add_argument("--top-k", type=int, default=40, help="sample among the k most likely tokens (0: all)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token")

    x = sub.add_parser("export", help="export a run's model for other runtimes (ONNX, torch.export)")
    x.add_argument("run")
    x.add_argument("--format", choices=["onnx", "torch-export"], default="onnx")
    x.add_argument("--out", help="the file to write (default RUN/model.onnx or RUN/model.pt2)")

    d = sub.add_parser("data", help="list, fetch or describe datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.add_parser("list", help="registered datasets and where their data is")
    f = dsub.add_parser("fetch", help="download (or locate) a dataset")
    f.add_argument("name")
    k = dsub.add_parser("make-keywords", help="synthesise a spoken-keywords set of .wav files (espeak-ng, sox)",
                        description="Speak each keyword in many espeak-ng voices, speeds and pitches, with noise and "
                                    "reverb; the test split's voices are never used in training.")
    k.add_argument("out", help="the folder to write (OUT/train/<word>/*.wav, OUT/test/<word>/*.wav)")
    k.add_argument("--small", action="store_true", help="a quick set (a few words and voices) for a demo")
    k.add_argument("--seed", type=int, default=0)
    i = dsub.add_parser("info", help="shapes, class counts and a PNG grid of samples")
    i.add_argument("name", help="dataset name, image folder or .npz file")
    i.add_argument("--grid", help="where to write the PNG grid (default <name>-samples.png)")
    i.add_argument("--json", action="store_true", help="print JSON")
    from lamina.cli.play import add_parser as add_play

    add_play(sub)
    return p


def _data_and_overrides(a: argparse.Namespace, missing: str) -> tuple[str | None, list[str]]:
    """DATA and the key=value overrides of `lamina train`/`curve`; ``missing``: the error without DATA."""
    overrides, data = list(a.overrides), a.data
    if data is not None and "=" in data and not Path(data).exists():
        overrides.insert(0, data)  # `lamina train --config c.yaml train.lr=0.1`
        data = None
    if data is None and a.config is None and not any(o.startswith("data.name=") for o in overrides):
        raise LaminaError(missing)
    return data, overrides


def _launch(a: argparse.Namespace, device: str | None) -> int | None:
    """``--nproc N``: the same command on N processes through torchrun (None: run here)."""
    if a.nproc is None or os.environ.get("LOCAL_RANK") is not None:  # already one of torchrun's workers
        return None
    from lamina.cli.launch import launch

    return launch(a.argv, a.nproc, device)


def _is_main() -> bool:
    """Rank 0 of a torchrun job, or a single process: the one that prints results."""
    return os.environ.get("RANK", "0") == "0"


def _launched() -> bool:
    """A worker of a job of more than one process (torchrun's variables)."""
    return "RANK" in os.environ and os.environ.get("WORLD_SIZE", "1") != "1"


def _rank_tag() -> str:
    """``[rank 1] `` in the messages of a torchrun worker other than rank 0 ("" elsewhere)."""
    return "" if _is_main() or os.environ.get("WORLD_SIZE", "1") == "1" else f"[rank {os.environ['RANK']}] "


def cmd_train(a: argparse.Namespace) -> int:
    from lamina.api import report, train

    if (rc := _launch(a, a.device)) is not None:
        return rc

    data, overrides = _data_and_overrides(
        a, "lamina train needs DATA: a dataset name (lamina data list), an image folder, a .npz file, a .txt "
           "file or a folder of them, or --config FILE (e.g. lamina train fashion-mnist)")
    run = train(data, config=a.config, recipe=a.recipe, overrides=overrides, quiet=a.quiet, model=a.model,
                epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed, device=a.device, out=a.out,
                task=a.task, checkpoint_every=a.checkpoint_every, checkpoint_minutes=a.checkpoint_minutes,
                on_nan=a.on_nan, deterministic=a.deterministic, tensorboard=a.tensorboard, adversarial=a.adversarial,
                max_minutes=a.max_minutes, max_energy_kwh=a.max_energy_kwh, grid_intensity=a.grid_intensity)
    if not _is_main():
        return 0
    _print_result(run)
    if a.report:
        print(f"report: {report(run.dir)}")
    return 0


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LaminaError(f"{option} takes comma-separated numbers, e.g. {option} 0.05,0.1; got '{text}'") from None
    if not values:
        raise LaminaError(f"{option} needs at least one number")
    return values


def cmd_attack(a: argparse.Namespace) -> int:
    from lamina.api import attack

    r = attack(a.run, method=a.method, eps=_floats(a.eps, "--eps"), steps=a.steps, restarts=a.restarts,
               step_size=a.step_size, norm=a.norm, n=a.n, split=a.split, device=a.device)
    if a.json:
        print(json.dumps(r))
        return 0
    print(f"{a.run}: clean accuracy {r['clean_accuracy']:.4f} on {r['examples']} {r['split']} examples")
    for x in r["results"]:
        steps = f"-{x['steps']}" if x["method"] == "pgd" else ""
        restarts = f" x{x['restarts']} restarts" if x.get("restarts", 1) > 1 else ""
        print(f"  {x['method']}{steps}{restarts} {x['norm']} eps {x['eps']:g}: robust accuracy "
              f"{x['robust_accuracy']:.4f}  ({x['seconds']:.1f}s)")
    failed = [k for k, c in r["checks"].items() if not c["passed"]]
    print("gradient-masking checks: " + ("all passed" if not failed else "FAILED " + ", ".join(failed)
                                        + " (the robust accuracy may be overstated)"))
    print(f"written to {Path(a.run) / 'robustness.json'}")
    return 0


def cmd_curve(a: argparse.Namespace) -> int:
    from lamina.api import curve

    data, overrides = _data_and_overrides(
        a, "lamina curve needs DATA: a dataset name (lamina data list), an image folder or a .npz file "
           "(e.g. lamina curve fashion-mnist --recipe fast)")
    try:
        r = curve(data, fractions=_floats(a.fractions, "--fractions"), seeds=a.seeds, compare=a.compare or (),
                  out=a.out, config=a.config, recipe=a.recipe, overrides=overrides, quiet=a.quiet)
    except Interrupted as e:
        where = e.checkpoint.parents[3] if e.checkpoint else a.out or "the same --out"
        print(f"{e}; the curve so far is in {where}; run the same lamina curve command with --out {where} to go on",
              file=sys.stderr)
        return 128 + e.signum
    fit = r.get("fit") or {}
    if fit.get("exponent") is not None:
        lo, hi = fit.get("exponent_ci95") or (float("nan"), float("nan"))
        print(f"test error ~ n^{fit['exponent']:.3f} (95 % CI {lo:.3f} to {hi:.3f})")
    print(f"curve written to {Path(r['out']) / 'curve.json'} and {Path(r['out']) / 'curve.html'}")
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from lamina.api import inspect
    from lamina.reporting.export import write_figures

    if a.max_examples < 1:
        raise LaminaError(f"--max-examples must be at least 1, got {a.max_examples}")
    folder = inspect(a.run, max_examples=a.max_examples, device=a.device, compare=a.compare, stage=a.stage)
    pngs = write_figures(a.run)
    probes = json.loads((folder / "probes.json").read_text())
    if isinstance(probes, dict):  # a language model: the next character's class, beside the majority baseline
        print("next-character-class probe accuracy by depth: "
              + ", ".join(f"{p['stage']} {p['accuracy']:.3f}" for p in probes["stages"])
              + f"  (majority class '{probes['majority']}': {probes['baseline']:.3f})")
    else:
        print("linear probe accuracy by depth: " + ", ".join(f"{p['stage']} {p['accuracy']:.3f}" for p in probes))
    print(f"inspection written to {folder} ({len(pngs)} figures)")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from lamina.api import report

    if a.max_examples < 1:
        raise LaminaError(f"--max-examples must be at least 1, got {a.max_examples}")
    print(f"report: {report(a.run, max_examples=a.max_examples, device=a.device, reinspect=a.reinspect)}")
    return 0


def cmd_resume(a: argparse.Namespace) -> int:
    from lamina.api import resume
    from lamina.rl.play import is_play_run

    if is_play_run(a.run):  # a game run of `lamina play` (its config.yaml says data.task: dqn)
        from lamina.cli.play import print_summary

        print_summary(resume(a.run, quiet=a.quiet).summary, Path(a.run))
        return 0
    if (rc := _launch(a, None)) is not None:
        return rc
    run = resume(a.run, quiet=a.quiet)
    if _is_main():
        _print_result(run)
    return 0


def _print_result(run: Any) -> None:
    s = run.summary
    if "test_accuracy" in s:
        robust = (f", robust {s['test_robust_accuracy']:.4f} on {s['test_robust_examples']} examples"
                  if "test_robust_accuracy" in s else "")
        f1 = f", macro-F1 {s['test_macro_f1']:.4f}" if "test_macro_f1" in s else ""
        what = f"test accuracy {s['test_accuracy']:.4f}{f1}{robust}  (loss {s['test_loss']:.4f}, "
    elif "test_rmse" in s:
        what = f"test RMSE {s['test_rmse']:.4g}, MAE {s['test_mae']:.4g}, R² {s['test_r2']:.4f}  ("
    elif s.get("task") in ("vae", "diffusion"):
        what = (f"test negative ELBO {s['test_nelbo']:.2f} nats ({s['test_bpd']:.4f} bits/dim)" if "test_nelbo" in s
                else f"test loss {s['test_loss']:.4f}")
        if "fd_lamina" in s:
            what += f", FD-lamina {s['fd_lamina']:.2f} (real test images {s['fd_train_test']:.2f})"
        what += "  ("
    else:
        what = f"validation {s['val_bpc']:.4f} bits per character  (loss {s['val_loss']:.4f} nats per token, "
    print(f"{what}{s['train_seconds']:.1f}s of training on {s['device']})  run folder: {run.dir}")


def cmd_eval(a: argparse.Namespace) -> int:
    from lamina.api import evaluate

    m = evaluate(a.run, split=a.split, device=a.device)
    if a.json:
        print(json.dumps(m))
    else:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
        print(f"{a.run}: {m['split']} {shown}  ({m['examples']} examples)")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from lamina.api import load

    if a.top_k < 1:
        raise LaminaError(f"--top-k must be at least 1, got {a.top_k}")
    model = load(a.run, device=a.device)
    if not hasattr(model, "read"):  # a language model: its own error says what it does instead
        model.predict(a.inputs)
    if a.out:
        return _predict_table(model, a)
    rows: list[tuple[str, list[tuple[str, float]]]] = []
    for item in a.inputs:  # a file may hold many examples (a .npy batch, FASTA records, table rows): one answer each
        batch, names = model.read(item)  # type: ignore[attr-defined]
        found = model.top_k(batch, k=a.top_k)  # type: ignore[attr-defined]
        rows += list(zip(names, found, strict=True))
    if a.json:
        key = "value" if model.task == "regress" else "probability"
        print(json.dumps([{"input": name, "top": [{"class" if key == "probability" else "target": c, key: v}
                                                  for c, v in r]} for name, r in rows]))
    else:
        for name, r in rows:
            print(f"{name}: " + ", ".join(f"{c} {v:.4g}" if model.task == "regress" else f"{c} {v:.3f}"
                                          for c, v in r))
    return 0


def _predict_table(model: Any, a: argparse.Namespace) -> int:
    """``lamina predict RUN table.csv --out preds.csv``: the table with a prediction column appended."""
    if model.modality != "table" or len(a.inputs) != 1:
        raise LaminaError("--out writes a table with predictions appended: give one .csv/.tsv/.parquet file to a "
                          "run trained on a table")
    from lamina.data.tabular import write_predictions

    values = model.predict(a.inputs[0])
    target = model.meta.get("target") or "class"
    column = f"predicted_{target}"
    write_predictions(a.inputs[0], a.out, values, column)
    print(f"wrote {a.out}: {len(values)} rows with '{column}' appended")
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from lamina.api import load
    from lamina.artifacts import ImageSampler

    model = load(a.run, device=a.device)
    if isinstance(model, ImageSampler):
        return _generate_images(model, a)
    pieces = model.stream(a.prompt, max_new_tokens=a.max_new_tokens, temperature=a.temperature,  # type: ignore[attr-defined]
                          top_k=a.top_k or None, seed=a.seed, use_cache=not a.no_cache) \
        if hasattr(model, "stream") else model.generate()
    sys.stdout.write(a.prompt)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _generate_images(model: Any, a: argparse.Namespace) -> int:
    import time

    import torch

    from lamina.utils.grid import save_grid

    out = Path(a.out) if a.out else Path(a.run) / "generated"
    if a.interpolate is not None:
        return _interpolate(model, a, out)
    a.n = 64 if a.n is None else a.n
    t0 = time.perf_counter()
    images = model.sample(a.n, steps=a.steps, seed=a.seed)
    seconds = time.perf_counter() - t0
    steps = f"_steps{a.steps}" if a.steps else ""
    grid = save_grid(images, out / f"samples_seed{a.seed}{steps}.png")
    if a.out:  # one PNG per image too
        from PIL import Image

        for i, img in enumerate(images):
            pixels = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(out / f"{i:04d}.png")
    print(f"wrote {grid}: {a.n} samples in {seconds:.1f} s" + (f" (and {a.n} PNGs in {out})" if a.out else ""))
    return 0


def _interpolate(model: Any, a: argparse.Namespace, out: Path) -> int:
    from lamina.config import load_config
    from lamina.data.base import build_dataset
    from lamina.utils.grid import save_grid

    pair = a.interpolate or [0, 1]
    if len(pair) != 2:
        raise LaminaError(f"--interpolate takes two test-image indices (e.g. --interpolate 0 1), got {len(pair)}")
    cfg = load_config(Path(a.run) / "config.yaml")
    test = build_dataset(cfg.data, seed=cfg.train.seed).splits().get("test")
    if test is None or not all(0 <= i < len(test) for i in pair):
        raise LaminaError(f"--interpolate indices must lie in 0..{len(test) - 1 if test else 0} (the test split)")
    n = 10 if a.n is None else a.n
    if n < 2:
        raise LaminaError(f"--n must be at least 2 images along an interpolation, got {n}")
    images = model.interpolate(test.x[pair[0]], test.x[pair[1]], n)
    path = save_grid(images, out / f"interpolation_{pair[0]}_{pair[1]}.png", nrow=len(images))
    print(f"wrote {path}: {len(images)} images from test image {pair[0]} to {pair[1]}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from lamina.export import export_run

    print(f"exported: {export_run(a.run, fmt=a.format, out=a.out)}")
    return 0


def cmd_data(a: argparse.Namespace) -> int:
    from lamina.data import sources
    from lamina.data.base import DATASETS

    if a.data_command == "list":
        for name in DATASETS.names():
            entry = DATASETS.get(name)
            print(f"{name:<15} {entry.description}  [{sources.dataset_status(name)}]")
    elif a.data_command == "fetch":
        print(sources.fetch(a.name))
    elif a.data_command == "make-keywords":
        from rich.console import Console

        from lamina.data.keywords import make_keywords

        made = make_keywords(Path(a.out), small=a.small, seed=a.seed, console=Console(stderr=True))
        splits = ", ".join(f"{k} {v}" for k, v in (made.get("clips") or {}).items()) if isinstance(
            made.get("clips"), dict) else ""
        print(f"wrote {a.out}{': ' + splits + ' clips' if splits else ''} (settings and voices in {a.out}/keywords.json);"
              f" train on it with: lamina train {a.out}")
    elif a.data_command == "info":
        from lamina.config import DataConfig
        from lamina.data.base import build_dataset
        from lamina.data.info import describe, sample_grid

        ds = build_dataset(DataConfig(name=a.name, val_fraction=0.0))
        info = describe(ds)
        grid = Path(a.grid or f"{Path(a.name).stem if '/' in a.name else a.name}-samples.png")
        sample_grid(ds, grid)
        info["grid"] = str(grid)
        if a.json:
            print(json.dumps(info))
        else:
            for k, v in info.items():
                print(f"{k:<14} {v}")
    else:
        raise LaminaError("lamina data needs an action: list, fetch NAME or info NAME")
    return 0


def _cmd_play(a: argparse.Namespace) -> int:
    from lamina.cli.play import cmd_play

    return cmd_play(a)


COMMANDS = {"train": cmd_train, "attack": cmd_attack, "curve": cmd_curve, "resume": cmd_resume, "inspect": cmd_inspect, "report": cmd_report, "eval": cmd_eval,
            "predict": cmd_predict, "generate": cmd_generate, "export": cmd_export, "data": cmd_data, "play": _cmd_play}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    # key=value overrides may come after options (`lamina train data --epochs 3 train.lr=0.1`)
    if args.command in ("train", "curve", "play") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except LaminaError as e:
        if args.debug:
            traceback.print_exc()
        if not getattr(e, "echo", False):  # an error rank 0 reports for the whole job is printed once
            print(f"error: {_rank_tag()}{e}", file=sys.stderr)
        if type(e).__name__ == "PeersLost" or _launched():  # a worker of a job that failed: end now, as
            # tearing the process group down with a peer gone waits for it or aborts (SIGABRT seen after a full disk)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.exit_code)
        return e.exit_code
    except Interrupted as e:
        run = e.checkpoint.parent.parent if e.checkpoint else "RUN"  # <run>/checkpoints/step-N
        if _is_main():
            print(f"{e}; checkpoint saved in {e.checkpoint}; resume with: lamina resume {run}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`lamina data list | head -1`): not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 141
    except OSError as e:  # a full disk, a read-only folder, a vanished file: the system's own words
        if args.debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}: free disk space, fix permissions or choose another --out",
              file=sys.stderr)
        return 2
    except Exception as e:  # a bug in lamina, not bad input: still one line unless --debug
        if args.debug:
            raise
        print(f"error: internal error {type(e).__name__}: {e} (rerun with --debug for the traceback and report it)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
