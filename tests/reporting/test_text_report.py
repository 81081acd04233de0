"""The report of text runs: a language model (curves in bits per character, samples, next-character
probes, attention maps) and a text classifier (mistakes as text, token attributions), from
synthetic run folders and end to end through `lamina inspect` and `lamina report`."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

import lamina
from lamina.cli.main import main
from lamina.reporting import figures, write_report

TINY = ["data.context=32", "model.width=32", "model.depth=2", "data.batch_size=8", "train.epochs=2"]
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.\n") * 16
LM_HEADINGS = ["Summary", "Learning curves", "Samples written during training", "What each block learned",
               "Attention maps"]
CLASSIFIER_ONLY = ["Hierarchy", "Activations", "Attributions", "Token attributions", "Confusion"]


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _headings(page: str) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", page)


def make_lm_run(root: Path) -> Path:
    """A language-model run folder as lamina train and lamina inspect write it, with synthetic values."""
    run = root / "lm"
    _write(run / "summary.json", {"task": "language-model", "val_bpc": 2.4567, "val_loss": 1.7029, "val_tokens": 999,
                                  "context": 8, "train_seconds": 12.0, "epochs": 2, "steps": 40, "params": 26784,
                                  "model": "gpt", "dataset": "book.txt", "train_examples": 9000, "lamina": "0.1.0"})
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "book.txt", "batch_size": 8, "context": 8},
                                                     "model": {"name": "gpt"}, "train": {"epochs": 2}}))
    _write(run / "model.json", {"task": "language-model", "modality": "text",
                                "arch": {"name": "gpt", "width": 32, "depth": 2}})
    lines = [{"kind": "step", "step": s, "epoch": 1 + s // 20, "loss": 3.0 / s**0.2, "bpc": 4.3 / s**0.2}
             for s in range(1, 41, 5)]
    lines += [{"kind": "epoch", "epoch": e, "step": 20 * e, "train_loss": 2.0 / e, "train_bpc": 2.9 / e,
               "val_loss": 2.1 / e, "val_bpc": 3.0 / e} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "samples.jsonl").write_text("".join(json.dumps({"epoch": e, "step": 20 * e, "text": t}) + "\n" for e, t in
                                               ((1, "th <b>bold</b> & co\nnew line"), (2, "It is a truth"))))
    tokens = list("It is <a>")  # markup in tokens checks the escaping
    rng = np.random.default_rng(0)

    def head() -> list[list[float]]:
        w = np.tril(rng.random((len(tokens), len(tokens))) + 0.1)
        return (w / w.sum(1, keepdims=True)).round(4).tolist()

    ins = run / "inspection"
    _write(ins / "probes.json", {"target": "class of the next character", "classes": ["letter", "capital", "digit",
                                 "space", "punctuation", "other"], "baseline": 0.55, "majority": "letter",
                                 "positions": {"train": 500, "test": 200}, "windows": {"train": 20, "test": 8},
                                 "stages": [{"stage": s, "depth": d, "accuracy": a} for s, d, a in
                                            (("embed", 1, 0.6), ("block1", 2, 0.7), ("block2", 3, 0.75))]})
    _write(ins / "attention.json", {"source": "validation tail", "start": 0, "ids": list(range(len(tokens))),
                                    "tokens": tokens, "stages": [{"stage": f"block{b}", "heads": [head(), head()]}
                                                                 for b in (1, 2)]})
    _write(ins / "inspection.json", {"lamina": "0.1.0", "task": "language-model", "seconds": {"total": 1.5},
                                     "skipped": {}, "max_examples": 20, "peak_rss_mb": 300.0})
    return run


def make_text_classifier_run(root: Path) -> Path:
    run = root / "tc"
    classes = ["happy", "sad <x>"]
    _write(run / "summary.json", {"task": "classify", "test_accuracy": 0.75, "test_loss": 0.5, "model": "textcnn",
                                  "confusion": [[5, 1], [2, 4]], "dataset": "reviews", "lamina": "0.1.0"})
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "reviews"}, "model": {"name": "textcnn"}}))
    _write(run / "model.json", {"task": "classify", "modality": "text", "classes": classes,
                                "arch": {"name": "textcnn", "width": 16}})
    ins = run / "inspection"
    _write(ins / "confusion.json", {"classes": classes, "matrix": [[5, 1], [2, 4]]})
    _write(ins / "misclassified.json", [{"index": 3, "true": 1, "predicted": 0, "confidence": 0.9,
                                         "text": "not <script>bad</script> at all"}])
    tokens = ["go", "od", " ", "<i>", "\n", "fine"]
    _write(ins / "attributions.json", {"kind": "tokens", "method": "integrated_gradients", "layer": "embed.wte",
                                       "baseline": "padding", "target": "predicted", "examples": [
                                           {"index": 0, "label": 0, "predicted": 0, "tokens": tokens,
                                            "values": [0.5, -0.25, 0.0, 1.0, -1.0, 0.1]}]})
    _write(ins / "inspection.json", {"lamina": "0.1.0", "task": "classify", "seconds": {"total": 1.0},
                                     "skipped": {"filters": "a text model"}, "max_examples": 20, "peak_rss_mb": 300.0})
    return run


def test_a_language_model_report(tmp_path: Path):
    page = write_report(make_lm_run(tmp_path)).read_text(encoding="utf-8")
    assert _headings(page) == LM_HEADINGS
    assert "could not be drawn" not in page
    assert "validation bits per character" in page and "2.457" in page and "test accuracy" not in page
    assert "1.7029 nats per token" in page and "999 validation tokens" in page
    assert "Best validation bits per character 1.500 after epoch 2 of 2." in page
    assert "th &lt;b&gt;bold&lt;/b&gt; &amp; co\nnew line" in page and "<b>bold" not in page  # samples, escaped
    assert "epoch 1, step 20" in page and "epoch 2, step 40" in page
    assert "always answering the most common class (letter) scores 55.0" in page and "+20.0" in page
    assert "It is &lt;a&gt;" in page and "<a>" not in page  # the attention sentence, escaped
    assert page.count('alt="attention maps of block') == 2


def test_a_text_classifier_report(tmp_path: Path):
    page = write_report(make_text_classifier_run(tmp_path)).read_text(encoding="utf-8")
    heads = _headings(page)
    assert "Token attributions" in heads and "Confusion &amp; mistakes" in heads and "Attributions" not in heads
    assert not set(LM_HEADINGS[2:]) & set(heads)
    assert "could not be drawn" not in page and "<script" not in page and "<i>" not in page
    assert "not &lt;script&gt;bad&lt;/script&gt; at all" in page  # the mistake, as text
    assert "sad &lt;x&gt;" in page
    spans = re.findall(r'<span style="background:(rgba\([^)]*\))" title="([^"]*)">([^<]*)</span>', page)
    assert [s[2] for s in spans] == ["go", "od", " ", "&lt;i&gt;", "\n", "fine"]  # one span per token, escaped
    assert spans[3][0] == "rgba(220,38,38,0.75)" and spans[4][0] == "rgba(37,99,235,0.75)"  # the largest: full colour
    assert spans[2][0] == "rgba(220,38,38,0.0)" and spans[1][1] == "-0.2500"


def test_new_figures_are_pngs():
    w = (np.tril(np.ones((20, 20))) / np.arange(1, 21)[:, None]).tolist()
    for n in (1, 3, 12):
        png = figures.attention_heads("block1", list("中文 tokens\nhere ok!!!"), [w] * n)  # CJK: no glyph warnings
        with Image.open(io.BytesIO(png)) as im:  # ~100 dpi, readable full width on a phone
            assert im.format == "PNG" and 200 <= im.width <= 900 and 150 <= im.height <= 1200
    png = figures.probe_accuracy([{"stage": "embed", "depth": 1, "accuracy": 0.5}], baseline=0.6)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.token_label(" the\n") == "·the↵" and figures.token_label("") == "…"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-runs")
    (root / "book.txt").write_text(TEXT)
    for c, words in (("happy", "good great fine lovely"), ("sad", "bad awful poor grim")):
        (root / "data" / c).mkdir(parents=True)
        for i in range(30):
            (root / "data" / c / f"{i}.txt").write_text(" ".join([*words.split()[i % 4 :], str(i)]))
    lm = lamina.train(str(root / "book.txt"), out=str(root / "lm"), quiet=True, overrides=TINY).dir
    tc = lamina.train(str(root / "data"), out=str(root / "tc"), quiet=True,
                      overrides=["model.width=16", "data.context=24", "train.epochs=2", "data.batch_size=8"]).dir
    return {"lm": lm, "tc": tc}


def test_lamina_report_on_a_language_model_run(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    run = trained["lm"]
    assert main(["report", str(run), "--max-examples", "16"]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert _headings(page) == [*LM_HEADINGS, "Energy and CO2e"] and "could not be drawn" not in page
    assert not set(CLASSIFIER_ONLY) & {h.split(":")[0] for h in _headings(page)}
    assert main(["inspect", str(run), "--max-examples", "16"]) == 0
    out = capsys.readouterr().out
    assert "next-character-class probe accuracy by depth: embed" in out and "majority class" in out
    pngs = {p.name for p in (run / "inspection").glob("*.png")}  # lamina inspect draws the figures too
    assert {"probes.png", "attention_block1.png", "attention_block2.png", "learning_curves.png"} <= pngs
    assert "inspection written to" in out and "(4 figures)" in out
    seconds = json.loads((run / "inspection" / "inspection.json").read_text())["seconds"]
    assert set(seconds) == {"load", "probes", "attention", "total"}


def test_lamina_report_on_a_text_classifier_run(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    run = trained["tc"]
    assert main(["report", str(run), "--max-examples", "32"]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    heads = _headings(page)
    for h in ("Summary", "Learning curves", "Hierarchy: what each stage learned", "Activations",
              "Token attributions", "Confusion &amp; mistakes"):
        assert h in heads
    assert "could not be drawn" not in page and "Attributions" not in heads
    assert "filters: a text model" in page  # skipped parts are said
    attr = json.loads((run / "inspection" / "attributions.json").read_text())
    assert page.count('<span style="background:rgba(') == sum(len(ex["tokens"]) for ex in attr["examples"])
    assert main(["inspect", str(run), "--max-examples", "32"]) == 0
    assert "linear probe accuracy by depth: embed" in capsys.readouterr().out
