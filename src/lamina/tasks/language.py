"""Language modelling: next-token cross-entropy, with bits per character as the headline.

Batches are windows of ``context`` tokens cut at random offsets of the training text, on the
training device (:class:`WindowLoader`); evaluation reads the **whole** validation tail once in
consecutive windows (:class:`TailLoader`), every token after the first predicted exactly once.
The loss is in nats per token; bits per character divide it by ``ln 2`` and by the tail's
characters per token (1 for a character vocabulary).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamina.config import DataConfig, ModelConfig, RunConfig
from lamina.data.base import Dataset, Split
from lamina.data.gpu_loader import Resumable, Shardable, _seed
from lamina.data.text import DEFAULT_CONTEXT
from lamina.errors import LaminaError
from lamina.models import Model, create_model
from lamina.tasks.base import Sums, Task

# What a language model trains with where nothing else is set (lamina's own defaults suit image
# classifiers): a short warm-up and a cosine decay, no label smoothing, weight decay 0.1, gradient
# clipping at 1 and AdamW's beta2 0.99 (nanoGPT's shakespeare_char choices).
# On a CPU: Muon on the hidden matrices with AdamW on the rest (train.optimizer=muon) at 6e-3, fp32
# (bf16 autocast made this small Transformer's step 3-5x slower even with AVX512-BF16; it pays off
# for convolutions, so the classifier's "auto" keeps it), and a 4-block, 128-wide model with 2 heads
# and rotary positions on windows of 128 characters, 16 a step. benchmarks/lm_trials.py (AVX2, 900
# steps each, whole-tail validation nats per character, training seconds): AdamW 3e-3 on 64-character
# learned windows 1.605 (116 s); Muon at 3e-3 1.402 (134 s), 6e-3 1.364 (146 s), 1.2e-2 1.376; Muon 6e-3
# on 128-character rotary windows 1.324 (170 s), on 256 1.320 (182 s). The long race of
# benchmarks/austen_lm.py runs these defaults. On a
# GPU: nanoGPT's GPU shakespeare_char recipe (AdamW 1e-3, 6 blocks of 384, 6 heads, 256
# characters, 64 a step, dropout 0.2), bf16 and torch.compile (not yet measured here: no GPU).
DEFAULTS: dict[str, Any] = {
    "train": {"optimizer": "adamw", "lr": 3e-3, "schedule": "cosine", "warmup": 0.02, "label_smoothing": 0.0,
              "weight_decay": 0.1, "grad_clip": 1.0, "epochs": 5, "gradient_flow_every": 0, "beta2": 0.99},
    "model": {"name": "gpt"},
    "cpu": {"train": {"precision": "fp32", "optimizer": "muon", "lr": 6e-3}, "data": {"context": 128, "batch_size": 16},
            "model": {"width": 128, "depth": 4, "heads": 2, "positions": "rotary"}},
    "cuda": {"train": {"precision": "auto", "compile": True, "lr": 1e-3}, "data": {"context": 256, "batch_size": 64},
             "model": {"width": 384, "depth": 6, "heads": 6, "dropout": 0.2}},
}


class WindowLoader(Resumable, Shardable):
    """Random windows ``x = t[o : o+T]``, ``y = t[o+1 : o+T+1]`` of a token stream resident on ``device``.

    An epoch is ``steps`` batches (default: as many tokens as the text has). The offsets of batch
    ``i`` of epoch ``e`` are a pure function of ``(seed, e, i)``, so a resumed run sees the same batches;
    sharded over a job's ranks, each takes its equal part of those ``batch_size`` windows.
    """

    train_split = True

    def __init__(self, tokens: Tensor, *, context: int, batch_size: int, device: torch.device, seed: int = 0,
                 steps: int = 0) -> None:
        if len(tokens) <= context:
            raise LaminaError(f"the training text has {len(tokens)} tokens, fewer than one window of {context} + 1")
        self.tokens = tokens.to(device)
        self.context, self.batch_size, self.device, self.seed = context, batch_size, torch.device(device), seed
        self.steps = steps or max(1, len(tokens) // (batch_size * context))
        self.epoch = self.position = 0
        self._span = torch.arange(context + 1, device=self.device)  # (T+1,)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.tokens) - self.context
        for i in range(self.position, self.steps):
            g = torch.Generator(device=self.device).manual_seed(_seed(self.seed, self.epoch, i))
            offsets = torch.randint(0, n, (self.batch_size, 1), device=self.device, generator=g)  # (B, 1)
            w = self.tokens[self.local(offsets) + self._span]  # (B / ranks, T+1)
            self.position = i + 1
            yield w[:, :-1], w[:, 1:]
        self.set_epoch(self.epoch + 1)


class TailLoader(Shardable):
    """The whole validation tail in consecutive windows: x = t[k : k+T], y = t[k+1 : k+T+1], k = 0, T, 2T...

    Every token but the first is a target exactly once; the last window may be shorter. Sharded,
    each rank takes its part of every batch of windows, and the last rank the shorter window.
    """

    def __init__(self, tokens: Tensor, *, context: int, batch_size: int, device: torch.device) -> None:
        self.tokens, self.context, self.batch_size = tokens.to(device), context, batch_size
        n = len(tokens) - 1  # targets
        self.full, self.rest = n // context, n % context

    def __len__(self) -> int:
        return -(-self.full // self.batch_size) + int(self.rest > 0)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        T = self.context
        for start in range(0, self.full, self.batch_size):
            rows = self.local(torch.arange(start, min(start + self.batch_size, self.full), device=self.tokens.device))
            if not len(rows):
                continue
            idx = rows[:, None] * T + torch.arange(T + 1, device=self.tokens.device)  # (B, T+1)
            w = self.tokens[idx]
            yield w[:, :-1], w[:, 1:]
        if self.rest and self.rank == self.world - 1:
            w = self.tokens[self.full * T :][None]  # (1, rest+1)
            yield w[:, :-1], w[:, 1:]


class LanguageModel(Task):
    """Next-token prediction over a token stream.

    Args:
        vocab_size: the number of tokens.
        context: tokens per window.
        chars_per_token: characters per token of the validation tail (1 for a character vocabulary).
    """

    name: ClassVar[str] = "language-model"
    headline: ClassVar[str] = "bpc"
    higher_is_better: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = DEFAULTS
    default_batch_size = 32

    def __init__(self, vocab_size: int, *, context: int = DEFAULT_CONTEXT, chars_per_token: float = 1.0,
                 eval_batch_size: int = 32) -> None:
        self.vocab_size, self.context, self.chars_per_token = vocab_size, context, chars_per_token
        self.eval_batch_size = eval_batch_size
        self.codec: Any = None  # the vocabulary, for the text samples written during training

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.float().flatten(0, 1), targets.flatten())  # (B*T, V) against (B*T,)

    def sums(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> Sums:
        n = targets.numel()  # tokens, not examples: each batch's mean weighs by its tokens
        return {"count": n, "loss_sum": loss.detach().double() * n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["count"], 1)
        return {"loss": loss, "bpc": loss / math.log(2) / self.chars_per_token}

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "context": self.context}

    @classmethod
    def from_data(cls, ds: Dataset, cfg: RunConfig) -> LanguageModel:
        if ds.codec is None:
            raise LaminaError(f"{ds.name} has no vocabulary: a language model needs text")
        task = cls(ds.codec.size, context=cfg.data.context or DEFAULT_CONTEXT, chars_per_token=ds.chars_per_token,
                   eval_batch_size=max(cfg.data.batch_size, 32))
        task.codec = ds.codec
        return task

    def build_model(self, m: ModelConfig, ds: Dataset) -> Model:
        name = "gpt" if m.name == "auto" else m.name
        return create_model(name, (self.context,), self.vocab_size,
                            **m.given("width", "depth", "heads", "dropout", "positions"))

    def loaders(self, ds: Dataset, d: DataConfig, *, device: torch.device, seed: int,
                channels_last: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"train": WindowLoader(_tokens(ds.train), context=self.context, batch_size=d.batch_size,
                                                     device=device, seed=seed, steps=d.steps_per_epoch)}
        if ds.val is not None:
            out["val"] = self.eval_loader(ds.val, ds, d, device=device)
        return out

    def eval_loader(self, split: Split, ds: Dataset, d: DataConfig, *, device: torch.device) -> TailLoader:
        return TailLoader(_tokens(split), context=self.context, batch_size=self.eval_batch_size, device=device)

    def final_metrics(self, model: nn.Module, loaders: dict[str, Any], *,
                      autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                      ) -> dict[str, Any]:
        """The whole validation tail's bits per character and loss (nats per token), in fp32."""
        m = self.evaluate(model, loaders["val"], autocast=autocast)
        return {"val_bpc": m["bpc"], "val_loss": m["loss"], "val_tokens": loaders["val"].tokens.numel() - 1,
                "context": self.context}

    def callbacks(self, run_dir: Path) -> list[Any]:
        return [TextSamples(run_dir / "samples.jsonl")]


