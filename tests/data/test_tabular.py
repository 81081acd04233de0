"""Tables: column detection, imputation and indicators, categories (unseen ones too), statistics from
the training split only, the codec's round trip through model.json, every bad input, and an
end-to-end classification run whose predictions on raw CSV rows equal what its evaluation gave."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lamina.config import DataConfig
from lamina.data import tabular
from lamina.data.base import build_dataset
from lamina.data.codecs import codec_from_dict
from lamina.data.sources import load
from lamina.data.tabular import (
    MISSING_CATEGORY,
    TableCodec,
    load_table,
    make_synthetic_table,
    read_table,
    write_predictions,
    write_sklearn_table,
)
from lamina.errors import LaminaError


def write_csv(path: Path, header: list[str], rows: list[list[Any]], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def mixed_rows(n: int = 60, seed: int = 0) -> list[list[Any]]:
    """num (with gaps), an integer count, a colour (with gaps), a row id, a constant, and a class label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        num = "" if i % 7 == 3 else f"{rng.normal() * 3 + 10:.4f}"
        colour = "NA" if i % 11 == 5 else ["red", "green", "blue"][i % 3]
        rows.append([num, int(rng.integers(0, 4)), colour, i, "k", "yes" if i % 2 else "no"])
    return rows


HEADER = ["num", "count", "colour", "row", "const", "Label"]


def cfg(path: Path, **kw: Any) -> DataConfig:
    return DataConfig(name=str(path), **kw)


def train_rows(ds_path: Path, c: DataConfig) -> list[int]:
    """The CSV rows (0-based, after the header) load_table trains on: the complement of its seed-0 test split."""
    from lamina.data.base import Split, stratified_split

    ds = load_table(ds_path, c)
    raw = read_table(ds_path)
    y = torch.tensor([ds.classes.index(tabular._class_name(v)) for v in raw.columns[ds.codec.label]])
    rest, _ = stratified_split(Split(torch.arange(len(raw)), y), c.test_fraction, 0)
    return rest.x.tolist()


# -- detection ------------------------------------------------------------------------------------------
def test_columns_are_detected_and_listed_in_notes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    ds = load_table(path, cfg(path))
    codec = ds.codec
    assert isinstance(codec, TableCodec) and codec.label == "Label"  # a column named label, any case
    assert [c["name"] for c in codec.numeric] == ["num", "count"]  # integers with 4 values stay numeric
    assert [c["name"] for c in codec.categorical] == ["colour"]
    assert codec.dropped == ["row", "const"]  # a row counter and a constant
    notes = " | ".join(ds.notes)
    for what in ("label: column 'Label' (its name)", "2 numeric column(s): num, count", "categorical column(s): colour",
                 "'row' dropped: an ID", "'const' dropped: it holds one value only", "classification"):
        assert what in notes, what
    assert (ds.task, ds.modality, ds.classes, ds.default_model) == ("classify", "table", ["no", "yes"], "tabmlp")
    # layout: num, count, the indicator of num, then colour's index
    assert ds.input_shape == (4,) and codec.feature_names == ["num", "count", "num missing", "colour"]
    assert ds.model_kwargs == {"categories": [len(codec.categorical[0]["categories"]) + 1]}
    assert ds.val is None and len(ds.train) + len(ds.test) == 60


def test_label_is_the_last_column_or_data_label_column(tmp_path: Path) -> None:
    rows = [[i % 5 + 0.5, i % 3, "a" if i % 2 else "b"] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["u", "v", "w"], rows)
    ds = load_table(path, cfg(path))
    assert ds.codec.label == "w" and "the last column" in ds.notes[0]
    ds = load_table(path, cfg(path, label_column="v"))
    assert ds.codec.label == "v" and ds.classes == ["0", "1", "2"] and "data.label_column" in ds.notes[0]


@pytest.mark.parametrize("label,task", [(["a", "b", "c"], "classify"), ([0, 1, 2], "classify"),
                                        ([0.5, 1.25, 7.0], "regress")])
