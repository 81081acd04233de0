"""Text in: vocabularies (codecs) and the text sources (a ``.txt`` file, a folder of them, a CSV).

A vocabulary turns text into token ids and back, and is saved in ``model.json`` so that the saved
model can be used alone:

- ``byte``: the UTF-8 bytes (256 tokens): any text works, nothing is unknown;
- ``char``: the distinct characters of the text (nanoGPT's ``shakespeare_char``);
- ``bpe``: byte-level BPE through the Hugging Face ``tokenizers`` library (``pip install
  lamina[text]``), trained on the training split only.

A language-model text is split into a head (training) and a contiguous tail (validation,
``data.val_fraction`` of the characters), never random lines: windows cut from the head never
overlap the tail. A classifier's texts are encoded to ``data.context`` tokens each (padded with
id 0, which no token uses, or cut).
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lamina.config import DataConfig
from lamina.data.base import Dataset, Preprocess, Split
from lamina.errors import LaminaError

DEFAULT_CONTEXT = 256  # tokens per window / per example when data.context is 0
MAX_CLASSIFY_CONTEXT = 512


class Vocab:
    """Base of the codecs: ``encode`` text to ids, ``decode`` ids to text; ``pad``: id 0 is padding."""

    kind = ""
    size: int
    pad: bool = False

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def start_id(self) -> int:
        """The token a prompt-less generation starts from (a newline where there is one)."""
        ids = self.encode("\n")
        return ids[0] if len(ids) == 1 else int(self.pad)

    def stream_decoder(self) -> Callable[[int], str]:
        """A function fed one id at a time that returns the text completed so far (may be '')."""
        return lambda i: self.decode([i])


class CharVocab(Vocab):
    """One token per distinct character, in sorted order (ids from 1 with ``pad``)."""

    kind = "char"

    def __init__(self, chars: str, *, pad: bool = False) -> None:
        self.chars, self.pad = "".join(sorted(set(chars))), pad
        self.index = {c: i + int(pad) for i, c in enumerate(self.chars)}
        self.size = len(self.chars) + int(pad)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            unknown = sorted({c for c in text if c not in self.index})
            shown = ", ".join(repr(c) for c in unknown[:5])
            raise LaminaError(f"the text has {len(unknown)} character(s) outside the model's character vocabulary "
                              f"({shown}): remove them, or train with data.vocab=byte") from e

    def decode(self, ids: list[int]) -> str:
        off = int(self.pad)
        return "".join(self.chars[i - off] for i in ids if off <= i < self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars, "pad": self.pad}


class ByteVocab(Vocab):
    """The 256 byte values of UTF-8 text (ids from 1 with ``pad``)."""

    kind = "byte"

    def __init__(self, *, pad: bool = False) -> None:
        self.pad = pad
        self.size = 256 + int(pad)

    def encode(self, text: str) -> list[int]:
        off = int(self.pad)
        return [b + off for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        off = int(self.pad)
        return bytes(i - off for i in ids if off <= i < self.size).decode("utf-8", errors="replace")

    def stream_decoder(self) -> Callable[[int], str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span several bytes
        off = int(self.pad)
        return lambda i: decoder.decode(bytes([i - off])) if off <= i < self.size else ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pad": self.pad}


class BpeVocab(Vocab):
    """Byte-level BPE (Hugging Face ``tokenizers``); the tokenizer's JSON travels in ``model.json``."""

    kind = "bpe"

    def __init__(self, tokenizer: Any, *, pad: bool = False) -> None:
        self.tokenizer, self.pad = tokenizer, pad
        self.size = tokenizer.get_vocab_size() + int(pad)

    @classmethod
    def train(cls, text: str, vocab_size: int, *, pad: bool = False) -> BpeVocab:
        tokenizers = _tokenizers()
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                 initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
        chunk = 1 << 16
        tok.train_from_iterator((text[i : i + chunk] for i in range(0, len(text), chunk)), trainer=trainer)
        return cls(tok, pad=pad)

    def encode(self, text: str) -> list[int]:
        off = int(self.pad)
        return [i + off for i in self.tokenizer.encode(text).ids]

    def decode(self, ids: list[int]) -> str:
        off = int(self.pad)
        return self.tokenizer.decode([i - off for i in ids if off <= i < self.size])

    def stream_decoder(self) -> Callable[[int], str]:
        ids: list[int] = []
        done = [""]

        def feed(i: int) -> str:
            ids.append(i)
            text = self.decode(ids)
            if text.endswith("\ufffd"):  # a character still incomplete
                return ""
            new, done[0] = text[len(done[0]):], text
            return new

        return feed

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": self.tokenizer.to_str(), "pad": self.pad}


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise LaminaError("data.vocab=bpe needs the tokenizers package: pip install tokenizers "
                          "(or lamina[text]); or use data.vocab=char or byte") from None
    return tokenizers


