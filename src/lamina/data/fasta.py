"""Biological sequences from FASTA files (DNA, RNA, protein): records, labels and encodings.

``load_fasta(path, cfg)`` reads a FASTA file (plain or ``.gz``), picks the alphabet, labels each
record (from its lineage, a regex on its header, or a CSV of ids) and encodes the sequences as

- residue ids (``data.kmer=0``): int64 (N, L), 0 is padding; the ids are those of
  :data:`lamina.utils.alphabets.ALPHABETS`, which the models one-hot (ambiguity letters softly);
- k-mer frequencies (``data.kmer=k``): float32 (N, 4**k) (20**k for proteins), an MLP's input.

Training batches of DNA/RNA are reverse-complemented at random (:class:`ReverseComplement`).
Records without a label (no lineage field at ``data.rank``, no regex match) are **dropped**, with
a note naming a few; every other bad input is a one-line :class:`LaminaError`.

The 16S rRNA gold set (``rrna16s``: 5,181 bacterial and archaeal 16S genes with their lineage)
comes from Debian's ``microbiomeutil-data`` package (:func:`fetch_rrna16s`).
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shutil
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lamina.config import DataConfig
from lamina.data.base import Dataset, Preprocess, Split
from lamina.data.debian import run_quiet as _run
from lamina.errors import LaminaError
from lamina.utils.alphabets import ALPHABETS, Alphabet, get_alphabet

MAX_LENGTH = 4096  # residues kept per record when data.max_length is 0
MAX_KMER_COLUMNS = 4**7  # k-mer vectors wider than this are refused (k <= 7 for DNA, 3 for protein)
RANKS = ("domain", "phylum", "class", "order", "family", "genus")
OTHER = "other"
_DROP = str.maketrans("", "", " \t\r\n\v\f0123456789-.")  # whitespace, digits (GenBank style), gaps


@dataclass(frozen=True)
class Record:
    """One FASTA record: ``id`` (the header's first word), the whole ``header`` (without ``>``),
    and the ``sequence`` upper-cased, without whitespace, digits or gaps."""

    id: str
    header: str
    sequence: str


# ------------------------------------------------------------------------------------- reading
def _lines(path: Path) -> list[str]:
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read().splitlines()
        return path.read_text(encoding="utf-8").splitlines()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise LaminaError(f"{path} is not a readable gzip file ({e}); decompress it or fetch it again") from None
    except UnicodeDecodeError as e:
        raise LaminaError(f"{path} is not a text FASTA file (byte {e.start} is not UTF-8); give a .fasta file") from None
    except OSError as e:
        raise LaminaError(f"cannot read {path}: {e.strerror or e}") from None


def read_fasta(path: str | Path) -> list[Record]:
    """The records of a FASTA file, plain or gzipped (``.gz``), in file order.

    Sequence lines may span many lines and be lower case (they are upper-cased); whitespace and
    digits inside them are ignored and gaps (``-``, ``.``) of aligned FASTA dropped. A trailing
    ``*`` (a protein's stop) is dropped too. Letters are checked against an alphabet later
    (:func:`check_letters`); anything else that is not a letter is an error here.

    Raises:
        LaminaError: no ``>`` header (not FASTA), no records, an empty record, a duplicate id,
            a character that is not a letter, unreadable gzip.
    """
    path = Path(path)
    records: list[Record] = []
    seen: dict[str, int] = {}
    header, chunks, line_no = None, [], 0

    def close() -> None:
        if header is None:
            return
        seq = "".join(chunks).upper().rstrip("*")
        rid = header.split()[0] if header.split() else ""
        if not rid:
            raise LaminaError(f"{path}, line {line_no}: a record has an empty header; give every record an id after '>'")
        if not seq:
            raise LaminaError(f"{path}: record '{rid}' has no sequence; remove it or add its residues")
        if rid in seen:
            raise LaminaError(f"{path}: record id '{rid}' appears twice (records {seen[rid] + 1} and "
                              f"{len(records) + 1}); make the ids unique")  # fmt: skip
        bad = re.search(r"[^A-Z]", seq)
        if bad:
            raise LaminaError(f"{path}: record '{rid}' holds {bad.group()!r} at residue {bad.start() + 1}, which is "
                              "not a residue letter; remove it")  # fmt: skip
        seen[rid] = len(records)
        records.append(Record(rid, header, seq))

    for i, line in enumerate(_lines(path), start=1):
        if line.startswith(">"):
            close()
            header, chunks, line_no = line[1:].strip(), [], i
        elif header is None:
            if line.strip() and not line.lstrip().startswith(";"):  # ";" comments of old FASTA
                raise LaminaError(f"{path} is not FASTA: line {i} comes before any '>' header; a FASTA file "
                                  "starts with a '>id description' line")  # fmt: skip
        else:
            chunks.append(line.translate(_DROP))
    close()
    if not records:
        raise LaminaError(f"{path} holds no FASTA records; a record is a '>id' line followed by its sequence")
    return records


# ------------------------------------------------------------------------------------ alphabet
def detect_alphabet(records: list[Record]) -> tuple[Alphabet, str]:
    """DNA if at least 90 % of the letters are A, C, G, T or N; RNA if U stands in for T; else protein."""
    counts: Counter[str] = Counter()
    for r in records:
        counts.update(r.sequence)
    total = max(sum(counts.values()), 1)
    nuc = sum(counts[c] for c in "ACGN")
    t, u = counts["T"], counts["U"]
    if (nuc + t + u) / total >= 0.9:
        alpha = ALPHABETS["rna" if u > t else "dna"]
        share = (nuc + max(t, u)) / total
        return alpha, f"alphabet {alpha.name}: {share:.1%} of the letters are {alpha.bases} or N (set data.alphabet)"
    share = (nuc + t + u) / total
    return ALPHABETS["protein"], f"alphabet protein: only {share:.1%} of the letters are nucleotides (set data.alphabet)"


def resolve_alphabet(records: list[Record], name: str) -> tuple[Alphabet, str]:
    """``data.alphabet``: auto (:func:`detect_alphabet`) or dna | rna | protein."""
    if str(name).strip().lower() == "auto":
        return detect_alphabet(records)
    alpha = get_alphabet(name)
    return alpha, f"alphabet {alpha.name} (data.alphabet)"


def check_letters(records: list[Record], alphabet: Alphabet, where: str = "") -> Counter[str]:
    """Every letter must be in ``alphabet``; returns how often each ambiguity letter occurs."""
    allowed = set(alphabet.letters)
    amb: Counter[str] = Counter()
    for r in records:
        letters = set(r.sequence)
        odd = letters - allowed
        if odd:
            pos = min(r.sequence.index(c) for c in odd)
            letter = r.sequence[pos]
            hint = {"dna": "set data.alphabet=rna or protein", "rna": "set data.alphabet=dna or protein"}.get(
                alphabet.name, "fix or remove the record")
            raise LaminaError(f"{where or 'sequence'}: record '{r.id}' has '{letter}' at residue {pos + 1}, which is not "
                              f"a {alphabet.name} letter ({alphabet.letters}); {hint}")  # fmt: skip
        for c in letters - set(alphabet.bases):
            amb[c] += r.sequence.count(c)
    return amb


# -------------------------------------------------------------------------------------- labels
def lineage(header: str) -> list[str]:
    """The ``;``-separated lineage: the header's last TAB field (or, without a TAB, its description)."""
    if "\t" in header:
        field = header.rsplit("\t", 1)[1]
    else:
        parts = header.split(None, 1)
        field = parts[1] if len(parts) > 1 and ";" in parts[1] else ""
    return [p.strip() for p in field.split(";")] if field.strip() else []


def _rank_index(rank: str) -> int:
    key = str(rank).strip().lower()
    if key in RANKS:
        return RANKS.index(key)
    try:
        return int(key)
    except ValueError:
        raise LaminaError(f"unknown data.rank '{rank}': give one of {', '.join(RANKS)} or an index into the "
                          "lineage (0 = the first field)") from None


def record_labels(records: list[Record], label_from: str, rank: str) -> tuple[list[str | None], str]:
    """Each record's label (None: it has none) and a note of where the labels came from.

    ``label_from``: "" the lineage at ``rank``; ``header:REGEX`` group 1 (or the whole match) of a
    search on the header; a ``.csv`` path of ``id,label`` rows (every record must be there).
    """
    if not label_from:
        i = _rank_index(rank)
        out: list[str | None] = []
        for r in records:
            lin = lineage(r.header)
            value = lin[i] if -len(lin) <= i < len(lin) else ""
            out.append(value or None)
        return out, f"labels: the lineage's {rank} (last TAB field of the header; data.rank, data.label_from)"
    if label_from.startswith("header:"):
        pattern = label_from[len("header:"):]
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise LaminaError(f"data.label_from: {pattern!r} is not a regular expression ({e})") from None
        out = []
        for r in records:
            m = rx.search(r.header)
            value = (m.group(1) if rx.groups else m.group(0)) if m else None
            out.append(value.strip() if value and value.strip() else None)
        return out, f"labels: {'group 1' if rx.groups else 'the match'} of /{pattern}/ on each header"
    return _csv_labels(records, Path(label_from).expanduser())


def _csv_labels(records: list[Record], path: Path) -> tuple[list[str | None], str]:
    if not path.is_file():
        raise LaminaError(f"data.label_from: {path} is not a file; give a .csv of id,label rows, "
                          "or header:REGEX, or leave it empty for the lineage")  # fmt: skip
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LaminaError(f"data.label_from: cannot read {path} as CSV ({e})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["id", "label"]:
        rows = rows[1:]
    table: dict[str, str] = {}
    for n, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise LaminaError(f"{path}, row {n}: expected id,label, got {','.join(row)!r}")
        rid, label = row[0].strip(), row[1].strip()
        if rid in table and table[rid] != label:
            raise LaminaError(f"{path}: id '{rid}' has two labels ({table[rid]!r} and {label!r}); keep one")
        table[rid] = label
    missing = [r.id for r in records if r.id not in table]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LaminaError(f"{path} has no label for {len(missing)} of the {len(records)} records ({shown}); "
                          "add id,label rows for them")  # fmt: skip
    return [table[r.id] or None for r in records], f"labels: {path} (id,label)"


def merge_rare(labels: list[str], min_count: int) -> tuple[list[str], list[str]]:
    """Classes with fewer than ``min_count`` examples become ``other``; the notes say which."""
    counts = Counter(labels)
    rare = {c: n for c, n in counts.items() if n < min_count and c != OTHER}
    if min_count <= 0 or not rare:
        return labels, []
    merged = [OTHER if c in rare else c for c in labels]
    listed = ", ".join(f"{c} ({n})" for c, n in sorted(rare.items(), key=lambda kv: (-kv[1], kv[0])))
    return merged, [f"{len(rare)} classes with fewer than {min_count} records (data.min_class_examples) merged into "
                    f"'{OTHER}' ({sum(rare.values())} records): {listed}"]


# ----------------------------------------------------------------------------------- encodings
def _id_table(alphabet: Alphabet) -> np.ndarray:
    table = np.zeros(256, dtype=np.int64)
    for i, c in enumerate(alphabet.letters, start=1):
        table[ord(c)] = i
    return table


def encode_ids(seqs: list[str], alphabet: Alphabet, length: int) -> tuple[Tensor, int]:
    """Residue ids (N, length) int64, padded with 0 at the end; returns them and how many were cut."""
    table, out, cut = _id_table(alphabet), np.zeros((len(seqs), length), dtype=np.int64), 0
    for i, s in enumerate(seqs):
        cut += len(s) > length
        raw = np.frombuffer(s[:length].encode("ascii"), dtype=np.uint8)
        out[i, : len(raw)] = table[raw]
    return torch.from_numpy(out), cut


def kmer_columns(alphabet: Alphabet, k: int) -> int:
    """Columns of a k-mer vector; too many is a LaminaError."""
    if k < 1:
        raise LaminaError(f"data.kmer must be 0 (residues) or a k-mer size >= 1, got {k}")
    n = len(alphabet.bases) ** k
    if n > MAX_KMER_COLUMNS:
        most = max(j for j in range(1, 16) if len(alphabet.bases) ** j <= MAX_KMER_COLUMNS)
        raise LaminaError(f"data.kmer={k} gives {n:,} columns for {alphabet.name}, more than {MAX_KMER_COLUMNS:,}; "
                          f"use data.kmer <= {most}")  # fmt: skip
    return n


def kmer_index(seq: str, alphabet: Alphabet, k: int) -> np.ndarray:
    """The index of every k-mer of ``seq`` made of standard residues only (base-S digits, first
    residue most significant); k-mers with an ambiguity letter are skipped."""
    S = len(alphabet.bases)
    code = np.full(256, -1, dtype=np.int64)
    for i, c in enumerate(alphabet.bases):
        code[ord(c)] = i
    c = code[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
    if len(c) < k:
        return np.zeros(0, dtype=np.int64)
    win = np.lib.stride_tricks.sliding_window_view(c, k)  # (n - k + 1, k)
    ok = (win >= 0).all(axis=1)
    return (win[ok] * (S ** np.arange(k - 1, -1, -1))).sum(axis=1)


def kmer_counts(seqs: list[str], alphabet: Alphabet, k: int) -> Tensor:
    """k-mer frequencies (N, S**k) float32: each row's counts divided by its number of k-mers."""
    n = kmer_columns(alphabet, k)
    out = np.zeros((len(seqs), n), dtype=np.float32)
    for i, s in enumerate(seqs):
        idx = kmer_index(s, alphabet, k)
        if len(idx):
            out[i] = np.bincount(idx, minlength=n) / len(idx)
    return torch.from_numpy(out)


def kmer_rc_permutation(alphabet: Alphabet, k: int) -> Tensor:
    """``perm`` with ``counts[:, perm]`` the k-mer counts of the reverse complements (an involution)."""
    S = len(alphabet.bases)
    comp = torch.tensor([alphabet.bases.index(alphabet.complement[b]) for b in alphabet.bases])
    idx = torch.arange(S**k)
    digits = torch.stack([(idx // S**j) % S for j in range(k)], dim=1)  # least significant first
    # reversing the k-mer turns the least significant digit into the most significant one
    return (comp[digits] * (S ** torch.arange(k - 1, -1, -1))).sum(dim=1)


def reverse_complement(x: Tensor, comp: Tensor) -> Tensor:
    """Reverse-complement id sequences (B, L), each within its own length (padding stays at the end)."""
    L = x.shape[1]
    lengths = (x != 0).sum(dim=1, keepdim=True)  # (B, 1)
    pos = torch.arange(L, device=x.device)[None, :]
    src = (lengths - 1 - pos).clamp(min=0)  # (B, L)
    out = comp.to(x.device)[x.gather(1, src)]
    return out.masked_fill(pos >= lengths, 0)


@dataclass
class ReverseComplement:
    """Training augmentation: each sequence of a batch is reverse-complemented with probability ½.

    For residue ids (B, L) that is :func:`reverse_complement`; for k-mer frequencies (B, S**k)
    the column permutation of :func:`kmer_rc_permutation`.
    """

    alphabet: str
    kmer: int = 0
    active: bool = True

    def __post_init__(self) -> None:
        alpha = get_alphabet(self.alphabet)
        self._comp = alpha.complement_ids()
        self._perm = kmer_rc_permutation(alpha, self.kmer) if self.kmer else None

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5  # (B,)
        if self._perm is not None:
            rc = x[:, self._perm.to(x.device)]
        else:
            rc = reverse_complement(x, self._comp)
        return torch.where(flip[:, None], rc, x)


# ------------------------------------------------------------------------------------------- codec
@dataclass
class SequenceCodec:
    """Reads FASTA files or raw sequences into the model's input, exactly as training encoded them.

    Args:
        alphabet: dna | rna | protein.
        length: residues per example (``kmer == 0``).
        kmer: 0 for residue ids, else the k of the k-mer frequencies.
    """

    alphabet: str
    length: int
    kmer: int = 0
    kind: str = "sequence"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "alphabet": self.alphabet, "length": self.length, "kmer": self.kmer}

    def encode(self, seqs: list[str]) -> Tensor:
        alpha = get_alphabet(self.alphabet)
        if self.kmer:
            return kmer_counts(seqs, alpha, self.kmer)
        return encode_ids(seqs, alpha, self.length)[0]

    def read(self, inputs: Any) -> tuple[Tensor, list[str]]:
        """A FASTA path (names: record ids), a list of paths, or raw sequence strings (names ``[i]``)."""
        items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
        if not items:
            raise LaminaError("no sequences given: pass a FASTA file, a list of them, or sequence strings")
        records: list[Record] = []
        for n, item in enumerate(items):
            if isinstance(item, Path) or (isinstance(item, str) and _looks_like_path(item)):
                records += read_fasta(Path(item))
            elif isinstance(item, str):
                seq = item.translate(_DROP).upper()
                if not seq:
                    raise LaminaError(f"input [{n}] is an empty sequence")
                records.append(Record(f"[{n}]", f"[{n}]", seq))
            else:
                raise LaminaError(f"input [{n}] is a {type(item).__name__}; give FASTA paths or sequence strings")
        check_letters(records, get_alphabet(self.alphabet), "input")
        return self.encode([r.sequence for r in records]), [r.id for r in records]


def _looks_like_path(s: str) -> bool:
    return "/" in s or os.sep in s or Path(s).is_file() or bool(re.search(r"\.(fasta|fa|fna|faa|fas|gz)$", s, re.I))


def codec_from_dict(d: dict[str, Any]) -> SequenceCodec:
    """The :class:`SequenceCodec` that ``SequenceCodec.to_dict()`` wrote."""
    return SequenceCodec(alphabet=str(d["alphabet"]), length=int(d["length"]), kmer=int(d.get("kmer", 0)))


# ------------------------------------------------------------------------------------------ loading
def load_fasta(path: Path, cfg: DataConfig, *, name: str | None = None) -> Dataset:
    """A labelled FASTA file as a :class:`Dataset` (modality ``sequence``, task ``classify``).

    See the module docstring; what was decided (alphabet, ambiguity letters, cut records, dropped
    records, merged classes) goes into ``notes``.
    """
    path = Path(path)
    records = read_fasta(path)
    alpha, why = resolve_alphabet(records, cfg.alphabet)
    amb = check_letters(records, alpha, str(path))
    notes = [why]
    if amb:
        notes.append(f"{sum(amb.values()):,} ambiguity letters read as soft one-hots / skipped in k-mers ("
                     + ", ".join(f"{c} {n:,}" for c, n in amb.most_common()) + ")")
    labels, how = record_labels(records, cfg.label_from, cfg.rank)
    notes.append(how)
    unlabelled = [r.id for r, y in zip(records, labels, strict=True) if y is None]
    if len(unlabelled) == len(records):
        raise LaminaError(f"{path}: no record has a label ({how}); set data.rank or data.label_from")
    if unlabelled:
        notes.append(f"{len(unlabelled)} records without a label dropped: " + ", ".join(unlabelled[:5])
                     + (" ..." if len(unlabelled) > 5 else ""))
        keep = [i for i, y in enumerate(labels) if y is not None]
        records, labels = [records[i] for i in keep], [labels[i] for i in keep]
    names, merge_notes = merge_rare([str(y) for y in labels], cfg.min_class_examples)
    notes += merge_notes
    classes = sorted(set(names))
    y = torch.tensor([classes.index(c) for c in names], dtype=torch.long)
    seqs = [r.sequence for r in records]
    lengths = [len(s) for s in seqs]
    if cfg.max_length < 0:
        raise LaminaError(f"data.max_length must be 0 (the longest record) or positive, got {cfg.max_length}")
    length = cfg.max_length or min(max(lengths), MAX_LENGTH)
    rc = cfg.reverse_complement if cfg.reverse_complement is not None else alpha.name != "protein"
    if rc and alpha.name == "protein":
        raise LaminaError("data.reverse_complement=true needs dna or rna sequences, these are protein")
    kmer = cfg.kmer if cfg.kmer >= 0 else (3 if alpha.name == "protein" else 6)
    if kmer:
        x = kmer_counts(seqs, alpha, kmer)
        preprocess, default_model, kwargs = Preprocess(kind="array"), "mlp", {}
        notes.append(f"encoded as {kmer}-mer frequencies: {x.shape[1]:,} columns (data.kmer; 0: one-hot residues)")
    else:
        x, cut = encode_ids(seqs, alpha, length)
        preprocess, default_model = Preprocess(kind="tokens"), "seqresnet"
        kwargs = {"vocab": alpha.vocab, "alphabet": alpha.name}
        notes.append(f"encoded as residue ids, {length:,} per record" + (
            f"; {cut:,} longer records cut (data.max_length)" if cut else ""))
    if rc:
        notes.append("training batches reverse-complemented at random (data.reverse_complement)")
    summary = (f"{len(records):,} {alpha.name.upper() if alpha.name != 'protein' else 'protein'} sequences, "
               f"{len(classes)} classes, lengths {min(lengths):,}-{max(lengths):,}")  # fmt: skip
    return Dataset(
        name=name or path.name.split(".")[0],
        classes=classes,
        train=Split(x, y),
        modality="sequence",
        task="classify",
        preprocess=preprocess,
        codec=SequenceCodec(alphabet=alpha.name, length=length, kmer=kmer),
        default_model=default_model,
        model_kwargs=kwargs,
        augment=ReverseComplement(alpha.name, kmer) if rc else None,
        source=str(path),
        summary=summary,
        notes=notes,
    )


# ------------------------------------------------------------------------------------------ rrna16s
RRNA16S_PACKAGE = "microbiomeutil-data"
RRNA16S_FILE = "usr/share/microbiomeutil-data/RESOURCES/rRNA16S.gold.fasta"  # inside the extracted .deb
RRNA16S_DESCRIPTION = ("16S rRNA gold set (microbiomeutil): 5,181 bacterial and archaeal 16S genes, their "
                       "phylum (data.rank) as the label")


def rrna16s_path() -> Path | None:
    """Where the 16S gold FASTA is: ``$LAMINA_DATA/rrna16s/`` or the cache; None if in neither."""
    from lamina.data.builtin import cache_dir

    dirs = [Path(os.environ["LAMINA_DATA"]).expanduser() / "rrna16s"] if os.environ.get("LAMINA_DATA") else []
    for d in [*dirs, cache_dir() / "rrna16s"]:
        if (d / "rRNA16S.gold.fasta").is_file():
            return d / "rRNA16S.gold.fasta"
    return None


def rrna16s_status() -> str:
    found = rrna16s_path()
    return str(found) if found else "not fetched (lamina data fetch rrna16s)"


def fetch_rrna16s() -> str:
    """Put ``rRNA16S.gold.fasta`` into ``~/.cache/lamina/rrna16s`` (Debian's microbiomeutil-data,
    ``apt-get download`` + ``dpkg-deb -x``) unless it is already there; a one-line report."""
    from lamina.data.builtin import cache_dir

    found = rrna16s_path()
    if found is not None:
        return f"rrna16s is already available in {found.parent}"
    tools = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    if tools:
        raise LaminaError(f"fetching rrna16s needs {' and '.join(tools)} (Debian/Ubuntu); instead, put "
                          "rRNA16S.gold.fasta into $LAMINA_DATA/rrna16s/")  # fmt: skip
    dest = cache_dir() / "rrna16s"
    with tempfile.TemporaryDirectory(prefix="lamina-rrna16s-") as tmp_name:
        tmp = Path(tmp_name)
        err = _run(["apt-get", "download", RRNA16S_PACKAGE], tmp)
        if err is not None:  # stale or missing package lists: refresh them once
            err_update = _run(["apt-get", "update"], tmp)
            err = _run(["apt-get", "download", RRNA16S_PACKAGE], tmp) if err_update is None else err
        debs = sorted(tmp.glob(f"{RRNA16S_PACKAGE}_*.deb"))
        if err is not None or not debs:
            raise LaminaError(f"`apt-get download {RRNA16S_PACKAGE}` failed: {err or 'no .deb appeared'}; instead, "
                              "put rRNA16S.gold.fasta into $LAMINA_DATA/rrna16s/")  # fmt: skip
        err = _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp / "x")], tmp)
        src = tmp / "x" / RRNA16S_FILE
        if err is not None or not src.is_file():
            raise LaminaError(f"could not extract {RRNA16S_FILE} from {debs[-1].name}: {err or 'not in the package'}")
        try:
            dest.mkdir(parents=True, exist_ok=True)
            part = dest / f".rRNA16S.gold.fasta.{os.getpid()}.part"
            shutil.copyfile(src, part)
            os.replace(part, dest / "rRNA16S.gold.fasta")
        except OSError as e:
            raise LaminaError(f"could not write {dest}: {e.strerror or e}; check the folder and free disk space") from None
    n = sum(1 for r in read_fasta(dest / "rRNA16S.gold.fasta"))
    return f"rrna16s: {n:,} 16S genes written to {dest} from Debian package {RRNA16S_PACKAGE}"


def load_rrna16s(cfg: DataConfig) -> Dataset:
    """The 16S gold set labelled by its lineage at ``data.rank`` (default phylum); never downloads."""
    path = rrna16s_path()
    if path is None:
        raise LaminaError("rrna16s not found; to get it, run `lamina data fetch rrna16s` (needs apt-get), or put "
                          "rRNA16S.gold.fasta into $LAMINA_DATA/rrna16s/")  # fmt: skip
    return load_fasta(path, cfg, name="rrna16s")
