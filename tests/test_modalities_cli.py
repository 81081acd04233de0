"""Speech, sequences and tables through the command line: lamina train PATH detects the data, says so,
and lamina predict reads WAV files, FASTA records and CSV rows as training did."""

from __future__ import annotations

import csv
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from lamina.cli.main import main

RATE = 8000


def _wav(path: Path, freq: float, rng: np.random.Generator) -> Path:
    t = np.arange(RATE // 4) / RATE
    x = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.03 * rng.standard_normal()) * t) + 0.02 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for name, f in (("low", 300.0), ("high", 1500.0)):
        for i in range(40):
            _wav(root / name / f"{i}.wav", f, rng)
    (root / "README.md").write_text("two tones\n")  # a manifest beside the class folders is not an example
    return root


def test_a_folder_of_wavs_trains_says_so_and_predicts_wav_files(tones: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", str(tones), "data.sample_rate=8000", "data.clip_seconds=0.25",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    said = summary["data_notes"][0]  # what lamina train printed first (here --quiet): what it detected
    assert "audio: 80 audio files in 2 folders" in said and "data.modality=" in said
    capsys.readouterr()
    assert summary["modality"] == "audio" and summary["model"] == "melcnn" and summary["test_accuracy"] >= 0.9
    assert main(["predict", str(out), str(tones / "low" / "0.wav"), str(tones / "high" / "0.wav"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == [str(tones / "low" / "0.wav"), str(tones / "high" / "0.wav")]
    assert [r["top"][0]["class"] for r in rows] == ["low", "high"]


def test_make_keywords_is_wired_to_the_generator(monkeypatch, tmp_path: Path, capsys) -> None:
    import lamina.data.keywords as keywords

    seen = {}

    def fake(out: Path, **kw: object) -> dict[str, object]:
        seen.update(out=out, **kw)
        return {"clips": {"train": 3, "test": 1}}

    monkeypatch.setattr(keywords, "make_keywords", fake)
    assert main(["data", "make-keywords", str(tmp_path / "kw"), "--small", "--seed", "3"]) == 0
    assert seen["out"] == tmp_path / "kw" and seen["small"] is True and seen["seed"] == 3
    assert "train 3, test 1 clips" in capsys.readouterr().out


def _fasta(path: Path, n: int = 90) -> Path:
    rng = np.random.default_rng(1)
    motifs = ["GATTACAGATTACA", "CCCCGGGGCCCCGG"]
    with path.open("w") as f:
        for i in range(n):
            c = i % 2
            seq = "".join(rng.choice(list("ACGT"), 60))
            p = int(rng.integers(0, 40))
            seq = seq[:p] + motifs[c] + seq[p + 14:]
            f.write(f">seq{i} some organism\tBacteria; Phylum{c}; Class{c}\n{seq[:30]}\n{seq[30:].lower()}\n")
    return path


def test_a_fasta_file_trains_on_k_mers_and_predicts_records_by_id(tmp_path: Path, capsys) -> None:
    fasta, out = _fasta(tmp_path / "reads.fa"), tmp_path / "run"
    assert main(["train", str(fasta), "data.kmer=3", "data.min_class_examples=2", "--epochs", "8",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_notes"][0].startswith("sequence: a FASTA file")
    assert summary["modality"] == "sequence" and 0.0 <= summary["test_macro_f1"] <= 1.0
    assert set(summary["per_class"]) == {"Phylum0", "Phylum1"}
    capsys.readouterr()
    assert main(["predict", str(out), str(fasta), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 90 and lines[0].startswith("seq0: Phylum")


def _table(path: Path, n: int = 120) -> Path:
    rng = np.random.default_rng(2)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["size", "colour", "price", "kind"])
        for _ in range(n):
            size, colour = rng.uniform(0, 10), rng.choice(["red", "green", "blue"])
            w.writerow([f"{size:.3f}", colour, f"{3 * size + (5 if colour == 'red' else 0):.3f}",
                        "big" if size > 5 else "small"])
    return path


def test_a_table_trains_a_classifier_and_predict_writes_a_csv(tmp_path: Path, capsys) -> None:
    table, out = _table(tmp_path / "t.csv"), tmp_path / "run"
    assert main(["train", str(table), "data.label_column=kind", "--epochs", "10", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["data_notes"][0].startswith("table: a table (.csv)")
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(out), str(table), "--out", str(preds)]) == 0
    with preds.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and "predicted_kind" in rows[0]
    agree = np.mean([r["predicted_kind"] == r["kind"] for r in rows])
    assert agree > 0.8


def test_a_real_valued_label_is_a_regression_and_predict_prints_values(tmp_path: Path, capsys) -> None:
    table, out = _table(tmp_path / "t.csv"), tmp_path / "run"
    assert main(["train", str(table), "data.label_column=price", "--epochs", "10", "--out", str(out), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "test RMSE" in said and "R²" in said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "regress" and {"test_rmse", "test_mae", "test_r2"} <= set(summary)
    assert main(["predict", str(out), str(table), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 120 and all(isinstance(r["top"][0]["value"], float) for r in rows)
    assert main(["report", str(out)]) == 0  # a regression's report: no inspection, no error
    assert (out / "report.html").is_file()


def test_an_audio_classifier_is_attacked_in_waveform_units_and_a_table_is_refused(tones: Path, tmp_path: Path,
                                                                                  capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", str(tones), "data.sample_rate=8000", "data.clip_seconds=0.25", "--epochs", "3",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["attack", str(out), "--eps", "0.01", "--steps", "3", "--n", "8", "--json"]) == 0
    doc = json.loads((out / "robustness.json").read_text())
    assert doc["results"] and all(0.0 <= r["robust_accuracy"] <= 1.0 for r in doc["results"])
    table = tmp_path / "t.csv"
    _table(table)
    tab = tmp_path / "tab"
    assert main(["train", str(table), "data.label_column=kind", "--epochs", "2", "--out", str(tab), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["attack", str(tab)]) == 2
    assert "continuous inputs" in capsys.readouterr().err
