"""A scaling model, on paper, for data-parallel training (DDP) on 8 GPUs x N nodes (issue 14).

    python benchmarks/scaling_model.py              # writes benchmarks/results/scaling_model.json
    python benchmarks/scaling_model.py --markdown   # and prints the README tables made from it

Two models: lamina's ``fast`` recipe for Fashion-MNIST as it runs on a CUDA GPU (the recipe's ``cuda:``
overlay: a 64-128-256 CNN, two convs per stage, 512 examples per GPU per step) and a GPT-2-small-sized
``gpt`` (768 wide, 12 blocks, 12 heads, context 1024, vocabulary 50257; 8 sequences x 1024 tokens per GPU
per step). Both are built with lamina's own code (the GPT on the ``meta`` device: no memory, no time), so
the parameter counts are measured, not typed; forward FLOPs are counted with ``FlopCounterMode``.

For each model, N nodes in (1, 2, 4, 8, 16), interconnect (NVLink only inside one node; 100 or 400 Gb/s
per GPU between nodes) and gradient dtype (fp32, as DDP reduces by default; bf16, as with DDP's
``bf16_compress_hook``), it predicts:

- the gradient bytes each GPU all-reduces per step, in DDP's buckets (first 1 MiB, then 25 MiB, in the
  order the gradients become ready in backward);
- the all-reduce time of each bucket: a hierarchical ring (reduce-scatter and all-gather over NVLink
  inside a node, a ring between nodes on 1/8 of the bytes through each GPU's own NIC);
- how much of it hides behind backward: the buckets go out one after another as they become ready, and
  what is still running when backward ends is exposed;
- the efficiency: compute / (compute + exposed communication), per GPU, at a fixed batch per GPU.

Every constant is in ``CONSTANTS`` with its source; the formulas are in ``FORMULAS``. Nothing here runs
on a GPU: it is a model, and the numbers are only as good as the constants.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.parallel.distributed as ddp
from common import ROOT, environment, write
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lamina import recipes
from lamina.config import ModelConfig
from lamina.models import create_model
from lamina.tasks.classify import build_model_for

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scaling_model.json"
NODES: tuple[int, ...] = (1, 2, 4, 8, 16)
GRAD_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2}  # bytes per gradient element on the wire
FASHION_MNIST = {"input_shape": (1, 28, 28), "classes": 10, "train_examples": 60_000}
GPT_ARCH = {"context": 1024, "vocab": 50257, "width": 768, "depth": 12, "heads": 12}
LM_SEQUENCES_PER_GPU = 8  # sequences of GPT_ARCH["context"] tokens per GPU per step

CONSTANTS: dict[str, dict[str, Any]] = {
    "gpus_per_node": {"value": 8, "unit": "GPUs", "source": "an HGX/DGX H100 node: 8 H100 SXM GPUs on NVSwitch"},
    "peak_bf16_flops": {
        "value": 989e12, "unit": "FLOP/s per GPU",
        "source": "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: BF16 Tensor Core 1,979 TFLOPS with "
                  "sparsity, i.e. 989 TFLOPS dense"},
    "lm_mfu": {
        "value": 0.40, "unit": "fraction of peak",
        "source": "assumed (model FLOPs utilisation of a well-tuned GPT-2-small step on an H100); for scale, "
                  "PaLM 540B trained at 46.2 % MFU (Chowdhery et al. 2022, Table 3)"},
    "nvlink_line_rate": {
        "value": 450e9, "unit": "B/s per GPU per direction",
        "source": "NVIDIA H100 datasheet: NVLink 4, 900 GB/s per SXM GPU counting both directions"},
    "nvlink_busbw": {
        "value": 370e9, "unit": "B/s (NCCL bus bandwidth, ring)",
        "source": "NCCL's achievable ring bus bandwidth on 8 x H100 NVLink 4: ~370 GB/s, ~20 % protocol "
                  "overhead below the 450 GB/s line rate (NCCL maintainer, github.com/NVIDIA/nccl-tests/"
                  "issues/212; 365-370 GB/s measured with NCCL_ALGO=RING, github.com/NVIDIA/nccl/issues/1455). "
                  "NVLink SHARP (NVLS) reaches ~480 GB/s 'busbw' but is not a ring: not used here"},
    "net_100g": {
        "value": 12.5e9, "unit": "B/s per GPU NIC",
        "source": "100 Gb/s line rate / 8 bits; line rate, so slightly optimistic: NVIDIA measured 192 GB/s "
                  "all-reduce busbw on a DGX A100 with 8 x 200 Gb/s NICs = 96 % of line rate "
                  "(github.com/NVIDIA/nccl/issues/1576, quoting issue 812)"},
    "net_400g": {
        "value": 50e9, "unit": "B/s per GPU NIC",
        "source": "400 Gb/s line rate / 8 bits (one ConnectX-7 NDR NIC per GPU, as in a DGX H100); as net_100g"},
    "nvlink_latency": {
        "value": 5e-6, "unit": "s per ring step",
        "source": "assumed, low end of ~5-10 us per NVLink hop; pessimistic for small messages, where NCCL's "
                  "LL protocol and tree algorithms beat a ring's 2 (p-1) steps"},
    "net_latency": {
        "value": 10e-6, "unit": "s per ring step",
        "source": "assumed, low end of ~10-20 us per hop over InfiniBand/RoCE (same caveat)"},
    "bucket_cap_bytes": {
        "value": int(ddp._DEFAULT_BUCKET_CAP_MB * ddp._MB_TO_BYTES), "unit": "B",
        "source": f"torch DDP default bucket_cap_mb={ddp._DEFAULT_BUCKET_CAP_MB} MiB "
                  f"(torch.nn.parallel.distributed._DEFAULT_BUCKET_CAP_MB, torch {torch.__version__})"},
    "first_bucket_bytes": {
        "value": int(dist._DEFAULT_FIRST_BUCKET_BYTES), "unit": "B",
        "source": "torch DDP's smaller first bucket, so that communication starts early "
                  "(torch.distributed._DEFAULT_FIRST_BUCKET_BYTES; used while bucket_cap_mb is the default)"},
    "backward_fraction": {
        "value": 2 / 3, "unit": "fraction of a step's compute",
        "source": "backward costs ~2x forward (gradients w.r.t. inputs and weights): 6N = 2N forward + 4N "
                  "backward FLOPs per token (Kaplan et al. 2020, section 2.1)"},
    "cnn_target_seconds": {
        "value": 3.0, "unit": "s to train on one H100",
        "source": "src/lamina/recipes/fast.yaml, CUDA section: 'target: >= 94.0 % in <= 3 s on one H100' "
                  "(NOT YET MEASURED: there is no benchmarks/results/fashion_mnist_cuda.json)"},
}  # fmt: skip

FORMULAS: dict[str, str] = {
    "ring_allreduce_s": "T_ring(p, S) = 2 (p-1)/p * S / B + 2 (p-1) * alpha   (Patarasuk & Yuan 2009; B is NCCL's "
                        "'bus bandwidth', github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md)",
    "hierarchical_allreduce_s": "T(S) = T_ring(8, S; B_nvlink, alpha_nvlink) + T_ring(N, S/8; B_nic, alpha_net): "
                                "reduce-scatter + all-gather inside the node (the two halves of an 8-GPU ring), "
                                "and between them a ring over the N nodes on each GPU's 1/8 shard, every GPU "
                                "through its own NIC; N = 1: the NVLink ring only",
    "flat_ring_one_nic_s": "T_ring(8N, S; B_nic, alpha_net): one ring through all 8N GPUs whose slowest link is "
                           "one NIC per node carrying all of S (a node whose 8 GPUs share one NIC)",
    "buckets": "gradients in the order backward produces them, cut into buckets of >= first_bucket_bytes "
               "(the first) and >= bucket_cap_bytes (the rest) of fp32 gradient; a bucket is ready when its "
               "last gradient is; wire bytes = elements x bytes per gradient element (4 fp32, 2 bf16)",
    "ready_time": "backward_s x (forward FLOPs of the modules after and including the gradient's owner, "
                  "counted by FlopCounterMode) / (all forward FLOPs); a tied weight is ready at its first use",
    "compute_s": "LM: 6 x params x tokens per GPU / (peak_bf16_flops x lm_mfu) (Kaplan et al. 2020); "
                 "CNN: cnn_target_seconds / (epochs x steps per epoch), an assumed, latency-bound step",
    "backward_s": "backward_fraction x compute_s",
    "exposed_s": "buckets all-reduced one after another: start_i = max(ready_i, end_{i-1}), "
                 "end_i = start_i + T(bucket_i); exposed = max(0, end_last - backward_s)",
    "hidden_fraction": "1 - exposed_s / allreduce_s, with allreduce_s = sum of T(bucket_i)",
    "efficiency": "compute_s / (compute_s + exposed_s): the fraction of one GPU's speed each GPU keeps",
    "closed_form": "hidden = min(1, backward_after_first_bucket / allreduce_s), exposed = max(0, allreduce_s - "
                   "backward_after_first_bucket), backward_after_first_bucket = backward_s - ready_1; an upper "
                   "bound on hiding: it lets the last bucket overlap backward, which it cannot",
}  # fmt: skip


def const(name: str) -> float:
    return CONSTANTS[name]["value"]


# -- communication ----------------------------------------------------------------------------------


def ring_allreduce_seconds(p: int, nbytes: float, bandwidth: float, latency: float = 0.0) -> float:
    """Ring all-reduce of ``nbytes`` over ``p`` ranks: ``2 (p-1)/p · bytes / bandwidth + 2 (p-1) · latency``.

    >>> ring_allreduce_seconds(2, 1e9, 10e9)  # each rank sends and receives half of 1 GB, twice
    0.1
    """
    if p <= 1:
        return 0.0
    return 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency


def hierarchical_allreduce_seconds(nbytes: float, nodes: int, nic_bandwidth: float | None) -> float:
    """All-reduce of ``nbytes`` per GPU on 8 GPUs x ``nodes``: NVLink ring inside, NIC ring between nodes."""
    g = int(const("gpus_per_node"))
    inside = ring_allreduce_seconds(g, nbytes, const("nvlink_busbw"), const("nvlink_latency"))
    if nodes <= 1:
        return inside
    assert nic_bandwidth is not None, "more than one node needs an inter-node bandwidth"
    return inside + ring_allreduce_seconds(nodes, nbytes / g, nic_bandwidth, const("net_latency"))


def flat_ring_one_nic_seconds(nbytes: float, nodes: int, nic_bandwidth: float) -> float:
    """One ring through all GPUs, limited by a single NIC per node: the pessimistic bound."""
    return ring_allreduce_seconds(int(const("gpus_per_node")) * nodes, nbytes, nic_bandwidth, const("net_latency"))


def assign_buckets(sizes: Sequence[int], *, first_cap: int, cap: int) -> list[list[int]]:
    """DDP's bucketing: tensors in order, a bucket closes once it holds >= its cap (the first: ``first_cap``).

    >>> MiB = 2**20
    >>> assign_buckets([MiB // 2, MiB // 2, 30 * MiB, MiB], first_cap=MiB, cap=25 * MiB)
    [[0, 1], [2], [3]]
    """
    buckets: list[list[int]] = [[]]
    filled, limit = 0, first_cap
    for i, size in enumerate(sizes):
        buckets[-1].append(i)
        filled += size
        if filled >= limit:
            buckets.append([])
            filled, limit = 0, cap
    return [b for b in buckets if b]


def overlap_exposed_seconds(ready: Sequence[float], cost: Sequence[float], backward: float) -> float:
    """Communication still running when backward ends, buckets sent one after another as they are ready.

    >>> round(overlap_exposed_seconds([0.5, 1.0], [0.2, 0.3], 1.0), 9)  # the first ends at 0.7, the last at 1.3
    0.3
    """
    end = 0.0
    for r, c in zip(ready, cost, strict=True):
        end = max(r, end) + c
    return max(0.0, end - backward)


# -- the models -------------------------------------------------------------------------------------


def gradient_profile(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Forward FLOPs of one batch, and each gradient's size and when it is ready in backward.

    Returns ``flops`` (forward, counted) and ``grads``: (elements, element bytes, ready fraction of
    backward) per parameter tensor, in the order backward produces them. Backward is taken to visit the
    modules in reverse order of their forward calls, spending time in proportion to each module's own
    forward FLOPs; a parameter is ready after the last (in backward) module that uses it.
    """
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(names[mod])) for m in names]
    try:
        with FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        for h in hooks:
            h.remove()
    root = type(model).__name__
    inclusive: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == root or key.startswith(root + "."):
            inclusive[key[len(root) + 1 :]] = int(sum(ops.values()))
    modules = dict(model.named_modules())

    def own(name: str) -> int:  # FLOPs of the module itself, without its children's
        kids = (f"{name}.{c}" if name else c for c, _ in modules[name].named_children())
        return inclusive.get(name, 0) - sum(inclusive.get(k, 0) for k in kids)

    backward = list(reversed(order))  # module calls, in the order backward visits them
    spent, done = 0, []
    for name in backward:
        spent += own(name)
        done.append(spent)
    total = max(spent, 1)
    position: dict[int, int] = {}  # parameter id -> index in ``backward`` of its last user there
    params: dict[int, nn.Parameter] = {}
    for k, name in enumerate(backward):
        for p in modules[name].parameters(recurse=False):
            position[id(p)], params[id(p)] = k, p  # later k overwrites: the last user in backward
    ids = sorted(position, key=position.__getitem__)
    unused = [p for p in model.parameters() if id(p) not in position]
    assert not unused, f"{len(unused)} parameters never used in forward"
    return {
        "flops": int(counter.get_total_flops()),
        "grads": [(params[i].numel(), params[i].element_size(), done[position[i]] / total) for i in ids],
    }


