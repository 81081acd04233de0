"""Models of biological sequences (DNA, RNA, protein) given as residue ids, where id 0 is padding.

    ids (B, T) ─ one-hot ─ stem ─ stage1 ─ ... ─▶ feats (B, C, T') ─ masked max / mean pool ─ dropout ─ linear ─▶ (B, K)

The residue ids and what each means are defined once, in :mod:`lamina.utils.alphabets`, for the
data module (:mod:`lamina.data.fasta`) and these models alike: ids ``1 .. len(bases)`` are the standard
residues (the one-hot channels), the ids after them the ambiguity letters, which one-hot *softly*
(R = ½A + ½G, N = ¼ of each base), and padding one-hots to all zeros. Ids at or above the
alphabet's size (a larger ``vocab``) also read as all zeros.

Both models keep every stage's output exactly zero at padding positions, and a stride-2 stage
keeps position ``i`` when position ``2i`` of its input was a residue, so the same sequence gives
the same logits however much padding follows it (up to float rounding).
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
from lamina.models.layers import ActLayer, act_name, get_act, norm_name
from lamina.models.text import PositionNorm
from lamina.models.transformer import (
    Block,
    check_positions,
    init_transformer_weights,
    resolve_heads,
    token_context,
)
from lamina.utils.alphabets import ALPHABETS as ALPHABETS
from lamina.utils.alphabets import Alphabet as Alphabet
from lamina.utils.alphabets import get_alphabet as get_alphabet

PAD = 0
STEM_KERNEL, STEM_STRIDE = 9, 4  # seqresnet: the stem reads 9 residues every 4 (a 1,500-bp gene: 375 positions)


class OneHot(nn.Module):
    """Residue ids (B, T) -> soft one-hot (B, S, T); padding (and ids past the alphabet) -> zeros.

    Args:
        alphabet: the residues' alphabet.
        vocab: ids the inputs may hold (at least the alphabet's own).
        context: the most residues.
    """

    def __init__(self, alphabet: Alphabet, vocab: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.register_buffer("table", alphabet.soft_onehot(vocab), persistent=False)  # (V, S)

    def forward(self, idx: Tensor) -> Tensor:
        if idx.ndim != 2 or idx.dtype.is_floating_point:
            raise LaminaError(f"expected residue ids of shape (batch, length), got {idx.dtype} {tuple(idx.shape)}")
        if idx.shape[1] > self.context:
            raise LaminaError(f"a sequence of {idx.shape[1]} residues is longer than the model's {self.context}")
        return F.embedding(idx, self.table).transpose(1, 2)  # (B, S, T)


def check_sequence_args(model: str, vocab: int | None, alphabet: str) -> tuple[Alphabet, int]:
    """The alphabet and the vocabulary size, which must hold at least the alphabet's ids."""
    alpha = get_alphabet(alphabet)
    v = alpha.vocab if vocab is None or int(vocab) == 0 else int(vocab)
    if v < alpha.vocab:
        raise LaminaError(f"model '{model}' needs vocab >= {alpha.vocab} for {alpha.name} ids, got {vocab}")
    return alpha, v


def random_residues(model: Model, alphabet: Alphabet, n: int, generator: torch.Generator | None) -> Tensor:
    """Random residue ids (n, L), each row a random length (at least 1) followed by padding."""
    L = model.input_shape[0]
    ids = torch.randint(1, alphabet.vocab, (n, L), generator=generator)
    lengths = torch.randint(1, L + 1, (n, 1), generator=generator)
    return ids.masked_fill(torch.arange(L)[None, :] >= lengths, PAD)


def masked_max(feats: Tensor) -> Tensor:
    """Max of (B, C, L) over the positions that are not all zero (padding is zero): (B, C)."""
    keep = feats.ne(0).any(dim=1, keepdim=True)  # (B, 1, L)
    x = feats.masked_fill(~keep, float("-inf")).amax(dim=-1)  # (B, C)
    return x.masked_fill(~keep.any(dim=-1), 0.0)  # examples of padding only: 0


def masked_mean(feats: Tensor) -> Tensor:
    """Mean of (B, C, L) over the positions that are not all zero (padding is zero): (B, C)."""
    keep = feats.ne(0).any(dim=1, keepdim=True)  # (B, 1, L)
    return feats.sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)  # (B, C)


