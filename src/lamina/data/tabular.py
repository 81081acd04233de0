"""Tables in: ``.csv``/``.tsv`` (the stdlib ``csv`` module) and ``.parquet`` (pyarrow, the ``tables`` extra).

What :func:`load_table` decides, and writes into the dataset's ``notes``:

- **the label**: ``data.label_column``, else a column named ``label``, ``target``, ``class`` or
  ``y`` (any case), else the last column. Rows without a label (empty, NA, NaN...) are dropped.
- **the task**: classification when the label holds names, or integers with at most
  :data:`MAX_INTEGER_CLASSES` distinct values; regression when it holds other numbers
  (``data.task=classify|regress`` overrides). Classes with fewer than ``data.min_class_examples``
  rows are merged into ``other``.
- **the columns**: a column is *numeric* when at least :data:`NUMERIC_SHARE` of its non-missing
  values parse as finite numbers; the others in it (a stray ``abc`` in a column of numbers) count
  as missing, and a note names them. Integer columns stay numeric however few their values (their
  order means something: pixel intensities, counts, ratings). Every other column is *categorical*.
  Dropped, with a note: columns with one value only, and ID-like columns: text whose values are all
  distinct, or integers rising (or falling) row after row, like a row number.
- **missing values** (:data:`MISSING`: empty, NA, NaN, null, ?, ...): numeric columns get the
  training split's median plus a 0/1 missing-indicator column (only columns with missing values in
  training get one); in a categorical column, missing is a category of its own.
- **the splits**: the test split is carved here with the fixed seed 0 (stratified for classes,
  random for regression, ``data.test_fraction``), and every statistic (medians, categories,
  means and standard deviations) comes from the remaining training rows; ``build_dataset`` carves
  the validation split from those with the run's seed.

The encoding (:class:`TableCodec`, saved in ``model.json``) gives ``x`` float32 (N, D): the numeric
columns and the missing indicators (standardised by the ``Preprocess``, with the training split's
per-column mean and std), then one column per categorical feature holding its category index as a
float (mean 0 / std 1 in the ``Preprocess``: indices reach the model intact). Index 0 of every
categorical column is "unknown": a category never seen in training (at predict time). The model
embeds the indices: ``model_kwargs["categories"]`` holds each categorical column's cardinality.

Other decisions: more feature columns than rows is allowed, with a note (expect overfitting);
duplicate column names, ragged rows, an empty file, a header without rows, a missing label column
and a label holding one value are one-line errors saying how to fix them.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lamina.config import DataConfig
from lamina.data.base import Dataset, Preprocess, Split, random_split, stratified_split
from lamina.errors import LaminaError, did_you_mean

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a", "nil", "missing", "<na>"})
LABEL_NAMES = ("label", "target", "class", "y")
MAX_INTEGER_CLASSES = 20  # an integer label with at most this many distinct values holds classes
NUMERIC_SHARE = 0.95  # a column is numeric when this share of its non-missing values are numbers
MAX_CATEGORIES = 1000  # per categorical column: the most frequent training values; the rest are "unknown"
TEST_SEED = 0  # load_table gets no run seed: the test split is the same for every run of a table
MIN_ROWS = 5
PARQUET_HINT = "pip install 'lamina[tables]' (pyarrow) to read Parquet files"
UNKNOWN, MISSING_CATEGORY = "<unknown>", "<missing>"


# -- reading ------------------------------------------------------------------------------------------
@dataclass
class RawTable:
    """Columns of raw cells (strings from a CSV, Python values from Parquet or dict rows), with a
    name for each row (its line in the file, or its 1-based row number)."""

    header: list[str]
    columns: dict[str, list[Any]]
    names: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def take(self, idx: Sequence[int]) -> RawTable:
        cols = {k: [v[i] for i in idx] for k, v in self.columns.items()}
        return RawTable(self.header, cols, [self.names[i] for i in idx], self.source)


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _check_header(header: list[str], where: str) -> None:
    if not header or all(not h for h in header):
        raise LaminaError(f"{where} is empty: a table needs a header row of column names, then one row per example")
    blank = [i + 1 for i, h in enumerate(header) if not h]
    if blank:
        raise LaminaError(f"{where}: column {blank[0]} of the header has no name; name every column")
    dup = sorted(name for name, n in Counter(header).items() if n > 1)
    if dup:
        raise LaminaError(f"{where}: duplicate column names {', '.join(repr(d) for d in dup)}; rename them so "
                          "that every column has its own name")


def read_csv(path: Path) -> RawTable:
    """A CSV (``,``) or TSV (``.tsv``: tab) file; blank lines are skipped, ragged rows are errors."""
    delimiter = "\t" if _suffix(path) == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = [c.strip() for c in next(reader, [])]
            _check_header(header, str(path))
            rows, names = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                    continue  # a blank line
                if len(row) != len(header):
                    raise LaminaError(f"{path}: line {reader.line_num} has {len(row)} fields, the header has "
                                      f"{len(header)}; fix that row (quote fields that hold a '{delimiter}')")
                rows.append(row)
                names.append(f"line {reader.line_num}")
    except UnicodeDecodeError as e:
        raise LaminaError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise LaminaError(f"{path} is not a readable CSV file ({e}); check its quoting") from None
    except OSError as e:
        raise LaminaError(f"cannot read {path}: {e.strerror}") from None
    columns = {h: [r[j] for r in rows] for j, h in enumerate(header)}
    return RawTable(header, columns, names, str(path))


def read_parquet(path: Path) -> RawTable:
    """A Parquet file through pyarrow (the optional ``tables`` extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LaminaError(f"{path} is a Parquet file: {PARQUET_HINT}") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise LaminaError(f"{path} is not a readable Parquet file ({type(e).__name__}: {str(e)[:120]})") from None
    header = [str(c).strip() for c in table.column_names]
    _check_header(header, str(path))
    columns = {h: table.column(j).to_pylist() for j, h in enumerate(header)}
    return RawTable(header, columns, [f"row {i + 1}" for i in range(table.num_rows)], str(path))


def read_rows(rows: Iterable[dict[str, Any]], where: str = "rows") -> RawTable:
    """A list of dict rows (``{"column": value}``); rows may lack columns (missing values)."""
    rows = list(rows)
    if not all(isinstance(r, dict) for r in rows):
        raise LaminaError(f"{where}: give a table file (.csv, .tsv, .parquet), a list of dict rows or a DataFrame")
    header = list(dict.fromkeys(str(k).strip() for r in rows for k in r))
    columns = {h: [None] * len(rows) for h in header}
    for i, r in enumerate(rows):
        for k, v in r.items():
            columns[str(k).strip()][i] = v
    return RawTable(header, columns, [f"row {i + 1}" for i in range(len(rows))], where)


def read_table(inputs: Any) -> RawTable:
    """A path (CSV/TSV/Parquet), a dict row or a list of them, or a pandas DataFrame."""
    if isinstance(inputs, str | Path):
        path = Path(inputs).expanduser()
        if not path.is_file():
            raise LaminaError(f"table {path} does not exist; check the path")
        if _suffix(path) == ".parquet":
            return read_parquet(path)
        if _suffix(path) not in (".csv", ".tsv", ".txt"):
            raise LaminaError(f"{path}: give a .csv, .tsv or .parquet table")
        return read_csv(path)
    if isinstance(inputs, dict):
        return read_rows([inputs])
    if type(inputs).__name__ == "DataFrame" and hasattr(inputs, "to_dict"):
        return read_rows(inputs.to_dict("records"), "DataFrame")
    if isinstance(inputs, list | tuple):
        return read_rows(inputs)
    raise LaminaError(f"cannot read a table from a {type(inputs).__name__}: give a .csv/.tsv/.parquet path, "
                      "a list of dict rows or a DataFrame")


# -- cells --------------------------------------------------------------------------------------------
def is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    return isinstance(v, str) and v.strip().lower() in MISSING


def to_number(v: Any) -> float | None:
    """A finite number, or None (missing or not a number)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        f = float(v)
    else:
        s = str(v).strip()
        if not s or "_" in s:
            return None
        try:
            f = float(s)
        except ValueError:
            return None
    return f if math.isfinite(f) else None


def category(v: Any) -> str:
    """A categorical cell as its category name (missing cells are the category ``<missing>``)."""
    if is_missing(v):
        return MISSING_CATEGORY
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def numbers(values: Sequence[Any]) -> np.ndarray:
    """float64 (N,), NaN where a cell is missing or not a number."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        f = to_number(v)
        out[i] = np.nan if f is None else f
    return out


# -- the codec ----------------------------------------------------------------------------------------
@dataclass
class TableCodec:
    """Rows of a table -> raw examples (N, D): numeric columns (the training median where missing),
    their missing indicators, then the category index of each categorical column (0: unknown).

    ``numeric``: ``[{"name", "median", "indicator"}]``; ``categorical``: ``[{"name", "categories"}]``
    (index ``i + 1`` is ``categories[i]``); ``label``: the label column (ignored when present).
    """

    numeric: list[dict[str, Any]]
    categorical: list[dict[str, Any]]
    label: str = ""
    dropped: list[str] = field(default_factory=list)
    kind: str = "table"

    def __post_init__(self) -> None:
        self._index = [{c: i + 1 for i, c in enumerate(col["categories"])} for col in self.categorical]

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(bool(c["indicator"]) for c in self.numeric) + len(self.categorical)

    @property
    def cardinalities(self) -> list[int]:
        return [len(c["categories"]) + 1 for c in self.categorical]

    @property
    def feature_names(self) -> list[str]:
        return ([c["name"] for c in self.numeric] + [f"{c['name']} missing" for c in self.numeric if c["indicator"]]
                + [c["name"] for c in self.categorical])

    def required(self) -> list[str]:
        return [c["name"] for c in self.numeric] + [c["name"] for c in self.categorical]

    def encode(self, table: RawTable) -> torch.Tensor:
        """The raw examples (N, D) float32 of a table holding (at least) the codec's columns."""
        absent = [c for c in self.required() if c not in table.columns]
        if absent:
            shown = ", ".join(repr(c) for c in absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
            hint = f" ({did_you_mean(absent[0], table.header)})" if table.header else ""
            raise LaminaError(f"{table.source or 'the table'} lacks the column(s) {shown} that the model reads{hint}")
        n = len(table)
        numeric: list[np.ndarray] = []
        indicators: list[np.ndarray] = []
        cats: list[np.ndarray] = []
        for col in self.numeric:
            v = numbers(table.columns[col["name"]])
            miss = np.isnan(v)
            numeric.append(np.where(miss, col["median"], v))
            if col["indicator"]:
                indicators.append(miss.astype(np.float64))
        for col, index in zip(self.categorical, self._index, strict=True):
            cats.append(np.asarray([index.get(category(v), 0) for v in table.columns[col["name"]]], dtype=np.float64))
        cols = [*numeric, *indicators, *cats]  # (N,) each
        x = np.stack(cols, axis=1) if cols else np.zeros((n, 0))  # (N, D)
        return torch.from_numpy(x.astype(np.float32)).reshape(n, self.width)

    def read(self, inputs: Any) -> tuple[torch.Tensor, list[str]]:
        """A CSV/TSV/Parquet path, dict rows or a DataFrame -> (raw batch (N, D), a name per row).
        Extra columns and the label column are ignored; a missing column is an error naming it. A
        tensor or array of rows this codec encoded already, (N, D), passes through."""
        if isinstance(inputs, torch.Tensor | np.ndarray):  # rows already encoded (read before): as they are
            x = torch.as_tensor(inputs).float()
            x = x.unsqueeze(0) if x.dim() == 1 else x
            if x.dim() != 2 or x.shape[1] != self.width:
                raise LaminaError(f"encoded table rows must have shape (N, {self.width}), got {tuple(x.shape)}")
            return x, [f"[{i}]" for i in range(len(x))]
        table = read_table(inputs)
        if len(table) == 0:
            raise LaminaError(f"{table.source or 'the table'} has no rows to predict")
        return self.encode(table), table.names

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "numeric": [dict(c) for c in self.numeric],
                "categorical": [{"name": c["name"], "categories": list(c["categories"])} for c in self.categorical],
                "label": self.label, "dropped": list(self.dropped)}


def codec_from_dict(d: dict[str, Any]) -> TableCodec:
    """The codec :meth:`TableCodec.to_dict` saved (in ``model.json``)."""
    numeric = [{"name": str(c["name"]), "median": float(c["median"]), "indicator": bool(c["indicator"])}
               for c in d["numeric"]]
    categorical = [{"name": str(c["name"]), "categories": [str(v) for v in c["categories"]]} for c in d["categorical"]]
    return TableCodec(numeric, categorical, label=str(d.get("label", "")), dropped=[str(c) for c in d.get("dropped", [])])


# -- fitting on the training rows -------------------------------------------------------------------
def column_kind(values: Sequence[Any]) -> tuple[str, list[tuple[int, Any]]]:
    """``numeric`` or ``categorical``, and for a numeric column its non-numeric cells (row, value)."""
    present = [(i, v) for i, v in enumerate(values) if not is_missing(v)]
    if not present:
        return "categorical", []
    bad = [(i, v) for i, v in present if to_number(v) is None]
    if len(bad) <= (1 - NUMERIC_SHARE) * len(present):
        return "numeric", bad
    return "categorical", []


def fit_codec(train: RawTable, label: str, notes: list[str]) -> TableCodec:
    """The encoding of every feature column, fitted on the training rows only."""
    numeric: list[dict[str, Any]] = []
    categorical: list[dict[str, Any]] = []
    dropped: list[str] = []
    n = len(train)
    for name in train.header:
        if name == label:
            continue
        values = train.columns[name]
        kind, bad = column_kind(values)
        if kind == "numeric":
            v = numbers(values)
            present = v[~np.isnan(v)]
            if len(np.unique(present)) <= 1 and not np.isnan(v).any():
                dropped.append(name)
                notes.append(f"column '{name}' dropped: it holds one value only")
                continue
            if n >= 10 and _counts_rows(v, n):
                dropped.append(name)
                notes.append(f"column '{name}' dropped: an ID (distinct integers rising row after row)")
                continue
            if bad:
                shown = ", ".join(f"{train.names[i]}: {str(val)[:20]!r}" for i, val in bad[:3])
                notes.append(f"column '{name}' is numeric; its {len(bad)} non-numeric value(s) ({shown}"
                             f"{', ...' if len(bad) > 3 else ''}) are treated as missing")
            median = float(np.median(present)) if len(present) else 0.0
            numeric.append({"name": name, "median": median, "indicator": bool(np.isnan(v).any())})
        else:
            counts = Counter(category(x) for x in values)
            real = [c for c in counts if c != MISSING_CATEGORY]
            if len(counts) <= 1:
                dropped.append(name)
                notes.append(f"column '{name}' dropped: it holds one value only")
                continue
            if n >= 10 and len(real) == sum(counts[c] for c in real) and counts.get(MISSING_CATEGORY, 0) < n / 2:
                dropped.append(name)
                notes.append(f"column '{name}' dropped: an ID (every value distinct text)")
                continue
            kept = [c for c, _ in counts.most_common(MAX_CATEGORIES)]
            if len(kept) < len(counts):
                notes.append(f"column '{name}': the {MAX_CATEGORIES} most frequent of {len(counts)} categories kept, "
                             "the others read as unknown")
            categorical.append({"name": name, "categories": sorted(kept)})
    if numeric:
        notes.append(f"{len(numeric)} numeric column(s): " + _names(c["name"] for c in numeric))
        with_missing = [c["name"] for c in numeric if c["indicator"]]
        if with_missing:
            notes.append(f"missing numbers -> the training median plus a missing-indicator column: "
                         f"{_names(with_missing)}")
    if categorical:
        notes.append(f"{len(categorical)} categorical column(s): " + ", ".join(
            f"{c['name']} ({len(c['categories'])})" for c in categorical[:12])
            + (", ..." if len(categorical) > 12 else "") + "; unseen categories read as unknown")
    return TableCodec(numeric, categorical, label=label, dropped=dropped)


def _counts_rows(v: np.ndarray, n: int) -> bool:
    """Distinct integers rising (or falling) row after row, with no gaps in the column: a row counter
    or an ID, not a feature (``v``: the training rows in file order)."""
    if len(v) < n or np.isnan(v).any() or not np.all(v == np.round(v)):
        return False
    d = np.diff(v)
    return bool(np.all(d > 0) or np.all(d < 0))


def _names(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- the label --------------------------------------------------------------------------------------
def find_label(header: list[str], cfg: DataConfig, where: str) -> tuple[str, str]:
    """The label column and why it was chosen."""
    if cfg.label_column:
        if cfg.label_column not in header:
            raise LaminaError(f"{where} has no column '{cfg.label_column}' (data.label_column): "
                              f"{did_you_mean(cfg.label_column, header)}")
        return cfg.label_column, "data.label_column"
    for h in header:
        if h.lower() in LABEL_NAMES:
            return h, "its name"
    return header[-1], "the last column; set data.label_column to choose another"


def label_task(values: Sequence[Any], cfg: DataConfig, label: str) -> tuple[str, str]:
    """``classify`` or ``regress``, and why."""
    if cfg.task in ("classify", "regress"):
        return cfg.task, "data.task"
    if cfg.task != "auto":
        raise LaminaError(f"a table's label is for data.task=classify or regress, not '{cfg.task}'")
    nums = [to_number(v) for v in values]
    if any(v is None for v in nums):
        return "classify", f"label '{label}' holds names"
    if all(float(v).is_integer() for v in nums if v is not None) and len(set(nums)) <= MAX_INTEGER_CLASSES:
        return "classify", f"label '{label}' holds {len(set(nums))} distinct integers"
    return "regress", f"label '{label}' holds real numbers"


def _class_name(v: Any) -> str:
    f = to_number(v)
    if f is not None and f.is_integer() and not isinstance(v, str):
        return str(int(f))
    if f is not None and isinstance(v, str) and f.is_integer() and "." in v:
        return str(int(f))  # "1.0" and "1" are one class
    return str(v).strip()


def _class_key(name: str) -> tuple[int, float, str]:
    f = to_number(name)
    return (0, f, "") if f is not None else (1, 0.0, name)


def table_task(path: Path, cfg: DataConfig) -> str:
    """The task a table's label declares (``classify`` or ``regress``), read before loading it, for
    :func:`lamina.data.sources.declared_task`; ``classify`` when the file cannot be read (the loader
    reports why)."""
    try:
        raw = read_parquet(path) if _suffix(path) == ".parquet" else read_csv(path)
        label, _ = find_label(raw.header, cfg, str(path))
        return label_task([v for v in raw.columns[label] if not is_missing(v)], cfg, label)[0]
    except LaminaError:
        return "classify"


# -- loading ----------------------------------------------------------------------------------------
def load_table(path: Path, cfg: DataConfig) -> Dataset:
    """A table file as a :class:`Dataset` (see the module docstring for what is decided and why)."""
    raw = read_parquet(path) if _suffix(path) == ".parquet" else read_csv(path)
    if len(raw) == 0:
        raise LaminaError(f"{path} has a header but no rows: add one row per example")
    label, why = find_label(raw.header, cfg, str(path))
    notes = [f"label: column '{label}' ({why})"]
    if len(raw.header) < 2:
        raise LaminaError(f"{path} has only the label column '{label}': add feature columns")
    keep = [i for i, v in enumerate(raw.columns[label]) if not is_missing(v)]
    if len(keep) < len(raw):
        notes.append(f"{len(raw) - len(keep)} row(s) without a label dropped (the first: {raw.names[_first_gap(keep, len(raw))]})")
        raw = raw.take(keep)
    if len(raw) < MIN_ROWS:
        raise LaminaError(f"{path} has {len(raw)} labelled row(s); a model needs at least {MIN_ROWS}: add rows")
    values = raw.columns[label]
    distinct = {_class_name(v) for v in values}
    if len(distinct) == 1:
        raise LaminaError(f"{path}: the label column '{label}' holds one value ({next(iter(distinct))!r}) in every row: "
                          "there is nothing to learn; choose another column with data.label_column")
    task, why_task = label_task(values, cfg, label)
    notes.append(f"task: {'classification' if task == 'classify' else 'regression'} ({why_task}; "
                 "override with data.task=classify|regress)")
    if task == "regress":
        y_all = numbers(values)
        bad = [i for i, v in enumerate(y_all) if np.isnan(v)]
        if bad:
            raise LaminaError(f"{path}: regression needs numbers in '{label}', but {raw.names[bad[0]]} holds "
                              f"{str(values[bad[0]])[:30]!r}; fix it, or set data.task=classify")
        y = torch.from_numpy(y_all.astype(np.float32))
        classes: list[str] = []
        rest, held = random_split(Split(torch.arange(len(raw)), y), cfg.test_fraction, TEST_SEED)
    else:
        names = [_class_name(v) for v in values]
        names, merged = _merge_rare(names, cfg.min_class_examples)
        if merged:
            notes.append(f"{len(merged)} class(es) with fewer than {cfg.min_class_examples} rows merged into "
                         f"'other' (data.min_class_examples): {_names(merged, 8)}")
        classes = sorted(set(names), key=_class_key)
        if len(classes) < 2:
            raise LaminaError(f"{path}: after merging rare classes only '{classes[0]}' is left; add rows or lower "
                              "data.min_class_examples")
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[c] for c in names], dtype=torch.long)
        rest, held = stratified_split(Split(torch.arange(len(raw)), y), cfg.test_fraction, TEST_SEED)
    train_rows, test_rows = rest.x.tolist(), held.x.tolist()  # type: ignore[union-attr]
    codec = fit_codec(raw.take(train_rows), label, notes)
    if codec.width == 0:
        raise LaminaError(f"{path}: no usable feature column is left (every one was dropped: "
                          f"{_names(codec.dropped)}); add feature columns")
    x = codec.encode(raw)
    n_features = len(codec.numeric) + len(codec.categorical)
    if n_features > len(raw):
        notes.append(f"{n_features} feature columns but {len(raw)} rows: more columns than rows is allowed, "
                     "but expect overfitting (add rows or drop columns)")
    preprocess = _preprocess(codec, x[torch.tensor(train_rows)])
    train_idx, test_idx = torch.tensor(train_rows), torch.tensor(test_rows)
    what = (f"{len(raw):,} rows, {len(codec.numeric)} numeric + {len(codec.categorical)} categorical columns, "
            + (f"{len(classes)} classes" if task == "classify" else f"target '{label}' {float(y.min()):.4g}.."
               f"{float(y.max()):.4g}"))
    return Dataset(name=path.stem, classes=classes, train=Split(x[train_idx], y[train_idx]),
                   test=Split(x[test_idx], y[test_idx]), modality="table", task=task, preprocess=preprocess,
                   source=str(path), codec=codec, summary=what, default_model="tabmlp",
                   model_kwargs={"categories": codec.cardinalities}, notes=notes,
                   target_name=label)


