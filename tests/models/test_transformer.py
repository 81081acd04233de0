"""The GPT language model against references: the LM loss, the causal mask, RoPE, tying, the KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lamina.errors import LaminaError
from lamina.models import GPT, KVCache, create_model
from lamina.models.transformer import apply_rope, rope_tables, sample_next

V, CONTEXT = 37, 24
POSITIONS = ["learned", "rotary"]


def gpt(positions: str = "learned", *, context: int = CONTEXT, dtype: torch.dtype = torch.float64, **kw: object) -> GPT:
    """A tiny GPT; float64 by default so that two ways of computing agree far beyond argmax ties."""
    torch.manual_seed(0)
    kw = {"width": 32, "depth": 2, "heads": 4, **kw}
    model = create_model("gpt", (context,), V, positions=positions, **kw)
    assert isinstance(model, GPT)
    return model.to(dtype).eval()


def tokens(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


# -- the model ----------------------------------------------------------------------------


def test_defaults_and_arch_rebuild() -> None:
    m = create_model("gpt", (64,), 100, width=0, depth=None, heads=0, positions="", dropout=0.0)
    assert m.arch == {
        "name": "gpt", "input_shape": [64], "num_classes": 100, "width": 128, "depth": 4, "heads": 2,
        "act": "gelu", "norm": "layer", "dropout": 0.0, "positions": "learned",
    }  # fmt: skip
    assert [n for n, _ in m.stages()] == ["embed", "block1", "block2", "block3", "block4"]
    assert (m.input_kind, m.feature_layout, m.output_kind) == ("tokens", "tokens", "token_logits")
    assert create_model("gpt", (8,), 10, width=32).arch["heads"] == 1  # max(1, width // 64)
    r = create_model("gpt", (8,), 10, width=64, depth=1, heads=4, positions="rotary", act="relu", dropout=0.1)
    assert create_model(**r.arch).arch == r.arch
    assert r.num_params() == 10 * 64 + 12 * 64 * 64 + 4 * 64 + 64 * 2  # embedding + 1 block + 3 LayerNorms
    assert m.num_params() == 100 * 128 + 64 * 128 + 4 * (12 * 128 * 128 + 4 * 128) + 2 * 128


@pytest.mark.parametrize(
    "kw,match",
    [({"heads": 3}, "heads that divide width 32"), ({"positions": "alibi"}, "unknown positions 'alibi'"),
     ({"positions": "rotray"}, "did you mean 'rotary'"), ({"norm": "batch"}, "norm 'layer' or 'none'"),
     ({"norm": "group"}, "norm 'layer' or 'none'"), ({"width": 30, "heads": 2, "positions": "rotary"}, "even head size"),
     ({"vocab": 10}, "model 'gpt' takes no 'vocab'")],
)  # fmt: skip
def test_bad_arguments_are_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(LaminaError, match=match):
        create_model("gpt", (8,), 10, **{"width": 32, **kw})


def test_input_shape_must_be_a_context() -> None:
    with pytest.raises(LaminaError, match=r"needs input shape \(context,\)"):
        create_model("gpt", (1, 8), 10)


@pytest.mark.parametrize("positions", POSITIONS)
def test_any_length_up_to_the_context_and_no_longer(positions: str) -> None:
    m = gpt(positions)
    for t in (1, 5, CONTEXT):
        assert m(tokens(2, t)).shape == (2, t, V)
    with pytest.raises(LaminaError, match=f"sequence of {CONTEXT + 1} tokens is longer than the model's context {CONTEXT}"):
        m(tokens(2, CONTEXT + 1))


def test_lm_loss_equals_mean_negative_log_likelihood_by_hand() -> None:
    m = gpt()
    idx = tokens(3, CONTEXT + 1)
    x, y = idx[:, :-1], idx[:, 1:]  # (B, T) inputs and next-token targets
    logits = m(x)  # (B, T, V)
    loss = F.cross_entropy(logits.view(-1, V), y.reshape(-1))
    by_hand = -(logits.log_softmax(-1).gather(-1, y[..., None]).squeeze(-1)).mean()
    torch.testing.assert_close(loss, by_hand)
    assert abs(loss.item() - math.log(V)) < 0.1  # a fresh model guesses nearly uniformly


@pytest.mark.parametrize("positions", POSITIONS)
def test_causal_mask_a_token_changes_no_earlier_logit(positions: str) -> None:
    m = gpt(positions)
    idx = tokens(2, CONTEXT)
    base = m(idx)
    for t in (0, 7, CONTEXT - 1):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % V
        out = m(changed)
        assert torch.equal(out[:, :t], base[:, :t]), t
        assert not torch.allclose(out[:, t:], base[:, t:])  # and it does change its own and later ones


def test_attention_goes_through_sdpa_with_is_causal(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args: torch.Tensor, **kw: object) -> torch.Tensor:
        calls.append(kw)
        return sdpa(*args, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    m = gpt(dropout=0.25).train()
    m(tokens(2, 9))
    assert len(calls) == 2 and all(c["is_causal"] is True and c["attn_mask"] is None for c in calls)
    assert all(c["dropout_p"] == 0.25 for c in calls)
    calls.clear()
    m.eval()(tokens(2, 9))
    assert all(c["dropout_p"] == 0.0 for c in calls)


def test_dropout_acts_in_training_only() -> None:
    m = gpt(dropout=0.3)
    idx = tokens(2, 10)
    assert torch.equal(m(idx), m(idx))
    m.train()
    assert not torch.equal(m(idx), m(idx))


def test_head_is_tied_to_the_token_embedding() -> None:
    m = gpt(dtype=torch.float32)
    assert m.head.weight is m.embed.wte.weight
    names = [n for n, _ in m.named_parameters()]
    assert "embed.wte.weight" in names and "head.weight" not in names
    feats = m.forward_features(tokens(2, 6))
    torch.testing.assert_close(m.forward_head(feats), m.ln_f(feats) @ m.embed.wte.weight.T)
    assert torch.equal(m.forward_head(feats, pre_logits=True), m.ln_f(feats))


def test_tied_weight_is_stored_once_and_stays_tied_after_loading(tmp_path: object) -> None:
    m = gpt(dtype=torch.float32)
    state = m.state_dict()
    assert "head.weight" not in state and "embed.wte.weight" in state
    path = f"{tmp_path}/w.safetensors"
    save_file(state, path)  # safetensors refuses tensors that share memory
    torch.manual_seed(5)
    fresh = create_model(**m.arch).eval()
    fresh.load_state_dict(load_file(path))
    assert fresh.head.weight is fresh.embed.wte.weight
    idx = tokens(2, 8)
    assert torch.equal(fresh(idx), m(idx))
    fresh.load_state_dict({**state, "head.weight": state["embed.wte.weight"]})  # an untied-style dict loads too


def test_init_follows_nanogpt() -> None:
    torch.manual_seed(0)
    m = create_model("gpt", (64,), 500, width=256, depth=8)
    assert abs(m.embed.wte.weight.std().item() - 0.02) < 0.001
    assert abs(m.block1.attn.qkv.weight.std().item() - 0.02) < 0.001
    for proj in (m.block3.attn.proj.weight, m.block3.mlp.proj.weight):
        assert abs(proj.std().item() - 0.02 / math.sqrt(2 * 8)) < 0.0005


# -- rotary positions ----------------------------------------------------------------------


def rope_reference(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE as complex multiplication: pair (x[i], x[i + D/2]) times exp(j · p · base**(-2i/D))."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (D/2,)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2 :].double())  # (..., T, D/2)
    z = z * torch.polar(torch.ones((), dtype=torch.float64), positions.double()[:, None] * theta)  # (T, D/2)
    return torch.cat((z.real, z.imag), dim=-1).to(x.dtype)


def test_rope_matches_complex_reference() -> None:
    x = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    cos, sin = rope_tables(16, 8)
    out = apply_rope(x, cos[:10].double(), sin[:10].double())
    torch.testing.assert_close(out, rope_reference(x, torch.arange(10)), atol=1e-6, rtol=1e-6)  # float32 tables
    assert torch.equal(apply_rope(x[:, :, :1], cos[:1], sin[:1]), x[:, :, :1])  # position 0: no rotation
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation


def test_rope_dot_products_depend_only_on_the_position_difference() -> None:
    q, k = torch.randn(2, 16, dtype=torch.float64)
    cos, sin = (t.double() for t in rope_tables(64, 16))

    def at(v: torch.Tensor, p: int) -> torch.Tensor:
        return apply_rope(v[None, None, None], cos[p : p + 1], sin[p : p + 1]).flatten()

    for offset in (0, 3, 20):
        assert torch.allclose(at(q, 5 + offset) @ at(k, 2 + offset), at(q, 5) @ at(k, 2))
    assert not torch.allclose(at(q, 5) @ at(k, 2), at(q, 5) @ at(k, 4))


def test_rotary_model_has_no_position_table_and_keeps_its_tables_out_of_the_state_dict() -> None:
    m = gpt("rotary")
    assert m.embed.wpe is None
    assert not any("cos" in k or "sin" in k for k in m.state_dict())
    assert m.block1.attn.cos.shape == (CONTEXT, 32 // 4 // 2)


# -- generation ----------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITIONS)
def test_cached_greedy_generation_equals_full_recomputation(positions: str) -> None:
    m = gpt(positions)
    prompt = tokens(3, 5)
    new = CONTEXT - 5  # prompt + new == context
    cached = m.generate(prompt, new, temperature=0)
    full = m.generate(prompt, new, temperature=0, use_cache=False)
    assert cached.shape == (3, CONTEXT)
    assert torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, full)
    assert len({tuple(r) for r in cached[:, 5:].tolist()}) > 1  # the rows really differ


def test_full_recomputation_is_argmax_of_forward() -> None:
    m = gpt()
    prompt = tokens(2, 4)
    out = m.generate(prompt, 3, temperature=0, use_cache=False)
    for i in range(3):
        assert torch.equal(out[:, 4 + i], m(out[:, : 4 + i])[:, -1].argmax(-1))


@pytest.mark.parametrize("positions", POSITIONS)
def test_cached_sampling_equals_uncached_with_the_same_generator(positions: str) -> None:
    m = gpt(positions)
    prompt = tokens(4, 3)
    kw = {"temperature": 0.9, "top_k": 10}
    cached = m.generate(prompt, 15, generator=torch.Generator().manual_seed(3), **kw)
    full = m.generate(prompt, 15, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert torch.equal(cached, full)
    other = m.generate(prompt, 15, generator=torch.Generator().manual_seed(4), **kw)
    assert not torch.equal(other, cached)


@pytest.mark.parametrize("positions", POSITIONS)
def test_cached_generation_goes_past_the_context(positions: str) -> None:
    m = gpt(positions, context=8)
    prompt = tokens(2, 5)
    cached = m.generate(prompt, 30, temperature=0)
    full = m.generate(prompt, 30, temperature=0, use_cache=False)
    assert cached.shape == full.shape == (2, 35)
    assert torch.equal(cached[:, :9], full[:, :9])  # equal while prompt + new <= context
    long_prompt = tokens(2, 20)  # longer than the context: only its last 8 tokens are read
    assert m.generate(long_prompt, 4, temperature=0).shape == (2, 24)
    assert torch.equal(m.generate(long_prompt, 1, temperature=0), m.generate(long_prompt, 1, temperature=0, use_cache=False))


def test_context_of_one_token() -> None:
    m = gpt(context=1)
    prompt = tokens(2, 1)
    assert torch.equal(m.generate(prompt, 6, temperature=0), m.generate(prompt, 6, temperature=0, use_cache=False))


def test_iter_generate_streams_the_tokens_of_generate() -> None:
    m = gpt()
    prompt = tokens(2, 4)
    steps = list(m.iter_generate(prompt, 6, temperature=0))
    assert len(steps) == 6 and all(s.shape == (2,) and s.dtype == torch.long for s in steps)
    assert torch.equal(torch.stack(steps, 1), m.generate(prompt, 6, temperature=0)[:, 4:])
    assert torch.equal(m.generate(prompt, 0), prompt)


def test_generation_runs_in_eval_without_grad_and_restores_the_mode() -> None:
    m = gpt(dropout=0.5).train()
    prompt = tokens(2, 4)
    stream = m.iter_generate(prompt, 4, temperature=0)
    first = next(stream)
    assert m.training and torch.is_grad_enabled()  # nothing leaks between tokens
    assert not first.requires_grad
    rest = list(stream)
    assert m.training
    eval_out = m.eval().generate(prompt, 4, temperature=0)
    assert torch.equal(torch.stack([first, *rest], 1), eval_out[:, 4:])  # dropout was off
    assert not m.training


def test_sample_next() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.9], [3.0, 0.0, 0.0, 0.0]])
    assert sample_next(logits, temperature=0, top_k=None, generator=None).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # top-k keeps only the k largest
        assert sample_next(logits, temperature=1.0, top_k=2, generator=g)[0].item() in (1, 3)
        assert sample_next(logits, temperature=5.0, top_k=1, generator=g).tolist() == [1, 0]
    a = sample_next(logits, temperature=1.0, top_k=None, generator=torch.Generator().manual_seed(9))
    b = sample_next(logits, temperature=1.0, top_k=None, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kw,match",
    [({"max_new_tokens": -1}, "max_new_tokens"), ({"temperature": -0.5}, "temperature"),
     ({"temperature": float("nan")}, "temperature"), ({"top_k": 0}, "top_k")],
)  # fmt: skip
def test_bad_generation_arguments_are_errors(kw: dict[str, object], match: str) -> None:
    m = gpt()
    args = {"max_new_tokens": 2, **kw}
    with pytest.raises(LaminaError, match=match):
        m.generate(tokens(1, 3), **args)  # type: ignore[arg-type]
    with pytest.raises(LaminaError, match=match):
        m.iter_generate(tokens(1, 3), **args)  # type: ignore[arg-type]  # at the call, before any next()


@pytest.mark.parametrize("prompt", [torch.zeros(2, 3), torch.zeros(2, 0, dtype=torch.long), torch.zeros(3, dtype=torch.long)])
def test_prompt_must_be_a_batch_of_token_ids(prompt: torch.Tensor) -> None:
    with pytest.raises(LaminaError, match="prompt of token ids"):
        gpt().generate(prompt, 2)


def test_kv_cache_appends_into_preallocated_buffers() -> None:
    cache = KVCache(6)
    k, v = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    k_all, v_all = cache.append(k, v)
    assert cache.length == 4 and torch.equal(k_all, k) and torch.equal(v_all, v)
    assert cache.k is not None and cache.k.shape == (2, 3, 6, 5)
    k2, v2 = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
    k_all, v_all = cache.append(k2, v2)
    assert cache.length == 5 and torch.equal(k_all, torch.cat((k, k2), 2)) and torch.equal(v_all, torch.cat((v, v2), 2))


@pytest.mark.parametrize("positions", POSITIONS)
def test_chunk_after_cached_positions_equals_full_forward(positions: str) -> None:
    """Several new positions after a cache (an explicit causal mask) give the full forward's logits."""
    m = gpt(positions)
    idx = tokens(2, 12)
    caches = [KVCache(CONTEXT) for _ in m.stages()[1:]]
    x = m.embed(idx[:, :7])
    for (_, block), cache in zip(m.stages()[1:], caches, strict=True):
        x = block(x, cache)
    x = m.embed(idx[:, 7:], start=7)
    for (_, block), cache in zip(m.stages()[1:], caches, strict=True):
        x = block(x, cache)
    torch.testing.assert_close(m.forward_head(x), m(idx)[:, 7:])


def test_bf16_autocast_generation() -> None:
    m = gpt(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.generate(tokens(2, 3), 5)
    assert out.shape == (2, 8)
