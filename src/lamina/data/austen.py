"""Jane Austen's six novels: text for a character-level language model and a 6-class
"which novel is this paragraph from?" classifier.

Loading never downloads. The six texts are looked for, as ``<name>.txt`` (UTF-8, one per novel,
the names in :data:`NOVELS`), in ``$LAMINA_DATA/austen/`` and then in the cache
``~/.cache/lamina/austen/`` (``$XDG_CACHE_HOME`` honoured). ``lamina data fetch austen``
(:func:`fetch_austen`) fills the cache, by the first route that works:

1. Debian's ``r-cran-janeaustenr`` package (reachable where only package registries are):
   ``apt-get download`` + ``dpkg-deb -x``, then the R lazy-load database ``Rdata.rdx``/``Rdata.rdb``
   is read with the ``rdata`` package (``pip install rdata``, or ``lamina[text]``).
2. Project Gutenberg's plain-text files through :func:`lamina.data.download.download`, only once
   their SHA-256 digests are pinned in :data:`GUTENBERG` (see the note there).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lamina.data.builtin import cache_dir
from lamina.data.debian import run_quiet as _run
from lamina.data.download import DownloadError, download
from lamina.errors import LaminaError


@dataclass(frozen=True)
class Novel:
    name: str  # the janeaustenr object name, also the file stem: <name>.txt
    title: str
    gutenberg: int  # Project Gutenberg ebook number


# The class order of "austen-novels": publication order, but Northanger Abbey and Persuasion
# (both published posthumously, in December 1817) last, as janeaustenr's austen_books() has them.
NOVELS: tuple[Novel, ...] = (
    Novel("sensesensibility", "Sense and Sensibility", 161),
    Novel("prideprejudice", "Pride and Prejudice", 1342),
    Novel("mansfieldpark", "Mansfield Park", 141),
    Novel("emma", "Emma", 158),
    Novel("northangerabbey", "Northanger Abbey", 121),
    Novel("persuasion", "Persuasion", 105),
)
NAMES = tuple(n.name for n in NOVELS)

APT_PACKAGE = "r-cran-janeaustenr"
RDATA_DIR = "usr/lib/R/site-library/janeaustenr/data"  # inside the extracted .deb
GUTENBERG_URL = "https://www.gutenberg.org/cache/epub/{n}/pg{n}.txt"
# SHA-256 of each GUTENBERG_URL file, by novel name. NOT PINNED: this module was written on a
# machine without internet, so the true digests could not be computed, and a made-up digest would
# only fail later. Until someone with internet fills them in (sha256sum of each downloaded file),
# the Gutenberg route refuses to run rather than download unchecked files. Gutenberg also rebuilds
# these files now and then (header and licence text), so a pinned digest may need renewing.
GUTENBERG: dict[str, str | None] = {n.name: None for n in NOVELS}

HOW_TO_GET = (
    "install apt-get and dpkg-deb (Debian/Ubuntu) and run `lamina data fetch austen`, or set LAMINA_DATA"
    " to a folder holding austen/<name>.txt for the six novels (" + ", ".join(NAMES) + ")"
)


# --------------------------------------------------------------------------------------- finding
def austen_candidates() -> list[Path]:
    """Folders searched for the six ``.txt`` files, in order."""
    dirs = [Path(os.environ["LAMINA_DATA"]).expanduser() / "austen"] if os.environ.get("LAMINA_DATA") else []
    return [*dirs, cache_dir() / "austen"]


def austen_dir() -> Path | None:
    """The first candidate folder holding all six novels as ``<name>.txt``, or None."""
    for d in austen_candidates():
        if all((d / f"{name}.txt").is_file() for name in NAMES):
            return d
    return None


def austen_status() -> str:
    """Where the novels are, or how to get them (for ``lamina data list``)."""
    found = austen_dir()
    return str(found) if found else "not fetched (lamina data fetch austen)"


def read_austen(folder: Path | None = None) -> dict[str, str]:
    """The six novels' texts, ``{name: text}`` in :data:`NOVELS` order; never downloads.

    Lines are separated by ``"\\n"`` (a ``"\\r\\n"`` file is read the same) and blank lines
    separate paragraphs. Where the folder has the ``manifest.json`` that :func:`fetch_austen`
    writes, each file's SHA-256 is checked against it.

    Args:
        folder: a folder holding ``<name>.txt`` for each novel; None searches
            ``$LAMINA_DATA/austen`` and then ``~/.cache/lamina/austen``.
    """
    if folder is None:
        folder = austen_dir()
        if folder is None:
            tried = ", ".join(str(d) for d in austen_candidates())
            raise LaminaError(f"austen not found (looked in {tried}); to get it, run `lamina data fetch austen`,"
                              f" or set LAMINA_DATA to a folder holding austen/<name>.txt for {', '.join(NAMES)}")
    folder = Path(folder)
    missing = [f"{n}.txt" for n in NAMES if not (folder / f"{n}.txt").is_file()]
    if missing:
        raise LaminaError(f"{folder} lacks {', '.join(missing)}; run `lamina data fetch austen` or add the files")
    manifest = _read_manifest(folder)
    texts = {}
    for name in NAMES:
        path = folder / f"{name}.txt"
        data = path.read_bytes()
        want = manifest.get(name, {}).get("sha256")
        if want and hashlib.sha256(data).hexdigest() != want:
            raise LaminaError(f"{path} does not match the SHA-256 in {folder / 'manifest.json'}:"
                              " delete the folder and run `lamina data fetch austen` again")
        try:
            texts[name] = data.decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError as e:
            raise LaminaError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    return texts


def _read_manifest(folder: Path) -> dict[str, dict]:
    path = folder / "manifest.json"
    if not path.is_file():
        return {}  # a folder the user filled by hand
    try:
        novels = json.loads(path.read_text())["novels"]
        return {k: v for k, v in novels.items() if isinstance(v, dict)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise LaminaError(f"{path} is unreadable: delete it (or the folder) and run `lamina data fetch austen`") from None


# -------------------------------------------------------------------------------------- fetching
def fetch_austen() -> str:
    """Put the six novels into ``~/.cache/lamina/austen`` unless they are already somewhere.

    Tries Debian's r-cran-janeaustenr package, then Project Gutenberg (only with pinned digests);
    writes one UTF-8 ``<name>.txt`` per novel and a ``manifest.json`` (source, SHA-256 and character
    count of each file) into a temporary folder and renames it into place. Returns a one-line report.
    """
    found = austen_dir()
    if found is not None:
        return f"austen is already available in {found}"
    dest = cache_dir() / "austen"
    reasons = []
    for route in (_lines_from_apt, _lines_from_gutenberg):
        try:
            with tempfile.TemporaryDirectory(prefix="lamina-austen-") as tmp:
                lines, source = route(Path(tmp))
        except LaminaError as e:
            reasons.append(str(e))
            continue
        manifest = write_novels(lines, source, dest)
        return f"austen: six novels, {manifest['characters']:,} characters, written to {dest} from {source}"
    raise LaminaError(f"could not fetch austen: {'; '.join(reasons)}; instead, {HOW_TO_GET}")


def _lines_from_apt(tmp: Path) -> tuple[dict[str, list[str]], str]:
    """``apt-get download r-cran-janeaustenr`` into ``tmp``, extract it and read its R data."""
    tools = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    if tools:
        raise LaminaError(f"the Debian route needs {' and '.join(tools)}, not found on PATH")
    try:
        import rdata  # noqa: F401
    except ImportError:
        raise LaminaError("the Debian route needs the rdata package: pip install rdata (or pip install lamina[text])") from None
    err = _run(["apt-get", "download", APT_PACKAGE], tmp)
    if err is not None:  # the package lists may be missing or stale: refresh them once
        err_update = _run(["apt-get", "update"], tmp)
        err = _run(["apt-get", "download", APT_PACKAGE], tmp) if err_update is None else f"{err}; apt-get update: {err_update}"
    debs = sorted(tmp.glob(f"{APT_PACKAGE}_*.deb"))
    if err is not None or not debs:
        raise LaminaError(f"`apt-get download {APT_PACKAGE}` failed: {err or 'no .deb file appeared'}")
    deb = debs[-1]
    err = _run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], tmp)
    if err is not None:
        raise LaminaError(f"`dpkg-deb -x {deb.name}` failed: {err}")
    lines = read_rdata(tmp / "x" / RDATA_DIR)
    version = deb.stem.split("_")[1] if deb.stem.count("_") >= 2 else "?"
    return lines, f"Debian package {APT_PACKAGE} {version} (janeaustenr R data)"


def read_rdata(folder: Path) -> dict[str, list[str]]:
    """Each novel's lines from janeaustenr's R lazy-load database (``Rdata.rdx`` + ``Rdata.rdb``).

    The index ``Rdata.rdx`` is a compressed R serialization of ``list(variables=list(name=c(offset,
    length)), ...)``; each object is ``Rdata.rdb[offset:offset+length]``: a 4-byte big-endian
    uncompressed length, then zlib data holding the serialized character vector.
    """
    import rdata

    rdx, rdb = folder / "Rdata.rdx", folder / "Rdata.rdb"
    if not (rdx.is_file() and rdb.is_file()):
        raise LaminaError(f"{folder} has no Rdata.rdx/Rdata.rdb: the {APT_PACKAGE} package changed its layout")

    def parse(data: bytes) -> object:
        with warnings.catch_warnings():  # rdata warns "Unknown file type: assumed RDS" on bare serializations
            warnings.simplefilter("ignore", UserWarning)
            return rdata.conversion.convert(rdata.parser.parse_data(data))

    blob = rdb.read_bytes()
    try:
        index = {str(k): v for k, v in parse(rdx.read_bytes())["variables"].items()}
        lines = {}
        for name in NAMES:
            offset, length = (int(v) for v in index[name])
            record = blob[offset : offset + length]
            (size,) = struct.unpack(">I", record[:4])
            raw = zlib.decompress(record[4:])
            if len(raw) != size:
                raise ValueError(f"{name}: {len(raw)} bytes after zlib, the header says {size}")
            lines[name] = [str(x) for x in _strings(parse(raw), name)]
    except (KeyError, ValueError, TypeError, IndexError, struct.error, zlib.error) as e:
        raise LaminaError(f"could not read the novels from {folder}: {e}; the {APT_PACKAGE} package may have changed") from None
    return lines


def _strings(obj: object, name: str) -> list[str]:
    items = list(obj)  # a numpy array of str
    bad = [x for x in items if not isinstance(x, str)]
    if bad:
        raise ValueError(f"{name} holds {len(bad)} non-text lines (e.g. {bad[0]!r})")
    return items


def _lines_from_gutenberg(tmp: Path) -> tuple[dict[str, list[str]], str]:
    """Download the six Gutenberg plain-text files (SHA-256 checked) and cut off its header and licence."""
    unpinned = [f"#{n.gutenberg}" for n in NOVELS if not GUTENBERG.get(n.name)]
    if unpinned:
        raise LaminaError("the Project Gutenberg route refuses to download unchecked files: no SHA-256 is pinned"
                          f" for ebooks {', '.join(unpinned)} (fill in lamina.data.austen.GUTENBERG)")
    lines = {}
    for novel in NOVELS:
        url = GUTENBERG_URL.format(n=novel.gutenberg)
        try:
            path = download(url, tmp / f"pg{novel.gutenberg}.txt", str(GUTENBERG[novel.name]))
        except DownloadError as e:
            raise LaminaError(f"Project Gutenberg is unreachable ({e})") from None
        lines[novel.name] = gutenberg_body(path.read_bytes().decode("utf-8-sig"), url)
    return lines, "Project Gutenberg (" + GUTENBERG_URL.format(n="N") + ")"


_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.I)
_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.I)


def gutenberg_body(text: str, where: str = "the file") -> list[str]:
    """The lines between Gutenberg's ``*** START OF ...`` and ``*** END OF ...`` markers, blank edges trimmed."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, s in enumerate(lines) if _START.match(s.strip())), None)
    end = next((i for i, s in enumerate(lines) if _END.match(s.strip())), None)
    if start is None or end is None or end <= start:
        raise LaminaError(f"{where} lacks Project Gutenberg's START/END markers; it is not a Gutenberg text")
    body = lines[start + 1 : end]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return body


