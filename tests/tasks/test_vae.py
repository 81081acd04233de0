"""The convolutional VAE (``models/vae.py``) and its task (``tasks/vae.py``): the ELBO against a hand
computation, streamed sums, sampling and interpolation, the model contract, and a tiny run."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lamina.config import ModelConfig, RunConfig
from lamina.data.base import Dataset, Split
from lamina.errors import LaminaError
from lamina.models import NORMS, create_model, factory
from lamina.models.vae import ConvVAE, VAEOutput
from lamina.tasks import TASKS
from lamina.tasks import vae as vae_task
from lamina.tasks.base import add_sums, to_floats
from lamina.tasks.vae import VAE, VAEStep, kl_divergence, reconstruction

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These models are tiny: one thread beats two (and on a busy 2-core machine, by 10x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registrations the lead wires (factory, DATA_KWARGS, TASKS), made here where still missing."""
    if "vae" not in factory.MODELS:
        monkeypatch.setitem(factory.MODELS._items, "vae", ConvVAE)
    if "latent" not in factory.DATA_KWARGS:
        monkeypatch.setattr(factory, "DATA_KWARGS", (*factory.DATA_KWARGS, "latent"))
    if "vae" not in TASKS:
        monkeypatch.setitem(TASKS._items, "vae", VAE)


def tiny(latent: int = 3, **kw: object) -> ConvVAE:
    torch.manual_seed(0)
    return ConvVAE(SHAPE, width=4, latent=latent, **kw)  # type: ignore[arg-type]


def images(n: int = 6, seed: int = 1, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def stub_step(n: int = 4, latent: int = 3, seed: int = 2) -> VAEStep:
    """Fixed decoder outputs and posteriors: no model involved."""
    g = torch.Generator().manual_seed(seed)
    return VAEStep(torch.randn(n, *SHAPE, generator=g) * 2, torch.randn(n, latent, generator=g),
                   torch.randn(n, latent, generator=g) * 0.5, images(n, seed + 1))


# -- the model ------------------------------------------------------------------------------------


def test_forward_gives_logits_and_the_posterior() -> None:
    model = tiny()
    x = images()
    out = model(x)
    assert isinstance(out, VAEOutput)
    assert out.logits.shape == x.shape and out.mu.shape == out.logvar.shape == (6, 3)
    assert all(torch.isfinite(t).all() for t in out)
    assert model.forward_features(x).shape == (6, 6) and model.num_features == 6  # [mu, logvar]


def test_eval_decodes_the_mean_and_training_samples_from_the_global_rng() -> None:
    model, x = tiny().eval(), images()
    mu, logvar = model.encode(x)
    torch.testing.assert_close(model(x).logits, model.decode(mu))
    noise = torch.randn(6, 3)
    torch.testing.assert_close(model(x, noise).logits, model.decode(mu + torch.exp(0.5 * logvar) * noise))
    model.train()
    torch.manual_seed(5)
    a = model(x).logits
    torch.manual_seed(5)
    b = model(x).logits
    assert torch.equal(a, b) and not torch.allclose(a, model(x).logits)
    with pytest.raises(LaminaError, match="noise must have shape"):
        model(x, torch.zeros(6, 4))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 12, 20)])
def test_any_size_divisible_by_4(shape: tuple[int, ...]) -> None:
    model = ConvVAE(shape, width=4, latent=2).eval()
    x = images(2, shape=shape)
    assert model(x).logits.shape == x.shape
    assert model.forward_features(x).shape == (2, 4)


@pytest.mark.parametrize("shape", [(1, 10, 8), (1, 28), (20,), (1, 2, 8, 8)])
def test_other_shapes_are_one_line_errors(shape: tuple[int, ...]) -> None:
    with pytest.raises(LaminaError, match="divisible by 4"):
        ConvVAE(shape)


@pytest.mark.parametrize("kw,match", [({"latent": -1}, "latent >= 1"), ({"width": -1}, "width >= 1"),
                                      ({"depth": -2}, "depth >= 1"), ({"dropout": 1.0}, "dropout"),
                                      ({"norm": "btach"}, "did you mean 'batch'")])
def test_bad_hyperparameters_are_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(LaminaError, match=match):
        create_model("vae", SHAPE, 1, **kw)