class MaskedConv(nn.Module):
    """Conv1d → per-position norm → activation → zero the padding; stride 2 keeps even positions.

    Args:
        c_in, c_out: channels.
        k: kernel size (odd; padding ``k // 2``).
        stride: 1 or 2.
        act: activation (None: none, e.g. before a residual add).
        norm: ``batch`` | ``layer`` | ``group`` | ``none`` (see ``PositionNorm``).
    """

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, *, act: ActLayer | None, norm: str) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=norm_name(norm) == "none")
        self.norm = PositionNorm(norm, c_out)
        self.act = get_act(act)() if act is not None else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, C_in, L) zero at padding, ``mask`` (B, 1, L) -> (B, C_out, L / stride) and its mask."""
        mask = mask[..., :: self.stride]
        return self.act(self.norm(self.conv(x))) * mask, mask


class MaskedBlock(nn.Module):
    """ResNet basic block of two k=3 MaskedConvs plus a shortcut (a 1×1 conv when the shape changes).

    Args:
        c_in, c_out: channels.
        stride: of the first conv and of the shortcut.
        act: activation.
        norm: see ``PositionNorm``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, *, act: ActLayer, norm: str) -> None:
        super().__init__()
        self.conv1 = MaskedConv(c_in, c_out, 3, stride, act=act, norm=norm)
        self.conv2 = MaskedConv(c_out, c_out, 3, 1, act=None, norm=norm)
        self.shortcut = MaskedConv(c_in, c_out, 1, stride, act=None, norm=norm) if stride != 1 or c_in != c_out else None
        self.act = get_act(act)()

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, m = self.conv1(x, mask)  # (B, C_out, L / stride)
        out, m = self.conv2(out, m)
        short = x if self.shortcut is None else self.shortcut(x, mask)[0]
        return self.act(out + short) * m, m


