"""The model registry and ``create_model``: name + input shape + class count -> ``Model``.

Builders are registered by name in ``MODELS`` (the classes themselves: calling one with
``(input_shape, num_classes, **kwargs)`` builds the model). Tests iterate over
``MODELS.names()``, so a newly registered model is tested automatically.

Each builder says which keywords it takes in its ``hparams``; a keyword it does not take is an
error when set, and ignored when 0, ``""`` or ``None`` (the defaults of ``ModelConfig``); a dropout
is ignored only when ``None`` (0 turns a model's default dropout off).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lamina.errors import LaminaError, did_you_mean
from lamina.models import audio, qnet, sequence, tabular, unet, vae
from lamina.models.base import Model
from lamina.models.cnn import CNN, ResNet
from lamina.models.mlp import MLP
from lamina.models.text import TextBag, TextCNN, TextTransformer
from lamina.models.transformer import GPT
from lamina.registry import Registry

MODELS: Registry[Callable[..., Model]] = Registry("model")
for _cls in (MLP, CNN, ResNet, GPT, TextCNN, TextTransformer, TextBag, *audio.REGISTERED, *sequence.REGISTERED,
             *tabular.REGISTERED, *unet.REGISTERED, *vae.REGISTERED, *qnet.REGISTERED):
    MODELS.register(_cls.name, _cls)

# The keyword arguments of create_model that come from ModelConfig (its fields besides the name);
# each model takes the subset in its ``hparams``.
MODEL_KWARGS: tuple[str, ...] = ("width", "depth", "act", "norm", "dropout", "heads", "positions")
# Keyword arguments that come from the data instead (``Dataset.model_kwargs``): the vocabulary size of
# token-id models, a sequence's alphabet (dna | rna | protein), an audio model's sample rate and
# SpecAugment masks, the cardinalities of a table's categorical columns.
DATA_KWARGS: tuple[str, ...] = ("vocab", "alphabet", "sample_rate", "spec_masks", "categories")
# Keyword arguments a task sets from its own config section: a VAE's latent size, a U-Net's channel
# multipliers per level.
TASK_KWARGS: tuple[str, ...] = ("latent", "mults")


def auto_model_name(input_shape: Sequence[int]) -> str:
    """``cnn`` for images (C, H, W) and signals (C, L), ``mlp`` for everything else."""
    return "cnn" if len(input_shape) in (2, 3) else "mlp"


def create_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> Model:
    """Build a registered model; ``create_model(**model.arch)`` rebuilds the same architecture.

    Args:
        name: a name in ``MODELS`` or ``"auto"`` (chosen from the rank of ``input_shape``).
        input_shape: shape of one example, without the batch dimension.
        num_classes: number of logits, at least 2.
        **kwargs: any of ``MODEL_KWARGS`` (``width``, ``depth``, ``act``, ``norm``, ``dropout``,
            ``heads``, ``positions``) or ``DATA_KWARGS`` (``vocab``) that the model takes (its
            ``hparams``); 0, ``""`` or ``None`` means the model's default (``dropout``: only
            ``None``; ``dropout=0`` is no dropout).

    >>> m = create_model("auto", (1, 28, 28), 10, width=8, depth=0)
    >>> m.arch["name"], m.arch["width"], m.arch["depth"]
    ('cnn', 8, 1)
    """
    valid = MODEL_KWARGS + DATA_KWARGS + TASK_KWARGS
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise LaminaError(
            f"unknown model argument '{unknown[0]}': {did_you_mean(unknown[0], valid)}",
            hint="valid arguments: " + ", ".join(valid),
        )
    if num_classes is None or int(num_classes) < 1:
        raise LaminaError(f"a model needs at least 1 output (a classifier 2 classes), got num_classes={num_classes}")
    shape = tuple(int(s) for s in input_shape)
    key = str(name).strip().lower()
    if key == "auto":
        key = auto_model_name(shape)
    builder = MODELS.get(key)
    takes = getattr(builder, "hparams", Model.hparams)
    given = {  # a dropout of 0 is "off", not "the model's default" (a table model's is 0.1)
        k: v for k, v in kwargs.items()
        if v is not None and (k == "dropout" or not (isinstance(v, str | int | float) and not v))
    }
    for k in given:
        if k not in takes:
            raise LaminaError(f"model '{key}' takes no '{k}' (got {given[k]!r})", hint="it takes: " + ", ".join(takes))
    model = builder(shape, int(num_classes), **given)
    model.arch["name"] = key
    return model
