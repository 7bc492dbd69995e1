"""The derived_share reward: where a CoT first states its answer, and whether the CoT before it derives it."""

import pytest
import torch

from atmanrl.data import get_task
from atmanrl.errors import UserError
from atmanrl.generate import render_prompt
from atmanrl.rewards import (
    SaliencyReward,
    applicable_variants,
    derivation_factor,
    derived_share,
    get_reward,
    needed_share,
)
from atmanrl.saliency import Trace, mention_support
from test_saliency_reward import fake_saliency


@pytest.mark.parametrize(
    "text, value, found",
    [
        ("6 * 3 = 18. So 18 eggs.", "18", ["18", "18"]),
        ("She pays $1,000 in all, 1000.0 exactly.", "1000", ["$1,000", "1000.0"]),
        ("x18 and 18th and 3.18 are not 18", "18", ["18"]),
        ("nothing here", "7", []),
    ],
)
def test_numeric_mentions_match_the_value_however_written(text, value, found):
    spans = get_task("gsm8k").mentions(text, value)
    assert [text[a:b] for a, b in spans] == found


def test_letter_mentions_name_an_option_not_the_article():
    mmlu = get_task("mmlu")
    text = "A gas is taken in. Option (B) fits, so the answer is B. A) is wrong."
    assert [text[a:b] for a, b in mmlu.mentions(text, "B")] == ["B", "B"]
    assert [text[a:b] for a, b in mmlu.mentions(text, "A")] == ["A"]  # "A)" only, not "A gas"


def _sal(extras, gates=(0.9, 0.8)):
    return fake_saliency(["Tom", " 5"], list(gates), -0.1, {"removed_logprob": -5.0, **extras})


def test_the_derivation_factor_discounts_the_cot_written_after_an_underived_statement():
    assert derivation_factor(_sal({"mentions": 0})) == 1.0  # never stated: no evidence either way
    once = {
        "mentions": 1,
        "first_mention_support": -2.0,
        "last_mention_support": -2.0,
        "mentions_between": 0.0,
    }
    assert derivation_factor(_sal(once)) == 1.0  # stated once: nothing was written after it
    # stated at the top with no support, derived at the end: 80% of the CoT justifies it afterwards
    early = {
        "mentions": 2,
        "first_mention_support": 0.0,
        "last_mention_support": 5.0,
        "mentions_between": 0.8,
    }
    assert derivation_factor(_sal(early)) == pytest.approx(0.2)
    # half as supported as the last statement, 40% of the CoT in between
    half = {**early, "first_mention_support": 2.5, "mentions_between": 0.4}
    assert derivation_factor(_sal(half), derived_support=10.0) == pytest.approx(1 - 0.5 * 0.4)
    # derived (3 nats of support by itself) and then restated with more: counts as derived
    restated = {**early, "first_mention_support": 3.0, "last_mention_support": 7.0}
    assert derivation_factor(_sal(restated), derived_support=3.0) == 1.0
    against = {**early, "first_mention_support": -2.0, "mentions_between": 1.0}
    assert derivation_factor(_sal(against)) == 0.0
    sal = _sal(early)
    assert derived_share(sal) == pytest.approx(needed_share(sal) * 0.2)


def test_derived_share_needs_the_mention_read_outs():
    sal = _sal({})
    with pytest.raises(UserError, match="mentions"):
        derived_share(sal)
    assert "derived_share" not in applicable_variants(sal)
    assert "derived_share" in applicable_variants(_sal({"mentions": 0}))


def _traces(tokenizer):
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "Question: Ann has 2 pens and 3 more."}])
    cots = [
        "Ann has 2 pens. 2 + 3 = 5, so 5 pens.\n",  # two mentions
        "The answer is 5. Ann has 2 + 3 pens.\n",  # stated first
        "Ann has two pens and three more.\n",  # no mention
    ]
    traces = [Trace(prompt, c, "#### 5", (5, 6)) for c in cots]
    task = get_task("gsm8k")
    return traces, [task.mentions(c, "5") for c in cots]


