"""Equivalence tests for `atmanrl.attention.manipulate` on tiny llama / qwen2 / gpt2 models."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import AttentionMaskInterface

from atmanrl.attention import manipulate
from atmanrl.errors import UserError
from conftest import ARCHS, make_tiny_model

VOCAB = 128
BOTH = [(a, i) for a in ARCHS for i in ("eager", "sdpa")]


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def forward(model, ids, mask, **kw):
    return model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), **kw).logits


def frozen(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture
def padded():
    """Row 0 left-padded, row 1 right-padded, row 2 full: different lengths in one batch."""
    torch.manual_seed(0)
    ids = torch.randint(3, VOCAB, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :3] = 0
    mask[1, 9:] = 0
    return ids, mask


@pytest.mark.parametrize("arch,impl", BOTH)
def test_zero_bias_is_the_unmodified_model(arch, impl, padded):
    model = make_tiny_model(arch, VOCAB, impl)
    ids, mask = padded
    ref = forward(model, ids, mask)
    with manipulate(model, torch.zeros(3, 12), query_start=torch.tensor([5, 0, 7])):
        out = forward(model, ids, mask)
    real = mask.bool()  # padded query rows are garbage in both and never used
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,impl", BOTH)
def test_min_bias_equals_removing_the_token(arch, impl):
    model = make_tiny_model(arch, VOCAB, impl)
    ids, mask = torch.randint(3, VOCAB, (1, 10)), torch.ones(1, 10, dtype=torch.long)
    pos = torch.arange(10)[None]
    removed = mask.clone()
    removed[0, 3] = 0
    bias = torch.zeros(1, 10)
    bias[0, 3] = torch.finfo(torch.float32).min
    # All rows in scope: identical to attention_mask 0 on key 3 (positions kept).
    ref = model(input_ids=ids, attention_mask=removed, position_ids=pos).logits
    with manipulate(model, bias):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # Scoped to rows >= 6: rows before are the unmodified model; rows from 6 on equal a forward that removes
    # key 3 for those rows only (prefix 0..5 cached unmodified, then the rest with key 3 masked).
    plain = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    cache = model(input_ids=ids[:, :6], position_ids=pos[:, :6], use_cache=True).past_key_values
    tail = model(
        input_ids=ids[:, 6:], attention_mask=removed, position_ids=pos[:, 6:], past_key_values=cache
    ).logits
    with manipulate(model, bias, query_start=6):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(out[:, :6], plain[:, :6], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 6:], tail, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, 6:], plain[:, 6:], atol=1e-4)  # the manipulation did something


@pytest.mark.parametrize("arch,impl", BOTH)
def test_gradients_reach_the_bias_never_the_weights(arch, impl, padded):
    model = frozen(make_tiny_model(arch, VOCAB, impl))
    ids, mask = padded
    bias = torch.zeros(3, 12, requires_grad=True)
    with manipulate(model, bias, query_start=torch.tensor([8, 8, 8])):
        forward(model, ids, mask)[:, -1].logsumexp(-1).sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    assert bias.grad[0, :3].abs().sum() == 0 and bias.grad[1, 9:].abs().sum() == 0  # padding keys get none
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_state_restored_after_an_exception(impl):
    model = make_tiny_model("llama", VOCAB, impl)
    before_attn, before_mask = (
        set(AttentionInterface._global_mapping),
        set(AttentionMaskInterface._global_mapping),
    )
    with pytest.raises(RuntimeError, match="boom"):
        with manipulate(model, torch.zeros(1, 4)):
            assert model.config._attn_implementation.startswith("atmanrl")
            raise RuntimeError("boom")
    assert model.config._attn_implementation == impl
    assert all(layer.self_attn.config._attn_implementation == impl for layer in model.model.layers)
    assert set(AttentionInterface._global_mapping) == before_attn  # the per-call registration is gone
    assert set(AttentionMaskInterface._global_mapping) == before_mask


@pytest.mark.parametrize("arch,impl", BOTH)
@pytest.mark.parametrize("mode", ["additive", "multiplicative"])
def test_padded_batch_equals_single_rows(arch, impl, mode, padded):
    model = make_tiny_model(arch, VOCAB, impl)
    ids, mask = padded
    torch.manual_seed(1)
    bias = torch.rand(3, 12) * (-3.0 if mode == "additive" else 1.0)
    query_start = torch.tensor([6, 4, 9])  # absolute column in the padded layout
    with manipulate(model, bias, query_start=query_start, mode=mode):
        batched = forward(model, ids, mask)
    for b in range(3):
        keep = mask[b].bool()
        first = int(keep.nonzero()[0])  # columns shift by the left padding when the row runs alone
        with manipulate(model, bias[b : b + 1, keep], query_start=int(query_start[b]) - first, mode=mode):
            single = forward(model, ids[b : b + 1, keep], mask[b : b + 1, keep])
        torch.testing.assert_close(batched[b, keep], single[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch,impl", BOTH)
def test_cached_prefix_equals_full_recompute(arch, impl, padded):
    """Answer scope: keys/values before query_start are mask-independent, so a cached prefix gives the same rows."""
    model = make_tiny_model(arch, VOCAB, impl)
    ids, mask = padded
    bias = -torch.rand(3, 12) * 4
    with manipulate(model, bias, query_start=7):
        full = forward(model, ids, mask)
        # A prefix-only forward inside the context sees fewer keys than the bias covers (sliced), and rows < 7
        # are out of scope, so it is the unmodified prefix.
        pre = model(
            input_ids=ids[:, :7],
            attention_mask=mask[:, :7],
            position_ids=positions(mask)[:, :7],
            use_cache=True,
        )
    kv = [(layer.keys, layer.values) for layer in pre.past_key_values.layers]
    for _ in range(2):  # a fresh cache each time: the prefix is reused unchanged
        cache = DynamicCache(ddp_cache_data=kv, config=model.config)
        with manipulate(model, bias, query_start=7):
            tail = model(
                input_ids=ids[:, 7:],
                attention_mask=mask,
                position_ids=positions(mask)[:, 7:],
                past_key_values=cache,
            ).logits
        real = mask[:, 7:].bool()
        torch.testing.assert_close(tail[real], full[:, 7:][real], atol=1e-5, rtol=1e-4)
    assert kv[0][0].shape[2] == 7


@pytest.mark.parametrize("arch,impl", BOTH)
def test_multiplicative_factor_one_is_unmodified(arch, impl, padded):
    model = make_tiny_model(arch, VOCAB, impl)
    ids, mask = padded
    ref = forward(model, ids, mask)
    with manipulate(model, torch.ones(3, 12), mode="multiplicative", factor=1.0):
        out = forward(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=1e-5)
    with manipulate(model, torch.ones(3, 12), mode="multiplicative", factor=0.1):
        assert not torch.allclose(forward(model, ids, mask)[real], ref[real], atol=1e-3)


def test_eager_weights_available_through_the_context():
    model = make_tiny_model("llama", VOCAB, "sdpa")
    ids = torch.randint(3, VOCAB, (1, 6))
    with manipulate(model, torch.zeros(1, 6), implementation="eager"):
        att = model(input_ids=ids, output_attentions=True).attentions
    assert len(att) == 2 and att[0].shape == (1, 4, 6, 6)
    torch.testing.assert_close(att[0].sum(-1), torch.ones(1, 4, 6))
    assert att[0][0, :, 0, 1:].abs().sum() == 0  # causal


@pytest.mark.parametrize("backend", ["flash_attention_2", "flex_attention", "paged|eager"])
def test_unsupported_backend_is_a_user_error(backend):
    model = make_tiny_model("llama", VOCAB, "eager")
    model.config._attn_implementation = backend  # what loading with that backend would leave
    with pytest.raises(UserError, match='attn_implementation="sdpa"'):
        with manipulate(model, torch.zeros(1, 4)):
            pass
    assert model.config._attn_implementation == backend  # untouched


@pytest.mark.parametrize("mode", ["additive", "multiplicative"])
def test_the_manipulated_mask_is_built_once_per_forward(mode, padded, monkeypatch):
    """One mask for all layers (not one per layer), rebuilt for the next forward: the scores stay the model's."""
    import atmanrl.attention as att

    model = make_tiny_model("llama", VOCAB, "sdpa")
    assert model.config.num_hidden_layers > 1
    calls = []
    real = att._float_mask
    monkeypatch.setattr(att, "_float_mask", lambda *a: calls.append(1) or real(*a))
    ids, mask = padded
    bias = torch.zeros(3, 12)
    bias[:, 4] = 1.0 if mode == "multiplicative" else -5.0
    with manipulate(model, bias, mode=mode, factor=0.1):
        first = forward(model, ids, mask)
        assert len(calls) == 1
        second = forward(model, ids, mask)
        assert len(calls) == 2
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("arch,impl", BOTH)
def test_constant_past_gives_the_same_rows_and_bias_gradient(arch, impl, padded, monkeypatch):
    """`past_constant=True` (a cache built without grad) skips the cached keys' gradient: the tail's logits and
    the bias gradient equal those of one full forward without a cache, and the fast path runs where it may."""
    import atmanrl.attention as att

    model = frozen(make_tiny_model(arch, VOCAB, impl))
    ids, mask = padded
    real = mask[:, 7:].bool()
    weights = torch.randn(real.shape[0], real.shape[1], VOCAB)

    def tail_loss(logits):
        return (logits.log_softmax(-1) * weights)[real].sum()

    bias = (-torch.rand(3, 12) * 4).requires_grad_(True)
    with manipulate(model, bias, query_start=7):
        full = forward(model, ids, mask)[:, 7:]
    (full_grad,) = torch.autograd.grad(tail_loss(full), bias)
    with torch.no_grad():
        pre = model(input_ids=ids[:, :7], attention_mask=mask[:, :7], position_ids=positions(mask)[:, :7])
    kv = [(layer.keys, layer.values) for layer in pre.past_key_values.layers]
    calls = []
    fast = att.past_constant_attention
    monkeypatch.setattr(att, "past_constant_attention", lambda *a: calls.append(1) or fast(*a))
    with manipulate(model, bias, query_start=7, past_constant=True):
        tail = model(
            input_ids=ids[:, 7:],
            attention_mask=mask,
            position_ids=positions(mask)[:, 7:],
            past_key_values=DynamicCache(ddp_cache_data=kv, config=model.config),
        ).logits
    (tail_grad,) = torch.autograd.grad(tail_loss(tail), bias)
    torch.testing.assert_close(tail[real], full[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tail_grad, full_grad, atol=1e-5, rtol=1e-4)
    assert full_grad[:, :7].abs().sum() > 0  # the bias on cached columns matters, and its gradient arrives
    assert len(calls) == model.config.num_hidden_layers


def test_constant_past_keeps_a_model_s_own_attention_when_it_is_not_plain(padded, monkeypatch):
    """An eager function with its own extras (gemma2's softcap, gpt-oss' sinks) is never replaced."""
    import sys

    import atmanrl.attention as att

    model = frozen(make_tiny_model("llama", VOCAB, "eager"))
    module = sys.modules[type(model.model.layers[0].self_attn).__module__]
    own = module.eager_attention_forward
    seen = []

    def with_softcap(
        module_, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kw
    ):
        seen.append(1)
        return own(module_, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kw)

    monkeypatch.setattr(module, "eager_attention_forward", with_softcap)
    monkeypatch.setattr(att, "past_constant_attention", lambda *a: pytest.fail("the fast path ran"))
    ids, mask = padded
    with torch.no_grad():
        pre = model(input_ids=ids[:, :7], attention_mask=mask[:, :7], position_ids=positions(mask)[:, :7])
    kv = [(layer.keys, layer.values) for layer in pre.past_key_values.layers]
    bias = torch.zeros(3, 12, requires_grad=True)
    seen.clear()
    with manipulate(model, bias, query_start=7, past_constant=True):
        model(
            input_ids=ids[:, 7:],
            attention_mask=mask,
            position_ids=positions(mask)[:, 7:],
            past_key_values=DynamicCache(ddp_cache_data=kv, config=model.config),
        )
    assert len(seen) == model.config.num_hidden_layers
