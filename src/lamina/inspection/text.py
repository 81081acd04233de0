"""Inspection of text models: next-character-class probes for language models, token texts and
token attributions for text classifiers.

A language model's stages give features per position (B, T, C). ``next_char_probes`` fits, for
each stage, a linear probe (:func:`~lamina.inspection.probes.fit_probe`) predicting the class of
the character that comes next (a letter, a capital, a digit, white space, punctuation, anything
else) from positions of the training text, and scores it on held-out positions of the validation
tail: how early in depth the network knows what kind of character it is about to write. A token
of a byte or BPE vocabulary counts by the first character of its decoded text.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.inspection.attribution import _captum_attr
from lamina.inspection.features import eval_mode, per_position, run_features, stage_layout
from lamina.inspection.hooks import capture, model_stages
from lamina.inspection.probes import fit_probe

CHAR_CLASSES = ("letter", "capital", "digit", "space", "punctuation", "other")
PROBE_POSITIONS = 10_000  # positions per split at most: enough for a 6-way linear probe, cheap to fit
PER_WINDOW = 32  # positions drawn from one window at most, so the sample spans many windows


def char_class(text: str) -> int:
    """The index in ``CHAR_CLASSES`` of the first character of ``text``; -1 for an empty text.

    >>> [CHAR_CLASSES[char_class(c)] for c in "aÉ7\\n;€"]
    ['letter', 'capital', 'digit', 'space', 'punctuation', 'other']
    """
    if not text:
        return -1
    c = text[0]
    if c.isupper():
        return 1
    if c.isalpha():
        return 0
    if c.isdigit():
        return 2
    if c.isspace():
        return 3
    if unicodedata.category(c).startswith("P"):
        return 4
    return 5


def token_classes(codec: Any) -> Tensor:
    """(V,) the character class of every token id of a vocabulary (-1: decodes to nothing, e.g. padding)."""
    return torch.tensor([char_class(codec.decode([i])) for i in range(codec.size)], dtype=torch.long)


def token_texts(codec: Any, ids: Sequence[int]) -> list[str]:
    """The text each token of ``ids`` adds when decoded in sequence (a byte of an unfinished
    character adds '': the character comes with its last byte)."""
    feed = codec.stream_decoder()
    return [feed(int(i)) for i in ids]


def window_offsets(n_tokens: int, context: int, count: int, *, spread: bool, seed: int) -> Tensor:
    """Start offsets of at most ``count`` windows of ``context`` tokens (plus the next one) of a stream.

    ``spread``: non-overlapping windows evenly spaced over the stream (a validation tail, read
    the way evaluation reads it); otherwise random offsets (seeded), as training draws them.
    """
    if n_tokens < 2:
        raise LaminaError(f"a text of {n_tokens} token(s) has no next token to probe")
    span = min(context, n_tokens - 1)
    if spread:
        full = (n_tokens - 1) // span
        picks = torch.linspace(0, full - 1, min(count, full)).round().long().unique()
        return picks * span
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_tokens - span, (count,), generator=g)


def _windows(tokens: Tensor, offsets: Tensor, context: int, batch_size: int,
             device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    span = torch.arange(min(context, len(tokens) - 1) + 1)
    for i in range(0, len(offsets), batch_size):
        w = tokens[offsets[i : i + batch_size, None] + span].to(device)  # (B, T+1)
        yield w[:, :-1], w[:, 1:]


@torch.no_grad()
def _position_features(model: nn.Module, batches: Iterator[tuple[Tensor, Tensor]], classes: Tensor,
                       names: list[str], *, per_window: int, seed: int) -> tuple[dict[str, Tensor], Tensor]:
    """Features (n, C) of every stage at random positions of each window, and the next-character class there."""
    layout, g = stage_layout(model), torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    labels: list[Tensor] = []
    with eval_mode(model), capture(model, names) as out:
        for x, y in batches:
            out.clear()
            run_features(model, x)
            lab = classes[y.cpu()]  # (B, T); -1 where the next token decodes to nothing
            score = torch.rand(lab.shape, generator=g).masked_fill(lab < 0, -1.0)
            top = score.topk(min(per_window, lab.shape[1]), dim=1)  # random positions per window
            b, t = torch.nonzero(top.values >= 0, as_tuple=True)
            t = top.indices[b, t]
            labels.append(lab[b, t])
            for n in names:
                parts[n].append(per_position(out[n], layout)[b.to(x.device), t.to(x.device)].float().cpu())
    return {n: torch.cat(p) for n, p in parts.items()}, torch.cat(labels)


def next_char_probes(
    model: nn.Module,
    train_tokens: Tensor,
    test_tokens: Tensor,
    codec: Any,
    *,
    max_windows: int,
    context: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    max_positions: int = PROBE_POSITIONS,
) -> dict[str, Any]:
    """A linear probe per stage predicting the class of the next character (see the module docstring).

    Args:
        model: a language model with ``stages()`` whose outputs have a position axis.
        train_tokens, test_tokens: 1-D token streams: the training text and the validation tail.
        codec: the vocabulary (``decode``, ``size``).
        max_windows: windows of ``context`` tokens read from each stream at most.
        context: tokens per window.
        batch_size: windows per forward pass.
        device: where the model runs.
        seed: draws the training windows and the positions.
        max_positions: positions per stream at most.

    Returns:
        ``{"target", "classes", "stages": [{"stage", "depth", "accuracy"}], "baseline", "majority",
        "positions": {"train", "test"}, "windows": {"train", "test"}, "counts": {"train", "test"}}``;
        ``baseline`` is the test accuracy of always answering the training set's most common class.
    """
    names = [n for n, _ in model_stages(model)]
    classes = token_classes(codec)
    per_window = min(PER_WINDOW, context)
    count = max(1, min(max_windows, math.ceil(max_positions / per_window)))
    dev = torch.device(device)
    feats, labels, windows = {}, {}, {}
    for split, tokens, spread in (("train", train_tokens, False), ("test", test_tokens, True)):
        offsets = window_offsets(len(tokens), context, count, spread=spread, seed=seed)
        windows[split] = len(offsets)
        batches = _windows(tokens.cpu(), offsets, context, batch_size, dev)
        feats[split], labels[split] = _position_features(model, batches, classes, names, per_window=per_window,
                                                         seed=seed + (split == "test"))
        keep = torch.randperm(len(labels[split]), generator=torch.Generator().manual_seed(seed))[:max_positions]
        feats[split] = {n: f[keep] for n, f in feats[split].items()}
        labels[split] = labels[split][keep]
    ytr, yte = labels["train"], labels["test"]
    if len(ytr) == 0 or len(yte) == 0:
        raise LaminaError("no position of the text is followed by a token with a character: nothing to probe")
    k = len(CHAR_CLASSES)
    majority = int(torch.bincount(ytr, minlength=k).argmax())
    rows = [{"stage": n, "depth": i, "accuracy": fit_probe(feats["train"][n], ytr, feats["test"][n], yte, k)}
            for i, n in enumerate(names, start=1)]
    return {"target": "class of the next character", "classes": list(CHAR_CLASSES), "stages": rows,
            "baseline": float((yte == majority).double().mean()), "majority": CHAR_CLASSES[majority],
            "positions": {"train": len(ytr), "test": len(yte)}, "windows": windows,
            "counts": {"train": torch.bincount(ytr, minlength=k).tolist(),
                       "test": torch.bincount(yte, minlength=k).tolist()}}


def embedding_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The first token embedding of the model's stages and its name: an ``nn.Embedding`` (B, T, C)
    or a sequence model's residue one-hot (:class:`~lamina.models.sequence.OneHot`, (B, S, T))."""
    from lamina.models.sequence import OneHot

    for stage_name, stage in model_stages(model):
        for name, m in stage.named_modules():
            if isinstance(m, nn.Embedding | OneHot):
                return f"{stage_name}.{name}" if name else stage_name, m
    raise LaminaError(f"{type(model).__name__} has no token embedding in its stages: token attributions need one")


