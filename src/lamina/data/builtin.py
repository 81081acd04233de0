"""The built-in datasets: Fashion-MNIST, MNIST (IDX files), digits (scikit-learn), MNIST-1D.

Loading never downloads. IDX sets are looked for, in order, in ``$LAMINA_DATA/<name>/``, the
cache ``~/.cache/lamina/<name>/`` (``$XDG_CACHE_HOME`` honoured) and Debian's
``/usr/share/datasets/<name>/``; ``lamina data fetch <name>`` downloads into the cache.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lamina.config import DataConfig
from lamina.data.base import Dataset, Preprocess, Split, register_dataset
from lamina.data.download import DownloadError, download
from lamina.data.idx import read_idx
from lamina.errors import LaminaError

DEBIAN_ROOT = Path("/usr/share/datasets")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def cache_dir() -> Path:
    """lamina's download cache: ``$XDG_CACHE_HOME/lamina`` or ``~/.cache/lamina``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lamina"


@dataclass(frozen=True)
class IdxSet:
    """A dataset shipped as the four (Fashion-)MNIST IDX files."""

    name: str
    base_url: str  # file names are appended
    sha256: dict[str, str]  # file name -> hex digest
    classes: list[str]
    flip: bool
    apt: str | None = None  # a Debian package that installs the files


IDX_SETS: dict[str, IdxSet] = {
    "fashion-mnist": IdxSet(
        name="fashion-mnist",
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        classes=FASHION_CLASSES,
        flip=True,  # clothes are left-right symmetric
        apt="dataset-fashion-mnist",
    ),
    "mnist": IdxSet(
        name="mnist",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaaa7f5a2d8b28a0b1",
        },
        classes=[str(i) for i in range(10)],
        flip=False,  # digits are not mirror-symmetric
    ),
}


def idx_candidates(name: str) -> list[Path]:
    """Folders searched for an IDX set, in order."""
    dirs = [Path(os.environ["LAMINA_DATA"]).expanduser() / name] if os.environ.get("LAMINA_DATA") else []
    return [*dirs, cache_dir() / name, DEBIAN_ROOT / name]


def _idx_file(folder: Path, fname: str) -> Path | None:
    """``fname`` (``.gz``) in ``folder``, or its uncompressed twin."""
    for f in (folder / fname, folder / fname.removesuffix(".gz")):
        if f.is_file():
            return f
    return None


def find_idx(name: str) -> Path | None:
    """The first candidate folder holding all four files of ``name``, or None."""
    for d in idx_candidates(name):
        if all(_idx_file(d, f) for f in IDX_FILES):
            return d
    return None


def _how_to_get(spec: IdxSet) -> str:
    ways = [f"run `lamina data fetch {spec.name}`"]
    if spec.apt:
        ways.append(f"`apt-get install {spec.apt}`")
    ways.append(f"set LAMINA_DATA to a folder holding {spec.name}/{IDX_FILES[0]} and the other three IDX files")
    return ", or ".join(ways)


def load_idx_set(name: str, cfg: DataConfig | None = None) -> Dataset:
    """Load an IDX dataset from the first folder that has it; never downloads."""
    spec = IDX_SETS[name]
    folder = find_idx(name)
    if folder is None:
        tried = ", ".join(str(d) for d in idx_candidates(name))
        raise LaminaError(f"{name} not found (looked in {tried}); to get it, {_how_to_get(spec)}")
    files = [_idx_file(folder, f) for f in IDX_FILES]
    xtr, ytr, xte, yte = (read_idx(f) for f in files if f is not None)
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if x.dim() != 3 or x.dtype != torch.uint8 or y.dim() != 1 or len(x) != len(y):
            raise LaminaError(
                f"{folder}: {split} files hold images {tuple(x.shape)} {x.dtype} and labels {tuple(y.shape)};"
                " expected (N, H, W) uint8 and (N,): delete them and fetch them again"
            )
        if len(y) and int(y.max()) >= len(spec.classes):
            raise LaminaError(f"{folder}: {split} labels go up to {int(y.max())}; delete the files and fetch them again")
    h, w = xtr.shape[1:]
    return Dataset(
        name=name,
        classes=list(spec.classes),
        train=Split(xtr[:, None].contiguous(), ytr.long()),
        test=Split(xte[:, None].contiguous(), yte.long()),
        modality="image",
        preprocess=Preprocess(kind="image", scale=255.0, channels=1, size=(int(h), int(w))),
        flip=spec.flip,
        source=str(folder),
    )