def test_task_from_the_label_and_its_override(tmp_path: Path, label: list[Any], task: str) -> None:
    rng = np.random.default_rng(0)
    rows = [[f"{rng.normal():.3f}", label[i % 3] if task == "classify" else f"{rng.normal() * 5 + 3:.3f}"]
            for i in range(40)]
    path = write_csv(tmp_path / "t.csv", ["x", "target"], rows)
    ds = load_table(path, cfg(path))
    assert ds.task == task
    assert ds.target_name == "target"  # the label column: predictions are named after it
    if task == "regress":
        assert ds.classes == [] and ds.train.y.dtype == torch.float32
    else:
        assert ds.train.y.dtype == torch.int64
    if task == "classify" and label[0] == 0:
        assert load_table(path, cfg(path, task="regress")).task == "regress"


def test_integer_label_with_many_values_is_a_regression(tmp_path: Path) -> None:
    rows = [[i * 0.1, 25 + (i * 37) % 300] for i in range(100)]
    path = write_csv(tmp_path / "t.csv", ["x", "y"], rows)
    assert load_table(path, cfg(path)).task == "regress"
    assert tabular.table_task(path, cfg(path)) == "regress"  # known before loading: for the task defaults
    assert tabular.table_task(path, cfg(path, task="classify")) == "classify"
    assert tabular.table_task(tmp_path / "absent.csv", cfg(path)) == "classify"


