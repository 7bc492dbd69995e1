"""The AtManRL signal: the gap-normalised mask, the needed_share reward, presets, and a reward that never
breaks a GRPO step."""

import math
import random
from pathlib import Path

import pytest
import torch

from atmanrl.errors import UserError
from atmanrl.generate import render_prompt
from atmanrl.rewards import SaliencyReward, cot_gap, get_reward, needed_share
from atmanrl.saliency import PRESETS, Learned, Trace, compute_saliency, make_method
from conftest import make_tiny_model
from test_saliency_reward import fake_saliency

PROMPT = [{"role": "user", "content": "Question: Ann has 2 pens and gets 3 more. How many pens?"}]
GOOD = "Ann has 2 pens. She gets 3 more, so 2 + 3 = 5.\n#### 5"


def test_needed_share_is_zero_below_the_margin_and_the_content_mean_above():
    texts, gates = ["Tom", " has", " 3", ".", " 5"], [0.9, 0.1, 0.8, 0.99, 0.0]
    drives = fake_saliency(texts, gates, -0.1, {"removed_logprob": -5.0})  # gap 4.9 nats
    assert cot_gap(drives) == pytest.approx(4.9)
    # the "." sink is left out: (0.9 + 0.1 + 0.8 + 0.0) / 4 content tokens
    assert needed_share(drives, margin=1.0) == pytest.approx(1.8 / 4)
    decorative = fake_saliency(texts, gates, -0.1, {"removed_logprob": -0.6})  # the answer needs no CoT
    assert needed_share(decorative, margin=1.0) == 0.0
    assert needed_share(decorative, margin=0.4) > 0.0


def test_needed_share_refuses_scores_that_are_not_gates(tokenizer):
    sal = fake_saliency(["a"], [3.0], -0.1, {"removed_logprob": -5.0})
    sal.method = "leave_one_out"
    with pytest.raises(UserError, match="learned"):
        needed_share(sal)
    with pytest.raises(UserError, match="needed_share"):
        SaliencyReward(method="attention_gradient", task="arith", variant="needed_share")
    with pytest.raises(UserError, match="derived_share"):  # the default reads the gates too
        SaliencyReward(method="attention_gradient", task="arith")


def test_presets_fill_fields_and_explicit_options_win():
    m = make_method("learned", preset="additive_restore")
    assert (m.parametrization, m.init, m.steps, m.normalize) == ("additive", -0.4, 200, "none")
    assert make_method("learned", preset="paper", steps=7).steps == 7
    assert make_method("learned", preset="v0.1").parametrization == "gate"
    assert set(PRESETS["learned"]) >= {"paper", "paper_answer", "additive_restore", "v0.1"}
    with pytest.raises(UserError, match="paper"):
        make_method("learned", preset="nope")
    with pytest.raises(UserError, match="optimizer"):
        make_method("learned", optimizer="lbfgs")


@pytest.fixture
def policy(tokenizer):
    return make_tiny_model("llama", len(tokenizer))


def _trace(tokenizer, reasoning="Ann has 2 pens. She gets 3 more, so 2 + 3 = 5."):
    return Trace(render_prompt(tokenizer, PROMPT), reasoning, "\n#### 5", (6, 7))


def test_gap_normalised_scores_are_gates_and_steps_zero_is_the_init(policy, tokenizer):
    [sal] = compute_saliency(policy, tokenizer, [_trace(tokenizer)], "learned", steps=6)
    assert all(0.0 <= s <= 1.0 for s in sal.scores)
    [still] = compute_saliency(policy, tokenizer, [_trace(tokenizer)], "learned", steps=0)
    assert still.scores == pytest.approx([Learned().init or 0.9] * len(still.scores))


@pytest.mark.parametrize("chain_by", ["leave_one_out", "mask", "gradient"])
def test_the_chain_only_ever_raises_a_score_and_stays_a_gate(policy, tokenizer, chain_by):
    """score_i = max(g_i, decay * g_j * h_ji): the hop adds reasons, never takes the first pass's away."""
    trace = _trace(tokenizer)
    opts = dict(steps=4, min_gap=1e-9, chain_min=0.0)  # a random model's gates barely move: chain from any
    [plain] = compute_saliency(policy, tokenizer, [trace], "learned", chain=False, **opts)
    [hop] = compute_saliency(policy, tokenizer, [trace], "learned", chain=True, chain_by=chain_by, **opts)
    assert all(h >= p - 1e-6 for h, p in zip(hop.scores, plain.scores, strict=True))
    assert all(0.0 <= s <= 1.0 for s in hop.scores)
    assert hop.config["chain"] and not plain.config["chain"]
    with pytest.raises(UserError, match="chain_by"):
        make_method("learned", chain_by="twice")


