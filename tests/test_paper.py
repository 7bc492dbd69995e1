"""The published AtManRL method (../shared/METHOD.md section 0): mask, reward, training recipes and metrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from atmanrl.composition import spacy_shares, token_category
from atmanrl.errors import UserError
from atmanrl.evaluate import pass_at_k
from atmanrl.masked import MaskedBatch, encode, masked_logprob, prefix_cache
from atmanrl.paper_mask import entry_bias, entry_mask, readouts, spread_entries
from atmanrl.rewards import SALIENCY_VARIANTS, applicable_variants, get_reward
from atmanrl.saliency import Saliency, Token, Trace, compute_saliency, make_method
from conftest import make_tiny_model

TRACES = [
    Trace("Question: 3 plus 4?\n", "3 + 4 = 7, so the answer is 7.", "\n#### 7", (6, 7)),
    Trace("Q: 2 times 6, then add 1?\n", "2 * 6 = 12 and 12 + 1 = 13", "\n#### 13", (6, 8)),
]


def test_the_paper_preset_pins_every_published_mask_setting():
    m = make_method("learned", preset="paper")
    published = dict(
        form="matrix",
        parametrization="additive",
        init=-0.4,
        clamp_max=0.0,
        bias_scale=10.0,
        normalize="mean",
        lam=0.0,
        optimizer="adamw",
        lr=1e-3,
        betas=(0.6, 0.9999),
        weight_decay=0.05,
        steps=200,
        chain=False,
        rows="later",
        layers="shared",
        scope="all",
    )
    assert {k: getattr(m, k) for k in published} == published
    a = make_method("learned", preset="paper_answer")
    assert {k: getattr(a, k) for k in published} == {**published, "rows": "answer", "scope": "answer"}
    old = make_method("learned", preset="additive_restore")  # atmanrl 0.1-0.4's "paper" preset, renamed
    assert (old.form, old.parametrization, old.steps, old.lam) == ("column", "additive", 200, 0.05)


def test_matrix_options_are_checked_when_the_method_is_built():
    with pytest.raises(UserError, match="scope"):
        make_method("learned", preset="paper", scope="answer")
    with pytest.raises(UserError, match="lam"):
        make_method("learned", preset="paper", lam=0.1)
    with pytest.raises(UserError, match="rows"):
        make_method("learned", preset="paper", rows="every")
    with pytest.raises(UserError, match="betas"):
        make_method("learned", preset="paper", betas=[0.6])


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return make_tiny_model("llama", len(tokenizer), attn_implementation="sdpa")


def _batch(tokenizer, scope):
    encs = [encode(tokenizer, t) for t in TRACES]
    return MaskedBatch.build(encs, scope, tokenizer.pad_token_id, "cpu")


@pytest.mark.parametrize("scope", ["all", "answer"])
def test_a_zero_entry_mask_leaves_the_log_probs_unchanged(tiny, tokenizer, scope):
    batch = _batch(tokenizer, scope)
    prefix = prefix_cache(tiny, batch)
    base = masked_logprob(tiny, batch, prefix)
    T = batch.input_ids.shape[1]
    zero = torch.zeros(2, T, T)
    torch.testing.assert_close(masked_logprob(tiny, batch, prefix, zero), base, atol=1e-5, rtol=0)
    layers = tiny.config.num_hidden_layers
    torch.testing.assert_close(
        masked_logprob(tiny, batch, prefix, torch.zeros(layers, 2, T, T)), base, atol=1e-5, rtol=0
    )
    # a positive H is clamped to 0 before scaling: the unmodified model again
    m = make_method("learned", preset="paper" if scope == "all" else "paper_answer")
    entries = entry_mask(batch, m.rows)
    H = torch.full(entries.shape, 0.3)
    bias = spread_entries(batch, entry_bias(m, H, entries))
    assert bias.abs().max() == 0
    torch.testing.assert_close(masked_logprob(tiny, batch, prefix, bias), base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scope, rows", [("all", "later"), ("all", "cot"), ("answer", "answer")])
def test_an_entry_bias_over_the_cached_prefix_equals_the_full_forward(tiny, tokenizer, scope, rows):
    """Rows of a forward over a cached prefix are absolute positions: the same per-entry bias gives the same
    log-probs with and without the cache (the traces' prompts differ in length: left padding is covered)."""
    batch = _batch(tokenizer, scope)
    entries = entry_mask(batch, rows)
    g = torch.Generator().manual_seed(0)
    bias = spread_entries(batch, -3 * torch.rand(entries.shape, generator=g) * entries)
    prefix = prefix_cache(tiny, batch)
    cached = masked_logprob(tiny, batch, prefix, bias)
    full = masked_logprob(tiny, batch, None, bias, use_cache=False)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=0)
    assert not torch.allclose(cached, masked_logprob(tiny, batch, prefix), atol=1e-3)  # the bias does act


