"""Atomic checkpoints: tensors in safetensors, everything else in JSON, never pickle.

A checkpoint is a folder ``<name>/`` holding ``tensors.safetensors`` (every tensor of the state
tree, keyed by its path), ``state.json`` (the tree with tensors replaced by references) and
``manifest.json`` (SHA-256 of both). It is written into a temporary folder, fsynced and renamed,
so a crash or a full disk leaves either the old checkpoints or the new one, never half of one.

A state holding sharded tensors (``DTensor`` s: ``train.strategy=fsdp``) is saved by every rank
together: each writes its own shards with ``torch.distributed.checkpoint`` into ``shards/`` (one
safetensors file per rank, through its Hugging Face storage writer, whose reader takes the layout
from the files' JSON headers: no pickle), rank 0 the rest, the manifest (which checksums the shards
too) and the rename. The tree holds a :class:`Sharded` reference per such tensor; :func:`read_shards`
reads them into the tensors a run asks for, laid out for *its* processes (DCP reshards), so a
checkpoint of 2 sharded ranks resumes on 1, 2 or 4.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lamina.errors import LaminaError
from lamina.utils import dist as dist_utils
from lamina.utils.io import fsync_path, sha256_file

FORMAT = "lamina-checkpoint/1"
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_SHARDED = "__sharded__"
FILES = ("tensors.safetensors", "state.json")  # the files the manifest checksums (and shards/*)
SHARDS = "shards"  # a sharded state's folder: one safetensors file per rank
_SHARD_FILE = re.compile(r"shards/(?!\.\.)[A-Za-z0-9._-]+")  # a plain file name: no "..", no folders


@dataclass(frozen=True)
class Sharded:
    """A tensor saved in shards (``shards/``), not yet read: see :func:`read_shards`."""

    folder: Path
    key: str
    shape: tuple[int, ...]
    dtype: str


def _is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(tree: Any) -> bool:
    """``tree`` holds a sharded tensor (then every rank must call :func:`save` together)."""
    if _is_dtensor(tree):
        return True
    if isinstance(tree, dict):
        return any(is_sharded(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return any(is_sharded(v) for v in tree)
    return False


def flatten(tree: Any, tensors: dict[str, torch.Tensor], path: str = "",
            sharded: dict[str, torch.Tensor] | None = None) -> Any:
    """Replace each tensor in a nested dict/list/tuple by a reference, collecting it in ``tensors``
    (a ``DTensor`` in ``sharded``, when given)."""
    if sharded is not None and _is_dtensor(tree):
        key = path or "root"
        sharded[key] = tree
        return {_SHARDED: key, "shape": list(tree.shape), "dtype": str(tree.dtype).removeprefix("torch.")}
    if isinstance(tree, torch.Tensor):
        key = path or "root"
        tensors[key] = tree.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if not isinstance(k, str | int):
                raise TypeError(f"checkpoint keys must be str or int, got {type(k).__name__} at {path}")
            # JSON keys are strings: remember int keys (optimizer state is keyed by param index)
            key = f"{_TUPLE}int:{k}" if isinstance(k, int) else k
            out[key] = flatten(v, tensors, f"{path}/{k}", sharded)
        return out
    if isinstance(tree, tuple):
        return {_TUPLE: [flatten(v, tensors, f"{path}/{i}", sharded) for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [flatten(v, tensors, f"{path}/{i}", sharded) for i, v in enumerate(tree)]
    if tree is None or isinstance(tree, bool | int | float | str):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} at '{path}' in a checkpoint")


def unflatten(tree: Any, tensors: dict[str, torch.Tensor], folder: Path | None = None) -> Any:
    """Inverse of :func:`flatten` (a sharded tensor comes back as a :class:`Sharded` reference)."""
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR}:
            return tensors[tree[_TENSOR]]
        if set(tree) == {_SHARDED, "shape", "dtype"} and folder is not None:
            return Sharded(folder, str(tree[_SHARDED]), tuple(int(n) for n in tree["shape"]), str(tree["dtype"]))
        if set(tree) == {_TUPLE}:
            return tuple(unflatten(v, tensors, folder) for v in tree[_TUPLE])
        out: dict[Any, Any] = {}
        for k, v in tree.items():
            key: Any = int(k[len(_TUPLE) + 4 :]) if k.startswith(f"{_TUPLE}int:") else k
            out[key] = unflatten(v, tensors, folder)
        return out
    if isinstance(tree, list):
        return [unflatten(v, tensors, folder) for v in tree]
    return tree


def save(state: dict[str, Any], folder: str | Path) -> Path:
    """Write ``state`` atomically to ``folder`` (replacing an older checkpoint of that name).

    A state with sharded tensors (:func:`is_sharded`) is written by every rank of the job together
    (a collective: each rank its shards); any other state by the one process that calls this."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    sharded: dict[str, torch.Tensor] = {}
    tree = flatten(state, tensors, sharded=sharded)
    if sharded:
        return _save_sharded(tree, tensors, sharded, folder)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _finish(tree, tensors, tmp, folder)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error type
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(folder, e) from None
    return folder


