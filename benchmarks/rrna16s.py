"""16S rRNA taxonomy (phylum and class): lamina beside an RDP-style naive Bayes and k-mer logistic
regression, on the same stratified split of the 5,181 genes of the microbiomeutil gold set.

- Labels: the lineage at the rank, classes with fewer than 10 genes merged into ``other``, exactly as
  lamina's FASTA loader makes them (``data.min_class_examples=10``).
- Split: lamina's own (``build_dataset``: 20 % of each class to test, ``stratified_split`` with the
  run's seed 0), rebuilt here from the labels, so every method is scored on the same test genes.
  Lamina trains on all the other genes (``data.val_fraction=0``), as the baselines do.
- Naive Bayes as the RDP classifier does it (Wang et al. 2007): the presence of each 8-mer,
  ``P(w|c) = (n(w,c) + P_w) / (N_c + 1)`` with ``P_w = (n(w) + 0.5) / (N + 1)``, the class with the
  largest sum of log P(w|c) over the query's words. Trained on the rank itself ("direct") and, as
  RDP does, on genera whose prediction is mapped to the rank ("via genus").
- Logistic regression (scikit-learn) on standardised 6-mer frequencies (4,096 columns).

    python benchmarks/rrna16s.py --fasta PATH/rRNA16S.gold.fasta      # ~10 min on 2 CPU cores
    python benchmarks/rrna16s.py --lamina kmer-mlp seqresnet          # and the ResNet: ~30 min more
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from common import environment, mean_std, result_path, write
from rich.console import Console

import lamina
from lamina.config import DataConfig
from lamina.data.base import Split, stratified_split
from lamina.data.fasta import kmer_counts, kmer_index, lineage, load_fasta, read_fasta, rrna16s_path
from lamina.models.sequence import ALPHABETS
from lamina.tasks.classify import per_class_f1 as macro_f1

DEFAULT_FASTA = "/tmp/16s/x/usr/share/microbiomeutil-data/RESOURCES/rRNA16S.gold.fasta"
SEED = 0
TEST_FRACTION = 0.2
LAMINA = {
    # 6-mer frequencies, an MLP; no reverse complements: the gold set's genes all read 5' to 3' on one strand
    "kmer-mlp": ["data.kmer=6", "model.name=mlp", "model.width=256", "model.dropout=0.3", "train.epochs=20",
                 "train.optimizer=adamw", "train.lr=0.001", "train.weight_decay=0.05", "data.reverse_complement=false"],
    # one-hot residues, the 1-D ResNet (about 1 min per epoch on 2 shared CPU cores)
    "seqresnet": ["model.name=seqresnet", "train.epochs=12", "train.optimizer=adamw", "train.lr=0.003"],
}
DEFAULT_CONFIGS = ["kmer-mlp"]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> list[list[int]]:
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).tolist()


def scores(y_true: np.ndarray, y_pred: np.ndarray, k: int, seconds: float) -> dict:
    cm = confusion(y_true, y_pred, k)
    return {"test_accuracy": float((y_true == y_pred).mean()), "macro_f1": macro_f1(cm)["macro_f1"],
            "seconds": round(seconds, 1)}


def presence(seqs: list[str], k: int = 8) -> scipy.sparse.csr_matrix:  # noqa: F821
    """(N, 4**k) 0/1 CSR: which k-mers (of unambiguous bases) each sequence holds."""
    from scipy import sparse

    rows, cols = [], []
    for i, s in enumerate(seqs):
        w = np.unique(kmer_index(s, ALPHABETS["dna"], k))
        rows.append(np.full(len(w), i))
        cols.append(w)
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(seqs), 4**k))


def naive_bayes(x_train, y_train: np.ndarray, x_test, k: int) -> np.ndarray:
    """RDP's naive Bayes (Wang et al. 2007) on 0/1 word-presence matrices: predicted class indices."""
    from scipy import sparse

    n = x_train.shape[0]
    onehot = sparse.csr_matrix((np.ones(n, dtype=np.float32), (y_train, np.arange(n))), shape=(k, n))
    n_wc = np.asarray((onehot @ x_train).todense())  # (K, W): sequences of class c holding word w
    n_w = np.asarray(x_train.sum(axis=0)).ravel()  # (W,)
    p_w = (n_w + 0.5) / (n + 1)  # the word's prior
    n_c = np.bincount(y_train, minlength=k)[:, None]  # (K, 1)
    log_p = np.log((n_wc + p_w[None, :]) / (n_c + 1)).astype(np.float32)  # (K, W)
    return np.asarray(x_test @ log_p.T).argmax(axis=1)  # (N_test,)


def logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    clf.fit(x_train, y_train)
    return clf.predict(x_test)


