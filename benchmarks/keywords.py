"""Keyword spotting on speakers never heard in training: lamina's melcnn beside a log-mel +
logistic-regression baseline (scikit-learn), on the same synthetic keyword set and split.

The set is ``lamina.data.keywords.make_keywords`` (10 words, espeak-ng voices; the test voices'
accents are shared with training but their voice variants are not). lamina holds 5 % of its
training clips out for validation; the baseline trains on all of them. Both are scored on the
whole test split. The baseline's features: the mean and the standard deviation over time of each
of the 40 log-mel bins (lamina's own LogMel), standardised.

    python benchmarks/keywords.py --seeds 2        # ~7 min to synthesize, ~5 min per seed on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import environment, mean_std, result_path, write
from rich.console import Console

import lamina
from lamina.config import DataConfig
from lamina.data.audio import load_audio_folder
from lamina.models.audio import LogMel

# lamina's defaults for a folder of WAVs: melcnn (width 16), SGD lr 0.2, 10 epochs (session.MODALITY_DEFAULTS)
LAMINA: list[str] = []


def baseline(data: Path, sample_rate: int = 16000) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ds = load_audio_folder(data, DataConfig(name=str(data), sample_rate=sample_rate))
    t0 = time.perf_counter()
    logmel = LogMel(sample_rate)

    def features(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            m = torch.cat([logmel(x[i : i + 512]) for i in range(0, len(x), 512)])[:, 0]  # (N, 40, T)
        return torch.cat([m.mean(-1), m.std(-1)], dim=1)  # (N, 80)

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    clf.fit(features(ds.train.x).numpy(), ds.train.y.numpy())
    seconds = time.perf_counter() - t0
    accuracy = float((clf.predict(features(ds.test.x).numpy()) == ds.test.y.numpy()).mean())
    return {"test_accuracy": accuracy, "seconds": seconds, "train_clips": len(ds.train), "test_clips": len(ds.test)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/lamina-keywords"), help="made here unless it exists")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=result_path("keywords", "cpu"))
    a = p.parse_args()
    if not (a.data / "keywords.json").is_file():
        from lamina.data.keywords import make_keywords

        t0 = time.perf_counter()
        make_keywords(a.data, seed=a.data_seed)
        print(f"synthesized {a.data} in {time.perf_counter() - t0:.0f} s", flush=True)
    made = json.loads((a.data / "keywords.json").read_text())
    base = baseline(a.data)
    print(f"log-mel mean+std + logistic regression: {base['test_accuracy']:.4f} in {base['seconds']:.1f} s", flush=True)
    runs = []
    for seed in range(a.seeds):
        out = Path(f"/tmp/lamina-keywords-run-{seed}-{time.time_ns()}")
        run = lamina.train(str(a.data), seed=seed, out=str(out), quiet=True, overrides=LAMINA,
                           console=Console(quiet=True))
        s = run.summary
        runs.append({"seed": seed, "test_accuracy": s["test_accuracy"], "train_seconds": s["train_seconds"],
                     "epochs": s["epochs"], "params": s["params"], "model": s["model"],
                     "test_examples": s["test_examples"], "train_examples": s["train_examples"]})
        print(f"lamina seed {seed}: {s['test_accuracy']:.4f} in {s['train_seconds']:.0f} s", flush=True)
    record = {**environment("cpu"), "seeds": list(range(a.seeds)), "data_seed": made["seed"],
              "lamina_config": LAMINA, "words": made["words"], "clips": made["clips"],
              "train_voices": len(made["train_voices"]), "test_voices": len(made["test_voices"]),
              "target": "test accuracy >= 0.95 with <= 300 s of training (train_seconds)",
              "summary": {"lamina_test_accuracy": mean_std([r["test_accuracy"] for r in runs]),
                          "lamina_train_seconds": mean_std([r["train_seconds"] for r in runs]),
                          "logmel_logreg_test_accuracy": base["test_accuracy"]},
              "baseline": base, "lamina": runs}
    print(f"wrote {write(a.out, record)}")


if __name__ == "__main__":
    main()
