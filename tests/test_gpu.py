"""CUDA-only paths: bf16 autocast, torch.compile, fused optimizers, the gather crop. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

import lamina
from lamina.data.augment import _crop_gather, _crop_grouped
from lamina.models import create_model
from lamina.training.engine import Engine
from lamina.training.optim import create_optimizer

pytestmark = pytest.mark.gpu


def test_engine_resolves_bf16_and_tf32_on_cuda():
    engine = Engine.create("cuda", "auto")
    assert engine.device.type == "cuda" and engine.precision == "bf16"
    assert torch.get_float32_matmul_precision() == "high"


def test_fused_optimizers_on_cuda():
    model = create_model("cnn", (1, 28, 28), 10).cuda()
    for name in ("sgd", "adamw"):
        opt = create_optimizer(name, model, lr=0.1, weight_decay=5e-4, momentum=0.9)
        assert opt.defaults["fused"] is True


def test_muon_on_cuda_orthogonalizes_in_bf16_like_torch_muon():
    """On CUDA lamina's Muon half is torch.optim.Muon's step (Newton-Schulz in bf16)."""
    torch.manual_seed(0)
    ours = create_model("gpt", (8,), 11, width=32, depth=1, heads=2).cuda()
    ref = create_model("gpt", (8,), 11, width=32, depth=1, heads=2).cuda()
    ref.load_state_dict(ours.state_dict())
    opt = create_optimizer("muon", ours, lr=0.01, weight_decay=0.1, momentum=0.9, beta2=0.99)
    from lamina.training.optim import muon_params

    hidden = muon_params(ref)
    torch_muon = torch.optim.Muon(hidden, lr=0.01, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    x = torch.randint(0, 11, (4, 8), device="cuda")
    for model, step in ((ours, opt.step), (ref, torch_muon.step)):
        model(x).logsumexp(-1).mean().backward()
        step()
    for a, b in zip(muon_params(ours), hidden, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_gather_crop_on_cuda_equals_cpu():
    xp = torch.randint(0, 256, (64, 1, 32, 32), dtype=torch.uint8)
    dy, dx = torch.randint(0, 5, (64, 1)), torch.randint(0, 5, (64, 1))
    gpu = _crop_gather(xp.cuda(), dy.cuda(), dx.cuda(), 28, 28).cpu()
    assert torch.equal(gpu, _crop_grouped(xp, dy, dx, 28, 28))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_train_digits_on_cuda_with_bf16_and_compile(tmp_path):
    run = lamina.train("digits", device="cuda", epochs=8, out=str(tmp_path / "r"), quiet=True,
                       overrides=["train.compile=true", "model.name=resnet"])
    assert run.summary["precision"] == "bf16"
    assert run.test_accuracy >= 0.95
    model = lamina.load(run.dir, device="cuda")
    assert next(model.model.parameters()).is_cuda