def test_stages_are_the_encoder_and_hooks_see_them_in_order() -> None:
    model = tiny(depth=2).eval()
    stages = model.stages()
    assert [n for n, _ in stages] == ["stage1", "stage2", "posterior"]
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.append((n, out))) for n, m in stages]
    try:
        feats = model.forward_features(images())
    finally:
        for h in handles:
            h.remove()
    assert [n for n, _ in seen] == ["stage1", "stage2", "posterior"]
    assert [tuple(t.shape) for _, t in seen] == [(6, 4, 4, 4), (6, 8, 2, 2), (6, 6)]
    assert torch.equal(seen[-1][1], feats)


def test_the_inspection_feature_path_reads_the_encoder() -> None:
    from lamina.inspection.features import stage_features

    model = tiny()
    batches = [(images(5, seed=s), torch.arange(5)) for s in range(2)]
    feats, labels = stage_features(model, batches, max_examples=8)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"stage1": (8, 4), "stage2": (8, 8), "posterior": (8, 6)}
    assert labels.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert model.training  # restored


def test_arch_rebuilds_the_model_and_the_state_dict_round_trips() -> None:
    model = create_model("vae", SHAPE, 1, width=4, depth=2, latent=5, act="gelu", norm="group")
    model.train()
    model(images())  # batch-norm-free, but a train-mode pass anyway
    arch = json.loads(json.dumps(model.arch))
    assert arch == {"name": "vae", "input_shape": list(SHAPE), "num_classes": 1, "width": 4, "depth": 2,
                    "latent": 5, "act": "gelu", "norm": "group", "dropout": 0.0}
    torch.manual_seed(123)
    fresh = create_model(**arch)
    fresh.load_state_dict(model.state_dict())
    x = images()
    assert all(torch.equal(a, b) for a, b in zip(fresh.eval()(x), model.eval()(x), strict=True))


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_trains_with_a_gradient_for_every_parameter(norm: str) -> None:
    model = tiny(norm=norm).train()
    task = VAE(SHAPE, latent=3)
    task.loss(task.forward(model, images()), torch.zeros(6)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.arch["norm"] == norm


def test_bf16_autocast_forward_and_backward() -> None:
    model, x = tiny(), images()
    model.train()
    model(x)
    model.eval()
    ref = model(x)
    task = VAE(SHAPE, latent=3)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task.forward(model, x)
    assert out.logits.dtype == torch.bfloat16
    loss = task.loss(out, torch.zeros(6))
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    torch.testing.assert_close(low.logits.float(), ref.logits, atol=0.1, rtol=0.1)


def test_channels_last_matches_contiguous() -> None:
    model = ConvVAE((3, 16, 16), width=8, latent=4)
    x = images(3, shape=(3, 16, 16))
    model.train()
    model(x)
    model.eval()
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_example_input_is_seeded_pixels_in_0_1() -> None:
    model = tiny()
    x = model.example_input(4, torch.Generator().manual_seed(7))
    assert torch.equal(x, torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(7)))
    assert (ConvVAE.example_shape, ConvVAE.output_kind, ConvVAE.input_kind) == (SHAPE, "vae", "values")


# -- the ELBO ----------------------------------------------------------------------------------------


def test_elbo_terms_match_a_hand_computation() -> None:
    out = stub_step()
    task = VAE(SHAPE, latent=3)
    p = torch.sigmoid(out.logits.double())
    x = out.x.double()
    rec = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)  # BCE summed over pixels
    var = out.logvar.double().exp()
    kl = 0.5 * (out.mu.double() ** 2 + var - 1 - out.logvar.double()).sum(1)
    got_rec, got_kl = task.terms(out)
    torch.testing.assert_close(got_rec.double(), rec, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got_kl.double(), kl, rtol=1e-5, atol=1e-5)
    loss = task.loss(out, torch.zeros(4))
    assert float(loss) == pytest.approx(float((rec + kl).mean()), rel=1e-5)
    m = task.summarize(to_floats(task.sums(out, torch.zeros(4), loss)))
    nelbo = float((rec + kl).mean())
    assert m["rec"] == pytest.approx(float(rec.mean()), rel=1e-5)
    assert m["kl"] == pytest.approx(float(kl.mean()), rel=1e-5)
    assert m["nelbo"] == pytest.approx(nelbo, rel=1e-5) and m["elbo"] == -m["nelbo"] and m["loss"] == m["nelbo"]
    assert m["bpd"] == pytest.approx(nelbo / (64 * math.log(2)), rel=1e-5)


