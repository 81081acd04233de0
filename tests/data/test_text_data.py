"""Text in: vocabularies round-trip any text, sources declare their task, bad text gets one line."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.config import DataConfig
from lamina.data.base import build_dataset
from lamina.data.text import ByteVocab, CharVocab, codec_from_dict, make_vocab
from lamina.errors import LaminaError

HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
BOOK = "It is a truth universally acknowledged, that a single man in possession of a good fortune.\n" * 30


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_byte_vocabulary_round_trips_any_text(text):
    v = ByteVocab()
    assert v.decode(v.encode(text)) == text
    assert codec_from_dict(v.to_dict()).encode(text) == v.encode(text)
    stream = v.stream_decoder()
    assert "".join(stream(i) for i in v.encode(text)) == text  # multi-byte characters come out whole


@given(st.text(min_size=1))
@settings(max_examples=200, deadline=None)
def test_char_vocabulary_round_trips_the_text_it_was_built_from(text):
    for pad in (False, True):
        v = CharVocab(text, pad=pad)
        ids = v.encode(text)
        assert v.decode(ids) == text and (min(ids) >= 1 if pad else True)
        assert codec_from_dict(v.to_dict()).decode(ids) == text


@pytest.mark.skipif(not HAS_TOKENIZERS, reason="needs tokenizers (lamina[text])")
@given(st.text())
@settings(max_examples=50, deadline=None)
def test_bpe_vocabulary_round_trips_any_text(text):
    v = _bpe()
    assert v.decode(v.encode(text)) == text
    back = codec_from_dict(v.to_dict())
    assert back.encode(text) == v.encode(text)
    stream = v.stream_decoder()
    assert "".join(stream(i) for i in v.encode(text)) == text


_BPE = []


def _bpe():
    if not _BPE:
        _BPE.append(make_vocab("bpe", BOOK + "héllo wörld ☃ 日本", vocab_size=300))
    return _BPE[0]


def test_a_character_outside_the_vocabulary_is_a_one_line_error():
    with pytest.raises(LaminaError, match=r"outside the model.s character vocabulary.*data.vocab=byte"):
        CharVocab("abc").encode("abz")


def test_a_text_file_is_a_language_model_with_a_contiguous_tail(tmp_path):
    path = tmp_path / "book.txt"
    text = "".join(chr(97 + i % 26) for i in range(1000))
    path.write_text(text)
    ds = build_dataset(DataConfig(name=str(path), val_fraction=0.1, context=16))
    assert ds.task == "language-model" and ds.modality == "text" and ds.test is None
    v = ds.codec
    assert v.decode(ds.train.x.tolist()) == text[:900] and v.decode(ds.val.x.tolist()) == text[900:]
    assert "language model" in ds.summary


def test_a_folder_of_class_folders_of_text_is_classification(tmp_path):
    for c, word in (("pos", "good great fine"), ("neg", "bad awful poor")):
        (tmp_path / c).mkdir()
        for i in range(10):
            (tmp_path / c / f"{i}.txt").write_text(f"{word} {i}")
    ds = build_dataset(DataConfig(name=str(tmp_path), context=20))
    assert ds.task == "classify" and ds.classes == ["neg", "pos"] and ds.modality == "text"
    assert ds.train.x.dtype == torch.long and ds.train.x.shape[1] == 20 and len(ds.test) == 4
    assert int(ds.train.x.min()) == 0  # padding


def test_a_csv_with_text_and_label_columns_is_classification(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["body,stars"] + [f'"{"nice" if i % 2 else "bad"} {i}",{i % 2}' for i in range(20)]
    path.write_text("\n".join(rows))
    ds = build_dataset(DataConfig(name=str(path), text_column="body", label_column="stars"))
    assert ds.task == "classify" and ds.classes == ["0", "1"]


@pytest.mark.parametrize("content,match", [
    ("", "empty or holds only whitespace"),
    ("  \n\t\n ", "empty or holds only whitespace"),
    ("short", "fewer than one context window"),
])
def test_bad_text_files(tmp_path, content, match):
    path = tmp_path / "t.txt"
    path.write_text(content)
    with pytest.raises(LaminaError, match=match):
        build_dataset(DataConfig(name=str(path)))


def test_bytes_that_are_not_utf8_are_an_error_unless_byte_level(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("caf\xe9 " * 200).encode("latin-1"))
    with pytest.raises(LaminaError, match=r"not UTF-8.*data.vocab=byte"):
        build_dataset(DataConfig(name=str(path), context=16))
    ds = build_dataset(DataConfig(name=str(path), context=16, vocab="byte"))
    assert ds.codec.size == 256


def test_csv_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,a\nworld,\n")
    with pytest.raises(LaminaError, match="empty label"):
        build_dataset(DataConfig(name=str(path)))
    with pytest.raises(LaminaError, match=r"no column .txt.*data.text_column"):
        build_dataset(DataConfig(name=str(path), text_column="txt"))


def test_a_class_folder_with_other_files_names_them(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("hello")
    (tmp_path / "b" / "y.txt").write_text("world")
    (tmp_path / "b" / "z.png").write_bytes(b"\x89PNG")
    with pytest.raises(LaminaError, match=r"z\.png"):
        build_dataset(DataConfig(name=str(tmp_path)))
