"""The saliency reward: variants, gating, and the policy left exactly as it was."""

import math

import pytest
import torch

from atmanrl.errors import UserError
from atmanrl.rewards import SALIENCY_VARIANTS, concentration, get_reward, salient_fraction
from atmanrl.saliency import Saliency, Token
from conftest import make_tiny_model


def fake_saliency(texts, scores, answer_logprob=-1.0, extras=None):
    toks, pos = [], 0
    for t in texts:
        toks.append(Token(t, pos, pos + len(t)))
        pos += len(t)
    sal = Saliency(toks, scores, answer_logprob, "learned", {}, 0.0, "".join(texts))
    if extras is not None:
        sal.extras = extras
    return sal


def test_salient_fraction_counts_content_tokens_only():
    sal = fake_saliency(["Tom", " has", " 3", ".", " So", " 5"], [0.9, 0.1, 0.8, 0.99, 0.2, 0.7])
    # the "." sink is ignored: 3 of the 5 content tokens lie above 0.5
    assert salient_fraction(sal, tau=0.5) == pytest.approx(3 / 5)


def test_concentration_extremes():
    assert concentration(fake_saliency(["a", "b", "c", "d"], [1.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert concentration(fake_saliency(["a", "b", "c", "d"], [0.5] * 4)) == pytest.approx(0.0, abs=1e-9)


def test_cot_reliance_clips():
    fn = SALIENCY_VARIANTS["cot_reliance"]
    assert fn(fake_saliency(["a"], [1.0], -1.0, {"removed_logprob": -6.0}), scale=5.0) == pytest.approx(1.0)
    assert fn(fake_saliency(["a"], [1.0], -1.0, {"removed_logprob": -3.5}), scale=5.0) == pytest.approx(0.5)
    assert fn(fake_saliency(["a"], [1.0], -1.0, {"removed_logprob": 0.0}), scale=5.0) == 0.0


def test_unknown_variant_and_method_list_valid_names():
    with pytest.raises(UserError, match="salient_fraction"):
        get_reward("saliency", variant="nope")
    with pytest.raises(UserError, match="learned"):
        get_reward("saliency", method="nope")


@pytest.fixture
def policy(tokenizer):
    model = make_tiny_model("llama", len(tokenizer))
    model.train()
    model.gradient_checkpointing_enable()
    return model


PROMPT = [{"role": "user", "content": "Question: Ann has 2 pens and gets 3 more. How many pens?"}]
GOOD = "Ann has 2 pens. She gets 3 more, so 2 + 3 = 5.\n#### 5"


def test_reward_gates_and_restores_the_policy(policy, tokenizer):
    flags = [p.requires_grad for p in policy.parameters()]
    metrics = {}
    fn = get_reward("saliency", task="arith", steps=3, model=policy, tokenizer=tokenizer)
    out = fn(
        [PROMPT] * 4,
        [GOOD, "So 2 + 3 = 6.\n#### 6", "no answer", "5\n#### 5"],
        gold=["5"] * 4,
        log_metric=lambda k, v: metrics.setdefault(k, v),
    )
    assert out[1] == 0.0 and out[2] == 0.0  # incorrect, unparseable
    assert out[3] == 0.0  # CoT shorter than min_reasoning_tokens
    assert out[0] == fn([PROMPT], [GOOD], gold=["5"])[0]  # the eligible one: its own value, batch or not
    assert metrics["saliency/eligible_frac"] == pytest.approx(0.25)
    assert all(math.isfinite(v) for v in metrics.values())
    # the policy is left exactly as it was
    assert policy.training and policy.is_gradient_checkpointing
    assert [p.requires_grad for p in policy.parameters()] == flags
    assert all(p.grad is None for p in policy.parameters())


def test_reward_is_deterministic(policy, tokenizer):
    fn = get_reward(
        "saliency", task="arith", steps=3, model=policy, tokenizer=tokenizer, variant="concentration"
    )
    a = fn([PROMPT], [GOOD], gold=["5"])
    b = fn([PROMPT], [GOOD], gold=["5"])
    assert a == b and 0.0 < a[0] < 1.0  # a real value (not a gated 0), the same twice


def test_non_finite_saliency_becomes_zero(policy, tokenizer, monkeypatch, caplog):
    import atmanrl.rewards as rewards

    monkeypatch.setitem(rewards.SALIENCY_VARIANTS, "derived_share", lambda sal, **kw: float("nan"))
    fn = get_reward("saliency", task="arith", steps=1, model=policy, tokenizer=tokenizer)
    assert fn([PROMPT], [GOOD], gold=["5"]) == [0.0]
    assert "non-finite" in caplog.text


def test_reward_without_policy_is_a_user_error(tokenizer):
    fn = get_reward("saliency", task="arith")
    with pytest.raises(UserError, match="bind"):
        fn([PROMPT], [GOOD], gold=["5"])


def test_grad_mode_is_restored(policy, tokenizer):
    fn = get_reward("saliency", task="arith", steps=2, model=policy, tokenizer=tokenizer)
    with torch.no_grad():
        fn([PROMPT], [GOOD], gold=["5"])
        assert not torch.is_grad_enabled()


def test_saliency_reports_the_removed_logprob_for_cot_reliance(policy, tokenizer):
    from atmanrl.generate import render_prompt
    from atmanrl.saliency import Trace, compute_saliency

    trace = Trace(
        render_prompt(tokenizer, PROMPT), "Ann has 2 pens. She gets 3 more, so 2 + 3 = 5.", "\n#### 5", (6, 7)
    )
    [sal] = compute_saliency(policy, tokenizer, [trace], "attention_gradient")
    sup = sal.extras["removed_logprob"]
    assert math.isfinite(sup) and sup != pytest.approx(sal.answer_logprob, abs=1e-6)
    gap = sal.answer_logprob - sup
    for scale in (1e-3, 5.0, 1e3):  # the clip, and the linear part in between
        want = min(max(gap / scale, 0.0), 1.0)
        assert SALIENCY_VARIANTS["cot_reliance"](sal, scale=scale) == pytest.approx(want)


def test_nan_in_mask_optimisation_never_reaches_the_reward(policy, tokenizer, monkeypatch, caplog):
    import atmanrl.saliency.base as base
    import atmanrl.saliency.learned as learned

    real = base.masked_logprob
    calls = {"n": 0}

    def poisoned(model, batch, prefix, bias=None, **kw):
        lp = real(model, batch, prefix, bias, **kw)
        if bias is not None and bias.requires_grad:
            calls["n"] += 1
            return lp * torch.tensor(float("nan"))  # the gradient becomes NaN too
        return lp

    for module in (base, learned):
        monkeypatch.setattr(module, "masked_logprob", poisoned)
    fn = get_reward("saliency", task="arith", steps=3, model=policy, tokenizer=tokenizer)
    metrics = {}
    out = fn([PROMPT], [GOOD], gold=["5"], log_metric=lambda k, v: metrics.setdefault(k, v))
    assert calls["n"] == 3
    assert all(math.isfinite(v) for v in out) and all(math.isfinite(v) for v in metrics.values())