def fetch_idx(name: str) -> str:
    """Download an IDX set into the cache (SHA-256 checked), unless it is already somewhere."""
    spec = IDX_SETS[name]
    found = find_idx(name)
    if found is not None:
        return f"{name} is already available in {found}"
    dest = cache_dir() / name
    for fname, digest in spec.sha256.items():
        try:
            download(spec.base_url + fname, dest / fname, digest)
        except DownloadError as e:
            alt = [f"`apt-get install {spec.apt}`"] if spec.apt else []
            alt.append(f"copy the four IDX files into {dest} or $LAMINA_DATA/{name}/")
            raise LaminaError(f"fetching {name} failed, no internet? ({e}); instead, {' or '.join(alt)}") from None
    return f"{name} downloaded to {dest}"


def idx_status(name: str) -> str:
    found = find_idx(name)
    return str(found) if found else f"not downloaded (lamina data fetch {name})"


for _name, _spec in IDX_SETS.items():
    register_dataset(
        _name,
        f"{'Fashion-MNIST' if _name == 'fashion-mnist' else 'MNIST'}: 60,000 + 10,000 grey 28x28 images, 10 classes",
        fetch=functools.partial(fetch_idx, _name),
    )(functools.partial(load_idx_set, _name))


# ------------------------------------------------------------------------------------------- digits
@register_dataset("digits", "scikit-learn's 1,797 grey 8x8 handwritten digits, 10 classes (no download)")
def load_digits(cfg: DataConfig | None = None) -> Dataset:
    """scikit-learn's digits: uint8 (1797, 1, 8, 8) with values 0..16; no test split of its own."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise LaminaError("the digits dataset needs scikit-learn: pip install scikit-learn (or pip install lamina[datasets])") from None
    d = sk_load_digits()
    x = torch.from_numpy(np.asarray(d.images, dtype=np.uint8)[:, None].copy())
    return Dataset(
        name="digits",
        classes=[str(int(c)) for c in d.target_names],
        train=Split(x, torch.from_numpy(np.asarray(d.target, dtype=np.int64))),
        modality="image",
        preprocess=Preprocess(kind="image", scale=16.0, channels=1, size=(8, 8)),
        flip=False,
        source="scikit-learn (sklearn.datasets.load_digits)",
    )


def digits_status() -> str:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return "needs scikit-learn (pip install scikit-learn)"
    return "bundled with scikit-learn"


# ------------------------------------------------------------------------------------------ mnist1d
MNIST1D_CACHE = "mnist1d/mnist1d-default.npz"


def _mnist1d_arrays() -> dict[str, np.ndarray]:
    """Generate MNIST-1D locally (its default arguments) or read the cached arrays."""
    path = cache_dir() / MNIST1D_CACHE
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
            return arrays
        except (OSError, ValueError, KeyError, EOFError):
            pass  # corrupt cache: generate again
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise LaminaError("the mnist1d dataset needs the mnist1d package: pip install mnist1d (or pip install lamina[datasets])") from None
    d = make_dataset(get_dataset_args())
    arrays = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # ranks may race
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a regeneration next time
    return arrays


@register_dataset("mnist1d", "MNIST-1D: 4,000 + 1,000 signals of length 40, 10 classes (generated locally)")
def load_mnist1d(cfg: DataConfig | None = None) -> Dataset:
    """MNIST-1D as float32 signals (N, 1, 40) with its own train/test split."""
    a = _mnist1d_arrays()

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(x.astype(np.float32)[:, None].copy()), torch.from_numpy(y.astype(np.int64)))

    return Dataset(
        name="mnist1d",
        classes=[str(i) for i in range(10)],
        train=split(a["x"], a["y"]),
        test=split(a["x_test"], a["y_test"]),
        modality="signal",
        preprocess=Preprocess(kind="array", scale=1.0),
        flip=False,
        source=str(cache_dir() / MNIST1D_CACHE) if (cache_dir() / MNIST1D_CACHE).is_file() else "mnist1d (generated)",
    )


def mnist1d_status() -> str:
    path = cache_dir() / MNIST1D_CACHE
    return str(path) if path.is_file() else "generated locally on first use (pip install mnist1d)"


@register_dataset("austen", "Jane Austen's six novels, 4.0 M characters: a character-level language model",
                  fetch=lambda: _austen().fetch_austen(), task="language-model")
def load_austen(cfg: DataConfig) -> Dataset:
    from lamina.data.text import language_model_dataset

    austen = _austen()
    texts = austen.read_austen()
    # the six novels in a fixed order, a blank line between them; the tail (validation) is the end of Persuasion
    return language_model_dataset("austen", "\n\n".join(texts.values()), cfg, source=str(austen.austen_dir()))


@register_dataset("austen-novels", "which of Jane Austen's six novels a paragraph comes from: 9,840 paragraphs, "
                  "6 classes", fetch=lambda: _austen().fetch_austen())
def load_austen_novels(cfg: DataConfig) -> Dataset:
    from lamina.data.text import classification_dataset

    austen = _austen()
    texts = austen.read_austen()
    items = austen.paragraphs(texts)
    labels = torch.tensor([novel for novel, _ in items])
    # whole blocks of 50 neighbouring paragraphs go to test, so that no scene straddles train and test
    train, test = austen.block_split(torch.bincount(labels, minlength=len(texts)).tolist(), test_fraction=0.2,
                                     block=50, seed=0)
    titles = [n.title for n in austen.NOVELS]

    def pick(idx: torch.Tensor) -> tuple[list[str], list[str]]:
        return [items[i][1] for i in idx.tolist()], [titles[items[i][0]] for i in idx.tolist()]

    return classification_dataset("austen-novels", *pick(train), cfg, test=pick(test), source=str(austen.austen_dir()))


@register_dataset("rrna16s", "16S rRNA gold set: 5,181 bacterial and archaeal 16S genes (FASTA), their phylum (data.rank) as "
                  "the label", fetch=lambda: _fasta().fetch_rrna16s(), modality="sequence")
def load_rrna16s(cfg: DataConfig) -> Dataset:
    return _fasta().load_rrna16s(cfg)  # type: ignore[no-any-return]


def _sklearn_table(name: str, cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled table ``name`` written once as a CSV in the cache, then read as any table."""
    from lamina.data import tabular

    path = cache_dir() / "tables" / f"{name}.csv"
    if not path.is_file():  # written beside, then renamed: a concurrent run never reads half a file
        part = tabular.write_sklearn_table(name, path.with_name(f".{name}.{os.getpid()}.csv"))
        os.replace(part, path)
    ds = tabular.load_table(path, cfg)
    ds.name = name
    return ds


register_dataset("wine", "scikit-learn's wine table: 178 wines, 13 chemical measurements, 3 cultivars (no download)",
                 modality="table")(
    functools.partial(_sklearn_table, "wine"))
register_dataset("diabetes", "scikit-learn's diabetes table: 442 patients, 10 measurements, disease progression "
                 "(regression, no download)", task="regress", modality="table")(functools.partial(_sklearn_table, "diabetes"))


def _fasta() -> Any:
    """lamina.data.fasta, imported on use (it imports this module's cache_dir)."""
    from lamina.data import fasta

    return fasta


def _austen() -> Any:
    """lamina.data.austen, imported on use (it imports this module's cache_dir)."""
    from lamina.data import austen

    return austen


STATUS: dict[str, Callable[[], str]] = {
    **{name: functools.partial(idx_status, name) for name in IDX_SETS},
    "digits": digits_status,
    "mnist1d": mnist1d_status,
    "austen": lambda: _austen().austen_status(),
    "austen-novels": lambda: _austen().austen_status(),
    "rrna16s": lambda: _fasta().rrna16s_status(),
    "wine": lambda: "written from scikit-learn on first use (pip install scikit-learn)",
    "diabetes": lambda: "written from scikit-learn on first use (pip install scikit-learn)",
}
