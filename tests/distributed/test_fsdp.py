"""train.strategy=fsdp (FSDP2's fully_shard) with gloo on the CPU: 2 sharded ranks against 1
unsharded process, the single-process checkpoint format both ways, the language model's tied
embedding and its samples, and what fsdp refuses (issue 14)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.distributed.conftest import (
    RUN_ARGS,
    _env,
    checkpoints,
    lamina,
    records,
    unfinished_copy,
    weights,
)

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(sys.platform != "linux", reason="torchrun jobs of gloo processes: Linux CI")]

FSDP = "train.strategy=fsdp"
# gradient clipping and gradient flow read sharded gradients: both are reduced over the ranks
EXTRA = ["--epochs", "4", "train.grad_clip=0.5", "train.gradient_flow_every=5"]


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:  # a reduce-scatter adds the ranks' gradients in another order than one process does
        torch.testing.assert_close(a[k], b[k], atol=tol, rtol=tol, msg=f"{k} differs")


@pytest.fixture(scope="module")
def runs(table_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp-runs")
    out = {"one": root / "one", "fsdp": root / "fsdp"}
    lamina("train", str(table_npz), "--out", str(out["one"]), *RUN_ARGS, *EXTRA)
    lamina("train", str(table_npz), "--out", str(out["fsdp"]), *RUN_ARGS, *EXTRA, FSDP, nproc=2)
    return out


def test_sharded_ranks_follow_one_process(runs: dict[str, Path]) -> None:
    one, two = records(runs["one"], "step"), records(runs["fsdp"], "step")
    assert [r["step"] for r in one] == [r["step"] for r in two] and one  # 60 steps: past the 50 the issue names
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
    for a, b in zip(records(runs["one"], "epoch"), records(runs["fsdp"], "epoch"), strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    _close(weights(runs["one"]), weights(runs["fsdp"]), tol=1e-4)  # the saved model: full tensors
    summary = json.loads((runs["fsdp"] / "summary.json").read_text())
    assert (summary["world_size"], summary["strategy"]) == (2, "fsdp")
    assert summary["test_examples"] % 2 == 1  # evaluated over uneven shards, with the model gathered
    alone = json.loads(lamina("eval", str(runs["fsdp"]), "--json").stdout)
    assert (alone["examples"], alone["accuracy"]) == (summary["test_examples"], summary["test_accuracy"])
    assert alone["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)


def test_gradient_flow_sums_the_shards(runs: dict[str, Path]) -> None:
    def rows(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "inspection" / "gradients.jsonl").read_text().splitlines()]

    one, two = rows(runs["one"]), rows(runs["fsdp"])
    assert [r["step"] for r in one] == [r["step"] for r in two] and one
    for a, b in zip(one, two, strict=True):
        for la, lb in zip(a["layers"], b["layers"], strict=True):
            assert la["name"] == lb["name"]
            assert lb["grad_norm"] == pytest.approx(la["grad_norm"], rel=1e-3)
            assert lb["weight_norm"] == pytest.approx(la["weight_norm"], rel=1e-4)


def test_checkpoints_are_sharded_by_rank(runs: dict[str, Path], tmp_path: Path) -> None:
    """Each rank wrote its shards (torch.distributed.checkpoint, safetensors); read in one process
    they are the whole tensors of the single-process checkpoint of the same step."""
    from lamina.errors import LaminaError
    from lamina.training import checkpoint

    a, b = checkpoints(runs["one"])[0], checkpoints(runs["fsdp"])[0]
    assert not (a / "shards").exists()
    assert len(list((b / "shards").glob("*.safetensors"))) == 2  # one file per rank
    sa, sb = checkpoint.load(a), checkpoint.read_shards(checkpoint.load(b))
    assert sa["model"].keys() == sb["model"].keys()
    for k, v in sa["model"].items():
        assert sb["model"][k].shape == v.shape and not isinstance(sb["model"][k], checkpoint.Sharded)
        torch.testing.assert_close(sb["model"][k], v, atol=1e-4, rtol=1e-4)
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
    for i, st in sa["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.as_tensor(sb["optimizer"]["state"][i][k]).shape == torch.as_tensor(v).shape, (i, k)
    broken = tmp_path / b.name
    shutil.copytree(b, broken)
    shard = sorted((broken / "shards").glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-8])  # a rank's file cut short
    with pytest.raises(LaminaError, match="does not match its checksum"):
        checkpoint.load(broken)
    shard.unlink()  # or gone
    with pytest.raises(LaminaError, match=r"do not match manifest\.json"):
        checkpoint.load(broken)


@pytest.mark.parametrize(("source", "nproc", "strategy"), [("fsdp", 1, "fsdp"), ("fsdp", 1, "auto"), ("one", 2, "fsdp")])
def test_resume_across_sharding(runs: dict[str, Path], tmp_path: Path, source: str, nproc: int, strategy: str) -> None:
    """A checkpoint of 2 sharded ranks resumes in one process (sharded over a job of one, or not at
    all), and one of an unsharded process on 2 sharded ranks; each ends where the uninterrupted run did."""
    folder = unfinished_copy(runs[source], tmp_path / "resumed", 25)
    cfg = folder / "config.yaml"
    text = cfg.read_text()
    cfg.write_text(text.replace("strategy: auto", f"strategy: {strategy}").replace("strategy: fsdp",
                                                                                    f"strategy: {strategy}"))
    lamina("resume", str(folder), nproc=nproc)
    resumed = json.loads((folder / "summary.json").read_text())
    assert (resumed["world_size"], resumed["strategy"]) == (nproc, "none" if strategy == "auto" else "fsdp")
    _close(weights(runs["one"]), weights(folder), tol=1e-4)


def test_a_language_model_sharded(tmp_path: Path) -> None:
    """The GPT: its embedding is tied to its output layer (one tensor, kept in the root's group), its
    text samples are written by rank 0 with the model gathered, its saved model loads in one process."""
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i} of a small text, with words that repeat.\n" for i in range(160)))
    args = ["--epochs", "2", "--batch-size", "8", "--quiet", "--deterministic", "data.context=16", "model.width=32",
            "model.depth=2", "model.heads=2", "model.dropout=0", "train.gradient_flow_every=0", "energy.meter=off",
            "train.precision=fp32"]
    lamina("train", str(text), "--out", str(tmp_path / "one"), *args)
    lamina("train", str(text), "--out", str(tmp_path / "two"), *args, FSDP, nproc=2)
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["strategy"] == "fsdp" and two["val_tokens"] == one["val_tokens"]
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    _close(weights(tmp_path / "one"), weights(tmp_path / "two"), tol=1e-4)
    samples = [json.loads(line) for line in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in samples] == [1, 2]  # once each, by rank 0
    expected = [json.loads(line) for line in (tmp_path / "one" / "samples.jsonl").read_text().splitlines()]
    assert len(samples[-1]["text"]) == len(expected[-1]["text"]) > 0
    r = lamina("generate", str(tmp_path / "two"), "--max-new-tokens", "20", "--seed", "0")
    assert r.stdout.strip()


@pytest.mark.parametrize(("args", "message"), [
    (["train.ema=0.99"], "train.ema under fsdp is not supported"),
    (["--adversarial", "fgsm-rs", "eps=0.1"], "adversarial training under fsdp is not supported"),
    (["train.sync_batchnorm=true"], "train.sync_batchnorm is for ddp"),
])
def test_what_fsdp_refuses_is_a_one_line_error(table_npz: Path, tmp_path: Path, args: list[str],
                                               message: str) -> None:
    """Through ``--nproc``: the workers' one line, without torchrun's traceback."""
    cmd = [sys.executable, "-m", "lamina", "train", str(table_npz), "--out", str(tmp_path / "r"), *RUN_ARGS, FSDP,
           *args, "--nproc", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(message in e for e in errors), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr


def test_a_sharded_job_killed_once_restarts_and_ends_as_if_uninterrupted(runs: dict[str, Path], table_npz: Path,
                                                                         tmp_path: Path) -> None:
    """torchrun --max-restarts 1 under fsdp: rank 1 killed after the first sharded checkpoint; the
    restarted job reads its shards back and ends with the very weights of the uninterrupted run."""
    import os
    import signal

    from tests.distributed.test_torchrun import _start_and_freeze_rank_1

    out = tmp_path / "restarted"
    job, workers = _start_and_freeze_rank_1(table_npz, out, *EXTRA, FSDP, torchrun=("--max-restarts", "1"))
    os.kill(workers[1], signal.SIGKILL)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert "error: rank 0 of 2: the other processes of this job stopped answering" in err  # the first attempt
    steps = [r["step"] for r in records(out, "step")]
    assert steps == sorted(set(steps))
    a, b = weights(out), weights(runs["fsdp"])
    assert all(torch.equal(a[k], b[k]) for k in a), "the restarted run ended elsewhere"


def test_a_diffusion_model_sharded(table_npz: Path, tmp_path: Path) -> None:
    """The diffusion task's U-Net sharded: its sample grids and FD-lamina, taken by rank 0 alone with
    the model gathered; its saved model samples in one process. (Its noise is drawn per rank, so
    its weights are not those of one process.)"""
    cls = tmp_path / "cls"
    lamina("train", str(table_npz), "--out", str(cls), "--epochs", "1", "--quiet", "--model", "cnn", "model.width=4",
           "energy.meter=off", "train.precision=fp32")
    args = ["--task", "diffusion", "--epochs", "2", "--quiet", "--deterministic", "data.batch_size=16", "model.width=8",
            "generate.samples=4", "generate.fd_samples=20", "generate.timesteps=20", "generate.sample_steps=5",
            "train.gradient_flow_every=0", "energy.meter=off", "train.precision=fp32", "model.dropout=0",
            f"generate.fd_classifier={cls}", "train.ema=0"]  # its default EMA: not under fsdp
    lamina("train", str(table_npz), "--out", str(tmp_path / "two"), *args, FSDP, nproc=2)
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["strategy"] == "fsdp" and two["fd_lamina"] >= 0
    grids = [json.loads(line) for line in (tmp_path / "two" / "samples" / "samples.jsonl").read_text().splitlines()]
    assert [g["epoch"] for g in grids] == [1, 2]
    fid = [json.loads(line) for line in (tmp_path / "two" / "fidelity.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in fid] == [1, 2]
    lamina("generate", str(tmp_path / "two"), "--n", "4", "--out", str(tmp_path / "g"))
    assert len(list((tmp_path / "g").glob("0*.png"))) == 4


def test_a_regression_table_sharded_matches_ddp(tmp_path: Path) -> None:
    """The regress task (a table, lamina's tabmlp) under fsdp ends where the same 2-rank job under
    ddp ends: sharding changes where the weights live, not the steps taken."""
    from lamina.data.tabular import make_synthetic_table

    table = make_synthetic_table(tmp_path / "r.csv", 240, seed=3, task="regress")
    args = ["--epochs", "3", "--quiet", "--deterministic", "model.dropout=0", "model.norm=none", "energy.meter=off",
            "train.precision=fp32", "train.gradient_flow_every=0", "data.batch_size=16"]
    lamina("train", str(table), "--out", str(tmp_path / "ddp"), *args, "train.strategy=ddp", nproc=2)
    lamina("train", str(table), "--out", str(tmp_path / "fsdp"), *args, FSDP, nproc=2)
    a = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    b = json.loads((tmp_path / "fsdp" / "summary.json").read_text())
    assert (a["task"], b["strategy"]) == ("regress", "fsdp")
    assert b["test_rmse"] == pytest.approx(a["test_rmse"], rel=1e-4)
    _close(weights(tmp_path / "ddp"), weights(tmp_path / "fsdp"), tol=1e-4)


def test_a_full_disk_during_a_sharded_save_keeps_the_previous_checkpoint(table_npz: Path, tmp_path: Path) -> None:
    """The disk fills up after the first sharded checkpoint (a small tmpfs; root only): the job ends
    with one line naming the full disk, no traceback, no half-written folder, and the first
    checkpoint still verifies and resumes."""
    import os
    import signal

    from tests.distributed.conftest import popen, wait_for_checkpoint, worker_pids

    from lamina.training import checkpoint

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        out = disk / "run"
        job = popen([sys.executable, "-m", "lamina", "train", str(table_npz), "--out", str(out), *RUN_ARGS, *EXTRA,
                     FSDP, "--nproc", "2"])  # lamina's launcher: the workers' line without torchrun's traceback
        workers = worker_pids(job, 2)
        wait_for_checkpoint(out, job)
        for pid in workers.values():  # hold the job while the disk fills
            os.kill(pid, signal.SIGSTOP)
        first = checkpoints(out)[0]
        with open(disk / "filler", "wb") as f:
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        for pid in workers.values():
            os.kill(pid, signal.SIGCONT)
        _, err = job.communicate(timeout=240)
        assert job.returncode != 0
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left" in errors[0], err[-3000:]  # said once, for the job
        assert "Traceback" not in err, err[-3000:]
        assert checkpoints(out)[0] == first and checkpoint.load(first)["counters"]["step"] > 0
        assert not list((out / "checkpoints").glob(".tmp-*"))  # no half-written checkpoint left behind
        (disk / "filler").unlink()
        lamina("resume", str(out), nproc=2)
        assert json.loads((out / "summary.json").read_text())["strategy"] == "fsdp"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