# -- imputation, categories, statistics: from the training rows only --------------------------------------
def test_missing_numbers_get_the_training_median_and_an_indicator(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    c = cfg(path)
    ds = load_table(path, c)
    raw = read_table(path)
    rows = train_rows(path, c)
    train_nums = [float(raw.columns["num"][i]) for i in rows if raw.columns["num"][i]]
    col = ds.codec.numeric[0]
    assert col["indicator"] and col["median"] == pytest.approx(float(np.median(train_nums)))
    assert not ds.codec.numeric[1]["indicator"]  # count has no gaps: no indicator column
    x = ds.codec.encode(raw)
    gaps = [i for i, v in enumerate(raw.columns["num"]) if not v]
    assert torch.all(x[gaps, 0] == torch.tensor(col["median"], dtype=torch.float32))
    assert torch.all(x[gaps, 2] == 1) and x[:, 2].sum() == len(gaps)


def test_categories_come_from_train_and_unseen_ones_are_unknown(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    ds = load_table(path, cfg(path))
    cats = ds.codec.categorical[0]["categories"]
    assert cats == sorted([MISSING_CATEGORY, "blue", "green", "red"])  # missing is a category of its own
    rows = [{"num": 1.0, "count": 2, "colour": "red"}, {"num": 1.0, "count": 2, "colour": "purple"},
            {"num": None, "count": 2, "colour": None}, {"num": "n/a", "count": 2, "colour": "NaN"}]
    x, names = ds.codec.read(rows)
    assert names == ["row 1", "row 2", "row 3", "row 4"]
    assert x[:, 3].tolist() == [cats.index("red") + 1, 0, cats.index(MISSING_CATEGORY) + 1,
                                cats.index(MISSING_CATEGORY) + 1]
    assert x[2, 2] == 1 and x[3, 2] == 1 and x[0, 2] == 0


def test_a_category_seen_only_in_the_test_split_is_unknown(tmp_path: Path) -> None:
    rows = mixed_rows()
    c = cfg(write_csv(tmp_path / "a.csv", HEADER, rows))
    test_row = sorted(set(range(60)) - set(train_rows(Path(c.name), c)))[0]
    rows[test_row][2] = "violet"
    path = write_csv(tmp_path / "b.csv", HEADER, rows)
    ds = load_table(path, cfg(path))
    assert "violet" not in ds.codec.categorical[0]["categories"]
    assert (ds.test.x[:, 3] == 0).sum() == 1  # the test row reads as unknown


def test_standardisation_comes_from_train_and_leaves_indices_intact(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    ds = load_table(path, cfg(path))
    p = ds.preprocess
    assert p.kind == "array" and len(p.mean) == 4
    x = ds.train.x.double()
    assert p.mean[:3] == pytest.approx(x[:, :3].mean(0).tolist())
    assert p.std[:3] == pytest.approx(x[:, :3].std(0, correction=0).tolist())
    assert (p.mean[3], p.std[3]) == (0.0, 1.0)
    z = p.apply(ds.train.x)
    assert torch.equal(z[:, 3], ds.train.x[:, 3])  # category indices reach the model as they are
    assert z[:, :3].mean(0).abs().max() < 1e-5
    built = build_dataset(cfg(path), seed=3)  # keeps the test split and the statistics; carves val from train
    assert built.preprocess == p and torch.equal(built.test.x, ds.test.x) and built.val is not None
    assert len(built.train) + len(built.val) == len(ds.train)


def test_one_categorical_column_passes_through(tmp_path: Path) -> None:
    rows = [[["a", "b", "c"][i % 3], "x" if i % 3 else "y"] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["c", "label"], rows)
    ds = build_dataset(cfg(path))
    assert ds.preprocess.kind == "tokens"  # build_dataset must not standardise the indices
    assert set(ds.train.x[:, 0].tolist()) == {1.0, 2.0, 3.0}


def test_sources_routes_csv_tsv_and_parquet_to_the_table_loader(tmp_path: Path) -> None:
    rows = mixed_rows()
    for suffix, delim in ((".csv", ","), (".tsv", "\t")):
        path = write_csv(tmp_path / f"t{suffix}", HEADER, rows, delimiter=delim)
        ds = load(cfg(path))
        assert ds.modality == "table" and ds.notes[0].startswith("table:")
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = read_table(tmp_path / "t.csv")
    pq.write_table(pa.table(raw.columns), tmp_path / "t.parquet")
    ds = load(cfg(tmp_path / "t.parquet"))
    csv_ds = load(cfg(tmp_path / "t.csv"))
    assert torch.equal(ds.train.x, csv_ds.train.x) and ds.codec.to_dict() == csv_ds.codec.to_dict()


# -- the codec ----------------------------------------------------------------------------------------
def test_codec_round_trips_through_json_and_reads_every_input_kind(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    ds = load_table(path, cfg(path))
    d = json.loads(json.dumps(ds.codec.to_dict()))
    codec = codec_from_dict(d)
    assert isinstance(codec, TableCodec) and codec.to_dict() == ds.codec.to_dict()
    x, names = codec.read(path)
    assert torch.equal(x, ds.codec.encode(read_table(path)))
    assert names[:2] == ["line 2", "line 3"]
    assert sorted(map(tuple, x.tolist())) == sorted(map(tuple, torch.cat([ds.train.x, ds.test.x]).tolist()))
    rows = [dict(zip(HEADER, r, strict=True)) | {"extra": 1} for r in mixed_rows()[:5]]
    assert torch.equal(codec.read(rows)[0], x[:5])  # extra and label columns ignored
    assert torch.equal(codec.read(x[:3])[0], x[:3]) and codec.read(x[0].numpy())[1] == ["[0]"]  # encoded rows
    with pytest.raises(LaminaError, match=r"must have shape \(N, 4\)"):
        codec.read(torch.zeros(2, 3))
    pd = pytest.importorskip("pandas")
    assert torch.equal(codec.read(pd.read_csv(path).head(5))[0], x[:5])


def test_codec_names_the_missing_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    codec = load_table(path, cfg(path)).codec
    with pytest.raises(LaminaError, match=r"lacks the column\(s\) 'count', 'colour'"):
        codec.read([{"num": 1.0, "cuont": 1}])
    with pytest.raises(LaminaError, match=r"column\(s\) 'num' that the model reads \(did you mean 'nmu'"):
        codec.read([{"nmu": 1.0, "count": 1, "colour": "red"}])
    with pytest.raises(LaminaError, match="corrupt"):
        codec_from_dict({"kind": "table", "numeric": [{"name": "a"}]})


def test_write_predictions_appends_a_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows(6))
    out = write_predictions(path, tmp_path / "out" / "p.csv", ["a", "b", "c", "d", "e", "f"], "Label")
    with out.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == [*HEADER, "Label_predicted"] and [r[-1] for r in rows[1:]] == list("abcdef")
    assert rows[1][:-1] == [str(v) for v in mixed_rows(6)[0]]
    with pytest.raises(LaminaError, match="2 predictions for the 6 rows"):
        write_predictions(path, tmp_path / "q.csv", [1, 2], "y")


# -- bad inputs: one line each ------------------------------------------------------------------------
def test_misspelt_label_column_suggests_the_nearest(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    with pytest.raises(LaminaError, match=r"no column 'lable'.*did you mean 'Label'"):
        load_table(path, cfg(path, label_column="lable"))


def test_label_with_one_value_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [[i, "same"] for i in range(20)])
    with pytest.raises(LaminaError, match=r"holds one value \('same'\) in every row.*data.label_column"):
        load_table(path, cfg(path))


def test_ragged_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1,2,x\n3,4,z\n5,6\n")
    with pytest.raises(LaminaError, match="line 4 has 2 fields, the header has 3"):
        load_table(path, cfg(path))


def test_text_in_a_numeric_column_is_missing_with_a_note(tmp_path: Path) -> None:
    rows = [[f"{i * 0.5}", "a" if i % 2 else "b"] for i in range(40)]
    rows[7][0] = "oops"
    path = write_csv(tmp_path / "t.csv", ["x", "y"], rows)
    ds = load_table(path, cfg(path))
    assert ds.codec.numeric[0]["name"] == "x"
    if 7 in train_rows(path, cfg(path)):
        assert any("non-numeric value(s) (line 9: 'oops')" in n and "treated as missing" in n for n in ds.notes)
    x, _ = ds.codec.read([{"x": "oops"}])
    assert x[0, 0] == ds.codec.numeric[0]["median"]


def test_more_columns_than_rows_is_allowed_with_a_note(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [[*(f"{v:.3f}" for v in rng.normal(size=30)), "a" if i % 2 else "b"] for i in range(12)]
    path = write_csv(tmp_path / "t.csv", [*(f"f{j}" for j in range(30)), "y"], rows)
    ds = load_table(path, cfg(path, min_class_examples=0))
    assert ds.input_shape == (30,) and any("more columns than rows is allowed" in n for n in ds.notes)


@pytest.mark.parametrize("text,match", [
    ("", "is empty: a table needs a header row"),
    ("a,b,y\n", "has a header but no rows"),
    ("a,a,y\n1,2,x\n", "duplicate column names 'a'"),
    ("a,,y\n1,2,x\n", "column 2 of the header has no name"),
    ("y\n1\n2\n", "only the label column"),
    ("a,y\n1,x\n2,z\n", "at least 5"),
])  # fmt: skip
def test_malformed_files_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(LaminaError, match=match) as e:
        load_table(path, cfg(path))
    assert "\n" not in str(e.value)


def test_a_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("a,y\n1,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(LaminaError, match=r"is not UTF-8 text.*save it as UTF-8"):
        load_table(path, cfg(path))


def test_parquet_predictions_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = write_csv(tmp_path / "t.csv", HEADER, mixed_rows())
    codec = load_table(path, cfg(path)).codec
    out = write_predictions(path, tmp_path / "p.parquet", list(range(60)), "pred")
    x, names = codec.read(out)  # a Parquet table: rows named by number, the extra column ignored
    assert torch.equal(x, codec.read(path)[0]) and names[0] == "row 1"
    assert read_table(out).columns["pred"] == list(range(60))


def test_regression_rows_without_a_target_are_dropped(tmp_path: Path) -> None:
    rows = [[i * 0.1, "" if i == 4 else ("NaN" if i == 9 else f"{i * 1.7 + 0.3:.2f}")] for i in range(50)]
    path = write_csv(tmp_path / "t.csv", ["x", "y"], rows)
    ds = load_table(path, cfg(path))
    assert ds.task == "regress" and len(ds.train) + len(ds.test) == 48
    assert any("2 row(s) without a label dropped (the first: line 6)" in n for n in ds.notes)
    assert torch.isfinite(ds.train.y).all()


def test_forced_regression_of_names_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [[i, "ab"[i % 2]] for i in range(20)])
    with pytest.raises(LaminaError, match="regression needs numbers in 'y', but line 2 holds 'a'"):
        load_table(path, cfg(path, task="regress"))


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(LaminaError, match=r"pip install 'lamina\[tables\]'"):
        load_table(path, cfg(path))


def test_rare_classes_are_merged_into_other(tmp_path: Path) -> None:
    rows = [[i % 7, "a" if i < 30 else ("b" if i < 58 else ("c" if i < 60 else "d"))] for i in range(62)]
    path = write_csv(tmp_path / "t.csv", ["x", "y"], rows)
    ds = load_table(path, cfg(path))
    assert ds.classes == ["a", "b", "other"] and any("merged into 'other'" in n for n in ds.notes)


# -- example tables ----------------------------------------------------------------------------------
def test_example_tables(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    digits = load_table(write_sklearn_table("digits", tmp_path / "digits.csv"), DataConfig())
    assert digits.input_shape[0] <= 64 and digits.classes == [str(i) for i in range(10)]
    diabetes = load_table(write_sklearn_table("diabetes", tmp_path / "diabetes.csv"), DataConfig())
    assert diabetes.task == "regress" and diabetes.input_shape == (10,)
    synth = load_table(make_synthetic_table(tmp_path / "s.csv", 300, seed=1), DataConfig())
    assert synth.classes == ["high", "low", "mid"] and synth.codec.dropped == ["id"]
    assert [c["name"] for c in synth.codec.categorical] == ["color", "size"]
    assert [c["name"] for c in synth.codec.numeric if c["indicator"]] == ["x3"]


# -- end to end: predict on raw rows gives what the evaluation gave -------------------------------------
def test_train_then_predict_raw_csv_rows_equals_the_evaluation(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    import lamina
    from lamina.artifacts import Classifier
    from lamina.config import load_config
    from lamina.session import build_task

    path = make_synthetic_table(tmp_path / "s.csv", 240, seed=2)
    run = lamina.train(str(path), epochs=2, quiet=True, out=tmp_path / "run",
                       overrides=["train.threads=1", "train.gradient_flow_every=0", "energy.meter=\"off\""])
    assert run.summary["task"] == "classify" and run.summary["test_examples"] == 48
    model = lamina.load(run.dir)
    assert isinstance(model, Classifier)
    # the evaluation's outputs on the test split, through the task's own eval loader
    c = load_config(run.dir / "config.yaml")
    ds = build_dataset(c.data, seed=c.train.seed)
    task = build_task(ds, c)
    loader = task.eval_loader(ds.test, ds, c.data, device=torch.device("cpu"))
    with torch.no_grad():
        evaluated = torch.cat([model.model(x).float().log_softmax(1) for x, _ in loader])
    # the same rows, read raw from the CSV by the codec saved in model.json
    raw, names = model.read(path)
    index = {tuple(r): i for i, r in enumerate(raw.tolist())}
    rows = [index[tuple(r)] for r in ds.test.x.tolist()]
    proba = model.predict_proba(path)[rows]
    assert torch.equal(proba, evaluated.exp())
    correct = (proba.argmax(1) == ds.test.y).float().mean().item()
    assert math.isclose(correct, run.summary["test_accuracy"], abs_tol=1e-9)
    preds = model.predict(path)
    out = write_predictions(path, tmp_path / "preds.csv", preds, "prediction")
    with out.open() as f:
        got = list(csv.DictReader(f))
    assert [r["prediction"] for r in got] == preds and len(got) == 240 and names[0] == "line 2"
    from lamina.cli.main import main  # the CLI reads the same rows: one answer per row, and --out

    assert main(["predict", str(run.dir), str(path), "--top-k", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 240 and [line.split(": ")[1].split()[0] for line in printed] == preds
    assert main(["predict", str(run.dir), str(path), "--out", str(tmp_path / "cli.csv")]) == 0
    with (tmp_path / "cli.csv").open() as f:
        assert [r[-1] for r in list(csv.reader(f))[1:]] == preds
