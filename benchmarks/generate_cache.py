"""Generation with and without the key-value cache: same model, same greedy tokens, time for 500 new tokens.

Without the cache every new token runs the whole context again (nanoGPT's ``generate``); with it
each new token costs one position. The model is a ``gpt`` with a context of 1,024 (so that prompt +
500 new tokens fit, where both paths are equal token for token), untrained: speed does not depend
on the weights. The two paths run in interleaved pairs (cache / no cache / no cache / cache ...).

    python benchmarks/generate_cache.py            # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import environment, mean_std, result_path, write

from lamina.models import create_model


def timed(model: torch.nn.Module, prompt: torch.Tensor, new: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = model.generate(prompt, new, temperature=0.0, use_cache=use_cache)  # type: ignore[operator]
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--positions", default="learned,rotary")
    p.add_argument("--out", type=Path, default=result_path("generate_cache", "cpu"))
    a = p.parse_args()
    results = {}
    for positions in a.positions.split(","):
        torch.manual_seed(0)
        model = create_model("gpt", (a.context,), 256, width=a.width, depth=a.depth, positions=positions).eval()
        prompt = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(1))
        timed(model, prompt, 8, True)  # warm-up of both paths
        timed(model, prompt, 8, False)
        cached, full, same = [], [], True
        for i in range(a.pairs):
            order = (True, False) if i % 2 == 0 else (False, True)
            outs = {}
            for use_cache in order:
                seconds, outs[use_cache] = timed(model, prompt, a.new_tokens, use_cache)
                (cached if use_cache else full).append(seconds)
            same &= bool(torch.equal(outs[True], outs[False]))
        ratios = [f / c for f, c in zip(full, cached, strict=True)]
        results[positions] = {"cache_seconds": mean_std(cached), "no_cache_seconds": mean_std(full),
                              "speedup": mean_std(ratios), "same_greedy_tokens": same}
        print(f"{positions}: cache {sum(cached) / len(cached):.2f} s, no cache {sum(full) / len(full):.2f} s, "
              f"speed-up {sum(ratios) / len(ratios):.1f}x, same tokens: {same}", flush=True)
    record = {**environment("cpu"), "seeds": [0], "threads": torch.get_num_threads(),
              "model": {"context": a.context, "width": a.width, "depth": a.depth, "vocab": 256},
              "new_tokens": a.new_tokens, "results": results}
    print(f"wrote {write(a.out, record)}")


if __name__ == "__main__":
    main()
