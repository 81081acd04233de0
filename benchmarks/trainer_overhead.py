"""The Trainer's own cost per step, measured where the model costs almost nothing.

    python benchmarks/trainer_overhead.py            # writes benchmarks/results/trainer_overhead_cpu.json

``fashion_mnist.py`` times lamina's Trainer against a hand-written loop on a real network, where one
step takes tens of milliseconds and the machine's noise (about ±3 % between identical stretches on
a shared 2-core CPU) hides a small difference. Here the model is a single ``nn.Linear(20, 10)`` on
batches of 64 that are already in memory, so nearly all of a step is framework work: the difference
between the two loops, per step, is what the Trainer adds (running loss/accuracy sums, the per-batch
scheduler step, callback dispatch). Both loops run the same Adadelta steps on the same batches and
end with the same weights (checked); they alternate (loop, Trainer, Trainer, loop, ...) and the
median of each is used.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import environment, result_path, write
from torch import Tensor, nn
from torch.nn import functional as F

from lamina.tasks.classify import Classify
from lamina.training.engine import Engine
from lamina.training.trainer import Trainer


class Batches(list[tuple[Tensor, Tensor]]):
    batch_size = 64


def make_batches(steps: int) -> Batches:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64 * steps, 20, generator=g), torch.randint(0, 10, (64 * steps,), generator=g)
    return Batches(zip(x.split(64), y.split(64), strict=True))


def setup() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(20, 10)
    return model, torch.optim.Adadelta(model.parameters(), lr=1.0)


def plain(batches: Batches) -> tuple[float, nn.Module]:
    """The PyTorch MNIST example's inner loop."""
    model, optimizer = setup()
    t0 = time.perf_counter()
    model.train()
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0, model


def lamina_trainer(batches: Batches) -> tuple[float, nn.Module]:
    """The same steps through lamina's Trainer (fp32, no NaN check, no callbacks), with a scheduler that
    keeps the learning rate at 1.0, as the example's StepLR does within an epoch."""
    model, optimizer = setup()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=len(batches) + 1, gamma=0.7)
    trainer = Trainer(model, engine=Engine.create("cpu", precision="fp32"), optimizer=optimizer,
                      scheduler=scheduler, task=Classify(10), on_nan="off")
    t0 = time.perf_counter()
    trainer.fit(batches, epochs=1)
    return time.perf_counter() - t0, model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=8, help="timed runs of each loop, alternating")
    p.add_argument("--out", default=str(result_path("trainer_overhead", "cpu")))
    a = p.parse_args()
    env = environment("cpu")
    batches = make_batches(a.steps)
    plain(batches), lamina_trainer(batches)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "trainer": []}
    same = True
    for i in range(a.repeats):
        for name in ("plain", "trainer") if i % 2 == 0 else ("trainer", "plain"):
            seconds, model = (plain if name == "plain" else lamina_trainer)(batches)
            times[name].append(seconds)
            if name == "plain":
                reference = [q.detach().clone() for q in model.parameters()]
            else:
                trained = list(model.parameters())
        same &= all(torch.equal(u, v) for u, v in zip(reference, trained, strict=True))
    per_step = {k: 1e6 * statistics.median(v) / a.steps for k, v in times.items()}
    added = per_step["trainer"] - per_step["plain"]
    result = {**env, "settings": {"steps": a.steps, "repeats": a.repeats, "batch_size": 64, "model": "Linear(20, 10)",
                                  "optimizer": "adadelta", "threads": torch.get_num_threads()},
              "seeds": [0], "seconds": times, "per_step_us_median": per_step,
              "trainer_added_us_per_step": added, "same_weights": same}
    path = write(a.out, result)
    print(f"plain loop {per_step['plain']:.1f} us/step, Trainer {per_step['trainer']:.1f} us/step: "
          f"the Trainer adds {added:.1f} us a step; same weights: {same}\nwrote {path}")


if __name__ == "__main__":
    main()
