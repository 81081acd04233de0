"""Models of table rows (D,): the last ``len(categories)`` columns hold category indices (as floats),
the others standardised numbers and missing indicators (see :mod:`lamina.data.tabular`).

- ``tabmlp``: an embedding per categorical column concatenated with the numbers, then an MLP.
- ``ft-transformer``: Gorishniy et al. 2021 ("Revisiting Deep Learning Models for Tabular Data"):
  every feature becomes a token, a [CLS] token reads them through pre-norm Transformer blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.errors import LaminaError
from lamina.models.base import Model, check_hparams
from lamina.models.layers import ActLayer, act_name, get_act, get_norm, group_count, norm_name


def embedding_dim(cardinality: int) -> int:
    """The embedding size of a categorical column: ``min(16, (card + 1) // 2 + 1)``."""
    return min(16, (int(cardinality) + 1) // 2 + 1)


def check_table_input(model: str, input_shape: Sequence[int], categories: Sequence[int]) -> tuple[int, list[int]]:
    """(numeric column count, cardinalities) for rows of shape (D,); a LaminaError for other shapes."""
    cats = [int(c) for c in categories]
    if len(input_shape) != 1:
        raise LaminaError(f"model '{model}' takes table rows of shape (D,), got {tuple(input_shape)}; "
                          "use --model mlp, cnn or resnet")
    if any(c < 1 for c in cats):
        raise LaminaError(f"model '{model}': every categorical column needs a cardinality >= 1, got {cats}")
    if len(cats) > input_shape[0]:
        raise LaminaError(f"model '{model}': {len(cats)} categorical columns but rows have only {input_shape[0]}")
    return input_shape[0] - len(cats), cats


def category_indices(x: Tensor, n_num: int, cards: Tensor) -> Tensor:
    """The category columns of ``x`` (B, D) as int64 (B, C); an index out of range reads as 0 (unknown)."""
    idx = x[:, n_num:].round().long()  # (B, C)
    return torch.where((idx >= 0) & (idx < cards), idx, torch.zeros_like(idx))


def example_rows(n: int, n_num: int, cards: Sequence[int], generator: torch.Generator | None) -> Tensor:
    """Random rows: standard normal numbers, then valid category indices."""
    num = torch.randn(n, n_num, generator=generator)
    cat = [torch.randint(0, c, (n, 1), generator=generator).float() for c in cards]
    return torch.cat([num, *cat], dim=1)


class CategoryEmbedding(nn.Module):
    """(B, D) -> (B, n_num + Σ dims): the numbers, then each category's embedding."""

    def __init__(self, n_num: int, cards: Sequence[int]) -> None:
        super().__init__()
        self.n_num = n_num
        self.register_buffer("cards", torch.tensor(list(cards), dtype=torch.long), persistent=False)
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim(c)) for c in cards)
        self.out_features = n_num + sum(embedding_dim(c) for c in cards)

    def forward(self, x: Tensor) -> Tensor:
        parts = [x[:, : self.n_num].float()]  # (B, n_num)
        if self.embeddings:
            idx = category_indices(x, self.n_num, self.cards)  # (B, C)
            parts += [emb(idx[:, j]).to(parts[0].dtype) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1)  # (B, n_num + Σ dims)


