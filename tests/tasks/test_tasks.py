"""The task contract, against references: every registered task gets the same harness
(a step, sums that survive a checkpoint round trip, metrics from sums), plus each task's own checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lamina.tasks import TASKS, Classify, LanguageModel
from lamina.tasks.base import Task, add_sums, to_floats
from lamina.tasks.language import TailLoader, WindowLoader
from lamina.tasks.regress import Regress
from lamina.training import checkpoint
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer

V, T = 7, 5


class TokenModel(nn.Module):
    """(B, T) ids -> (B, T, V) logits: an embedding and a linear layer (no context, but trainable)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(V, 8), nn.Linear(8, V)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(idx))


def example(name: str) -> tuple[Task, nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A task, a model it can train and a few batches: the registry-driven tests use this for every task."""
    g = torch.Generator().manual_seed(0)
    if name == "classify":
        x = torch.randn(48, 4, generator=g)
        y = (x[:, 0] > 0).long()
        return Classify(2), nn.Linear(4, 2), [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]
    if name == "language-model":
        tokens = torch.randint(0, V, (200,), generator=g)
        loader = WindowLoader(tokens, context=T, batch_size=4, device=torch.device("cpu"), seed=0, steps=3)
        return LanguageModel(V, context=T), TokenModel(), list(loader)
    if name == "regress":
        x = torch.randn(48, 4, generator=g)
        y = 3.0 * x[:, 0] - x[:, 1] + 10.0  # targets far from 0: the task standardises them
        return Regress(10.0, 3.0), nn.Linear(4, 1), [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]
    if name in ("vae", "diffusion"):  # 8x8 grey images in the task's pixel range, a tiny network
        from lamina.models import create_model
        from lamina.tasks import VAE, Diffusion

        task = VAE((1, 8, 8), latent=2) if name == "vae" else Diffusion((1, 8, 8), timesteps=20)
        lo, hi = task.pixel_range
        x = lo + (hi - lo) * (torch.rand(48, 1, 8, 8, generator=g) > 0.5).float()
        y = torch.zeros(48, dtype=torch.long)
        model = create_model(name if name == "vae" else "unet", (1, 8, 8), 1, width=4, **(
            {"latent": 2} if name == "vae" else {}))
        return task, model, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]
    raise AssertionError(f"no example for task {name}: add one")


STOCHASTIC = ("vae", "diffusion")  # a training forward pass draws noise: evaluation draws its own, fixed
LR = {"vae": 0.02}  # its loss sums over the 64 pixels


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_has_an_example(name):
    task, _, _ = example(name)
    assert task.name == name and task.headline


@pytest.mark.parametrize("name", TASKS.names())
def test_a_step_lowers_the_loss_and_sums_give_the_mean(name):
    task, model, batches = example(name)
    torch.manual_seed(0)
    trainer = Trainer(model, engine=Engine.create("cpu", "fp32"), task=task,
                      optimizer=torch.optim.SGD(model.parameters(), lr=LR.get(name, 0.5)))
    before = task.evaluate(model, batches)["loss"]
    for _ in range(5):
        trainer.fit(batches_loader(batches), epochs=trainer.epoch + 1)
    after = task.evaluate(model, batches)["loss"]
    assert after < before
    if name in STOCHASTIC:  # evaluation's noise is its own and fixed: the same every time
        assert task.evaluate(model, batches) == task.evaluate(model, batches)
        return
    # the running metrics are the sums of the last epoch, and their loss is the mean over its items
    total = {}
    with torch.no_grad():
        for x, y in batches:
            out = task.forward(model, x)
            add_sums(total, task.sums(out, y, task.loss(out, y)))
    m = task.summarize(to_floats(total))
    assert m["loss"] == pytest.approx(task.evaluate(model, batches)["loss"], rel=1e-5)
    assert task.headline in m


@pytest.mark.parametrize("name", TASKS.names())
def test_sums_survive_a_checkpoint_round_trip(name, tmp_path):
    task, model, batches = example(name)
    total = {}
    for x, y in batches:
        out = task.forward(model, x)
        add_sums(total, task.sums(out, y, task.loss(out, y)))
    checkpoint.save({"sums": total}, tmp_path / "c")
    back = checkpoint.load(tmp_path / "c")["sums"]
    assert {k: getattr(v, "dtype", type(v)) for k, v in back.items()} == {k: getattr(v, "dtype", type(v)) for k, v in total.items()}
    assert task.summarize(to_floats(back)) == task.summarize(to_floats(total))


class batches_loader:
    def __init__(self, batches):
        self.batches, self.batch_size = batches, len(batches[0][1])

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


# -- the language model's own references -------------------------------------------------------------
def test_language_model_loss_is_cross_entropy_by_hand():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(3, T, V, generator=g), torch.randint(0, V, (3, T), generator=g)
    by_hand = -logits.log_softmax(-1).gather(-1, y[..., None]).squeeze(-1).mean()
    task = LanguageModel(V, context=T)
    assert torch.allclose(task.loss(logits, y), by_hand, atol=1e-6)
    assert torch.allclose(task.loss(logits, y), F.cross_entropy(logits.view(-1, V), y.view(-1)))


def test_bits_per_character_are_nats_over_ln2_per_character():
    task = LanguageModel(V, context=T, chars_per_token=2.0)
    m = task.summarize({"count": 10, "loss_sum": 10 * math.log(2) * 3})
    assert m["loss"] == pytest.approx(3 * math.log(2)) and m["bpc"] == pytest.approx(1.5)


def test_tokens_not_examples_weigh_the_mean():
    task = LanguageModel(V, context=T)
    a, b = torch.zeros(1, 4, V), torch.zeros(1, 1, V)  # uniform logits: loss ln V per token
    a[..., 0] = 5.0  # the 4-token batch is confident and right
    ya, yb = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long)
    total = {}
    for out, y in ((a, ya), (b, yb)):
        add_sums(total, task.sums(out, y, task.loss(out, y)))
    expected = (4 * task.loss(a, ya) + task.loss(b, yb)) / 5
    assert task.summarize(to_floats(total))["loss"] == pytest.approx(float(expected))


def test_windows_are_shifted_by_one_and_a_pure_function_of_seed_epoch_and_index():
    tokens = torch.arange(100)
    loader = WindowLoader(tokens, context=T, batch_size=3, device=torch.device("cpu"), seed=4, steps=4)
    first = list(loader)
    assert len(first) == 4
    for x, y in first:
        assert x.shape == (3, T) and torch.equal(y, x + 1)  # tokens are their positions
    again = WindowLoader(tokens, context=T, batch_size=3, device=torch.device("cpu"), seed=4, steps=4)
    again.load_state_dict({"epoch": 0, "position": 2, "seed": 4})  # resumed after two batches
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[2:], list(again), strict=True))
    assert not torch.equal(next(iter(loader))[0], first[0][0])  # the next epoch draws other windows


def test_the_tail_loader_predicts_every_token_once():
    tokens = torch.arange(23)
    loader = TailLoader(tokens, context=T, batch_size=2, device=torch.device("cpu"))
    xs, ys = zip(*loader, strict=True)
    assert len(xs) == len(loader)
    assert torch.equal(torch.cat([y.flatten() for y in ys]), tokens[1:])
    assert torch.equal(torch.cat([x.flatten() for x in xs]), tokens[:-1])


def test_classify_loss_is_the_cross_entropy_it_always_was():
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    task = Classify(4, label_smoothing=0.1)
    assert torch.equal(task.loss(logits, y), nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y))
    s = to_floats(task.sums(logits, y, task.loss(logits, y)))
    assert s["correct"] == float((logits.argmax(1) == y).sum()) and s["count"] == 6


def test_task_defaults_lie_under_everything_the_user_sets(tmp_path):
    from lamina.session import resolve_config

    book = tmp_path / "book.txt"
    book.write_text("some text " * 100)
    lm = resolve_config(str(book), device="cpu")
    assert (lm.train.optimizer, lm.model.name, lm.train.precision, lm.train.epochs) == ("muon", "gpt", "fp32", 5)
    assert resolve_config(str(book), device="cuda").train.optimizer == "adamw"  # the GPU recipe keeps nanoGPT's
    # a value equal to lamina's own default is still the user's choice (epochs 10 is the default)
    assert resolve_config(str(book), epochs=10, overrides="train.optimizer=sgd").train.epochs == 10
    assert resolve_config(str(book), overrides="train.optimizer=sgd").train.optimizer == "sgd"
    assert resolve_config("digits").train.optimizer == "sgd"  # classifiers keep lamina's defaults