def _write_error(folder: Path, e: BaseException) -> LaminaError:
    failures = getattr(e, "failures", None)  # DCP's CheckpointException: {rank: (exception, stack)}
    if isinstance(failures, dict) and failures:
        e = failures[min(failures)][0]  # the lowest failing rank's own error (a full disk, say)
    reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [""])[0][:200]
    return LaminaError(f"could not write checkpoint {folder}: {reason}; earlier checkpoints are intact "
                       "(free disk space or choose another --out)")


def _finish(tree: Any, tensors: dict[str, torch.Tensor], tmp: Path, folder: Path) -> None:
    """Write the tensors, the tree and the manifest (checksumming ``tmp/shards/*`` too) into ``tmp``,
    fsync, and rename it to ``folder``."""
    save_file(tensors, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(tree))
    # every file DCP left in shards/ (today one .safetensors per rank), so verify can demand exactly them
    shards = sorted(f"{SHARDS}/{p.name}" for p in (tmp / SHARDS).iterdir() if p.is_file()) if (tmp / SHARDS).is_dir() else []
    files = {name: sha256_file(tmp / name) for name in (*FILES, *shards)}
    (tmp / "manifest.json").write_text(json.dumps({"format": FORMAT, "sha256": files}))
    for name in (*files, "manifest.json"):
        fsync_path(tmp / name)
    if shards:
        fsync_path(tmp / SHARDS)
    fsync_path(tmp)
    if folder.exists():
        old = folder.parent / f".old-{folder.name}-{os.getpid()}"
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(folder)
    fsync_path(folder.parent)


