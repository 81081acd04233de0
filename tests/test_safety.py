"""Nothing unsafe is loaded: no pickle, no eval, no shell, no archive extraction, anywhere in lamina.

``test_source_has_no_unsafe_calls`` parses every module of ``src/lamina`` with :mod:`ast` (not a
grep: ``model.eval()`` is fine, ``eval(s)`` is not; ``np.load(f, allow_pickle=False)`` is fine,
``np.load(f)`` is not) and lists each violation as ``file:line: what``. The scanner is itself
tested on a synthetic module holding every forbidden form, so it cannot silently pass.
The remaining tests feed pickle payloads to every loader of saved files and expect a refusal.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import lamina
from lamina.data.images import load_npz
from lamina.errors import LaminaError
from lamina.training import checkpoint

SRC = Path(__file__).resolve().parents[1] / "src" / "lamina"

# Forbidden wherever they are referenced (called, aliased or subclassed).
ALWAYS = {
    "pickle.load": "pickle.load unpickles arbitrary code",
    "pickle.loads": "pickle.loads unpickles arbitrary code",
    "pickle.Unpickler": "pickle.Unpickler unpickles arbitrary code",
    "marshal.load": "marshal.load reads code objects",
    "marshal.loads": "marshal.loads reads code objects",
    "shelve.open": "shelve.open unpickles its values",
    "yaml.unsafe_load": "yaml.unsafe_load builds arbitrary objects; use yaml.safe_load",
    "yaml.unsafe_load_all": "yaml.unsafe_load_all builds arbitrary objects; use yaml.safe_load_all",
    "yaml.full_load": "yaml.full_load is not the safe loader; use yaml.safe_load",
    "yaml.full_load_all": "yaml.full_load_all is not the safe loader; use yaml.safe_load_all",
    "eval": "eval runs arbitrary code",
    "exec": "exec runs arbitrary code",
    "builtins.eval": "eval runs arbitrary code",
    "builtins.exec": "exec runs arbitrary code",
    "os.system": "os.system runs a shell",
    "os.popen": "os.popen runs a shell",
    "subprocess.getoutput": "subprocess.getoutput runs a shell",
    "subprocess.getstatusoutput": "subprocess.getstatusoutput runs a shell",
    "asyncio.create_subprocess_shell": "create_subprocess_shell runs a shell",
    "shutil.unpack_archive": "shutil.unpack_archive extracts an archive without checking member paths",
}
# Whole modules that exist to unpickle.
FORBIDDEN_MODULES = {"cPickle", "_pickle", "dill", "cloudpickle", "joblib"}
# Allowed only when called directly with the given keyword set to the given literal.
GUARDED = {
    "torch.load": ("weights_only", True),
    "torch.serialization.load": ("weights_only", True),
    "numpy.load": ("allow_pickle", False),
}
YAML_LOADERS = {"yaml.load", "yaml.load_all"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
SUBPROCESS = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output", "subprocess.Popen"}


def _is_literal(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class _Scanner(ast.NodeVisitor):
    def __init__(self, tree: ast.Module) -> None:
        self.aliases: dict[str, str] = {}
        self.found: list[tuple[int, str]] = []
        self._checked_calls: set[int] = set()  # ids of func nodes whose call was already judged
        for node in ast.walk(tree):  # imports anywhere (lamina imports inside functions too)
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to (``np.load`` -> ``numpy.load``), else None."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def flag(self, node: ast.AST, why: str) -> None:
        self.found.append((getattr(node, "lineno", 0), why))

    def _forbidden_ref(self, name: str) -> str | None:
        if name in ALWAYS:
            return ALWAYS[name]
        if name.split(".")[0] in FORBIDDEN_MODULES:
            return f"{name}: {name.split('.')[0]} unpickles arbitrary code"
        return None

    # -- imports -------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.split(".")[0] in FORBIDDEN_MODULES:
                self.flag(node, f"import {a.name}: it unpickles arbitrary code")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                self.flag(node, f"from {node.module} import ...: it unpickles arbitrary code")
                return
            for a in node.names:
                why = self._forbidden_ref(f"{node.module}.{a.name}")
                if why:
                    self.flag(node, why)

    # -- calls ---------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        name = self.resolve(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if name in GUARDED:
            key, value = GUARDED[name]
            if not _is_literal(kw.get(key), value):
                self.flag(node, f"{name}(...) without {key}={value} passed literally")
            self._checked_calls.add(id(node.func))
        elif name in YAML_LOADERS:
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            if loader is None or self.resolve(loader) not in SAFE_YAML_LOADERS:
                self.flag(node, f"{name}(...) without Loader=yaml.SafeLoader; use yaml.safe_load")
            self._checked_calls.add(id(node.func))
        elif name in SUBPROCESS:
            if "shell" in kw and not _is_literal(kw["shell"], False):
                self.flag(node, f"{name}(..., shell=...) runs a shell; pass an argument list")
            self._checked_calls.add(id(node.func))
        if isinstance(node.func, ast.Attribute) and node.func.attr == "extractall":
            self.flag(node, "extractall(...): lamina extracts no archives (add a path-checking helper if needed)")
        self.generic_visit(node)

    # -- references (a call, an alias `f = pickle.loads`, a base class) -----------------
    def _visit_ref(self, node: ast.Name | ast.Attribute) -> None:
        name = self.resolve(node)
        if name and isinstance(node.ctx, ast.Load):
            why = self._forbidden_ref(name)
            if why:
                self.flag(node, why)
                return  # do not flag the inner parts of the same chain again
            if (name in GUARDED or name in YAML_LOADERS) and id(node) not in self._checked_calls:
                self.flag(node, f"{name} referenced without a direct call: its arguments cannot be checked")
                return
        self.generic_visit(node)

    visit_Name = _visit_ref
    visit_Attribute = _visit_ref


def scan_source(source: str) -> list[tuple[int, str]]:
    """``(line, why)`` for each forbidden construct in a module's source, sorted by line."""
    tree = ast.parse(source)
    scanner = _Scanner(tree)
    scanner.visit(tree)
    return sorted(set(scanner.found))