def token_attributions(model: nn.Module, ids: Tensor, target: Tensor | int, *, pad: int = 0,
                       steps: int = 32) -> Tensor:
    """Integrated gradients of logit ``target`` on the token embedding, summed over its features: (B, T).

    The path runs from the embedding of padding (``pad``, zero in lamina's text models) to each
    token's embedding (captum's ``LayerIntegratedGradients``), so a padding position gets
    exactly 0, and the values of an example add up to its logit minus the logit of the same
    positions embedded as padding (the completeness of integrated gradients).

    Args:
        model: a classifier over token ids, with ``stages()``; it runs in eval mode (restored after).
        ids: token ids (B, T).
        target: the class per example (B,), or one class for all.
        pad: the token id of padding.
        steps: integration steps.
    """
    attr = _captum_attr()
    _, layer = embedding_layer(model)
    device = next((p.device for p in model.parameters()), ids.device)
    ids = ids.to(device)
    tgt: Tensor | int = target.to(device) if isinstance(target, Tensor) else int(target)
    with eval_mode(model), torch.enable_grad():
        lig = attr.LayerIntegratedGradients(model, layer)
        a = lig.attribute(ids, baselines=torch.full_like(ids, pad), target=tgt, n_steps=steps,
                          internal_batch_size=max(len(ids), 1) * 8)
    from lamina.models.sequence import OneHot

    features = 1 if isinstance(layer, OneHot) else -1  # a one-hot is (B, S, T), an embedding (B, T, C)
    return a.detach().float().sum(dim=features).cpu()  # (B, T)