def _forwards(model, *calls):
    """(number of model forwards, result) of each call."""
    out = []
    for fn in calls:
        n = []
        hook = model.register_forward_pre_hook(lambda *a, n=n, **k: n.append(1))
        try:
            result = fn()
        finally:
            hook.remove()
        out.append((len(n), result))
    return out


def test_mention_support_runs_the_same_passes_whatever_the_mentions(tiny_model, tokenizer):
    traces, spans = _traces(tokenizer)
    assert [len(s) for s in spans] == [2, 1, 0]
    (n_mixed, out), (n_none, _) = _forwards(
        tiny_model,
        lambda: mention_support(tiny_model, tokenizer, traces, spans, batch_size=2, token_budget=None),
        lambda: mention_support(tiny_model, tokenizer, traces, [[], [], []], batch_size=2, token_budget=None),
    )
    assert n_none == n_mixed  # the same passes with no mention at all: ranks stay in lockstep
    assert out[2] is None and out[0].mentions == 2 and out[1].mentions == 1
    assert out[1].first == out[1].last  # one mention: first and last are the same row
    assert all(torch.isfinite(torch.tensor([o.first, o.last])).all() for o in out[:2])


def test_one_process_runs_only_the_traces_that_state_their_answer_twice(tiny_model, tokenizer):
    traces, spans = _traces(tokenizer)
    (n_fixed, fixed), (n_lean, lean) = _forwards(
        tiny_model,
        lambda: mention_support(tiny_model, tokenizer, traces, spans, batch_size=1, token_budget=None),
        lambda: mention_support(
            tiny_model, tokenizer, traces, spans, batch_size=1, token_budget=None, fixed=False, least=2
        ),
    )
    assert n_lean == n_fixed // 3  # one of the three traces states its answer twice: one batch of three
    assert lean[0] == fixed[0]  # the same numbers where it ran
    assert lean[1].mentions == 1 and lean[2] is None


def test_one_row_per_trace_gives_each_mention_its_own_removal(tiny_model, tokenizer):
    """The one-row pass (each mention's rows lose the CoT before that mention) against one row per mention with the
    whole CoT before it removed, the plain answer-gap computation."""
    from atmanrl.masked import Encoded, MaskedBatch, encode, prefix_cache
    from atmanrl.saliency import base_and_removed_logprob

    traces, spans = _traces(tokenizer)
    got = mention_support(tiny_model, tokenizer, traces[:2], spans[:2], prefix_dtype="model")
    for t, sp, g in zip(traces[:2], spans[:2], got, strict=True):
        e = encode(tokenizer, t)
        want = []
        for lo, hi in (sp[0], sp[-1]):
            js = [j for j, tok in enumerate(e.tokens) if tok.start < hi and tok.end > lo]
            targets = [e.cot_start + j for j in js]
            row = Encoded(e.ids[: targets[-1] + 1], e.cot_start, e.tokens[: js[0]], targets[0], targets)
            batch = MaskedBatch.build([row], "answer", tokenizer.pad_token_id or 0, "cpu")
            with torch.no_grad():
                base, removed = base_and_removed_logprob(tiny_model, batch, prefix_cache(tiny_model, batch))
            want.append(float(base - removed))
        assert g.first == pytest.approx(want[0], abs=1e-4) and g.last == pytest.approx(want[1], abs=1e-4)


def test_the_reward_with_derived_share_scores_every_rollout(tiny_model, tokenizer):
    prompt = [{"role": "user", "content": "Question: Ann has 2 pens and gets 3 more. How many pens?"}]
    fn = get_reward("saliency", task="gsm8k", model=tiny_model, tokenizer=tokenizer, variant="derived_share")
    assert isinstance(fn, SaliencyReward)
    out = fn(
        [prompt] * 3,
        [
            "Ann has 2 pens. 2 + 3 = 5, so 5 pens.\n#### 5",
            "The answer is 5. Ann has 2 + 3 pens.\n#### 5",
            "no answer here",
        ],
        gold=["5"] * 3,
    )
    assert len(out) == 3 and out[2] == 0.0 and all(0.0 <= v <= 1.0 for v in out)