def test_source_has_no_unsafe_calls() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20, f"found only {len(files)} modules under {SRC}"
    violations = [
        f"{f.relative_to(SRC.parents[1])}:{line}: {why}"
        for f in files
        for line, why in scan_source(f.read_text(encoding="utf-8"))
    ]
    for v in violations:
        print(v)
    assert not violations, "unsafe calls in lamina:\n" + "\n".join(violations)


BAD_SOURCE = textwrap.dedent(
    """
    import pickle
    import pickle as pk
    from pickle import loads as unpickle
    import cPickle
    import dill
    import marshal, shelve, yaml, torch, os, subprocess, tarfile, zipfile
    import numpy as np
    import numpy
    from torch import load as tload

    pickle.load(f)                                     # 12
    pk.loads(b)                                        # 13
    unpickle(b)                                        # 14
    class U(pickle.Unpickler): ...                     # 15
    cPickle.loads(b)                                   # 16
    dill.loads(b)                                      # 17
    marshal.loads(b)                                   # 18
    shelve.open(p)                                     # 19
    yaml.load(s)                                       # 20
    yaml.load(s, Loader=yaml.Loader)                   # 21
    yaml.unsafe_load(s)                                # 22
    torch.load(p)                                      # 23
    torch.load(p, weights_only=False)                  # 24
    torch.load(p, weights_only=flag)                   # 25
    tload(p)                                           # 26
    np.load(p)                                         # 27
    numpy.load(p, allow_pickle=True)                   # 28
    eval("1 + 1")                                      # 29
    exec("x = 1")                                      # 30
    tarfile.open(p).extractall(d)                      # 31
    zipfile.ZipFile(p).extractall(d)                   # 32
    subprocess.run(cmd, shell=True)                    # 33
    subprocess.Popen(cmd, shell=True)                  # 34
    os.system("ls")                                    # 35
    loader = torch.load                                # 36
    """
)
BAD_LINES = {4, 5, 6, *range(12, 37)}  # imports of pickle.loads, cPickle and dill; then one violation a line