def codec_from_dict(d: Any) -> Vocab:
    """The vocabulary saved by :meth:`Vocab.to_dict` (one-line errors for a corrupt one)."""
    if not isinstance(d, dict) or d.get("kind") not in ("char", "byte", "bpe"):
        raise LaminaError("model.json has no valid 'vocab' (kind char, byte or bpe): it is corrupt; train again")
    pad = bool(d.get("pad", False))
    if d["kind"] == "byte":
        return ByteVocab(pad=pad)
    if d["kind"] == "char":
        if not isinstance(d.get("chars"), str) or not d["chars"]:
            raise LaminaError("model.json's character vocabulary is empty or corrupt; train again")
        return CharVocab(d["chars"], pad=pad)
    try:
        tok = _tokenizers().Tokenizer.from_str(str(d.get("tokenizer")))
    except Exception as e:  # tokenizers raises its own exception type
        raise LaminaError(f"model.json's BPE tokenizer does not load ({type(e).__name__}); train again") from None
    return BpeVocab(tok, pad=pad)


def make_vocab(kind: str, text: str, *, vocab_size: int = 1024, pad: bool = False) -> Vocab:
    """A vocabulary of ``kind`` (char, byte, bpe) built from ``text`` (the training text)."""
    if kind == "byte":
        return ByteVocab(pad=pad)
    if kind == "char":
        return CharVocab(text, pad=pad)
    if kind == "bpe":
        if vocab_size < 257:
            raise LaminaError(f"data.vocab_size must be at least 257 for byte-level BPE, got {vocab_size}")
        return BpeVocab.train(text, vocab_size, pad=pad)
    raise LaminaError(f"unknown data.vocab '{kind}': use char, byte or bpe")