def test_a_per_layer_bias_reaches_only_its_layer(tiny, tokenizer):
    batch = _batch(tokenizer, "all")
    prefix = prefix_cache(tiny, batch)
    one = spread_entries(batch, -4.0 * entry_mask(batch, "later"))
    zero = torch.zeros_like(one)
    lp = [
        masked_logprob(tiny, batch, prefix, torch.stack([one if i == layer else zero for i in range(2)]))
        for layer in range(2)
    ]
    shared = masked_logprob(tiny, batch, prefix, one)
    both = masked_logprob(tiny, batch, prefix, torch.stack([one, one]))
    torch.testing.assert_close(both, shared, atol=1e-5, rtol=0)  # the same matrix in every layer = shared H
    assert not torch.allclose(lp[0], lp[1], atol=1e-4) and not torch.allclose(lp[0], shared, atol=1e-4)


def test_clamp_and_scale_act_as_published(tiny, tokenizer):
    m = make_method("learned", preset="paper_answer")
    batch = _batch(tokenizer, "answer")
    entries = entry_mask(batch, "answer")
    H = torch.linspace(-1.0, 1.0, entries.numel()).view(entries.shape)
    torch.testing.assert_close(entry_bias(m, H, entries), 10 * H.clamp(max=0) * entries)
    # H at its start on every answer-row entry is a bias of -4 on every CoT key column of those rows: the
    # column mask of the answer scope with -4 gives the same log-probs
    prefix = prefix_cache(tiny, batch)
    start = spread_entries(batch, entry_bias(m, torch.full(entries.shape, -0.4), entries))
    column = batch.spread(torch.full(batch.cot_valid.shape, -4.0))
    torch.testing.assert_close(
        masked_logprob(tiny, batch, prefix, start),
        masked_logprob(tiny, batch, prefix, column),
        atol=1e-5,
        rtol=0,
    )
    # an entry bias is per row: the same -4 on the CoT rows only changes other hidden states than on answer rows
    full = _batch(tokenizer, "all")
    fprefix = prefix_cache(tiny, full)
    lp = {
        rows: masked_logprob(
            tiny,
            full,
            fprefix,
            spread_entries(full, -4.0 * entry_mask(full, rows)),
        )
        for rows in ("later", "cot", "answer")
    }
    assert not torch.allclose(lp["cot"], lp["answer"]) and not torch.allclose(lp["later"], lp["cot"])


def test_entries_are_causal_and_in_the_rows_of_each_reading(tokenizer):
    batch = _batch(tokenizer, "all")
    t = torch.arange(batch.input_ids.shape[1])[None, :, None]
    for rows in ("later", "cot"):
        e = entry_mask(batch, rows)
        assert (t.expand_as(e)[e] >= batch.cot_pos[:, None, :].expand_as(e)[e]).all()  # w >= v
        assert not (e & ~batch.cot_valid[:, None, :]).any()  # padding columns carry no entry
    later, cot = entry_mask(batch, "later"), entry_mask(batch, "cot")
    assert (cot <= later).all() and cot.sum() < later.sum()
    # the rows "later" has beyond "cot" are the answer's: from each trace's answer column to its last run row
    extra = (later & ~cot).any(-1)  # (B, T) rows
    for b in range(2):
        rows = extra[b].nonzero()[:, 0]
        last = int(batch.attention_mask[b].nonzero()[-1])
        assert rows.tolist() == list(range(int(batch.answer_pos[b]), last + 1))
    # CoT token 0 of trace 0 is seen by every later row: its column has one entry per row from it to the end
    b0 = batch.cot_pos[0, 0]
    assert later[0, :, 0].sum() == int(batch.attention_mask[0, b0:].sum())