def _first_gap(keep: list[int], n: int) -> int:
    kept = set(keep)
    return next(i for i in range(n) if i not in kept)


def _merge_rare(names: list[str], min_count: int) -> tuple[list[str], list[str]]:
    if min_count <= 0:
        return names, []
    counts = Counter(names)
    rare = sorted((c for c, k in counts.items() if k < min_count), key=_class_key)
    if not rare or len(rare) == len(counts) or (len(rare) == 1 and "other" not in counts):
        return names, []  # merging one class into "other" only renames it
    rare_set = set(rare)
    return ["other" if c in rare_set else c for c in names], rare


def _preprocess(codec: TableCodec, x_train: torch.Tensor) -> Preprocess:
    """Per-column mean/std of the numeric and indicator columns from train; 0/1 for category indices."""
    k = codec.width - len(codec.categorical)
    if k == 0:
        if codec.width == 1:
            # one categorical column: mean (0.0,) / std (1.0,) would read as "not computed" to
            # build_dataset, which would standardise the indices; "tokens" passes them through untouched
            return Preprocess(kind="tokens")
        return Preprocess(kind="array", mean=(0.0,) * codec.width, std=(1.0,) * codec.width)
    x = x_train[:, :k].double()
    mean = x.mean(0) if len(x) else torch.zeros(k, dtype=torch.float64)
    std = x.std(0, correction=0) if len(x) > 1 else torch.ones(k, dtype=torch.float64)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    means = tuple(mean.tolist()) + (0.0,) * len(codec.categorical)
    stds = tuple(std.tolist()) + (1.0,) * len(codec.categorical)
    return Preprocess(kind="array", mean=means, std=stds)