def fast_cnn(step_s: float | None = None) -> dict[str, Any]:
    """The ``fast`` recipe's network for Fashion-MNIST on a CUDA GPU, built as lamina builds it; ``step_s``:
    a measured seconds per step to use instead of the one derived from the recipe's 3 s target."""
    recipe = recipes.recipe_dict("fast", "cuda")
    m = ModelConfig(**recipe["model"])
    ds = SimpleNamespace(codec=None, modality="image", default_model=None, model_kwargs={},
                         input_shape=FASHION_MNIST["input_shape"])  # the fields build_model_for reads
    batch, epochs = int(recipe["data"]["batch_size"]), int(recipe["train"]["epochs"])
    with torch.device("meta"):
        model = build_model_for(m, ds, FASHION_MNIST["classes"])  # type: ignore[arg-type]
        example = torch.zeros(batch, *FASHION_MNIST["input_shape"])
    prof = gradient_profile(model, example)
    steps = epochs * math.ceil(FASHION_MNIST["train_examples"] / batch)
    step_flops = 3 * prof["flops"]
    compute = const("cnn_target_seconds") / steps if step_s is None else step_s
    source = (f"assumed: cnn_target_seconds / ({epochs} epochs x {steps // epochs} steps of {batch}) "
              f"= {compute * 1e3:.2f} ms per step; a small net's step is bound by kernel launches and memory, "
              "not FLOPs") if step_s is None else f"given: --cnn-step-ms {step_s * 1e3:g}"  # fmt: skip
    return {
        "name": "fast_cnn", "title": "lamina fast recipe CNN (Fashion-MNIST, CUDA settings)",
        "arch": dict(model.arch), "params": sum(p.numel() for p in model.parameters()),
        "batch_per_gpu": batch, "batch_unit": "examples",
        "batch_source": "src/lamina/recipes/fast.yaml, cuda: data.batch_size",
        "forward_flops": prof["flops"], "step_flops": step_flops,
        "step_flops_source": "3 x forward FLOPs of one batch, counted by torch.utils.flop_counter.FlopCounterMode",
        "compute_s": compute, "compute_assumed": step_s is None, "compute_source": source,
        "compute_s_at_peak": step_flops / const("peak_bf16_flops"),
        "implied_mfu": step_flops / const("peak_bf16_flops") / compute,
        "profile": prof,
    }  # fmt: skip