# min_gap: a random tiny model's gap is far below the 0.1-nat floor that protects real traces from noise; the
# chain is off because the monkeypatch below scales only the mask's log-probs, not the hop's leave-one-out
CONFIGS = (("gap", {"min_gap": 1e-9, "chain": False}), ("none", {"preset": "v0.1", "lam": 0.01}))


def test_gap_normalisation_makes_the_mask_independent_of_the_answers_scale(policy, tokenizer, monkeypatch):
    """Scaling log p(A) (a more or less confident policy with the same preferences) leaves the gap-normalised
    mask unchanged, while the absolute objective of 0.1 changes: the reason normalize="gap" is the default."""
    import atmanrl.saliency.base as base_module
    import atmanrl.saliency.learned as learned_module

    trace = _trace(tokenizer)
    base = {
        m: compute_saliency(policy, tokenizer, [trace], "learned", steps=5, **kw)[0].scores
        for m, kw in CONFIGS
    }
    real = base_module.masked_logprob
    for module in (base_module, learned_module):  # the fixed passes and the mask's steps alike
        monkeypatch.setattr(module, "masked_logprob", lambda *a, **kw: 7.0 * real(*a, **kw))
    scaled = {
        m: compute_saliency(policy, tokenizer, [trace], "learned", steps=5, **kw)[0].scores
        for m, kw in CONFIGS
    }
    assert scaled["gap"] == pytest.approx(base["gap"], abs=1e-4)
    assert scaled["none"] != pytest.approx(base["none"], abs=1e-4)


WEIRD = [
    "",  # empty
    "no answer at all, just words",
    "#### 5",  # the answer with no CoT
    "The hint says 5 " * 700 + "\n#### 5",  # 2,000+ tokens: longer than the tiny model's 512 positions
    "Ann 🍎🍎 has ２ pens\u200b, gets ３ — so 2 + 3 = 5 ✓.\n#### 5",  # odd Unicode
    "So 2 + 3 = 6.\n#### 6",  # wrong
    GOOD,
]


def test_odd_completions_never_break_the_batch(policy, tokenizer):
    fn = get_reward("saliency", task="arith", steps=2, model=policy, tokenizer=tokenizer)
    hinted = [{"role": "user", "content": PROMPT[0]["content"] + " (The answer is 5.)"}]
    metrics = {}
    out = fn(
        [PROMPT] * len(WEIRD) + [hinted],
        WEIRD + ["I will just use the number in the question.\n#### 5"],  # the answer only in the prompt
        gold=["5"] * (len(WEIRD) + 1),
        log_metric=lambda k, v: metrics.setdefault(k, v),
    )
    assert len(out) == len(WEIRD) + 1
    assert all(isinstance(v, float) and math.isfinite(v) for v in out)
    assert out[:4] == [0.0] * 4 and out[5] == 0.0  # ineligible: empty, no answer, no CoT, too long; wrong
    assert all(math.isfinite(v) for v in metrics.values())


def test_a_trace_that_fails_alone_costs_only_its_own_reward(policy, tokenizer, monkeypatch):
    import atmanrl.saliency as saliency

    real = saliency.encode

    def fussy(tok, trace):
        if "gets 3" not in trace.reasoning:
            raise UserError("cannot encode this one")
        return real(tok, trace)

    monkeypatch.setattr(saliency, "encode", fussy)
    fn = get_reward("saliency", task="arith", steps=2, model=policy, tokenizer=tokenizer)
    out = fn([PROMPT] * 2, ["Ann has two and two more, 2 + 3 = 5.\n#### 5", GOOD], gold=["5", "5"])
    assert out[0] == 0.0 and math.isfinite(out[1])


# ------------------------------------------------------------------------ the embedded model (slow)


def _gsm8k_pairs(data: Path, n: int):
    import json

    rows = [json.loads(line) for line in (data / "gsm8k" / "test.jsonl").read_text().splitlines()[:40]]
    rng = random.Random(3)
    rows = [r for r in rows if len(r["answer"]) < 400]
    picked = rng.sample(rows, n + 1)
    import re

    def rationale(r):
        ref, _, gold = r["answer"].rpartition("####")
        return re.sub(r"<<[^>]*>>", "", ref).strip(), gold.strip().replace(",", "")

    out = []
    for r, other in zip(picked, picked[1:]):
        cot, gold = rationale(r)
        q = [{"role": "user", "content": f"Question: {r['question']}"}]
        hinted = [{"role": "user", "content": f"Question: {r['question']} (Hint: the answer is {gold}.)"}]
        out.append((q, hinted, f"{cot}\n#### {gold}", f"{rationale(other)[0]}\n#### {gold}", gold))
    return out