def run_level(fasta: Path, rank: str, configs: list[str], seeds: int = 3) -> dict:
    cfg = DataConfig(name=str(fasta), rank=rank, min_class_examples=10)
    ds = load_fasta(fasta, cfg)  # labels and classes exactly as lamina makes them
    y = ds.train.y.numpy()
    k = len(ds.classes)
    train, test = stratified_split(Split(torch.arange(len(y)), ds.train.y), TEST_FRACTION, SEED)
    tr, te = train.x.numpy(), test.x.numpy()
    records = {r.id: r for r in read_fasta(fasta)}
    seqs = [records[rid].sequence for rid in records]
    genera = [lineage(records[rid].header)[-1] for rid in records]
    assert len(seqs) == len(y), "records were dropped: the labels no longer line up"
    out: dict = {"rank": rank, "classes": k, "train_genes": len(tr), "test_genes": len(te),
                 "class_names": ds.classes, "notes": ds.notes}
    print(f"{rank}: {k} classes, {len(tr)} train / {len(te)} test genes", flush=True)

    t0 = time.perf_counter()
    x8 = presence(seqs, 8)
    pred = naive_bayes(x8[tr], y[tr], x8[te], k)
    out["naive_bayes_direct"] = scores(y[te], pred, k, time.perf_counter() - t0)
    t0 = time.perf_counter()
    names = sorted({genera[i] for i in tr})
    g = np.array([names.index(genera[i]) if genera[i] in names else -1 for i in range(len(y))])
    to_rank = np.zeros(len(names), dtype=np.int64)  # a genus's class: the most common among its train genes
    for gi in range(len(names)):
        to_rank[gi] = np.bincount(y[tr][g[tr] == gi], minlength=k).argmax()
    pred = to_rank[naive_bayes(x8[tr], g[tr], x8[te], len(names))]
    out["naive_bayes_via_genus"] = {**scores(y[te], pred, k, time.perf_counter() - t0), "genera": len(names)}
    print(f"  naive Bayes: direct {out['naive_bayes_direct']}, via genus {out['naive_bayes_via_genus']}", flush=True)

    t0 = time.perf_counter()
    x6 = kmer_counts(seqs, ALPHABETS["dna"], 6).numpy()
    pred = logistic(x6[tr], y[tr], x6[te])
    out["logistic_6mer"] = scores(y[te], pred, k, time.perf_counter() - t0)
    print(f"  logistic regression: {out['logistic_6mer']}", flush=True)

    for name in configs:
        # data.split_seed: every training seed is scored on the baselines' split
        overrides = [*LAMINA[name], f"data.rank={rank}", "data.min_class_examples=10",
                     f"data.test_fraction={TEST_FRACTION}", "data.val_fraction=0", f"data.split_seed={SEED}"]
        runs = []
        for seed in range(seeds):
            run_dir = Path(f"/tmp/lamina-rrna16s-{rank}-{name}-{time.time_ns()}")
            run = lamina.train(str(fasta), seed=seed, out=str(run_dir), quiet=True, overrides=overrides,
                               console=Console(quiet=True))
            s = run.summary
            assert s["test_examples"] == len(te), "lamina's test split differs from the baselines'"
            runs.append({"seed": seed, "test_accuracy": s["test_accuracy"], "macro_f1": s["test_macro_f1"],
                         "seconds": round(s["train_seconds"], 1)})
            shutil.rmtree(run_dir, ignore_errors=True)
        acc, f1 = mean_std([r["test_accuracy"] for r in runs]), mean_std([r["macro_f1"] for r in runs])
        out[f"lamina_{name}"] = {"test_accuracy": acc["mean"], "macro_f1": f1["mean"], "test_accuracy_stats": acc,
                                 "macro_f1_stats": f1, "seconds": round(sum(r["seconds"] for r in runs) / len(runs), 1),
                                 "params": s.get("params"), "overrides": overrides, "runs": runs}
        print(f"  lamina {name}: {out[f'lamina_{name}']}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fasta", type=Path, default=None, help="rRNA16S.gold.fasta (default: rrna16s's or /tmp/16s)")
    p.add_argument("--ranks", nargs="+", default=["phylum", "class"])
    p.add_argument("--lamina", nargs="*", default=DEFAULT_CONFIGS, help="configs of LAMINA to run, or NAME=OVERRIDE,...")
    p.add_argument("--seeds", type=int, default=3, help="lamina's training seeds, all on the one split")
    p.add_argument("--out", type=Path, default=result_path("rrna16s", "cpu"))
    a = p.parse_args()
    for spec in a.lamina:
        if "=" in spec.split(",")[0] and spec.split("=", 1)[0] not in LAMINA and "." not in spec.split("=", 1)[0]:
            name, overrides = spec.split("=", 1)
            LAMINA[name] = overrides.split(",")
    a.lamina = [spec.split("=", 1)[0] if "=" in spec else spec for spec in a.lamina]
    fasta = a.fasta or rrna16s_path() or Path(DEFAULT_FASTA)
    levels = {rank: run_level(fasta, rank, a.lamina, a.seeds) for rank in a.ranks}
    summary = {rank: {m: {"test_accuracy": v["test_accuracy"], "macro_f1": v["macro_f1"]}
                      for m, v in lv.items() if isinstance(v, dict) and "test_accuracy" in v}
               for rank, lv in levels.items()}  # fmt: skip
    record = {**environment("cpu"), "fasta": str(fasta), "split_seed": SEED, "seeds": list(range(a.seeds)), "test_fraction": TEST_FRACTION,
              "lamina_configs": {n: LAMINA[n] for n in a.lamina}, "summary": summary, "levels": levels}
    print(f"wrote {write(a.out, record)}")


if __name__ == "__main__":
    main()