class MaskedStage(nn.Module):
    """``depth`` MaskedBlocks; called as ``stage(x, mask)`` it returns only ``x`` (for hooks),
    and ``self.stride`` says how its mask shrinks."""

    def __init__(self, blocks: list[nn.Module], stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.stride = stride

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for block in self.blocks:
            x, mask = block(x, mask)
        return x


def _zero_init_last(model: nn.Module) -> None:
    """Zero the last norm scale of every residual branch, so each block starts as its shortcut."""
    for m in model.modules():
        if isinstance(m, MaskedBlock):
            w = getattr(m.conv2.norm.norm, "weight", None)
            if isinstance(w, Tensor):
                nn.init.zeros_(w)


class SeqResNet(Model):
    """1-D ResNet over one-hot residues: a k=7 stride-2 stem, then 3 stages of ``depth`` residual
    blocks (``width``, 2·``width``, 4·``width`` channels; stages 2 and 3 halve the length while it
    is at least 8), masked global max pool (a motif anywhere counts), dropout, linear.

    Args:
        input_shape: ``(length,)``: the most residues per sequence (shorter inputs are fine).
        num_classes: number of logits (1: a regression).
        vocab: residue ids the data holds (padding included); None: the alphabet's.
        alphabet: ``dna`` | ``rna`` | ``protein``: what the ids mean.
        width: channels of the stem and first stage.
        depth: residual blocks per stage.
        act: activation.
        norm: ``batch`` | ``layer`` | ``group`` | ``none`` (layer and group per position).
        dropout: before the classifier.

    >>> m = SeqResNet((64,), 3, alphabet="dna", width=8)
    >>> m(torch.randint(1, 5, (2, 64))).shape
    torch.Size([2, 3])
    """

    name = "seqresnet"
    hparams = ("width", "depth", "act", "norm", "dropout", "vocab", "alphabet")
    input_kind = "tokens"
    example_shape: ClassVar[tuple[int, ...]] = (64,)
    example_kwargs: ClassVar[dict[str, Any]] = {"vocab": ALPHABETS["dna"].vocab, "alphabet": "dna"}

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        vocab: int | None = None,
        alphabet: str = "dna",
        width: int = 32,
        depth: int = 1,
        act: ActLayer = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        length = token_context(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        self.alphabet, self.vocab = check_sequence_args(self.name, vocab, alphabet)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm = norm_name(norm)
        self.add_stage("onehot", OneHot(self.alphabet, self.vocab, length))  # (B, S, T)
        self.add_stage("stem", MaskedStage([MaskedConv(len(self.alphabet.bases), width, STEM_KERNEL, STEM_STRIDE, act=act, norm=norm)], STEM_STRIDE))
        size, c_in = math.ceil(length / STEM_STRIDE), width  # (B, width, T / STEM_STRIDE)
        for i in range(3):
            c_out = width * 2**i
            stride = 2 if i > 0 and size >= 8 else 1
            size = math.ceil(size / stride)
            blocks = [MaskedBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1, act=act, norm=norm)
                      for j in range(depth)]  # fmt: skip
            self.add_stage(f"stage{i + 1}", MaskedStage(blocks, stride))  # (B, c_out, T / 2**(i+1))
            c_in = c_out
        self.set_head(c_in, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        _zero_init_last(self)
        self.arch.update(vocab=self.vocab, alphabet=self.alphabet.name, width=width, depth=depth, act=act_name(act),
                         norm=norm, dropout=float(dropout))  # fmt: skip

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random residue ids (n, length), each row followed by padding."""
        return random_residues(self, self.alphabet, n, generator)

    def forward_features(self, idx: Tensor) -> Tensor:
        """(B, T) ids -> (B, 4·width, T / 16 or so), zero at padding."""
        mask = (idx != PAD).unsqueeze(1)  # (B, 1, T)
        x = self.onehot(idx)  # (B, S, T)
        for _, stage in self.stages()[1:]:
            x = stage(x, mask)
            mask = mask[..., :: stage.stride]
        return x

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Masked max over positions (padding is zero), dropout, linear: (B, C, L) -> (B, K)."""
        x = masked_max(feats)  # (B, C)
        return x if pre_logits else self.head(self.head_drop(x))


POSITIONS: tuple[str, ...] = ("learned", "sinusoidal", "rotary")


def sinusoidal_table(n: int, width: int) -> Tensor:
    """The Transformer's fixed positions: sin/cos of ``p / 10000**(2i / C)``, (n, C)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float32) / width)
    table = torch.zeros(n, width)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)[:, : width // 2]
    return table


class PatchStem(nn.Module):
    """One-hot (B, S, T) -> tokens (B, N, C), N = ceil(T / patch): a k=9 MaskedConv to ``width / 2``
    channels, then a conv of kernel and stride ``patch`` (a patch is a token if any residue in it is).

    Args:
        c_in: one-hot channels.
        width: token features.
        patch: residues per token.
        act: activation.
        norm: norm of the first conv (see ``PositionNorm``).
    """

    def __init__(self, c_in: int, width: int, patch: int, *, act: ActLayer, norm: str) -> None:
        super().__init__()
        self.patch = patch
        self.local = MaskedConv(c_in, max(width // 2, 1), 9, 1, act=act, norm=norm)
        self.proj = nn.Conv1d(max(width // 2, 1), width, patch, stride=patch)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` (B, S, T) zero at padding, ``mask`` (B, 1, T) -> (B, C, N), zero at padding tokens."""
        x, _ = self.local(x, mask)  # (B, C/2, T)
        pad = -x.shape[-1] % self.patch
        x = self.proj(F.pad(x, (0, pad)))  # (B, C, N)
        return x * patch_mask(mask, self.patch)


def patch_mask(mask: Tensor, patch: int) -> Tensor:
    """(B, 1, T) residue mask -> (B, 1, ceil(T / patch)): a patch is a token if any residue in it is."""
    return F.max_pool1d(mask.float(), patch, ceil_mode=True) > 0


class ChannelsBlock(Block):
    """A Transformer :class:`Block` on channels-first tokens: (B, C, N) -> (B, C, N)."""

    def forward(self, x: Tensor, cache: Any = None, key_mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(x.transpose(1, 2), cache, key_mask).transpose(1, 2)


class SeqTransformer(Model):
    """Transformer encoder over patches of one-hot residues, masked mean pool, LayerNorm, linear.

    A patch stem (:class:`PatchStem`, 8 residues per token, so a 1,500-bp gene is 188 tokens),
    positions (learned, sinusoidal or rotary), ``depth`` pre-norm blocks with padding keys masked
    out of the attention. Features are laid out channels first, (B, C, N tokens).

    Args:
        input_shape: ``(length,)``: the most residues per sequence (shorter inputs are fine).
        num_classes: number of logits (1: a regression).
        vocab: residue ids the data holds (padding included); None: the alphabet's.
        alphabet: ``dna`` | ``rna`` | ``protein``.
        width: features per token.
        depth: Transformer blocks.
        heads: attention heads; 0/None: ``max(1, width // 32)``; must divide ``width``.
        act: activation of the stem and the MLPs.
        norm: the stem's norm (``batch`` | ``layer`` | ``group`` | ``none``); the blocks always
            use LayerNorm (pre-norm).
        dropout: attention, residual, MLP and classifier dropout.
        positions: ``learned`` | ``sinusoidal`` | ``rotary``.
    """

    name = "seqtransformer"
    hparams = ("width", "depth", "act", "norm", "dropout", "heads", "positions", "vocab", "alphabet")
    input_kind = "tokens"
    patch: ClassVar[int] = 8
    example_shape: ClassVar[tuple[int, ...]] = (64,)
    example_kwargs: ClassVar[dict[str, Any]] = {"vocab": ALPHABETS["dna"].vocab, "alphabet": "dna"}

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        vocab: int | None = None,
        alphabet: str = "dna",
        width: int = 64,
        depth: int = 2,
        heads: int | None = None,
        act: ActLayer = "gelu",
        norm: str = "layer",
        dropout: float = 0.0,
        positions: str = "learned",
    ) -> None:
        length = token_context(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        self.alphabet, self.vocab = check_sequence_args(self.name, vocab, alphabet)
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        norm = norm_name(norm)
        heads = resolve_heads(self.name, width, heads, head_size=32)
        check_positions(positions, width, heads, choices=POSITIONS)
        tokens = math.ceil(length / self.patch)
        self.add_stage("onehot", OneHot(self.alphabet, self.vocab, length))  # (B, S, T)
        self.add_stage("stem", PatchStem(len(self.alphabet.bases), width, self.patch, act=act, norm=norm))  # (B, C, N)
        if positions == "learned":
            self.wpe = nn.Parameter(torch.zeros(tokens, width))
        elif positions == "sinusoidal":
            self.register_buffer("wpe", sinusoidal_table(tokens, width), persistent=False)
        self.positions = positions
        self.drop = nn.Dropout(dropout)
        for i in range(1, depth + 1):
            block = ChannelsBlock(width, heads, context=tokens, act=act, norm="layer", dropout=dropout,
                          rotary=positions == "rotary", causal=False)  # fmt: skip
            self.add_stage(f"block{i}", block)  # (B, C, N)
        self.ln_f = nn.LayerNorm(width)
        self.set_head(width, dropout)
        init_transformer_weights(self, depth)
        if positions == "learned":
            nn.init.normal_(self.wpe, std=0.02)
        self.arch.update(vocab=self.vocab, alphabet=self.alphabet.name, width=width, depth=depth, heads=heads,
                         act=act_name(act), norm=norm, dropout=float(dropout), positions=positions)  # fmt: skip

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random residue ids (n, length), each row followed by padding."""
        return random_residues(self, self.alphabet, n, generator)

    def forward_features(self, idx: Tensor) -> Tensor:
        """(B, T) ids -> (B, C, ceil(T / patch)), zero at padding tokens."""
        mask = (idx != PAD).unsqueeze(1)  # (B, 1, T)
        x = self.stem(self.onehot(idx), mask)  # (B, C, N)
        keep = patch_mask(mask, self.patch)  # (B, 1, N)
        if self.positions != "rotary":
            x = x + self.wpe[: x.shape[-1]].T  # (C, N) broadcast
        x = self.drop(x) * keep
        for _, block in self.stages()[2:]:
            x = block(x, key_mask=keep[:, 0])  # (B, C, N), zero at padding
        return x

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Masked mean over tokens, LayerNorm, dropout, linear: (B, C, N) -> (B, K)."""
        x = self.ln_f(masked_mean(feats))  # (B, C)
        return x if pre_logits else self.head(self.head_drop(x))


REGISTERED: tuple[type[Model], ...] = (SeqResNet, SeqTransformer)
