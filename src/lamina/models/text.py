"""Text classifiers over token ids, where id 0 is padding: a 1-D CNN, a Transformer encoder and a bag of
n-grams (fastText).

    idx (B, T) ─ embed ─ stage1 ─ ... ─ stageN ─▶ feats ─ masked global pool ─ dropout ─ linear ─▶ (B, K)

Padding appended to an example changes none of its logits. The CNN and the encoder keep the
features of padding positions at exactly zero: for the CNN, zero features are what the
convolutions' own zero padding reads at the edges; for the encoder, padding keys are masked out of
the attention. The bag leaves padding (and pairs that touch it) out of its mean. All take the
vocabulary size as ``vocab`` (from the data, recorded in ``arch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.models.base import Model, check_hparams
from lamina.models.cnn import init_conv_weights
from lamina.models.layers import ActLayer, act_name, get_act, group_count, norm_name
from lamina.models.transformer import (
    Block,
    TokenEmbedding,
    check_positions,
    init_transformer_weights,
    resolve_heads,
    token_context,
    token_norm,
)

PAD = 0  # the token id of padding


def check_vocab(model: str, vocab: int | None) -> int:
    """The vocabulary size, which must be given and at least 2 (padding and one token)."""
    if vocab is None or int(vocab) < 2:
        raise LaminaError(f"model '{model}' needs the vocabulary size as vocab >= 2 (id 0 is padding), got {vocab}")
    return int(vocab)


def random_tokens(model: Model, vocab: int, n: int, generator: torch.Generator | None) -> Tensor:
    """Random token ids (n, context), padding included."""
    return torch.randint(0, vocab, (n, model.input_shape[0]), generator=generator)


def check_tokens(idx: Tensor, context: int) -> None:
    """A LaminaError unless ``idx`` is a (batch, tokens) batch of at most ``context`` tokens."""
    if idx.ndim != 2:
        raise LaminaError(f"expected token ids of shape (batch, tokens), got shape {tuple(idx.shape)}")
    if idx.shape[1] > context:
        raise LaminaError(f"sequence of {idx.shape[1]} tokens is longer than the model's context {context}")


def pool_mask(mask: Tensor) -> Tensor:
    """Halve a (B, 1, L) token mask: a pooled position is a token if either of its two is."""
    return F.max_pool1d(mask.float(), 2, ceil_mode=True) > 0  # (B, 1, ceil(L/2))


class PositionNorm(nn.Module):
    """A norm of (B, C, L) maps that never mixes positions except through batch statistics.

    ``batch``: BatchNorm1d; ``layer``: LayerNorm over the C channels of each position;
    ``group``: GroupNorm over channel groups of each position; ``none``: identity.
    (lamina's ``get_norm`` normalises over positions too, which would let padding shift tokens.)

    Args:
        norm: ``batch`` | ``layer`` | ``group`` | ``none``.
        channels: C.
    """

    def __init__(self, norm: str, channels: int) -> None:
        super().__init__()
        self.kind = norm_name(norm)
        self.norm: nn.Module = {
            "batch": lambda: nn.BatchNorm1d(channels),
            "layer": lambda: nn.LayerNorm(channels),
            "group": lambda: nn.GroupNorm(group_count(channels), channels),
            "none": nn.Identity,
        }[self.kind]()

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, L)
        if self.kind == "layer":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)  # over C, per position
        if self.kind == "group":
            B, C, L = x.shape
            y = self.norm(x.transpose(1, 2).reshape(B * L, C))  # (B·L, C): groups per position
            return y.view(B, L, C).transpose(1, 2)
        return self.norm(x)


class ConvEmbedding(nn.Module):
    """Token embedding as a channels-first map: (B, T) -> (B, C, T); padding embeds to zero.

    Args:
        vocab: vocabulary size.
        width: channels C.
        context: the most tokens.
    """

    def __init__(self, vocab: int, width: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.wte = nn.Embedding(vocab, width, padding_idx=PAD)

    def forward(self, idx: Tensor) -> Tensor:
        check_tokens(idx, self.context)
        return self.wte(idx).transpose(1, 2)  # (B, C, T)


class ConvStage(nn.Module):
    """(Masked 2× max pool) → Conv1d k=5 → norm → act → zero the padding positions.

    Args:
        c_in: input channels.
        c_out: output channels.
        act: activation name or class.
        norm: see ``PositionNorm``.
        pool: halve the length first (max over pairs of positions, padding never the max).
    """

    def __init__(self, c_in: int, c_out: int, *, act: ActLayer, norm: str, pool: bool) -> None:
        super().__init__()
        self.pool = pool
        self.conv = nn.Conv1d(c_in, c_out, 5, padding=2, bias=norm_name(norm) == "none")
        self.norm = PositionNorm(norm, c_out)
        self.act = get_act(act)()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` (B, C_in, L), zero at padding; ``mask`` (B, 1, L), True at tokens -> (B, C_out, L')."""
        if self.pool:
            x = F.max_pool1d(x.masked_fill(~mask, float("-inf")), 2, ceil_mode=True)  # (B, C_in, ceil(L/2))
            mask = pool_mask(mask)
            x = x.masked_fill(~mask, 0.0)  # windows of padding only: -inf -> 0
        x = self.act(self.norm(self.conv(x)))  # (B, C_out, L')
        return x * mask


class TextCNN(Model):
    """1-D CNN over token ids: embedding, ``depth`` stages of a k=5 ConvNormAct (each after the
    first halving the length by a masked max pool), masked global max pool, dropout, linear.

    Every stage has ``width`` channels (DPCNN's constant width: each stage then costs half the
    one before). Padding positions are zero in every stage's output, which is how
    ``forward_head`` finds them again: it takes the max over the positions that are not all
    zero (a token position is all zero only when every channel is, and then it cannot hold the
    max of a ReLU anyway).

    Args:
        input_shape: ``(context,)``, the most tokens of an example (shorter inputs are fine).
        num_classes: number of classes.
        vocab: vocabulary size, padding (id 0) included.
        width: embedding size and channels of every stage.
        depth: conv stages.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none`` (the last three per position).
        dropout: drop probability before the classifier.

    >>> m = TextCNN((64,), 6, vocab=100, width=16)
    >>> m(torch.randint(1, 100, (2, 40))).shape
    torch.Size([2, 6])
    """

    name = "textcnn"
    hparams = ("width", "depth", "act", "norm", "dropout", "vocab")
    input_kind = "tokens"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        vocab: int | None = None,
        width: int = 128,
        depth: int = 3,
        act: ActLayer = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        context = token_context(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        self.vocab = check_vocab(self.name, vocab)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm = norm_name(norm)
        self.add_stage("embed", ConvEmbedding(self.vocab, width, context))  # (B, C, T)
        for i in range(1, depth + 1):
            self.add_stage(f"stage{i}", ConvStage(width, width, act=act, norm=norm, pool=i > 1))  # (B, C, T / 2**(i-1))
        self.set_head(width, dropout)
        init_conv_weights(self)
        self.arch.update(vocab=self.vocab, width=width, depth=depth, act=act_name(act), norm=norm,
                         dropout=float(dropout))  # fmt: skip

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random token ids (n, context), padding included."""
        return random_tokens(self, self.vocab, n, generator)

    def forward_features(self, idx: Tensor) -> Tensor:
        """Apply the stages in order: (B, T) ids -> (B, C, ceil(T / 2**(depth-1))), zero at padding."""
        mask = (idx != PAD).unsqueeze(1)  # (B, 1, T)
        x = self.embed(idx)  # (B, C, T), zero at padding
        for _, stage in self.stages()[1:]:
            x = stage(x, mask)
            if stage.pool:
                mask = pool_mask(mask)
        return x

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Max over the token positions (padding is zero), dropout, linear: (B, C, L) -> (B, K)."""
        tokens = feats.ne(0).any(dim=1, keepdim=True)  # (B, 1, L)
        x = feats.masked_fill(~tokens, float("-inf")).amax(dim=-1)  # (B, C)
        x = x.masked_fill(~tokens.any(dim=-1), 0.0)  # examples of padding only: 0
        return x if pre_logits else self.head(self.head_drop(x))  # (B, K)


class TextTransformer(Model):
    """Bidirectional Transformer encoder over token ids, masked mean pool, dropout, linear.

    Stages are ``embed`` then ``block1`` ... ``blockN`` (pre-norm blocks as in ``GPT``, with
    padding keys masked out of the attention instead of a causal mask). Padding positions of
    every block's output are zero, which is how ``forward_head`` finds them again: it averages
    the rows that are not all zero, then applies a LayerNorm, dropout and the linear layer.

    Args:
        input_shape: ``(context,)``, the most tokens of an example (shorter inputs are fine).
        num_classes: number of classes.
        vocab: vocabulary size, padding (id 0) included.
        width: features per token.
        depth: Transformer blocks.
        heads: attention heads; 0/None: ``max(1, width // 64)``; must divide ``width``.
        act: activation of the MLPs.
        norm: ``layer`` or ``none``.
        dropout: embedding, attention, residual, MLP and classifier dropout.
        positions: ``learned`` or ``rotary``.
    """

    name = "text-transformer"
    hparams = ("width", "depth", "act", "norm", "dropout", "heads", "positions", "vocab")
    input_kind = "tokens"
    feature_layout = "tokens"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        vocab: int | None = None,
        width: int = 128,
        depth: int = 2,
        heads: int | None = None,
        act: ActLayer = "gelu",
        norm: str = "layer",
        dropout: float = 0.0,
        positions: str = "learned",
    ) -> None:
        context = token_context(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        self.vocab = check_vocab(self.name, vocab)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        heads = resolve_heads(self.name, width, heads)
        norm = token_norm(self.name, norm, width)[0]
        rotary = check_positions(positions, width, heads)
        embed = TokenEmbedding(self.vocab, width, context=context, dropout=dropout, learned_positions=not rotary,
                               padding_idx=PAD)  # fmt: skip
        self.add_stage("embed", embed)  # (B, T, C)
        for i in range(1, depth + 1):
            block = Block(width, heads, context=context, act=act, norm=norm, dropout=dropout, rotary=rotary,
                          causal=False)  # fmt: skip
            self.add_stage(f"block{i}", block)  # (B, T, C)
        self.ln_f = token_norm(self.name, norm, width)[1]
        self.set_head(width, dropout)
        init_transformer_weights(self, depth)
        self.arch.update(vocab=self.vocab, width=width, depth=depth, heads=heads, act=act_name(act), norm=norm,
                         dropout=float(dropout), positions=positions)  # fmt: skip

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random token ids (n, context), padding included."""
        return random_tokens(self, self.vocab, n, generator)

    def forward_features(self, idx: Tensor) -> Tensor:
        """Apply the stages in order: (B, T) ids -> (B, T, C), zero at padding."""
        keep = idx != PAD  # (B, T)
        x = self.embed(idx)  # (B, T, C)
        for _, block in self.stages()[1:]:
            x = block(x, key_mask=keep)  # (B, T, C)
        return x

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Mean over the token rows (padding rows are zero), norm, dropout, linear: (B, T, C) -> (B, K)."""
        tokens = feats.ne(0).any(dim=-1).sum(dim=1, keepdim=True)  # (B, 1)
        x = self.ln_f(feats.sum(dim=1) / tokens.clamp(min=1))  # (B, C)
        return x if pre_logits else self.head(self.head_drop(x))  # (B, K)


class NgramBag(nn.Module):
    """(B, T) ids -> (B, C): the mean embedding of an example's tokens and of its hashed pairs of
    neighbouring tokens (padding excluded); an example of padding only is zero.

    Args:
        vocab: vocabulary size (id 0 is padding).
        width: C.
        buckets: hash buckets of the token pairs (0: tokens only).
        context: the most tokens.
    """

    def __init__(self, vocab: int, width: int, buckets: int, context: int) -> None:
        super().__init__()
        self.vocab, self.buckets, self.context = vocab, buckets, context
        self.table = nn.Embedding(vocab + buckets, width, padding_idx=PAD)
        nn.init.uniform_(self.table.weight, -1 / width, 1 / width)  # fastText's initialisation
        with torch.no_grad():
            self.table.weight[PAD].zero_()

    def forward(self, idx: Tensor) -> Tensor:
        check_tokens(idx, self.context)
        ids = idx
        if self.buckets and idx.shape[1] > 1:
            a, b = idx[:, :-1], idx[:, 1:]  # (B, T-1) each
            pairs = self.vocab + (a * self.vocab + b) % self.buckets  # (B, T-1): hashed bigram rows
            ids = torch.cat([idx, pairs.masked_fill((a == PAD) | (b == PAD), PAD)], dim=1)  # (B, 2T-1)
        count = ids.ne(PAD).sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        return self.table(ids).sum(dim=1) / count  # (B, C)


class TextBag(Model):
    """fastText's classifier (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"):
    the mean embedding of the tokens and their hashed bigrams, dropout, linear. A bag of n-grams, so
    it ignores word order beyond neighbouring pairs, as TF-IDF + logistic regression does; best
    with word-level tokens (``data.vocab=bpe``).

    Stage: ``embed`` (B, C).

    Args:
        input_shape: ``(context,)``, the most tokens of an example (shorter inputs are fine).
        num_classes: number of classes.
        vocab: vocabulary size, padding (id 0) included.
        width: embedding size C.
        dropout: before the classifier.

    >>> m = TextBag((64,), 6, vocab=100, width=16)
    >>> m(torch.randint(1, 100, (2, 40))).shape
    torch.Size([2, 6])
    """

    name = "textbag"
    hparams = ("width", "dropout", "vocab")
    input_kind = "tokens"
    buckets: ClassVar[int] = 1 << 16  # hash buckets of the token bigrams: 65,536 x width parameters

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        vocab: int | None = None,
        width: int = 64,
        dropout: float = 0.0,
    ) -> None:
        context = token_context(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        self.vocab = check_vocab(self.name, vocab)
        check_hparams(self.name, width=width, depth=1, dropout=dropout)
        self.add_stage("embed", NgramBag(self.vocab, width, self.buckets, context))  # (B, C)
        self.set_head(width, dropout)
        self.arch.update(vocab=self.vocab, width=width, dropout=float(dropout))

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random token ids (n, context), padding included."""
        return random_tokens(self, self.vocab, n, generator)