def write_novels(lines: dict[str, list[str]], source: str, dest: Path) -> dict:
    """Write ``<name>.txt`` per novel (lines joined by ``"\\n"``) and ``manifest.json`` into ``dest``
    atomically: everything goes to a temporary sibling folder that is then renamed. Returns the manifest."""
    texts = {name: "\n".join(lines[name]) for name in NAMES}
    manifest = {
        "source": source,
        "characters": sum(len(t) for t in texts.values()),
        "distinct_characters": len(set().union(*texts.values())),
        "novels": {},
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any other folder
        for novel in NOVELS:
            data = texts[novel.name].encode("utf-8")
            (tmp / f"{novel.name}.txt").write_bytes(data)
            manifest["novels"][novel.name] = {"title": novel.title, "file": f"{novel.name}.txt",
                                              "sha256": hashlib.sha256(data).hexdigest(),
                                              "characters": len(texts[novel.name]), "lines": len(lines[novel.name])}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(tmp, dest)
    except OSError as e:
        raise LaminaError(f"could not write {dest}: {e.strerror or e}; check the folder and free disk space") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest``; an existing (incomplete) ``dest`` is moved aside first."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(src, dest)
    except OSError:
        if not (dest / "manifest.json").is_file():  # not a concurrent fetch that finished first
            if old is not None and not dest.exists():
                os.replace(old, dest)
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------ paragraphs
HEADING = re.compile(r"(chapter|volume)\s+([ivxlcdm]+|\d+)\.?", re.I)
MIN_CHARS = 20


def paragraphs(texts: dict[str, str], *, min_chars: int = MIN_CHARS) -> list[tuple[int, str]]:
    """``(novel index, paragraph)`` for every paragraph, novel by novel in reading order.

    A paragraph is a run of non-blank lines, each stripped and joined with one space. Dropped:
    chapter and volume headings (``CHAPTER I``, ``Chapter 12``, ``VOLUME II``), paragraphs without
    a lower-case letter (titles, ``THE END``, ``FINIS``, signatures such as ``"WILLIAM COLLINS"``)
    and paragraphs shorter than ``min_chars`` characters (``By Jane Austen``, ``(1811)``, ``"Yes."``):
    too short to say which novel they are from. The index is the novel's place in :data:`NOVELS`.

    Args:
        texts: ``{name: text}`` as :func:`read_austen` returns; every name must be one of NOVELS.
        min_chars: the shortest paragraph kept.
    """
    unknown = [k for k in texts if k not in NAMES]
    if unknown:
        raise LaminaError(f"paragraphs: unknown novel {unknown[0]!r}; the names are {', '.join(NAMES)}")
    out = []
    for name, text in sorted(texts.items(), key=lambda kv: NAMES.index(kv[0])):
        label = NAMES.index(name)
        run: list[str] = []
        for line in [*text.split("\n"), ""]:
            if line.strip():
                run.append(line.strip())
                continue
            if run:
                para = " ".join(run)
                run = []
                if len(para) >= min_chars and not HEADING.fullmatch(para) and any(c.islower() for c in para):
                    out.append((label, para))
    return out


def block_split(
    counts: Sequence[int], *, test_fraction: float = 0.2, block: int = 50, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Split items laid out novel after novel into train and test by whole blocks of neighbours.

    Each novel's items (``counts[i]`` of them, in reading order, following the previous novel's)
    are cut into blocks of ``block`` consecutive items (the last one may be shorter), and
    ``round(test_fraction * blocks)`` of that novel's blocks, at least one and never all of them
    when it has two or more, go to test. So no block, and no run of neighbouring paragraphs
    inside one, is split between train and test; a novel with a single block stays in train.

    Args:
        counts: the number of items of each novel, e.g. ``torch.bincount(labels).tolist()``.
        test_fraction: the share of each novel's blocks that goes to test, in ``[0, 1)``.
        block: items per block.
        seed: the same seed gives the same split.

    Returns:
        ``(train, test)``: sorted int64 indices into the items.

    >>> train, test = block_split([100, 100], test_fraction=0.5, block=50, seed=0)
    >>> len(train), len(test)
    (100, 100)
    """
    if not 0.0 <= test_fraction < 1.0:
        raise LaminaError(f"block_split: test_fraction must lie in [0, 1), got {test_fraction}")
    if block < 1:
        raise LaminaError(f"block_split: block must be at least 1, got {block}")
    if any(c < 0 for c in counts):
        raise LaminaError(f"block_split: counts must not be negative, got {list(counts)}")
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    start = 0
    for n in counts:
        n_blocks = math.ceil(n / block)
        k = 0
        if n_blocks > 1 and test_fraction > 0:
            k = min(max(round(test_fraction * n_blocks), 1), n_blocks - 1)
        chosen = set(torch.randperm(n_blocks, generator=g)[:k].tolist())
        for b in range(n_blocks):
            idx = torch.arange(start + b * block, start + min((b + 1) * block, n))
            (test if b in chosen else train).append(idx)
        start += n
    empty = torch.zeros(0, dtype=torch.long)
    return (torch.cat(train) if train else empty), (torch.cat(test) if test else empty)