def gpt_100m() -> dict[str, Any]:
    """lamina's ``gpt`` at GPT-2-small size, on the meta device; compute from 6 x params x tokens."""
    a = GPT_ARCH
    with torch.device("meta"):
        model = create_model("gpt", (a["context"],), a["vocab"], width=a["width"], depth=a["depth"], heads=a["heads"])
        example = torch.zeros(LM_SEQUENCES_PER_GPU, a["context"], dtype=torch.long)
    prof = gradient_profile(model, example)
    params = sum(p.numel() for p in model.parameters())  # the tied embedding / head counted once
    tokens = LM_SEQUENCES_PER_GPU * a["context"]
    step_flops = 6 * params * tokens
    embed = model.embed
    return {
        "name": "gpt_100m", "title": "lamina gpt, GPT-2-small size (768 x 12 blocks, 12 heads, context 1024, "
                                     "vocab 50257)",
        "arch": dict(model.arch), "params": params,
        "params_embedding": embed.wte.weight.numel() + (embed.wpe.weight.numel() if embed.wpe is not None else 0),
        "batch_per_gpu": tokens, "batch_unit": "tokens",
        "batch_source": f"chosen: {LM_SEQUENCES_PER_GPU} sequences x {a['context']} tokens per GPU per step",
        "forward_flops": prof["flops"], "step_flops": step_flops,
        "step_flops_source": "6 x params x tokens (Kaplan et al. 2020), all parameters counted (the tied "
                             "embedding is also the output matmul); FlopCounterMode's forward count x 3, "
                             "attention scores included, is step_flops_counted",
        "step_flops_counted": 3 * prof["flops"],
        "compute_s": step_flops / (const("peak_bf16_flops") * const("lm_mfu")), "compute_assumed": False,
        "compute_source": "step_flops / (peak_bf16_flops x lm_mfu)",
        "compute_s_at_peak": step_flops / const("peak_bf16_flops"),
        "implied_mfu": const("lm_mfu"),
        "profile": prof,
    }  # fmt: skip