def _tokens(split: Split) -> Tensor:
    x = split.x
    if not isinstance(x, Tensor) or x.dim() != 1:
        raise LaminaError("a language model's split must be one stream of token ids")
    return x


class TextSamples:
    """Writes a short text sample at the end of a few epochs (the first, the middle, the last) to
    ``samples.jsonl``: what the model writes as it learns. Greedy-free: temperature 0.8, seed 0."""

    order = 55

    def __init__(self, path: Path, *, chars: int = 200) -> None:
        self.path, self.chars = path, chars

    def fit_start(self, trainer: Any) -> None: ...
    def epoch_start(self, trainer: Any) -> None: ...
    def batch_end(self, trainer: Any) -> None: ...
    def fit_end(self, trainer: Any) -> None: ...

    def epoch_end(self, trainer: Any) -> None:
        e, n = trainer.epoch, trainer.epochs
        if e not in {1, max(1, n // 2), n}:
            return
        model = trainer.ema.module if trainer.ema is not None else trainer.module
        codec = getattr(trainer.task, "codec", None)
        if codec is None or not hasattr(model, "generate"):
            return
        g = torch.Generator(device=trainer.engine.device).manual_seed(0)
        start = torch.tensor([[codec.start_id]], device=trainer.engine.device)
        ids = model.generate(start, self.chars, temperature=0.8, top_k=40, generator=g)[0, 1:].tolist()
        with self.path.open("a") as f:
            f.write(json.dumps({"epoch": e, "step": trainer.step, "text": codec.decode(ids)}) + "\n")