def test_kl_is_zero_at_the_prior_and_the_gaussian_decoder_is_a_density() -> None:
    assert kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)).tolist() == [0.0, 0.0]
    out = stub_step()
    expected = -torch.distributions.Normal(out.logits.double(), 1.0).log_prob(out.x.double()).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction(out.logits, out.x, "gaussian").double(), expected)
    task = VAE(SHAPE, latent=3, decoder="gaussian")
    assert task.terms(out)[0].tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_beta_scales_the_kl_term_only() -> None:
    out = stub_step()
    one, four = VAE(SHAPE, latent=3), VAE(SHAPE, latent=3, beta=4.0)
    rec, kl = one.terms(out)
    assert float(four.loss(out, torch.zeros(4))) == pytest.approx(float((rec + 4 * kl).mean()), rel=1e-6)
    m1 = one.summarize(to_floats(one.sums(out, torch.zeros(4), one.loss(out, torch.zeros(4)))))
    m4 = four.summarize(to_floats(four.sums(out, torch.zeros(4), four.loss(out, torch.zeros(4)))))
    for k in ("rec", "kl", "elbo", "nelbo", "bpd"):  # the ELBO is the ELBO whatever the training weight
        assert m4[k] == pytest.approx(m1[k], rel=1e-12)
    assert m4["loss"] == pytest.approx(m1["rec"] + 4 * m1["kl"], rel=1e-9)


def test_sums_stream_exactly() -> None:
    out, y = stub_step(8), torch.zeros(8)
    task = VAE(SHAPE, latent=3, beta=0.5)
    whole = to_floats(task.sums(out, y, task.loss(out, y)))
    total: dict = {}
    for half in (slice(0, 3), slice(3, 8)):  # unequal halves: means of means would be wrong
        part = VAEStep(*(t[half] for t in out))
        add_sums(total, task.sums(part, y[half], task.loss(part, y[half])))
    halves = to_floats(total)
    assert halves["count"] == whole["count"] == 8
    for k in ("loss_sum", "rec_sum", "kl_sum"):
        assert halves[k] == pytest.approx(whole[k], rel=1e-12)
    assert task.summarize(halves) == pytest.approx(task.summarize(whole), rel=1e-12)


def test_evaluate_uses_fixed_posterior_noise_and_leaves_the_global_rng() -> None:
    model, task = tiny(), VAE(SHAPE, latent=3)
    batches = [(images(5, seed=s), torch.zeros(5, dtype=torch.long)) for s in range(3)]
    state = torch.get_rng_state()
    a = task.evaluate(model, batches)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training  # restored
    assert task.evaluate(model, batches) == a and a["examples"] == 15
    # by hand: the noises of a generator seeded EVAL_SEED, batch after batch
    g = torch.Generator().manual_seed(vae_task.EVAL_SEED)
    model.eval()
    total: dict = {}
    with torch.no_grad():
        for x, y in batches:
            out = task.forward(model, x, torch.randn(len(x), 3, generator=g))
            add_sums(total, task.sums(out, y, task.loss(out, y)))
    assert a["nelbo"] == pytest.approx(task.summarize(to_floats(total))["nelbo"], rel=1e-9)
    mean_only = task.summarize(to_floats(task.sums(task.forward(model, batches[0][0]), batches[0][1],
                                                   torch.zeros(()))))
    assert mean_only["kl"] != pytest.approx(0.0)  # (the KL is analytic; the rec term is what the noise changes)


