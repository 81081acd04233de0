"""DDPM: the forward process against its closed form, the schedules against the papers' formulas,
the parameterisations, the DDIM and ancestral samplers on exact predictions, training, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import lamina.tasks.diffusion as diffusion
from lamina.config import ModelConfig, RunConfig
from lamina.data.base import Dataset, Split
from lamina.errors import LaminaError
from lamina.models.unet import UNet
from lamina.tasks.diffusion import (
    Diffusion,
    alpha_bar_of,
    cosine_alpha_bar,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    eps_to_x0,
    linear_betas,
    q_sample,
    v_of,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)


# -- the forward process --------------------------------------------------------------------------------
def test_q_sample_is_the_closed_form_for_given_noise() -> None:
    abar = cosine_alpha_bar(100)
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 50, 99])
    x_t = q_sample(x0, t, noise, abar)
    for i in range(3):
        a = float(abar[t[i]])
        torch.testing.assert_close(x_t[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i])


@pytest.mark.parametrize("i", [0, 300, 700, 999])
def test_q_sample_has_the_mean_and_variance_of_q_xt_given_x0(i: int) -> None:
    abar = cosine_alpha_bar(1000)
    a = float(abar[i])
    g = torch.Generator().manual_seed(i)
    x0 = torch.linspace(-1, 1, 8).view(1, 1, 2, 4)  # one image, many draws of x_t
    n = 40_000
    x_t = q_sample(x0.expand(n, -1, -1, -1), torch.full((n,), i), torch.randn(n, 1, 2, 4, generator=g), abar)
    se = math.sqrt((1 - a) / n)  # standard error of the mean
    torch.testing.assert_close(x_t.mean(0), math.sqrt(a) * x0[0], atol=5 * se + 1e-6, rtol=0)
    torch.testing.assert_close(x_t.var(0), torch.full((1, 2, 4), 1 - a), atol=5 * (1 - a) * math.sqrt(2 / n) + 1e-6,
                               rtol=0)


# -- the schedules --------------------------------------------------------------------------------------
def test_cosine_alpha_bar_is_the_papers_formula_with_betas_clipped() -> None:
    T, s = 1000, 0.008
    abar = cosine_alpha_bar(T)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    formula = torch.tensor([f[t] / f[0] for t in range(1, T + 1)], dtype=torch.float64)
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    assert abar.shape == (T,) and abar.dtype == torch.float64
    torch.testing.assert_close(abar[:-1], formula[:-1], rtol=1e-9, atol=1e-12)  # no beta clipped before the last
    assert abar[0] > 0.9999 and abar[-1] < 1e-8  # ᾱ ≈ 1 after one step, ≈ 0 after T
    assert torch.all(abar[1:] < abar[:-1])
    assert betas.max() <= 0.999 + 1e-12 and math.isclose(float(betas[-1]), 0.999)  # the paper's clip
    assert float(formula[-1]) == pytest.approx(0.0, abs=1e-30)  # unclipped, the last β would be 1


def test_linear_betas_are_ho_et_al_scaled_by_1000_over_T() -> None:
    b = linear_betas(1000)
    assert b.shape == (1000,) and float(b[0]) == pytest.approx(1e-4) and float(b[-1]) == pytest.approx(0.02)
    assert float(linear_betas(500)[-1]) == pytest.approx(0.04)
    abar = alpha_bar_of("linear", 1000)
    torch.testing.assert_close(abar, torch.cumprod(1 - b, 0))
    assert torch.all(abar[1:] < abar[:-1]) and abar[-1] < 1e-4


def test_unknown_schedule_or_prediction_is_a_one_line_error() -> None:
    with pytest.raises(LaminaError, match="did you mean 'cosine'"):
        Diffusion((1, 8, 8), schedule="cosin")
    with pytest.raises(LaminaError, match=r"unknown prediction 'x'.*eps.*v"):
        Diffusion((1, 8, 8), prediction="x")
    with pytest.raises(LaminaError, match="at least 2 timesteps"):
        Diffusion((1, 8, 8), timesteps=1)


def test_ddim_timesteps_are_evenly_spaced_from_0_to_T_minus_1() -> None:
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and ts == sorted(set(ts))
    assert ddim_timesteps(10, 10) == list(range(10)) and ddim_timesteps(10, 1) == [0]


# -- the parameterisations --------------------------------------------------------------------------------
def test_eps_v_x0_conversions_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    a = torch.tensor([0.999, 0.7, 0.2, 1e-3], dtype=torch.float32)
    x_t = q_sample(x0, torch.arange(4), eps, a)
    v = v_of(x0, eps, a)
    for got, want in [(v_to_x0(x_t, v, a), x0), (v_to_eps(x_t, v, a), eps), (eps_to_x0(x_t, eps, a), x0),
                      (x0_to_eps(x_t, x0, a), eps), (v_of(eps_to_x0(x_t, eps, a), x0_to_eps(x_t, x0, a), a), v)]:
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    # scalars broadcast the same way
    torch.testing.assert_close(v_of(x0, eps, 0.5), math.sqrt(0.5) * (eps - x0))


# -- the samplers -----------------------------------------------------------------------------------------
def test_ddim_step_with_the_true_eps_recovers_x0() -> None:
    abar = cosine_alpha_bar(1000).tolist()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 1, 4, 4, generator=g) * 2 - 1
    x = q_sample(x0, torch.full((2,), 999), torch.randn(2, 1, 4, 4, generator=g), torch.tensor(abar))
    ts = ddim_timesteps(1000, 20)
    for k in reversed(range(len(ts))):
        a, a_prev = abar[ts[k]], abar[ts[k - 1]] if k > 0 else 1.0
        x = ddim_step(x, x0_to_eps(x, x0, a), a, a_prev)  # deterministic: no noise needed
    torch.testing.assert_close(x, x0, atol=2e-3, rtol=0)
    x_t = q_sample(x0, torch.full((2,), 500), torch.randn(2, 1, 4, 4, generator=g), torch.tensor(abar))
    torch.testing.assert_close(ddim_step(x_t, x0_to_eps(x_t, x0, abar[500]), abar[500], 1.0), x0, atol=1e-5, rtol=0)
    with pytest.raises(LaminaError, match="needs noise"):
        ddim_step(x_t, x0, abar[500], abar[400], eta=1.0)


def test_ddpm_step_is_the_posterior_and_ends_at_x0() -> None:
    x_t, x0 = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    a_t, a_prev = 0.5, 0.6
    beta = 1 - a_t / a_prev
    mean = (math.sqrt(a_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - a_prev) * x_t) / (1 - a_t)
    torch.testing.assert_close(ddpm_step(x_t, x0, a_t, a_prev), mean)
    z = torch.randn(2, 1, 3, 3)
    var = beta * (1 - a_prev) / (1 - a_t)
    torch.testing.assert_close(ddpm_step(x_t, x0, a_t, a_prev, z), mean + math.sqrt(var) * z)
    torch.testing.assert_close(ddpm_step(x_t, x0, 0.9, 1.0, z), x0)  # the last step: the mean is x̂0, no noise


class ExactPoint(nn.Module):
    """The exact ε (or v) of data that is one image ``x_star``: a model with nothing to learn."""

    def __init__(self, task: Diffusion, x_star: Tensor) -> None:
        super().__init__()
        self.task, self.x_star = task, x_star
        self.dummy = nn.Parameter(torch.zeros(()))  # sample() reads the device from the parameters

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        a = self.task.alpha_bar_on(x.device)[t].view(-1, 1, 1, 1)
        eps = x0_to_eps(x, self.x_star.expand_as(x), a)
        return eps if self.task.prediction == "eps" else v_of(self.x_star.expand_as(x), eps, a)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [100, 10])  # the full ancestral chain (T = 100), and DDIM
def test_the_chain_of_an_exact_model_of_a_single_point_ends_at_it(prediction: str, steps: int) -> None:
    task = Diffusion((1, 4, 4), timesteps=100, prediction=prediction)
    x_star = torch.linspace(-0.9, 0.9, 16).view(1, 1, 4, 4)
    images = task.sample(ExactPoint(task, x_star), 3, steps=steps, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(images, task.to_pixels(x_star).expand(3, -1, -1, -1), atol=1e-4, rtol=0)


# -- the task ---------------------------------------------------------------------------------------------
def tiny_unet(shape: tuple[int, ...] = (1, 8, 8)) -> UNet:
    torch.manual_seed(0)
    return UNet(shape, 1, width=8, mults=(1, 2))


def images(n: int = 32) -> Tensor:
    """Bright squares of two sizes on black, in [-1, 1]."""
    x = -torch.ones(n, 1, 8, 8)
    x[::2, :, 2:6, 2:6] = 1.0
    x[1::2, :, 1:7, 3:5] = 1.0
    return x


def test_training_a_tiny_unet_lowers_the_loss() -> None:
    task = Diffusion((1, 8, 8), timesteps=100)
    model = tiny_unet()
    batches = [(images(), torch.zeros(32, dtype=torch.long))]
    before = task.evaluate(model, batches)["loss"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        loss = task.loss(task.forward(model, images()), torch.zeros(32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.evaluate(model, batches)["loss"]
    assert before == pytest.approx(1.0, abs=0.15)  # the zero-initialised net predicts ε = 0
    assert after < 0.7 * before


def test_v_prediction_targets_the_velocity() -> None:
    task = Diffusion((1, 8, 8), timesteps=100, prediction="v")
    x0, noise, t = images(4), torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 50, 99])
    pred, target = task.noised(tiny_unet(), x0, t, noise)
    torch.testing.assert_close(target, v_of(x0, noise, task.alpha_bar_on(x0.device)[t]))
    assert torch.equal(pred, torch.zeros_like(x0))


def test_training_noise_comes_from_the_global_rng() -> None:
    task, model = Diffusion((1, 8, 8), timesteps=100), tiny_unet()
    torch.manual_seed(3)
    a = task.forward(model, images(4))[1]
    torch.manual_seed(3)
    assert torch.equal(task.forward(model, images(4))[1], a)
    assert task.sums((a, a), torch.zeros(4), torch.tensor(0.5))["count"] == 4


def test_evaluation_is_fixed_per_example_and_leaves_the_global_rng() -> None:
    task, model = Diffusion((1, 8, 8), timesteps=100), tiny_unet()
    with torch.no_grad():
        model.out_conv.weight.normal_(0, 0.1)
    batches = [(images(8), torch.zeros(8)), (images(8), torch.zeros(8))]
    state = torch.get_rng_state()
    model.train()
    first = task.evaluate(model, batches)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert task.evaluate(model, batches) == first and first["examples"] == 16
    m = task.final_metrics(model, {"test": batches})
    assert next(iter(m)) == "test_loss" and m["test_loss"] == first["loss"] and m["timesteps"] == 100


def test_sample_shape_range_determinism_rng_and_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diffusion, "SAMPLE_BATCH", 2)  # 5 images in batches of 2, 2 and 1
    task, model = Diffusion((1, 8, 8), timesteps=6, sample_steps=3), tiny_unet()
    with torch.no_grad():
        model.out_conv.weight.normal_(0, 0.1)
    state = torch.get_rng_state()
    for mode, steps in ((True, 3), (False, 3), (True, 6)):  # DDIM in both modes, and the full chain
        model.train(mode)
        a = task.sample(model, 5, steps=steps, generator=torch.Generator().manual_seed(4))
        b = task.sample(model, 5, steps=steps, generator=torch.Generator().manual_seed(4))
        assert a.shape == (5, 1, 8, 8) and a.min() >= 0 and a.max() <= 1 and torch.equal(a, b)
        assert model.training is mode
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(task.sample(model, 5, steps=6, generator=torch.Generator().manual_seed(5)), a)
    assert torch.equal(task.sample(model, 2, generator=torch.Generator().manual_seed(4)),  # 0: sample_steps
                       task.sample(model, 2, steps=3, generator=torch.Generator().manual_seed(4)))


def test_describe_and_from_meta_round_trip() -> None:
    task = Diffusion((3, 32, 32), timesteps=500, schedule="linear", prediction="v", sample_steps=25)
    meta = task.describe()
    assert meta["task"] == "diffusion" and meta["shape"] == [3, 32, 32] and meta["pixel_range"] == [-1.0, 1.0]
    again = Diffusion.from_meta(meta)
    assert again.describe() == meta
    assert (again.T, again.schedule, again.prediction, again.sample_steps) == (500, "linear", "v", 25)
    assert torch.equal(again.alpha_bar, task.alpha_bar)
    with pytest.raises(LaminaError, match="pixel range"):
        Diffusion.from_meta({**meta, "pixel_range": [0.0, 1.0]})


def test_from_data_reads_the_generate_section_and_builds_the_unet() -> None:
    ds = Dataset(name="squares", classes=["a", "b"], train=Split((images(8) > 0).to(torch.uint8) * 255,
                                                                  torch.zeros(8, dtype=torch.long)))
    cfg = _run_config(timesteps=200, noise_schedule="linear", prediction="v", sample_steps=10, samples=16)
    task = Diffusion.from_data(ds, cfg)
    assert (task.shape, task.T, task.schedule, task.prediction, task.sample_steps, task.samples) == \
        ((1, 8, 8), 200, "linear", "v", 10, 16)
    model = task.build_model(ModelConfig(name="auto", width=8, act="silu", norm="group", heads=2), ds)
    assert model.arch["width"] == 8 and model.arch["heads"] == 2 and model.arch["input_shape"] == [1, 8, 8]
    with pytest.raises(LaminaError, match="trains a U-Net"):
        task.build_model(ModelConfig(name="cnn"), ds)
    raw = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert torch.equal(task.preprocess.apply(raw).flatten(), torch.tensor([-1.0, 1.0]))  # pixels in [-1, 1]


def _run_config(**generate: object) -> RunConfig:
    from dataclasses import replace

    cfg = RunConfig()
    return replace(cfg, generate=replace(cfg.generate, **generate))


def test_non_image_data_is_a_one_line_error() -> None:
    table = Dataset(name="rows", classes=["a", "b"], train=Split(torch.randn(8, 6), torch.zeros(8, dtype=torch.long)),
                    modality="table")
    with pytest.raises(LaminaError, match="--task diffusion generates images, but rows is table data") as e:
        Diffusion.from_data(table, RunConfig())
    assert "\n" not in str(e.value)