def _save_sharded(tree: Any, tensors: dict[str, torch.Tensor], sharded: dict[str, torch.Tensor], folder: Path) -> Path:
    """Every rank: its shards into ``.tmp-*/shards`` (torch.distributed.checkpoint, safetensors); then
    rank 0 the rest, the manifest and the rename; every rank returns once the checkpoint is in place
    (or raises the same one-line error)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.api import CheckpointException

    tmp = folder.parent / f".tmp-{folder.name}-{dist_utils.broadcast(os.getpid())}"  # rank 0's name, on every rank
    main = dist_utils.is_main()

    def step(fn: Callable[[], None]) -> None:  # fn on this rank, then the first error on any rank, everywhere
        err = ""
        try:
            fn()
        except (OSError, SafetensorError, CheckpointException) as e:
            err = str(_write_error(folder, e))
        errors = dist_utils.gather(err)
        if any(errors):
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            agreed = LaminaError(next(e for e in errors if e))
            agreed.echo = not main  # type: ignore[attr-defined]  # the same line on every rank: rank 0 says it
            raise agreed

    def prepare() -> None:
        if main:
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / SHARDS).mkdir(parents=True)

    step(prepare)
    step(lambda: dcp.save(sharded, storage_writer=HuggingFaceStorageWriter(str(tmp / SHARDS), save_distributed=True)))
    step(lambda: _finish(tree, tensors, tmp, folder) if main else None)
    return folder


def read_shards(tree: Any, like: Callable[[str], torch.Tensor | None] = lambda key: None) -> Any:
    """``tree`` with its :class:`Sharded` references read (every rank together, in a job).

    ``like(key)`` gives the tensor a reference is read *into* (for ``/model/<name>`` the run's own
    parameter, a ``DTensor`` under fsdp: each rank reads its shard); None, or one of another shape,
    reads the whole tensor into a new plain one. A tree without references comes back as it is."""
    refs: dict[str, Sharded] = {}
    _collect(tree, refs)
    if not refs:
        return tree
    folders = {r.folder for r in refs.values()}
    if len(folders) != 1:
        raise LaminaError("a checkpoint's state refers to the shards of several checkpoints: it is corrupt")
    targets: dict[str, torch.Tensor] = {}
    for key, ref in refs.items():
        dtype = getattr(torch, ref.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise LaminaError(f"checkpoint {ref.folder}: shard {key} has an unknown dtype {ref.dtype!r} (corrupt)")
        own = like(key)
        if own is not None and tuple(own.shape) == ref.shape:
            targets[key] = torch.empty_like(own, dtype=dtype)
        else:
            targets[key] = torch.empty(ref.shape, dtype=dtype)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.api import CheckpointException

    folder = folders.pop()
    try:
        import warnings

        import torch.distributed as dist

        alone = not (dist.is_available() and dist.is_initialized())  # one process: no collective to plan with
        with warnings.catch_warnings():  # DCP warns that it "assumes" one process: it is told so
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.load(targets, storage_reader=HuggingFaceStorageReader(str(folder / SHARDS)), no_dist=alone)
    except (CheckpointException, OSError, SafetensorError, RuntimeError, ValueError, KeyError) as e:
        why = " ".join(str(e).split())[:200]
        raise LaminaError(f"checkpoint {folder}: its shards could not be read ({why}): resume it only into the run "
                          "that wrote it") from None
    return _substitute(tree, targets)


def _collect(tree: Any, refs: dict[str, Sharded]) -> None:
    if isinstance(tree, Sharded):
        refs[tree.key] = tree
    elif isinstance(tree, Mapping):
        for v in tree.values():
            _collect(v, refs)
    elif isinstance(tree, list | tuple):
        for v in tree:
            _collect(v, refs)


def _substitute(tree: Any, targets: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, Sharded):
        return targets[tree.key]
    if isinstance(tree, dict):
        return {k: _substitute(v, targets) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_substitute(v, targets) for v in tree)
    return tree


def verify(folder: str | Path) -> None:
    """Raise :class:`LaminaError` unless every file of the checkpoint matches its manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise LaminaError(f"checkpoint {folder} has no readable manifest.json: it is incomplete or corrupt") from None
    if not isinstance(manifest, dict):
        raise LaminaError(f"checkpoint {folder}: manifest.json is not a JSON object (corrupt)")
    if manifest.get("format") != FORMAT:
        raise LaminaError(f"checkpoint {folder} has format {manifest.get('format')!r}, this lamina reads {FORMAT}")
    digests = manifest.get("sha256")
    # Only the checkpoint's own files are checked: a manifest naming others ("/dev/zero") is not followed,
    # and one that leaves a file out does not let that file pass unchecked.
    if not isinstance(digests, dict) or not all(isinstance(digests.get(name), str) for name in FILES):
        raise LaminaError(f"checkpoint {folder}: manifest.json lacks the checksums of {' and '.join(FILES)} (corrupt)")
    shards = {f"{SHARDS}/{p.name}" for p in (folder / SHARDS).iterdir()} if (folder / SHARDS).is_dir() else set()
    listed = {name for name in digests if name not in FILES}
    if not all(_SHARD_FILE.fullmatch(name) and isinstance(digests[name], str) for name in listed) or listed != shards:
        raise LaminaError(f"checkpoint {folder}: its shards/ files do not match manifest.json (corrupt or incomplete)")
    for name in (*FILES, *sorted(listed)):
        path = folder / name
        if not path.is_file() or sha256_file(path) != digests[name]:
            raise LaminaError(f"checkpoint {folder}: {name} is missing or does not match its checksum (corrupt)")


def load(folder: str | Path) -> dict[str, Any]:
    """Verify and read a checkpoint written by :func:`save` (no pickle involved); sharded tensors
    stay :class:`Sharded` references until :func:`read_shards`."""
    folder = Path(folder)
    verify(folder)
    try:
        tensors = load_file(str(folder / "tensors.safetensors"))
        return unflatten(json.loads((folder / "state.json").read_text()), tensors, folder)
    except (SafetensorError, OSError, ValueError, LookupError, TypeError, AttributeError, RecursionError) as e:
        # checksums match, yet a file does not parse (or refers to a tensor that is not there)
        why = (str(e).splitlines() or [""])[0][:200]
        raise LaminaError(f"checkpoint {folder} is corrupt: {type(e).__name__}: {why}") from None


def prune(parent: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (by name order) in ``parent``."""
    folders = sorted(p for p in Path(parent).iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def latest(parent: str | Path, on_skip: Callable[[Path, LaminaError], None] | None = None) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint in ``parent`` that verifies, with its folder; older ones are tried
    when a newer one is corrupt (``on_skip`` hears about each one passed over)."""
    parent = Path(parent)
    if not parent.is_dir():
        return None
    for folder in sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
        try:
            return load(folder), folder
        except LaminaError as e:
            if on_skip:
                on_skip(folder, e)
    return None
