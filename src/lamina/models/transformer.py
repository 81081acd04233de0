"""A decoder-only Transformer language model (nanoGPT), with a KV cache for generation.

    idx (B, T) ─ embed ─ block1 ─ ... ─ blockN ─▶ feats (B, T, C) ─ LayerNorm ─ tied head ─▶ (B, T, V)

Each block is pre-norm: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``. Attention goes through
``scaled_dot_product_attention(is_causal=True)`` so the flash kernels run on a GPU. Positions are
learned (nanoGPT's ``wpe``) or rotary (RoPE on q and k, tables kept as non-persistent buffers).

Generation keeps the keys and values of every layer in preallocated (B, H, context, D) buffers
(:class:`KVCache`), so a new token costs one position instead of the whole window. Once the
window is full the cache keeps the last ``context // 2`` tokens and prefills them again; before
that, cached and uncached generation give the same tokens (the uncached path slides the window
one token at a time instead, so they differ only once prompt + new tokens exceed the context).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.errors import LaminaError, did_you_mean
from lamina.models.base import Model, check_hparams
from lamina.models.layers import ActLayer, act_name, get_act, norm_name

POSITIONS: tuple[str, ...] = ("learned", "rotary")


def token_norm(model: str, norm: str | None, width: int) -> tuple[str, nn.Module]:
    """``layer`` → LayerNorm over the features of each token, ``none`` → Identity.

    Batch and group norm are refused: their statistics would mix positions (and, for a language
    model, let a token see the future through them).
    """
    key = norm_name(norm)
    if key not in ("layer", "none"):
        raise LaminaError(f"model '{model}' takes norm 'layer' or 'none', got '{norm}'",
                          hint="batch and group statistics would mix tokens across positions")  # fmt: skip
    return key, nn.LayerNorm(width) if key == "layer" else nn.Identity()


def resolve_heads(model: str, width: int, heads: int | None, *, head_size: int = 64) -> int:
    """``heads`` or, when 0/None, ``max(1, width // head_size)``; it must divide ``width``."""
    h = int(heads) if heads else max(1, width // head_size)
    if h < 1 or width % h:
        raise LaminaError(f"model '{model}' needs heads that divide width {width}, got heads={h}")
    return h


def rope_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles ``p · base**(-2i/D)``: two (context, D/2) tables."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)  # (context, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x[i], x[i + D/2]) by its angle: (B, H, T, D) with (T, D/2) tables."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def token_context(model: str, input_shape: Sequence[int]) -> int:
    """The context of a token-id model: ``input_shape`` must be ``(context,)``."""
    if len(input_shape) != 1:
        raise LaminaError(f"model '{model}' needs input shape (context,) of token ids, got {tuple(input_shape)}")
    return int(input_shape[0])


def check_positions(positions: str, width: int, heads: int, *, choices: tuple[str, ...] = POSITIONS) -> bool:
    """Whether ``positions`` (one of ``choices``) is rotary; rotary needs an even head size."""
    if positions not in choices:
        raise LaminaError(f"unknown positions '{positions}': {did_you_mean(str(positions), choices)}")
    if positions == "rotary" and (width // heads) % 2:
        raise LaminaError(f"rotary positions need an even head size, got width {width} / heads {heads}")
    return positions == "rotary"


def init_transformer_weights(model: nn.Module, depth: int) -> None:
    """nanoGPT's init: normal(0, 0.02) for linear and embedding weights, normal(0, 0.02 / sqrt(2 · depth))
    for the projections into the residual stream; padding embeddings stay zero."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])
    for name, p in model.named_parameters():
        if name.endswith("proj.weight"):  # attn.proj and mlp.proj write into the residual stream
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))


class KVCache:
    """Keys and values one attention layer has seen, in (B, H, context, D) buffers made on first use.

    Args:
        context: the most positions the cache holds.
    """

    def __init__(self, context: int) -> None:
        self.context = context
        self.length = 0  # positions filled
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, H, T, D) keys and values after the cached ones; return all of them (B, H, length, D)."""
        if self.k is None or self.v is None:
            B, H, _, D = k.shape
            self.k = k.new_empty(B, H, self.context, D)
            self.v = v.new_empty(B, H, self.context, D)
        start, end = self.length, self.length + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``, causal or masked.

    Args:
        width: features per token (C).
        heads: attention heads (H); the head size is D = C / H.
        context: the most positions (sizes the rotary tables).
        dropout: attention and residual dropout (attention dropout only while training).
        rotary: apply RoPE to q and k.
        causal: each position attends to itself and earlier ones only (a decoder).
    """

    def __init__(
        self, width: int, heads: int, *, context: int, dropout: float, rotary: bool, causal: bool = True
    ) -> None:
        super().__init__()
        self.heads, self.dropout, self.rotary, self.causal = heads, dropout, rotary, causal
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.resid_drop = nn.Dropout(dropout)
        if rotary:
            cos, sin = rope_tables(context, width // heads)
            self.register_buffer("cos", cos, persistent=False)  # (context, D/2)
            self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: Tensor, cache: KVCache | None = None, key_mask: Tensor | None = None) -> Tensor:
        """(B, T, C) -> (B, T, C); ``cache``: attend over the cached positions too; ``key_mask``:
        (B, T) bool, False for keys (padding) nobody may attend to."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, D)
        start = cache.length if cache is not None else 0
        if self.rotary:
            cos, sin = self.cos[start : start + T], self.sin[start : start + T]  # (T, D/2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, start + T, D)
        drop = self.dropout if self.training else 0.0
        mask, causal = None, self.causal
        if key_mask is not None:  # a row of padding only attends everywhere (its output is unused)
            keep = key_mask | ~key_mask.any(dim=1, keepdim=True)  # (B, T)
            mask = keep[:, None, None, :]  # (B, 1, 1, T)
        elif causal and start > 0:  # queries after cached keys: a single query sees all of them
            causal = False
            if T > 1:
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)  # (T, start + T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class FeedForward(nn.Sequential):
    """Linear C → 4C, activation, Linear 4C → C, dropout."""

    def __init__(self, width: int, act: ActLayer, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 4 * width, bias=False)
        self.act = get_act(act)()
        self.proj = nn.Linear(4 * width, width, bias=False)
        self.drop = nn.Dropout(dropout)


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

    Args:
        width: features per token.
        heads: attention heads.
        context: the most positions.
        act: activation of the MLP.
        norm: ``layer`` or ``none``.
        dropout: attention, residual and MLP dropout.
        rotary: rotary positions in the attention.
        causal: causal attention (a decoder) or padding-masked attention (an encoder).
    """

    def __init__(
        self, width: int, heads: int, *, context: int, act: ActLayer, norm: str, dropout: float, rotary: bool,
        causal: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.ln1 = token_norm("block", norm, width)[1]
        self.attn = SelfAttention(width, heads, context=context, dropout=dropout, rotary=rotary, causal=causal)
        self.ln2 = token_norm("block", norm, width)[1]
        self.mlp = FeedForward(width, act, dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, key_mask: Tensor | None = None) -> Tensor:
        """(B, T, C) -> (B, T, C); with ``key_mask`` (B, T) the padding positions come out zero."""
        x = x + self.attn(self.ln1(x), cache, key_mask)  # (B, T, C)
        x = x + self.mlp(self.ln2(x))  # (B, T, C)
        return x if key_mask is None else x * key_mask[..., None]


class TokenEmbedding(nn.Module):
    """Token embedding plus (learned) position embedding, then dropout: (B, T) -> (B, T, C).

    Args:
        vocab: vocabulary size.
        width: features per token.
        context: the most positions.
        dropout: dropout on the sum.
        learned_positions: add a learned (context, C) position table (False: positions are
            rotary, inside the attention).
        padding_idx: a token id whose embedding is zero and never trained (text classifiers).
    """

    def __init__(
        self, vocab: int, width: int, *, context: int, dropout: float, learned_positions: bool,
        padding_idx: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.context = context
        self.wte = nn.Embedding(vocab, width, padding_idx=padding_idx)
        self.wpe = nn.Embedding(context, width) if learned_positions else None
        self.drop = nn.Dropout(dropout)

    def forward(self, idx: Tensor, start: int = 0) -> Tensor:
        """Embed ``idx`` (B, T) taken to sit at positions ``start .. start + T - 1``."""
        if idx.ndim != 2:
            raise LaminaError(f"expected token ids of shape (batch, tokens), got shape {tuple(idx.shape)}")
        T = idx.shape[1]
        if start + T > self.context:
            raise LaminaError(f"sequence of {start + T} tokens is longer than the model's context {self.context}")
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))  # (T, C) broadcast
        return self.drop(x)


class GPT(Model):
    """Decoder-only Transformer language model: (B, T) token ids -> (B, T, V) next-token logits.

    Stages are ``embed`` then ``block1`` ... ``blockN``; the head is a final LayerNorm and a
    linear layer whose weight *is* the token embedding (tied; the state dict holds it once, as
    ``embed.wte.weight``). Weights start as in nanoGPT: normal(0, 0.02), and the projections
    that write into the residual stream normal(0, 0.02 / sqrt(2 · depth)).

    Args:
        input_shape: ``(context,)``, the most tokens the model reads at once.
        num_classes: vocabulary size V.
        width: features per token C.
        depth: Transformer blocks.
        heads: attention heads; 0/None: ``max(1, width // 64)``; must divide ``width``.
        act: activation of the MLPs.
        norm: ``layer`` (LayerNorm) or ``none``.
        dropout: embedding, attention, residual and MLP dropout.
        positions: ``learned`` (a position table) or ``rotary`` (RoPE; needs an even head size).

    >>> m = GPT((16,), 50, width=32, depth=2)
    >>> m(torch.zeros(3, 10, dtype=torch.long)).shape
    torch.Size([3, 10, 50])
    >>> m.generate(torch.zeros(1, 4, dtype=torch.long), 5, temperature=0).shape
    torch.Size([1, 9])
    """

    name = "gpt"
    hparams = ("width", "depth", "act", "norm", "dropout", "heads", "positions")
    input_kind = "tokens"
    feature_layout = "tokens"
    output_kind = "token_logits"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 128,
        depth: int = 4,
        heads: int | None = None,
        act: ActLayer = "gelu",
        norm: str = "layer",
        dropout: float = 0.0,
        positions: str = "learned",
    ) -> None:
        context = token_context(self.name, input_shape)
        super().__init__(input_shape, num_classes)
        self.context = context
        check_hparams(self.name, width=width, depth=depth, dropout=dropout)
        heads = resolve_heads(self.name, width, heads)
        norm = token_norm(self.name, norm, width)[0]
        rotary = check_positions(positions, width, heads)
        vocab = self.num_classes
        self.add_stage("embed", TokenEmbedding(vocab, width, context=self.context, dropout=dropout,
                                               learned_positions=not rotary))  # fmt: skip
        for i in range(1, depth + 1):
            block = Block(width, heads, context=self.context, act=act, norm=norm, dropout=dropout, rotary=rotary)
            self.add_stage(f"block{i}", block)  # (B, T, C)
        self.num_features = width
        self.ln_f = token_norm(self.name, norm, width)[1]
        self.head = nn.Linear(width, vocab, bias=False)
        init_transformer_weights(self, depth)
        self.head.weight = self.embed.wte.weight  # tied: one tensor, trained by both ends
        self.register_state_dict_post_hook(_drop_tied_head)
        self.register_load_state_dict_pre_hook(_fill_tied_head)
        self.arch.update(width=width, depth=depth, heads=heads, act=act_name(act), norm=norm,
                         dropout=float(dropout), positions=positions)  # fmt: skip

    # -- the contract --------------------------------------------------------------------

    def example_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random token ids (n, context)."""
        return torch.randint(0, self.num_classes, (n, self.context), generator=generator)

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Final norm, then the tied head: (B, T, C) -> (B, T, V); ``pre_logits``: normed (B, T, C)."""
        x = self.ln_f(feats)  # (B, T, C)
        return x if pre_logits else self.head(x)  # (B, T, V)

    # -- generation ----------------------------------------------------------------------

    def generate(
        self, idx: Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
        generator: torch.Generator | None = None, use_cache: bool = True,
    ) -> Tensor:  # fmt: skip
        """Continue each row of ``idx`` (B, T0) by ``max_new_tokens`` tokens: (B, T0 + new).

        Args:
            idx: prompt token ids (B, T0), T0 >= 1; only its last ``context`` tokens are read.
            max_new_tokens: tokens to add.
            temperature: divides the logits; 0 picks the most likely token (greedy).
            top_k: sample among the ``top_k`` most likely tokens only (None: all).
            generator: source of randomness of the sampling.
            use_cache: reuse the keys and values of earlier positions (one position a token);
                False recomputes the whole window every token (the reference).
        """
        new = list(self.iter_generate(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                      generator=generator, use_cache=use_cache))  # fmt: skip
        return torch.cat([idx, *(t[:, None] for t in new)], dim=1)

    def iter_generate(
        self, idx: Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
        generator: torch.Generator | None = None, use_cache: bool = True,
    ) -> Iterator[Tensor]:  # fmt: skip
        """Yield the new tokens one at a time, each a (B,) tensor (for streaming); see ``generate``.

        Each token is computed in eval mode without gradients; the model's mode is restored
        before the token is yielded, so nothing leaks into the caller between tokens. The
        arguments are checked at the call, not at the first ``next``.
        """
        _check_generate_args(idx, max_new_tokens, temperature, top_k)
        return self._stream(idx, int(max_new_tokens), temperature, top_k, generator, use_cache)

    def _stream(
        self, idx: Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
        generator: torch.Generator | None, use_cache: bool,
    ) -> Iterator[Tensor]:  # fmt: skip
        window = idx[:, -self.context :]  # (B, <= context): the tokens the model reads
        caches: list[KVCache] | None = None
        for _ in range(max_new_tokens):
            with self._inference():
                if not use_cache:
                    logits = self(window)[:, -1]  # (B, V)
                elif caches is None or caches[0].length == self.context:  # first token, or the cache is full
                    if caches is not None:
                        window = window[:, -max(1, self.context // 2) :]
                    caches = [KVCache(self.context) for _ in self.stages()[1:]]
                    logits = self._forward_cached(window, caches)  # prefill
                else:
                    logits = self._forward_cached(window[:, -1:], caches)  # one position
                token = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)  # (B,)
                window = torch.cat((window, token[:, None]), dim=1)[:, -self.context :]
            yield token

    def _forward_cached(self, idx: Tensor, caches: list[KVCache]) -> Tensor:
        """Logits (B, V) of the last of ``idx`` (B, T), which follows the cached positions."""
        x = self.embed(idx, start=caches[0].length)  # (B, T, C)
        for (_, block), cache in zip(self.stages()[1:], caches, strict=True):
            x = block(x, cache)  # (B, T, C)
        return self.forward_head(x[:, -1:])[:, -1]  # (B, V)

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode and inference mode inside (no autograd bookkeeping at all, which the many small
        ops of a cached token feel); the train/eval mode as it was afterwards."""
        was_training = self.training
        if was_training:  # walking the modules costs ~0.1 ms: only when there is a mode to change
            self.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if was_training:
                self.train()


def sample_next(
    logits: Tensor, *, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> Tensor:
    """A token per row of ``logits`` (B, V): argmax at temperature 0, else a sample: (B,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


def _check_generate_args(idx: Tensor, max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    if idx.ndim != 2 or idx.shape[1] < 1 or idx.is_floating_point() or idx.is_complex():
        raise LaminaError(f"generate needs a prompt of token ids (batch, tokens >= 1), got {idx.dtype} {tuple(idx.shape)}")
    if int(max_new_tokens) < 0:
        raise LaminaError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not float(temperature) >= 0:  # also refuses NaN
        raise LaminaError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if top_k is not None and int(top_k) < 1:
        raise LaminaError(f"top_k must be >= 1 or None, got {top_k}")


# The head's weight is the token embedding's: keep it once in state dicts (safetensors refuses
# tensors that share memory) and point the head at it again when loading.


def _drop_tied_head(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    state_dict.pop(prefix + "head.weight", None)


def _fill_tied_head(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    if prefix + "embed.wte.weight" in state_dict and prefix + "head.weight" not in state_dict:
        state_dict[prefix + "head.weight"] = state_dict[prefix + "embed.wte.weight"]