class TabMLP(Model):
    """Categorical embeddings concatenated with the numeric columns, then ``depth`` hidden layers
    Linear → norm → act → dropout, then the head.

    Stages: ``embed`` (B, n_num + Σ embedding dims), ``layer1`` ... ``layerN`` (B, width).

    Args:
        input_shape: (D,): numeric columns first, then one category index per categorical column.
        num_classes: classes (1: a regression).
        width: units per hidden layer.
        depth: hidden layers.
        act: activation name or class.
        norm: ``batch`` | ``layer`` | ``group`` | ``none``.
        dropout: after every hidden layer (and before the head).
        categories: the cardinality of each categorical column (the last ``len(categories)`` of D).

    >>> TabMLP((6,), 3, categories=[3, 4]).arch["categories"]
    [3, 4]
    """

    name = "tabmlp"
    hparams = ("width", "depth", "act", "norm", "dropout", "categories")
    example_shape: ClassVar[tuple[int, ...]] = (6,)
    example_kwargs: ClassVar[dict[str, Any]] = {"categories": [3, 4]}

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, width: int = 256, depth: int = 2,
                 act: ActLayer = "relu", norm: str = "batch", dropout: float = 0.1,
                 categories: Sequence[int] = ()) -> None:
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        act_cls, norm = get_act(act), norm_name(norm)
        n_num, cards = check_table_input(self.name, input_shape, categories)
        super().__init__(input_shape, num_classes)
        self.n_num, self.cards = n_num, cards
        embed = CategoryEmbedding(n_num, cards)
        self.add_stage("embed", embed)
        d_in = embed.out_features
        for i in range(1, depth + 1):
            layer = nn.Sequential(nn.Linear(d_in if i == 1 else width, width, bias=norm == "none"),
                                  get_norm(norm, width, dims=0), act_cls())
            if dropout > 0:
                layer.append(nn.Dropout(dropout))
            self.add_stage(f"layer{i}", layer)  # (B, width)
        self.set_head(width, 0.0)  # the last hidden layer already ends in dropout
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout),
                         categories=cards)

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return example_rows(n, self.n_num, self.cards, generator)


# -- FT-Transformer ---------------------------------------------------------------------------------
class FeatureTokenizer(nn.Module):
    """(B, D) -> (B, C, 1 + D) tokens: [CLS], then ``x_j · w_j + b_j`` per number, ``emb_j(k) + b_j``
    per category (channels first, so that lamina's "channels" pooling averages over the tokens)."""

    def __init__(self, n_num: int, cards: Sequence[int], width: int) -> None:
        super().__init__()
        self.n_num = n_num
        self.register_buffer("cards", torch.tensor(list(cards), dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor([0, *list(cards)[:-1]], dtype=torch.long).cumsum(0)
                             if cards else torch.zeros(0, dtype=torch.long), persistent=False)
        s = 1 / math.sqrt(width)
        self.cls = nn.Parameter(torch.empty(width).uniform_(-s, s))
        self.num_weight = nn.Parameter(torch.empty(n_num, width).uniform_(-s, s))
        self.num_bias = nn.Parameter(torch.empty(n_num, width).uniform_(-s, s))
        self.cat_embed = nn.Embedding(max(sum(cards), 1), width)
        nn.init.uniform_(self.cat_embed.weight, -s, s)
        self.cat_bias = nn.Parameter(torch.empty(len(cards), width).uniform_(-s, s))

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        num = x[:, : self.n_num, None].float() * self.num_weight + self.num_bias  # (B, n_num, C)
        tokens = [self.cls.expand(B, 1, -1), num]
        if len(self.cards):
            idx = category_indices(x, self.n_num, self.cards) + self.offsets  # (B, n_cat)
            tokens.append(self.cat_embed(idx) + self.cat_bias)  # (B, n_cat, C)
        return torch.cat(tokens, dim=1).transpose(1, 2)  # (B, C, 1 + D)


class TokenNorm(nn.Module):
    """A norm of (B, C, T) tokens: ``layer`` per token over C (the paper's), ``batch`` per channel
    over the batch and the tokens, ``group`` GroupNorm, ``none``. (Table tokens are features, not a
    sequence: statistics across them leak nothing.)"""

    def __init__(self, norm: str, width: int) -> None:
        super().__init__()
        self.kind = norm
        self.norm: nn.Module = {"layer": nn.LayerNorm(width), "batch": nn.BatchNorm1d(width),
                                "group": nn.GroupNorm(group_count(width), width)}.get(norm, nn.Identity())

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        if self.kind == "layer":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class FTBlock(nn.Module):
    """Pre-norm Transformer block on (B, C, T): ``x + attn(norm(x))``, then ``x + ffn(norm(x))``
    with a gated feed-forward (``act(a) · b``, hidden 4/3 · C: the paper's ReGLU for ``relu``).

    Dropout acts in the feed-forward only: the paper's attention dropout draws a (B, heads, T, T)
    mask each step, which on a CPU took 14 ms of a 46 ms step on 64-column rows (digits)."""

    def __init__(self, width: int, heads: int, *, act: ActLayer, norm: str, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        hidden = max(1, round(width * 4 / 3))
        self.norm1, self.norm2 = TokenNorm(norm, width), TokenNorm(norm, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ffn_in = nn.Linear(width, 2 * hidden)
        self.act = get_act(act)()
        self.ffn_drop = nn.Dropout(dropout)
        self.ffn_out = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        B, C, T = x.shape
        h = self.norm1(x).transpose(1, 2)  # (B, T, C)
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        a = F.scaled_dot_product_attention(q, k, v)  # no attention dropout: see the class docstring
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C)).transpose(1, 2)
        h = self.norm2(x).transpose(1, 2)  # (B, T, C)
        u, g = self.ffn_in(h).chunk(2, dim=-1)
        return x + self.ffn_out(self.ffn_drop(self.act(u) * g)).transpose(1, 2)  # (B, C, T)


class ClsReadout(nn.Module):
    """(B, C, T) -> (B, C): the [CLS] token, normed and activated (the paper's head before its linear)."""

    def __init__(self, norm: str, width: int, act: ActLayer) -> None:
        super().__init__()
        self.norm = TokenNorm(norm, width)
        self.act = get_act(act)()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(x[:, :, :1]))[:, :, 0]  # (B, C)


