"""benchmarks/scaling_model.py: its closed forms computed by hand, and the shape of its predictions."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import scaling_model as sm
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling") / "scaling_model.json"
    returned = sm.main(["--out", str(out)])
    written = json.loads(out.read_text())
    assert written["rows"] == json.loads(json.dumps(returned["rows"]))
    return written


def _rows(record, **match):
    return [r for r in record["rows"] if all(r[k] == v for k, v in match.items())]


def test_ring_allreduce_by_hand():
    assert sm.ring_allreduce_seconds(2, 1e9, 10e9, 0.0) == pytest.approx(0.1)  # 2 (1/2) 1 GB / 10 GB/s
    assert sm.ring_allreduce_seconds(8, 8e9, 1e9) == pytest.approx(14.0)  # 2 (7/8) 8 GB / 1 GB/s
    assert sm.ring_allreduce_seconds(4, 0.0, 1e9, 1e-5) == pytest.approx(6e-5)  # 2 (p-1) steps of latency
    assert sm.ring_allreduce_seconds(1, 1e9, 1e9, 1.0) == 0.0  # one rank: nothing to reduce
    # two nodes at 100 Gb/s: on top of the NVLink ring, 2 (1/2) x (1 GB / 8) / 12.5 GB/s + 2 x 10 us
    extra = sm.hierarchical_allreduce_seconds(1e9, 2, 12.5e9) - sm.hierarchical_allreduce_seconds(1e9, 1, None)
    assert extra == pytest.approx(0.01 + 2e-5)


def test_buckets_and_overlap_by_hand():
    mib = 2**20
    assert sm.assign_buckets([mib // 2, mib // 2, 30 * mib, mib], first_cap=mib, cap=25 * mib) == [[0, 1], [2], [3]]
    assert sm.assign_buckets([10, 10], first_cap=mib, cap=25 * mib) == [[0, 1]]
    # ready at 0.5 and 1.0 (end of backward), costs 0.2 and 0.3: the first hides, the last is exposed
    assert sm.overlap_exposed_seconds([0.5, 1.0], [0.2, 0.3], 1.0) == pytest.approx(0.3)
    # the second waits for the first to finish: 0.1 + 0.8 = 0.9, then + 0.5 = 1.4
    assert sm.overlap_exposed_seconds([0.1, 0.2], [0.8, 0.5], 1.0) == pytest.approx(0.4)
    assert sm.overlap_exposed_seconds([0.1], [0.1], 1.0) == 0.0


def test_record_carries_provenance_constants_and_formulas(record):
    for key in ("command", "code_version", "device", "torch", "lamina", "constants", "formulas", "models", "rows"):
        assert key in record, key
    for name, c in record["constants"].items():
        assert isinstance(c["value"], int | float) and c["source"].strip(), name
    assert "2 (p-1)/p" in record["formulas"]["ring_allreduce_s"]
    per_model = 1 + 2 * (len(sm.NODES) - 1)  # NVLink alone at one node, 100G and 400G beyond
    assert len(record["rows"]) == 2 * per_model * len(sm.GRAD_BYTES)


def test_parameter_counts_are_measured(record):
    gpt = record["models"]["gpt_100m"]
    assert 90e6 <= gpt["params"] <= 130e6
    V, T, C, L = 50257, 1024, 768, 12  # tied head; bias-free linears; LayerNorm weight + bias
    assert gpt["params"] == V * C + T * C + L * (12 * C * C + 4 * C) + 2 * C
    cnn = record["models"]["fast_cnn"]
    assert cnn["arch"]["width"] == 64 and cnn["arch"]["depth"] == 2 and cnn["batch_per_gpu"] == 512  # cuda overlay
    for name, m in record["models"].items():
        rows = _rows(record, model=name)
        assert all(r["grad_bytes"] == m["params"] * sm.GRAD_BYTES[r["grad_dtype"]] for r in rows)
        assert sum(m["bucket_bytes_fp32"]) == 4 * m["params"] and m["bucket_ready_fraction"][-1] == pytest.approx(1)
    assert gpt["compute_s"] == pytest.approx(6 * gpt["params"] * 8 * 1024 / (989e12 * 0.40))
    assert gpt["step_flops_counted"] > gpt["step_flops"]  # the counted forward includes attention scores


def test_efficiency_is_a_fraction_that_falls_with_nodes(record):
    for r in record["rows"]:
        effs = [r["efficiency"], r["closed_form"]["efficiency"]]
        effs += [r["flat_ring_one_nic"]["efficiency"]] if r["flat_ring_one_nic"] else []
        assert all(0 < e <= 1 for e in effs), r
        assert 0 <= r["hidden_fraction"] <= 1 and r["exposed_s"] <= r["allreduce_s"] + 1e-12
        assert r["closed_form"]["efficiency"] >= r["efficiency"] - 1e-12  # the closed form is the optimistic bound
    for model in record["models"]:
        for dtype in sm.GRAD_BYTES:
            one_node = _rows(record, model=model, grad_dtype=dtype, nodes=1)[0]["efficiency"]
            for link in ("100G", "400G"):
                effs = [one_node] + [r["efficiency"] for r in _rows(record, model=model, grad_dtype=dtype,
                                                                     interconnect=link)]  # fmt: skip
                assert effs == sorted(effs, reverse=True), (model, dtype, link, effs)
    gpt = [r["efficiency"] for r in _rows(record, model="gpt_100m", grad_dtype="fp32", interconnect="100G")]
    assert all(a > b for a, b in itertools.pairwise(gpt)), gpt


def test_faster_links_and_smaller_gradients_never_predict_worse(record):
    for r100 in _rows(record, interconnect="100G"):
        r400 = _rows(record, model=r100["model"], nodes=r100["nodes"], grad_dtype=r100["grad_dtype"],
                     interconnect="400G")[0]  # fmt: skip
        assert r400["efficiency"] >= r100["efficiency"]
        assert r400["closed_form"]["efficiency"] >= r100["closed_form"]["efficiency"]
        assert r400["flat_ring_one_nic"]["efficiency"] >= r100["flat_ring_one_nic"]["efficiency"]
        assert r400["allreduce_s"] < r100["allreduce_s"]
    for r in _rows(record, grad_dtype="fp32"):
        bf16 = _rows(record, model=r["model"], nodes=r["nodes"], interconnect=r["interconnect"], grad_dtype="bf16")[0]
        assert bf16["efficiency"] >= r["efficiency"] and bf16["grad_bytes"] * 2 == r["grad_bytes"]


def test_markdown_tables_come_from_the_record(record):
    text = sm.markdown(record)
    r = _rows(record, model="gpt_100m", nodes=16, interconnect="100G", grad_dtype="fp32")[0]
    assert f"| 16 x 8 = 128 | 100G | {r['allreduce_s'] * 1e3:.2f} |" in text
    assert text.count("| nodes x GPUs |") == 2