GOOD_SOURCE = textwrap.dedent(
    """
    import pickle
    import yaml, torch, subprocess
    import numpy as np
    from numpy import load as npload

    torch.load(p, weights_only=True)
    np.load(p, allow_pickle=False)
    npload(p, allow_pickle=False)
    yaml.safe_load(s)
    yaml.load(s, Loader=yaml.SafeLoader)
    pickle.dumps(obj)
    model.eval()
    subprocess.run(["ls", "-l"], check=True)
    subprocess.run(cmd, shell=False)
    """
)


def test_scanner_catches_every_forbidden_form() -> None:
    found = scan_source(BAD_SOURCE)
    lines = {line for line, _ in found}
    missed = sorted(BAD_LINES - lines)
    extra = sorted(lines - BAD_LINES)
    src_lines = BAD_SOURCE.splitlines()
    assert not missed, "scanner missed: " + "; ".join(src_lines[i - 1].split("#")[0].strip() for i in missed)
    assert not extra, f"scanner flagged unexpected lines {extra}: {found}"


def test_scanner_allows_safe_forms() -> None:
    assert scan_source(GOOD_SOURCE) == []


# ---------------------------------------------------------------------------------- payloads
class _Evil:
    """Unpickling this would run a shell command. Its bytes are made, never unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


PAYLOAD = pickle.dumps(_Evil())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_payload_is_a_real_pickle() -> None:
    # the payload must really be a pickle that calls os.system, or the tests below prove nothing
    assert PAYLOAD.startswith(b"\x80") and b"system" in PAYLOAD


def test_checkpoint_with_pickle_payload_is_refused(tmp_path: Path) -> None:
    folder = checkpoint.save({"w": torch.ones(3), "step": 1}, tmp_path / "ckpt")
    (folder / "tensors.safetensors").write_bytes(PAYLOAD)
    with pytest.raises(LaminaError, match="checksum"):
        checkpoint.load(folder)

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"]["tensors.safetensors"] = _sha256(folder / "tensors.safetensors")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    checkpoint.verify(folder)  # the checksums now match: only the format can refuse it
    with pytest.raises(LaminaError, match="corrupt") as e:
        checkpoint.load(folder)
    assert "\n" not in str(e.value)


def test_checkpoint_with_pickled_state_is_refused(tmp_path: Path) -> None:
    folder = checkpoint.save({"w": torch.ones(3)}, tmp_path / "ckpt")
    (folder / "state.json").write_bytes(PAYLOAD)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"]["state.json"] = _sha256(folder / "state.json")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LaminaError, match="corrupt"):
        checkpoint.load(folder)


def _tiny_run(folder: Path) -> Path:
    from lamina.artifacts import save_model
    from lamina.data.base import Dataset, Preprocess, Split
    from lamina.models import create_model
    from lamina.tasks.classify import Classify

    x, y = torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])
    ds = Dataset(name="t", classes=["a", "b"], train=Split(x, y), modality="vector",
                 preprocess=Preprocess(kind="array", scale=1.0))
    folder.mkdir()
    save_model(create_model("mlp", (3,), 2, width=4, depth=1), folder, ds, Classify(2, classes=ds.classes))
    return folder


def test_saved_model_with_pickle_payload_is_refused(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path / "run")
    assert lamina.load(run).predict(torch.zeros(2, 3))  # the untouched run loads
    (run / "model.safetensors").write_bytes(PAYLOAD)
    with pytest.raises(LaminaError, match="corrupt") as e:
        lamina.load(run)
    assert "\n" not in str(e.value)


def test_npz_with_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    x = np.empty(2, dtype=object)
    x[0], x[1] = _Evil(), _Evil()
    np.savez(path, x=x, y=np.array([0, 1]))  # numpy pickles the object array (saving is harmless)
    with zipfile.ZipFile(path) as z:
        assert b"system" in z.read("x.npy")
    with pytest.raises(LaminaError, match="objects"):
        load_npz(path)