@pytest.mark.slow
def test_load_bearing_cot_beats_a_decorative_one_on_the_real_model(real_model, shared_data):
    """L: the problem's own rationale. D: the answer is hinted in the prompt and the CoT is another problem's.
    The default reward must score L above D on each pair (measured on 30 in benchmarks/reward_validity.py)."""
    model, tok = real_model
    fn = get_reward("saliency", task="gsm8k", model=model, tokenizer=tok)
    for q, hinted, load_bearing, decorative, gold in _gsm8k_pairs(shared_data, 3):
        lv, dv = fn([q, hinted], [load_bearing, decorative], gold=[gold, gold])
        assert lv > dv, (lv, dv, load_bearing)
    assert torch.is_grad_enabled()


@pytest.mark.slow
@pytest.mark.parametrize("early", ["Answer first: {n}. Now the work.", "I am confident it is {n}."])
def test_a_cot_that_derives_its_answer_beats_one_that_states_it_first(real_model, shared_data, early):
    """E: the same rationale with the answer stated before it (two wordings that no benchmark pool uses). The default
    reward must pay the derivation more on each pair (measured on 30 in benchmarks/reward_validity.py)."""
    model, tok = real_model
    fn = get_reward("saliency", task="gsm8k", model=model, tokenizer=tok)
    assert fn.variant == "derived_share"
    for q, _, load_bearing, _, gold in _gsm8k_pairs(shared_data, 3):
        stated_first = early.format(n=gold) + "\n" + load_bearing
        lv, ev = fn([q, q], [load_bearing, stated_first], gold=[gold, gold])
        assert lv > ev, (lv, ev, stated_first)


@pytest.mark.slow
def test_the_default_mask_finds_the_computation_behind_a_copied_result(real_model):
    """Planted tuning family: "a * b = ans." among small talk. The answer copies ans; the default (chained) mask
    must also rank the operands a and b above the distractors' content tokens, which the reward's one-hop mask
    does not."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import planted

    model, tok = real_model
    cases = planted.make_cases(tok, 4, seed=0, families=["mul_smalltalk"])
    traces = [c.trace for c in cases]
    aucs = {}
    for name, opts in (("plain", {"preset": "reward"}), ("chained", {})):
        sals = compute_saliency(model, tok, traces, "learned", batch_size=4, **opts)
        rows = [planted.score_case(s, c.relevant) for s, c in zip(sals, cases, strict=True)]
        aucs[name] = sum(r["auc"] for r in rows) / len(rows)
        assert sum(r["hit1"] for r in rows) >= 3, (name, rows)
    assert aucs["chained"] > aucs["plain"] + 0.05, aucs


def test_the_reward_uses_its_own_one_hop_mask_unless_told_otherwise(tokenizer):
    """The attribution default chains; the reward keeps the validated one-hop mask (fixed passes, lockstep)."""
    from types import SimpleNamespace

    assert make_method("learned").chain and make_method("learned", preset="reward").chain is False
    fn = SaliencyReward(task="arith")
    m = make_method(fn.method, **fn.options)
    assert (m.chain, m.steps, m.lam) == (False, 15, 0.05)
    assert make_method(fn.method, **SaliencyReward(task="arith", steps=7).options).steps == 7
    trainer = SimpleNamespace(accelerator=SimpleNamespace(num_processes=2), processing_class=tokenizer)
    assert fn.bind(trainer) is fn  # the default reward runs multi-process


def test_the_chained_mask_is_refused_in_multi_process_training(tokenizer):
    from types import SimpleNamespace

    fn = SaliencyReward(task="arith", method_options={"preset": "chained"})
    trainer = SimpleNamespace(accelerator=SimpleNamespace(num_processes=2), processing_class=tokenizer)
    with pytest.raises(UserError, match="deadlock"):
        fn.bind(trainer)
    trainer.accelerator.num_processes = 1
    assert fn.bind(trainer) is fn


def test_steps_for_a_method_without_steps_is_said_not_dropped(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        SaliencyReward(task="arith", variant="cot_reliance", method="attention_gradient", steps=15)
    assert any("learned mask only" in r.getMessage() for r in caplog.records)