def read_text(path: Path, vocab: str) -> str:
    """A text file's contents; bytes that are not UTF-8 are an error (or, with ``vocab=byte``, replaced)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LaminaError(f"cannot read {path}: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if vocab == "byte":
            return raw.decode("utf-8", errors="replace")
        raise LaminaError(f"{path} is not UTF-8 text (byte {e.start} is {raw[e.start]:#04x}): convert it to UTF-8, "
                          "or set data.vocab=byte to train on its bytes") from None


# -- a language model's text ----------------------------------------------------------------------
def language_model_dataset(name: str, text: str, cfg: DataConfig, *, source: str = "") -> Dataset:
    """A language-model dataset from one text: the head for training, the tail for validation."""
    if not text.strip():
        raise LaminaError(f"{name} is empty or holds only whitespace: give a text to learn from")
    fraction = cfg.val_fraction or 0.1
    cut = int(len(text) * (1 - fraction))  # on characters, as nanoGPT's prepare.py splits
    vocab = make_vocab(cfg.vocab, text if cfg.vocab == "char" else text[:cut], vocab_size=cfg.vocab_size)
    train, val = vocab.encode(text[:cut]), vocab.encode(text[cut:])
    context = cfg.context or DEFAULT_CONTEXT
    if len(train) <= context:
        raise LaminaError(f"{name} has {len(train):,} training tokens, fewer than one context window of {context} "
                          f"plus one: give a longer text or a smaller data.context")
    if len(val) < 2:
        raise LaminaError(f"{name}'s validation tail ({fraction:.0%} of the text) holds {len(val)} token(s): give a "
                          "longer text or a larger data.val_fraction")
    summary = (f"text: {len(text) / 1e6:.2f} M characters, {vocab.kind}-level vocabulary of {vocab.size}, "
               f"language model; {len(train):,} training and {len(val):,} validation tokens; "
               "choose with data.vocab=char|byte|bpe, data.context, data.val_fraction")
    return Dataset(name=name, classes=[], train=Split(torch.tensor(train, dtype=torch.long)),
                   val=Split(torch.tensor(val, dtype=torch.long)), modality="text", task="language-model",
                   preprocess=Preprocess(kind="tokens"), source=source or name, codec=vocab, summary=summary,
                   chars_per_token=(len(text) - cut) / len(val))


# -- text classification -----------------------------------------------------------------------------
def classification_dataset(name: str, texts: list[str], labels: list[str], cfg: DataConfig, *,
                           test: tuple[list[str], list[str]] | None = None, source: str = "") -> Dataset:
    """Texts with class names: each encoded to ``data.context`` tokens (id 0 pads); the test split is
    carved (stratified) by ``build_dataset`` unless ``test`` gives one."""
    if not texts:
        raise LaminaError(f"{name} holds no texts to classify")
    empty = [i for i, lab in enumerate(labels) if not str(lab).strip()]
    if empty:
        raise LaminaError(f"{name}: {len(empty)} example(s) have an empty label (the first is example {empty[0] + 1}):"
                          " give every example a class")
    classes = sorted(set(labels) | set(test[1] if test else []))
    train_text = "\n".join(texts)
    vocab = make_vocab(cfg.vocab, train_text, vocab_size=cfg.vocab_size, pad=True)
    lengths = sorted(len(vocab.encode(t)) for t in texts[:2000])
    context = cfg.context or min(MAX_CLASSIFY_CONTEXT, max(8, lengths[int(0.95 * (len(lengths) - 1))]))

    def encode(items: list[str], labs: list[str]) -> Split:
        x = torch.zeros(len(items), context, dtype=torch.long)
        for i, t in enumerate(items):
            ids = encode_known(vocab, t)[:context]
            x[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return Split(x, torch.tensor([classes.index(lab) for lab in labs], dtype=torch.long))

    summary = (f"text: {len(texts):,} examples, {len(classes)} classes, {vocab.kind}-level vocabulary of "
               f"{vocab.size}, {context} tokens each, classification; choose with data.vocab=char|byte|bpe, "
               "data.context, data.task=language-model")
    return Dataset(name=name, classes=classes, train=encode(texts, labels),
                   test=encode(*test) if test else None, modality="text", task="classify",
                   preprocess=Preprocess(kind="tokens"), source=source or name, codec=vocab, summary=summary)


def encode_known(vocab: Vocab, text: str) -> list[int]:
    """Encode, dropping characters a character vocabulary does not know (test texts may have new ones)."""
    if isinstance(vocab, CharVocab):
        return [vocab.index[c] for c in text if c in vocab.index]
    return vocab.encode(text)


def load_text_path(path: Path, cfg: DataConfig) -> Dataset:
    """A ``.txt`` file (a language model), a folder of ``.txt`` files (one text: a language model)
    or of class sub-folders of ``.txt`` files (classification), or a CSV of text and label columns."""
    name = path.name
    if path.suffix.lower() in (".csv", ".tsv"):
        return _load_csv(path, cfg)
    if path.is_file():
        if cfg.task == "classify":
            raise LaminaError(f"{path} is one text: it can train a language model, not a classifier; give a folder "
                              "of class sub-folders of .txt files or a CSV for classification")
        return language_model_dataset(name, read_text(path, cfg.vocab), cfg, source=str(path))
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
    if subdirs and cfg.task != "language-model":
        texts, labels, odd = [], [], []
        for d in subdirs:
            for f in sorted(d.iterdir()):
                if f.suffix.lower() == ".txt":
                    texts.append(read_text(f, cfg.vocab))
                    labels.append(d.name)
                elif not f.name.startswith("."):
                    odd.append(str(f))
        if odd:
            raise LaminaError(f"{path}: class folders must hold only .txt files; these do not fit: "
                              f"{', '.join(odd[:3])}{' ...' if len(odd) > 3 else ''}")
        return classification_dataset(name, texts, labels, cfg, source=str(path))
    txt = [f for f in (files if not subdirs else sorted(path.rglob("*.txt"))) if f.suffix.lower() == ".txt"]
    if not txt:
        raise LaminaError(f"{path} holds no .txt files")
    return language_model_dataset(name, "\n\n".join(read_text(f, cfg.vocab) for f in txt), cfg, source=str(path))


def _load_csv(path: Path, cfg: DataConfig) -> Dataset:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LaminaError(f"cannot read {path} as a UTF-8 CSV ({type(e).__name__}: {str(e)[:80]})") from None
    if not rows:
        raise LaminaError(f"{path} has no rows")
    columns = list(rows[0])
    label_column = cfg.label_column or "label"
    for key, column in (("data.text_column", cfg.text_column), ("data.label_column", label_column)):
        if column not in columns:
            raise LaminaError(f"{path} has no column '{column}' ({key}); its columns are "
                              f"{', '.join(json.dumps(c) for c in columns)}: set {key}=NAME")
    texts = [r[cfg.text_column] or "" for r in rows]
    labels = [(r[label_column] or "").strip() for r in rows]
    return classification_dataset(path.name, texts, labels, cfg, source=str(path))


def is_text_path(path: Path) -> bool:
    """A ``.txt``/``.csv``/``.tsv`` file, or a folder whose files (or class sub-folders' files) are
    mostly ``.txt`` (the others are then named in an error by :func:`load_text_path`)."""
    if path.is_file():
        return path.suffix.lower() in (".txt", ".csv", ".tsv")
    if not path.is_dir():
        return False
    found = [f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")][:2000]
    texts = sum(f.suffix.lower() == ".txt" for f in found)
    return texts > 0 and texts >= len(found) - texts