def test_readouts_and_both_reward_readings_on_a_hand_built_H():
    m = make_method("learned", preset="paper_answer")
    # one trace, two answer rows (2, 3) and two CoT columns (at 0, 1): all four entries causal
    entries = torch.zeros(1, 4, 2, dtype=torch.bool)
    entries[0, 2:, :] = True
    H = torch.zeros(1, 4, 2)
    H[0, 2:, 0] = -0.4  # column 0 left at its start: Hn = 1
    H[0, 2:, 1] = torch.tensor([0.0, 0.3])  # column 1 re-enabled (0.3 is clamped to 0): Hn = 0
    scores, mean = readouts(m, H, entries)
    torch.testing.assert_close(scores, torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(mean, torch.tensor([0.5]))
    H[0, 2, 1] = -0.6  # pushed below the start: Hn = 1.5 on that entry
    scores, mean = readouts(m, H, entries)
    torch.testing.assert_close(mean, torch.tensor([0.875]))  # (1 + 1 + 1.5 + 0) / 4
    torch.testing.assert_close(scores, torch.tensor([[0.0, 0.25]]))  # column 1: 1 - (1.5 + 0) / 2
    sal = Saliency(
        [Token("a", 0, 1), Token("b", 1, 2)],
        scores[0].tolist(),
        -1.0,
        "learned",
        {"form": "matrix"},
        extras={"removed_logprob": -3.0, "entry_mean": float(mean)},
    )
    assert SALIENCY_VARIANTS["paper_printed"](sal) == pytest.approx(0.875)
    assert SALIENCY_VARIANTS["paper_reenabled"](sal) == pytest.approx(0.125)
    assert SALIENCY_VARIANTS["paper"](sal) == SALIENCY_VARIANTS["paper_reenabled"](sal)
    assert "needed_share" not in applicable_variants(sal) and "paper" in applicable_variants(sal)
    column = Saliency(sal.tokens, [0.5, 0.5], -1.0, "learned", extras={"removed_logprob": -3.0})
    with pytest.raises(UserError, match="paper"):
        SALIENCY_VARIANTS["paper"](column)


def test_per_layer_H_has_one_matrix_per_layer():
    m = make_method("learned", preset="paper_answer", layers="per_layer")
    entries = torch.zeros(1, 3, 1, dtype=torch.bool)
    entries[0, 1:, 0] = True
    H = torch.full((2, 1, 3, 1), -0.4)
    H[1, 0, 1:, 0] = 0.0  # re-enabled in layer 1 only
    scores, mean = readouts(m, H, entries)
    torch.testing.assert_close(scores, torch.tensor([[0.5]]))
    torch.testing.assert_close(mean, torch.tensor([0.5]))


def test_the_published_mask_runs_a_fixed_number_of_passes_and_moves_from_its_start(
    tiny, tokenizer, monkeypatch
):
    import atmanrl.paper_mask as pm

    calls = []
    real = pm.masked_logprob
    monkeypatch.setattr(pm, "masked_logprob", lambda *a, **k: calls.append(1) or real(*a, **k))
    for preset in ("paper", "paper_answer"):
        calls.clear()
        sals = compute_saliency(tiny, tokenizer, TRACES, "learned", preset=preset, steps=4)
        assert len(calls) == 4  # one forward per step, whatever the data
        # 4 AdamW steps of lr 1e-3 move each entry by at most ~4e-3 from -0.4: Hn within 1 +- 0.01, and moved
        assert all(0 < abs(s.extras["entry_mean"] - 1) < 0.011 for s in sals)
        assert all(max(map(abs, s.scores)) < 0.011 for s in sals)
        assert all(len(s.scores) == len(s.tokens) for s in sals)
    still = compute_saliency(tiny, tokenizer, TRACES[:1], "learned", preset="paper", steps=0)[0]
    assert still.extras["entry_mean"] == pytest.approx(1.0) and max(map(abs, still.scores)) == 0


def test_the_paper_reward_uses_the_published_mask_unless_told_otherwise(tiny, tokenizer):
    fn = get_reward("saliency", variant="paper", model=tiny, tokenizer=tokenizer, task="arith")
    assert fn.built.form == "matrix" and fn.built.rows == "later" and fn.built.steps == 200
    cheap = get_reward(
        "saliency",
        variant="paper_printed",
        model=tiny,
        tokenizer=tokenizer,
        task="arith",
        method_options={"preset": "paper_answer", "steps": 2},
    )
    prompt = [{"role": "user", "content": "What is 3 + 4?"}]
    out = cheap(
        [prompt, prompt], ["3 + 4 = 7, so I have 7 now.\n#### 7", "3 + 4 = 8.\n#### 8"], gold=["7", "7"]
    )
    assert 0.9 < out[0] < 1.1 and out[1] == 0.0  # a wrong rollout gets no saliency reward
    with pytest.raises(UserError, match="paper"):
        get_reward(
            "saliency",
            variant="paper",
            tokenizer=tokenizer,
            task="arith",
            method_options={"preset": "reward"},
        )
    with pytest.raises(UserError, match="needed_share"):
        get_reward("saliency", variant="needed_share", task="arith", method_options={"preset": "paper"})


def test_paper_outcome_reward_is_zero_or_minus_one():
    fn = get_reward("paper_outcome", task="arith")
    out = fn(["p"] * 4, ["#### 7", "#### 8", "no answer", "#### 7"], gold=["7", "7", "7", None])
    assert out == [0.0, -1.0, -1.0, None]


@pytest.mark.parametrize(
    "recipe",
    [
        "smollm2-135m/arith_paper.yaml",
        "llama-3.2-3b-instruct/gsm8k_paper.yaml",
        "llama-3.2-3b-instruct/mmlu_paper.yaml",
    ],
)
def test_paper_recipes_pin_the_published_training_setting(recipe):
    from atmanrl.train import build_rewards, parse_recipe

    script, args, _ = parse_recipe(recipe, ["--dry_run", "true"])
    assert script.rewards == ["paper_outcome", "saliency"] and args.reward_weights == [1.0, 1.0]
    assert script.saliency_variant == "paper"
    assert str(args.scale_rewards).lower() in ("none", "false")  # advantage = total - group mean
    assert (args.epsilon, args.beta, args.num_generations, args.num_iterations) == (0.2, 0.0, 8, 2)
    assert str(args.lr_scheduler_type).lower().endswith("constant")
    rewards = build_rewards(script, args.reward_weights)
    mask = rewards[1].built
    if recipe.startswith("llama"):
        assert (args.learning_rate, args.max_completion_length, args.num_train_epochs) == (1e-6, 1024, 8)
        assert mask.rows == "later" and mask.steps == 200
    else:  # the CPU recipe states its departures: lr, completion length, the answer-rows mask
        assert mask.rows == "answer" and mask.steps == 200 and mask.lr == 1e-3


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - (6 * 5 * 4 * 3) / (8 * 7 * 6 * 5))