# -- the predictions --------------------------------------------------------------------------------


def links_for(nodes: int) -> dict[str, float | None]:
    """The interconnects modelled at ``nodes``: NVLink alone for one node, 100/400 Gb/s NICs beyond."""
    if nodes == 1:
        return {"nvlink": None}
    return {"100G": const("net_100g"), "400G": const("net_400g")}


def predict(model: dict[str, Any], nodes: int, link: str, nic: float | None, grad_dtype: str) -> dict[str, Any]:
    """One row: the buckets' all-reduce, how much of it hides behind backward, the efficiency."""
    grads = model["profile"]["grads"]
    sizes = [n * elem for n, elem, _ in grads]  # DDP buckets by the gradients' own (fp32) bytes
    buckets = assign_buckets(sizes, first_cap=int(const("first_bucket_bytes")), cap=int(const("bucket_cap_bytes")))
    compute = model["compute_s"]
    backward = const("backward_fraction") * compute
    wire = [sum(grads[i][0] for i in b) * GRAD_BYTES[grad_dtype] for b in buckets]
    ready = [backward * max(grads[i][2] for i in b) for b in buckets]

    def timing(cost_fn: Callable[[float], float]) -> dict[str, float]:
        cost = [cost_fn(w) for w in wire]
        total = sum(cost)
        exposed = overlap_exposed_seconds(ready, cost, backward)
        return {"allreduce_s": total, "exposed_s": exposed,
                "hidden_fraction": 1 - exposed / total if total else 1.0,
                "efficiency": compute / (compute + exposed)}  # fmt: skip

    main = timing(lambda w: hierarchical_allreduce_seconds(w, nodes, nic))
    main["allreduce_latency_s"] = len(buckets) * hierarchical_allreduce_seconds(0.0, nodes, nic)  # its alpha terms
    after_first = backward - ready[0]
    cf_exposed = max(0.0, main["allreduce_s"] - after_first)
    gpus = int(const("gpus_per_node")) * nodes
    row = {
        "model": model["name"], "nodes": nodes, "gpus": gpus, "interconnect": link, "grad_dtype": grad_dtype,
        "global_batch": gpus * model["batch_per_gpu"], "grad_bytes": sum(wire), "buckets": len(buckets),
        "compute_s": compute, "backward_s": backward, **main,
        "throughput_gpus": gpus * main["efficiency"],
        "closed_form": {"hidden_fraction": min(1.0, after_first / main["allreduce_s"]), "exposed_s": cf_exposed,
                        "efficiency": compute / (compute + cf_exposed)},
        "flat_ring_one_nic": None,
    }  # fmt: skip
    if nic is not None:
        flat = timing(lambda w: flat_ring_one_nic_seconds(w, nodes, nic))
        row["flat_ring_one_nic"] = {k: flat[k] for k in ("allreduce_s", "exposed_s", "efficiency")}
    return row