def test_a_few_steps_lower_the_loss() -> None:
    model, task = tiny(latent=2), VAE(SHAPE, latent=2)
    g = torch.Generator().manual_seed(0)
    base = (torch.rand(2, *SHAPE, generator=g) > 0.5).float()  # two binary patterns: the BCE can reach 0
    x = base[torch.arange(32) % 2]
    batches = [(x[i:i + 16], torch.zeros(16)) for i in range(0, 32, 16)]
    before = task.evaluate(model, batches)["loss"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(20):
        for xb, yb in batches:
            loss = task.loss(task.forward(model, xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = task.evaluate(model, batches)["loss"]
    assert after < 0.8 * before, (before, after)


# -- generating ------------------------------------------------------------------------------------


def test_sample_shape_range_determinism_rng_and_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    model, task = tiny(), VAE(SHAPE, latent=3)
    monkeypatch.setattr(vae_task, "SAMPLE_BATCH", 4)  # 10 images in batches of 4, 4, 2
    state = torch.get_rng_state()
    a = task.sample(model, 10, generator=torch.Generator().manual_seed(3))
    b = task.sample(model, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert a.shape == (10, *SHAPE) and a.dtype == torch.float32
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and torch.equal(a, b)
    assert not torch.equal(a, task.sample(model, 10, generator=torch.Generator().manual_seed(4)))
    # Bernoulli means: the sigmoid of the decoded logits of the generator's z
    z = torch.cat([torch.randn(k, 3, generator=g) for g in [torch.Generator().manual_seed(3)] for k in (4, 4, 2)])
    model.eval()
    torch.testing.assert_close(a, torch.sigmoid(model.decode(z)))
    assert task.sample(model, 0).shape == (0, *SHAPE)


def test_interpolate_goes_from_one_posterior_mean_to_the_other() -> None:
    model, task = tiny(), VAE(SHAPE, latent=3)
    xa, xb = images(1, seed=5)[0], images(1, seed=6)[0]
    state = torch.get_rng_state()
    line = task.interpolate(model, xa, xb, 5)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert line.shape == (5, *SHAPE) and 0 <= float(line.min()) and float(line.max()) <= 1
    assert torch.equal(line, task.interpolate(model, xa[None], xb[None], 5))  # a batch of one: the same
    model.eval()
    with torch.no_grad():
        mu_a, mu_b = model.encode(xa[None])[0], model.encode(xb[None])[0]
        ends = torch.sigmoid(model.decode(torch.cat([mu_a, mu_b, (mu_a + mu_b) / 2])))
    torch.testing.assert_close(line[[0, 4, 2]], ends)
    pairs = task.interpolate(model, images(3, seed=7), images(3, seed=8), 4)
    assert pairs.shape == (12, *SHAPE)  # 3 lines of 4
    torch.testing.assert_close(pairs[4:8], task.interpolate(model, images(3, seed=7)[1], images(3, seed=8)[1], 4))
    with pytest.raises(LaminaError, match="n_steps >= 2"):
        task.interpolate(model, xa, xb, 1)


def test_encode_means_gives_the_posterior_means_and_labels() -> None:
    model, task = tiny(), VAE(SHAPE, latent=3)
    batches = [(images(4, seed=s), torch.full((4,), s)) for s in range(3)]
    mu, y = task.encode_means(model, batches)
    assert mu.shape == (12, 3) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and model.training
    model.eval()
    torch.testing.assert_close(mu[4:8], model.encode(batches[1][0])[0])


# -- the task in a run -------------------------------------------------------------------------------


def test_describe_from_meta_round_trip() -> None:
    task = VAE((3, 12, 16), latent=7, beta=0.25, decoder="gaussian")
    meta = json.loads(json.dumps(task.describe()))
    assert meta == {"task": "vae", "shape": [3, 12, 16], "pixel_range": [0.0, 1.0], "latent": 7, "beta": 0.25,
                    "decoder": "gaussian"}
    back = VAE.from_meta(meta)
    assert (back.shape, back.latent, back.beta, back.decoder) == ((3, 12, 16), 7, 0.25, "gaussian")
    assert back.describe() == meta


def test_bad_task_settings_are_one_line_errors() -> None:
    with pytest.raises(LaminaError, match="did you mean 'bernoulli'"):
        VAE(SHAPE, decoder="bernouli")
    with pytest.raises(LaminaError, match="beta"):
        VAE(SHAPE, beta=-1)
    with pytest.raises(LaminaError, match="needs images"):
        VAE((64,))


def image_dataset(modality: str = "image", shape: tuple[int, ...] = SHAPE) -> Dataset:
    x = torch.randint(0, 256, (20, *shape), dtype=torch.uint8) if modality == "image" else torch.randn(20, *shape)
    return Dataset(name="tiny", classes=["a", "b"], train=Split(x, torch.arange(20) % 2), modality=modality)


def test_from_data_reads_the_generate_section_and_builds_the_vae() -> None:
    cfg = RunConfig()
    cfg = type(cfg)(generate=type(cfg.generate)(latent=5, beta=2.0))
    task = VAE.from_data(image_dataset(), cfg)
    assert (task.shape, task.latent, task.beta, task.decoder, task.samples) == (SHAPE, 5, 2.0, "bernoulli", 64)
    model = task.build_model(ModelConfig(), image_dataset())
    assert model.arch["name"] == "vae" and model.arch["latent"] == 5 and model.arch["width"] == 32
    assert task.build_model(ModelConfig(name="vae", width=8), None).arch["width"] == 8
    with pytest.raises(LaminaError, match="trains the 'vae' model"):
        task.build_model(ModelConfig(name="cnn"), None)


def test_vae_on_non_image_data_is_a_one_line_error() -> None:
    with pytest.raises(LaminaError, match="generates images") as e:
        VAE.from_data(image_dataset("table", (5,)), RunConfig())
    assert "\n" not in str(e.value)


def test_task_vae_on_non_image_data_from_the_cli_is_a_one_line_error(tmp_path, capsys) -> None:
    from lamina.cli.main import main

    def fails(path: object, phrase: str) -> None:
        assert main(["train", str(path), "--task", "vae", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
        assert "vae" in err and phrase in err, err

    np.savez(tmp_path / "v.npz", x=np.random.default_rng(0).random((40, 5), np.float32), y=np.arange(40) % 2)
    fails(tmp_path / "v.npz", "image")
    (tmp_path / "t.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    fails(tmp_path / "t.csv", "")  # the table loader's own wording


def test_final_metrics_lead_with_the_test_nelbo() -> None:
    model, task = tiny(), VAE(SHAPE, latent=3)
    loaders = {"test": [(images(4), torch.zeros(4))], "val": [(images(2), torch.zeros(2))]}
    m = task.final_metrics(model, loaders)
    assert next(iter(m)) == "test_nelbo" and m["test_examples"] == 4
    assert m["test_bpd"] == pytest.approx(m["test_nelbo"] / (64 * math.log(2)))
    assert (m["latent"], m["beta"], m["decoder"]) == (3, 1.0, "bernoulli")
    assert VAE.headline in task.summarize({"count": 1, "loss_sum": 1.0, "rec_sum": 1.0, "kl_sum": 0.0})
    assert not VAE.higher_is_better and VAE.defaults["train"]["label_smoothing"] == 0


def test_a_tiny_run_trains_saves_and_samples(tmp_path, npz) -> None:
    from lamina import api

    out = tmp_path / "run"
    r = api.train(str(npz), overrides=["data.task=vae", "train.epochs=2", "model.width=4", "generate.latent=2",
                                       "generate.samples=4", 'generate.fd_classifier="off"'],
                  device="cpu", out=out, quiet=True)
    s = r.summary
    assert s["task"] == "vae" and math.isfinite(s["test_nelbo"]) and s["test_nelbo"] > 0
    assert s["test_bpd"] == pytest.approx(s["test_nelbo"] / (64 * math.log(2)))
    assert r.config.train.optimizer == "adamw" and r.config.data.batch_size == 128
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch = [e for e in records if e.get("kind") == "epoch"][-1]
    assert {"train_rec", "train_kl", "val_nelbo", "val_bpd"} <= set(epoch)
    assert (out / "samples" / "epoch_002.png").is_file()
    loaded = api.load(out)
    g = loaded.sample(3, seed=1)
    assert g.shape == (3, *SHAPE) and torch.equal(g, loaded.sample(3, seed=1))
    line = loaded.interpolate(torch.from_numpy(np.load(npz)["x"][0]), torch.from_numpy(np.load(npz)["x"][1]), 4)
    assert line.shape == (4, *SHAPE)


def test_bce_of_continuous_pixels_is_binary_cross_entropy() -> None:
    out = stub_step()
    ref = F.binary_cross_entropy(torch.sigmoid(out.logits), out.x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(reconstruction(out.logits, out.x), ref, rtol=1e-4, atol=1e-3)