def _tok(text, pos="X", stop=False):
    return SimpleNamespace(
        text=text, pos_=pos, is_stop=stop, like_num=False, is_currency=False, is_punct=False, is_space=False
    )


def test_spacy_tagging_on_hand_labelled_sentences():
    # lexical source (what CI has): every token of two sentences, labelled by hand
    labelled = [
        (
            "She sold 48 / 2 = 24 clips , so $ 72 in all .",
            "stop word number symbol number symbol number word word stop symbol number stop stop word",
        ),
        (
            "Then ten more apples cost 3 * 4 = 12 dollars .",
            "stop number stop word word number symbol number symbol number word word",
        ),
    ]
    import spacy

    nlp = spacy.blank("en")
    for text, labels in labelled:
        doc = nlp(text)
        got = [token_category(t, tagger=False) for t in doc]
        assert " ".join(got) == labels, (text, got)
    shares = spacy_shares([labelled[1][0]], source="lexical")
    assert shares["source"] == "lexical" and shares["tokens"] == 12
    assert shares["number_share"] == pytest.approx(4 / 12) and shares["symbol_share"] == pytest.approx(2 / 12)
    assert shares["stop_word_share"] == pytest.approx(2 / 12)
    # tagger source: categories from the part-of-speech tags (NUM, SYM), numbers before stop words
    assert token_category(_tok("ten", "NUM", stop=True), tagger=True) == "number"
    assert token_category(_tok("=", "SYM"), tagger=True) == "symbol"
    assert token_category(_tok("+", "CCONJ"), tagger=True) == "word"
    assert token_category(_tok("the", "DET", stop=True), tagger=True) == "stop"
    with pytest.raises(UserError, match="source"):
        spacy_shares(["x"], source="nope")


def test_without_spacy_auto_goes_on_without_shares_and_a_named_source_fails(monkeypatch, caplog):
    """A bare GPU machine has no spaCy: `eval` and `ab` still run, and say what is missing."""
    import sys

    from atmanrl.composition import load_nlp

    load_nlp.cache_clear()
    monkeypatch.setitem(sys.modules, "spacy", None)  # `import spacy` raises ImportError
    try:
        shares = spacy_shares(["3 + 4 = 7"], source="auto")
        assert shares["source"] == "none" and shares["number_share"] is None
        assert "spaCy is not installed" in caplog.text
        with pytest.raises(UserError, match="pip install spacy"):
            spacy_shares(["x"], source="lexical")
    finally:
        load_nlp.cache_clear()