# -- writing predictions ----------------------------------------------------------------------------
def write_predictions(inputs_path: str | Path, out_path: str | Path, predictions: list[Any], column: str) -> Path:
    """The input table with ``column`` (the predictions, one per row) appended, written to ``out_path``
    (``.csv``, ``.tsv`` or ``.parquet`` by its suffix). A column of that name already in the table
    (e.g. the true label) is kept: the new one is ``<column>_predicted``."""
    raw = read_table(inputs_path)
    out = Path(out_path)
    if len(predictions) != len(raw):
        raise LaminaError(f"{len(predictions)} predictions for the {len(raw)} rows of {inputs_path}")
    name = column if column not in raw.columns else f"{column}_predicted"
    header = [*raw.header, name]
    columns = {**raw.columns, name: list(predictions)}
    out.parent.mkdir(parents=True, exist_ok=True)
    if _suffix(out) == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise LaminaError(f"{out}: {PARQUET_HINT}") from None
        pq.write_table(pa.table({h: columns[h] for h in header}), out)
        return out
    delimiter = "\t" if _suffix(out) == ".tsv" else ","
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        for i in range(len(raw)):
            w.writerow(["" if columns[h][i] is None else columns[h][i] for h in header])
    return out


# -- example tables -----------------------------------------------------------------------------------
def write_sklearn_table(name: str, path: str | Path) -> Path:
    """scikit-learn's bundled ``wine``, ``digits`` (64 pixel columns) or ``diabetes`` (regression) as a
    CSV with a ``target`` column (needs scikit-learn, only when called)."""
    try:
        from sklearn import datasets
    except ImportError:
        raise LaminaError("writing the example tables needs scikit-learn: pip install 'lamina[datasets]'") from None
    loaders = {"wine": datasets.load_wine, "digits": datasets.load_digits, "diabetes": datasets.load_diabetes}
    if name not in loaders:
        raise LaminaError(f"unknown example table '{name}': {did_you_mean(name, loaders)}")
    bunch = loaders[name]()
    x, y = bunch.data, bunch.target
    cols = [str(c) for c in getattr(bunch, "feature_names", [])] or [f"x{j}" for j in range(x.shape[1])]
    if name == "diabetes":  # the unscaled values (the bundled ones are centred and scaled)
        x, y = datasets.load_diabetes(scaled=False, return_X_y=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*cols, "target"])
        for row, t in zip(x.tolist(), y.tolist(), strict=True):
            w.writerow([_fmt(v) for v in row] + [_fmt(t)])
    return path


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def make_synthetic_table(path: str | Path, n: int = 2000, seed: int = 0, *, task: str = "classify") -> Path:
    """A CSV with numeric and categorical columns, missing values, an ID column and interactions:
    the label depends on ``x1 * x2``, on a category's own slope, and on ``x3`` only where it is
    present. ``task`` ``classify`` (3 classes ``low``/``mid``/``high``) or ``regress``."""
    rng = np.random.default_rng(seed)
    x1, x2, x3, x4 = (rng.normal(size=n) for _ in range(4))
    color = rng.choice(["red", "green", "blue", "grey"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    size = rng.choice(["S", "M", "L"], size=n)
    slope = {"red": 1.5, "green": -1.0, "blue": 0.5, "grey": 0.0}
    missing3 = rng.random(n) < 0.2
    score = (x1 * x2 + np.array([slope[c] for c in color]) * x4 + np.where(missing3, 0.8, np.sin(2 * x3))
             + (size == "L") * 0.7 + 0.3 * rng.normal(size=n))
    if task == "regress":
        target: list[Any] = [round(float(v) * 10 + 50, 3) for v in score]
    else:
        cuts = np.quantile(score, [1 / 3, 2 / 3])
        target = [("low", "mid", "high")[int(np.searchsorted(cuts, v))] for v in score]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "x1", "x2", "x3", "x4", "color", "size", "target"])
        for i in range(n):
            w.writerow([i + 1, f"{x1[i]:.4f}", f"{x2[i]:.4f}", "" if missing3[i] else f"{x3[i]:.4f}",
                        f"{x4[i]:.4f}", "NA" if rng.random() < 0.05 else color[i], size[i], target[i]])
    return path