def predictions(models: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [predict(m, n, link, nic, dtype) for m in models for n in NODES for link, nic in links_for(n).items()
            for dtype in GRAD_BYTES]  # fmt: skip


def model_summary(model: dict[str, Any]) -> dict[str, Any]:
    """The model's record without the per-tensor profile, plus its bucket layout."""
    out = {k: v for k, v in model.items() if k != "profile"}
    grads = model["profile"]["grads"]
    sizes = [n * e for n, e, _ in grads]
    buckets = assign_buckets(sizes, first_cap=int(const("first_bucket_bytes")), cap=int(const("bucket_cap_bytes")))
    out["grad_tensors"] = len(grads)
    out["bucket_bytes_fp32"] = [sum(sizes[i] for i in b) for b in buckets]
    out["bucket_ready_fraction"] = [max(grads[i][2] for i in b) for b in buckets]
    return out


# -- output -----------------------------------------------------------------------------------------


def markdown(record: dict[str, Any]) -> str:
    """One table per model, from a record this script wrote (the README copies these)."""
    lines: list[str] = []
    for name, m in record["models"].items():
        rows = [r for r in record["rows"] if r["model"] == name]
        fp32 = [r for r in rows if r["grad_dtype"] == "fp32"]
        bf16 = {(r["nodes"], r["interconnect"]): r for r in rows if r["grad_dtype"] == "bf16"}
        lines += [f"**{m['title']}**: {m['params']:,} parameters, {fp32[0]['grad_bytes'] / 1e6:.1f} MB of fp32 "
                  f"gradient per step in {fp32[0]['buckets']} buckets; {m['batch_per_gpu']:,} {m['batch_unit']} "
                  f"per GPU per step; compute {m['compute_s'] * 1e3:.2f} ms per step"
                  + (" (assumed)" if m["compute_assumed"] else "") + ".", "",
                  "| nodes x GPUs | between nodes | all-reduce ms | compute ms | exposed ms | hidden % "
                  "| efficiency % | closed form % | bf16 grads % | one NIC per node % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in fp32:
            flat = r["flat_ring_one_nic"]
            one_nic = "-" if flat is None else f"{100 * flat['efficiency']:.1f}"
            lines.append(
                f"| {r['nodes']} x 8 = {r['gpus']} | {'NVLink only' if r['interconnect'] == 'nvlink' else r['interconnect']} "
                f"| {r['allreduce_s'] * 1e3:.2f} | {r['compute_s'] * 1e3:.2f} | {r['exposed_s'] * 1e3:.2f} "
                f"| {100 * r['hidden_fraction']:.0f} | {100 * r['efficiency']:.1f} "
                f"| {100 * r['closed_form']['efficiency']:.1f} | {100 * bf16[r['nodes'], r['interconnect']]['efficiency']:.1f} "
                f"| {one_nic} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where the JSON goes")
    p.add_argument("--markdown", action="store_true", help="print the README tables too")
    p.add_argument("--cnn-step-ms", type=float, default=None,
                   help="a measured fast-recipe step time on one GPU (ms), instead of the assumed one")
    a = p.parse_args(argv)
    models = [fast_cnn(None if a.cnn_step_ms is None else a.cnn_step_ms / 1e3), gpt_100m()]
    record = {
        **environment("cpu"),
        "what": "DDP on 8 GPUs x N nodes, on paper: gradient bytes, all-reduce time, overlap with backward, "
                "predicted per-GPU efficiency at a fixed batch per GPU (weak scaling)",
        "constants": CONSTANTS, "formulas": FORMULAS,
        "models": {m["name"]: model_summary(m) for m in models},
        "rows": predictions(models),
    }  # fmt: skip
    path = write(a.out, record)
    print(f"wrote {path}")
    if a.markdown:
        print(markdown(record))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