class FTTransformer(Model):
    """FT-Transformer (Gorishniy, Rubachev, Khrulkov, Babenko 2021).

    Why this one: on the benchmark of that paper (11 datasets) it was the deep model that was best
    or close to best most often, and the one that narrowed the gap to gradient-boosted trees where
    an MLP or a ResNet could not: attention lets every feature condition on every other, which is
    what the interactions of tabular data need, while the per-feature tokenizer keeps numbers and
    categories on an equal footing. Its cost, attention over D + 1 tokens, is small for tables.

    Stages: ``tokenizer`` (B, C, 1 + D), ``block1`` ... ``blockN`` (B, C, 1 + D), ``cls`` (B, C).

    Args:
        input_shape: (D,): numeric columns first, then one category index per categorical column.
        num_classes: classes (1: a regression).
        width: the token size.
        depth: Transformer blocks.
        act: of the gated feed-forward (``relu``: ReGLU) and of the readout.
        norm: ``layer`` (the paper's) | ``batch`` | ``group`` | ``none``.
        dropout: in the feed-forward of each block (not in attention: see ``FTBlock``).
        heads: attention heads; 0: ``width // 16`` (at least 1); must divide ``width``.
        categories: the cardinality of each categorical column (the last ``len(categories)`` of D).
    """

    name = "ft-transformer"
    hparams = ("width", "depth", "act", "norm", "dropout", "heads", "categories")
    example_shape: ClassVar[tuple[int, ...]] = (6,)
    example_kwargs: ClassVar[dict[str, Any]] = {"categories": [3, 4]}
    # Its norm is per token (LayerNorm, the paper's): lamina's config default "batch" (meant for
    # convolutions) should mean the model's own default here, as build_model_for does for token models.
    norm_per_token: ClassVar[bool] = True

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, width: int = 64, depth: int = 2,
                 act: ActLayer = "relu", norm: str = "layer", dropout: float = 0.1, heads: int = 0,
                 categories: Sequence[int] = ()) -> None:
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        get_act(act)
        norm = norm_name(norm)
        heads = int(heads) if heads else max(1, width // 16)
        if heads < 1 or width % heads:
            raise LaminaError(f"model '{self.name}': heads ({heads}) must divide width ({width})")
        n_num, cards = check_table_input(self.name, input_shape, categories)
        super().__init__(input_shape, num_classes)
        self.n_num, self.cards = n_num, cards
        self.add_stage("tokenizer", FeatureTokenizer(n_num, cards, width))
        for i in range(1, depth + 1):
            self.add_stage(f"block{i}", FTBlock(width, heads, act=act, norm=norm, dropout=dropout))
        self.add_stage("cls", ClsReadout(norm, width, act))
        self.set_head(width, 0.0)
        self.arch.update(width=width, depth=depth, act=act_name(act), norm=norm, dropout=float(dropout),
                         heads=heads, categories=cards)

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return example_rows(n, self.n_num, self.cards, generator)


REGISTERED: tuple[type[Model], ...] = (TabMLP, FTTransformer)
