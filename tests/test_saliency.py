"""Tests for `atmanrl.saliency`: batching, caching, the registry, the result type, and one real planted case."""

from __future__ import annotations

import math

import pytest
import torch

from atmanrl.errors import UserError
from atmanrl.saliency import (
    METHODS,
    MaskedBatch,
    Saliency,
    Token,
    Trace,
    compute_saliency,
    content_mask,
    encode,
    get_method,
    masked_logprob,
    prefix_cache,
)
from conftest import make_tiny_model

PROMPT = (
    "<|im_start|>user\nTom has 5 apples and eats 2. How many are left?<|im_end|>\n<|im_start|>assistant\n"
)
TRACES = [
    Trace(PROMPT, "Tom starts with 5 apples. He eats 2, so 5 - 2 = 3 remain.", "\n#### 3", (6, 7)),
    Trace("Q: 2+2?\n", "2 + 2 = 4.", "\n#### 4", (6, 7)),
    Trace(PROMPT + " Think.", "The sky is blue. Apples are red. 5 minus 2 is 3, the answer.", "3", None),
]
FAST = {"learned": {"steps": 4}}


def test_encode_offsets_and_targets(tokenizer):
    e = encode(tokenizer, TRACES[0])
    assert "".join(t.text for t in e.tokens).replace(" ", "") == TRACES[0].reasoning.replace(" ", "")
    assert all(TRACES[0].reasoning[t.start : t.end] == t.text for t in e.tokens)
    assert tokenizer.decode([e.ids[i] for i in e.targets]) == "3"
    assert e.answer_start == e.cot_start + len(e.tokens) and e.targets[0] > e.answer_start
    with pytest.raises(UserError, match="covers no token"):
        encode(tokenizer, Trace("p", "r", "\n#### 3", (50, 60)))


def test_content_mask():
    assert content_mask([Token(" 42", 0, 3), Token(".", 3, 4), Token(" \n", 4, 6), Token("é", 6, 7)]) == [
        True,
        False,
        False,
        True,
    ]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_batched_equals_single(tiny_model, tokenizer, method):
    """Different lengths and spans padded together give the per-trace result, for every method."""
    cfg = FAST.get(method, {})
    batched = compute_saliency(tiny_model, tokenizer, TRACES, method=method, **cfg)
    for trace, b in zip(TRACES, batched, strict=True):
        [single] = compute_saliency(tiny_model, tokenizer, [trace], method=method, **cfg)
        assert len(b.scores) == len(b.tokens) == len(encode(tokenizer, trace).tokens)
        assert all(math.isfinite(s) for s in b.scores) and b.method == method
        assert b.answer_logprob == pytest.approx(single.answer_logprob, abs=1e-4)
        if method != "random":  # random draws over the padded batch shape
            assert b.scores == pytest.approx(single.scores, abs=1e-4, rel=1e-3)


@pytest.mark.parametrize("scope", ["answer", "all"])
def test_cached_prefix_equals_full_recompute(tiny_model, tokenizer, scope):
    encs = [encode(tokenizer, t) for t in TRACES]
    batch = MaskedBatch.build(encs, scope, tokenizer.pad_token_id, "cpu")
    prefix = prefix_cache(tiny_model, batch)
    torch.manual_seed(0)
    bias = batch.spread(-torch.rand(batch.cot_valid.shape) * 3)  # the methods bias CoT columns only
    with torch.no_grad():
        cached = masked_logprob(tiny_model, batch, prefix, bias, use_cache=True)
        full = masked_logprob(tiny_model, batch, prefix, bias, use_cache=False)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    kw = dict(method="learned", steps=5, scope=scope)
    a = compute_saliency(tiny_model, tokenizer, TRACES, **kw)
    b = compute_saliency(tiny_model, tokenizer, TRACES, use_cache=False, **kw)
    for x, y in zip(a, b, strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-4)


def test_attention_gradient_matches_finite_difference(tokenizer):
    """Checks the sign convention: score_i = d log p / d bias_i, so a small positive bias moves log p by eps*score."""
    model = make_tiny_model("llama", len(tokenizer), "eager")
    [sal] = compute_saliency(model, tokenizer, TRACES[:1], method="attention_gradient")
    batch = MaskedBatch.build([encode(tokenizer, TRACES[0])], "answer", tokenizer.pad_token_id, "cpu")
    prefix = prefix_cache(model, batch)
    i, eps = 3, 1e-2
    values = torch.zeros(batch.cot_valid.shape)
    values[0, i] = eps
    with torch.no_grad():
        lp = masked_logprob(model, batch, prefix, batch.spread(values))
    assert (lp.item() - sal.answer_logprob) / eps == pytest.approx(sal.scores[i], rel=0.05, abs=1e-5)


@pytest.mark.parametrize("method", ["learned", "attention_gradient", "grad_x_input", "leave_one_out"])
def test_weights_never_get_grad_and_flags_are_restored(tokenizer, method):
    model = make_tiny_model("qwen2", len(tokenizer), "sdpa")
    model.train()
    model.lm_head.weight.requires_grad_(False)  # a mix of flags, as under PEFT
    compute_saliency(model, tokenizer, TRACES[:2], method=method, **FAST.get(method, {}))
    assert all(p.grad is None for p in model.parameters())
    assert not model.lm_head.weight.requires_grad and model.model.embed_tokens.weight.requires_grad
    assert model.training and model.config._attn_implementation == "sdpa"


def test_learned_is_deterministic_and_random_depends_on_seed(tokenizer):
    model = make_tiny_model("gpt2", len(tokenizer), "eager")
    a = compute_saliency(model, tokenizer, TRACES, method="learned", steps=5)
    b = compute_saliency(model, tokenizer, TRACES, method="learned", steps=5)
    assert [s.scores for s in a] == [s.scores for s in b]
    r1, r2, r3 = (
        compute_saliency(model, tokenizer, TRACES[:1], method="random", seed=s)[0].scores for s in (0, 0, 1)
    )
    assert r1 == r2 != r3


def test_registry_errors_name_the_valid_choices(tiny_model, tokenizer):
    with pytest.raises(UserError, match="leave_one_out"):
        get_method("saliency_by_magic")
    with pytest.raises(UserError, match="lam"):
        compute_saliency(tiny_model, tokenizer, TRACES[:1], method="learned", lamda=0.1)
    with pytest.raises(UserError, match="scope"):
        compute_saliency(tiny_model, tokenizer, TRACES[:1], method="attention", scope="everything")
    tiny_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UserError, match="sdpa"):
        compute_saliency(tiny_model, tokenizer, TRACES[:1], method="attention_gradient")


def test_save_load_round_trip_and_html_escaping(tmp_path):
    reasoning = "<script>alert(1)</script> so 42"
    toks = [
        Token("<script>", 0, 8),
        Token("alert(1)", 8, 16),
        Token("</script>", 16, 25),
        Token(" 42", 28, 31),
    ]
    sal = Saliency(toks, [0.1, -0.2, 0.0, 0.9], -1.5, "learned", {"lam": 1.0}, 0.25, reasoning)
    sal.save(tmp_path / "s.json")
    back = Saliency.load(tmp_path / "s.json")
    assert back == sal and back.tokens[0].text == "<script>"
    # tokens are written as the `saliency` command writes them; files of atmanrl 0.3 (lists) still load
    d = sal.to_dict()
    assert d["tokens"][3] == {"text": " 42", "start": 28, "end": 31}
    assert Saliency.from_dict(d | {"tokens": [list(t) for t in toks]}) == sal
    page = sal.show(tmp_path / "s.html")
    assert "<script>" not in page and "&lt;script&gt;" in page and "42" in page
    assert (tmp_path / "s.html").read_text().startswith("<!doctype html>")
    assert sal._repr_html_() == page
    assert [t.text for t, _ in sal.top(2)] == [" 42", "<script>"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["learned", "attention_gradient", "leave_one_out"])
def test_planted_token_ranks_first_on_the_real_model(real_model, method):
    """SmolLM2-135M: the answer copies 54 from the one computation among distractors; the learned mask finds it."""
    model, tok = real_model
    distractors = ["Sam likes the color blue.", "Sam walked 26 blocks to get there.", "It was a sunny day."]
    relevant = "9 * 6 = 54."
    reasoning = " ".join(distractors[:2] + [relevant] + distractors[2:])
    prompt = tok.apply_chat_template(
        [
            {
                "role": "user",
                "content": "Sam has 9 trays with 6 cookies in each. How many cookies does Sam have?",
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    [sal] = compute_saliency(model, tok, [Trace(prompt, reasoning, "\n#### 54", (6, 8))], method=method)
    ((top, _),) = sal.top(1)
    lo = reasoning.index(relevant)
    assert lo <= top.start < lo + len(relevant), sal.top(5)


def test_batches_by_token_budget_keep_every_score(tokenizer):
    """Longest first, as many per forward as the budget allows: the same scores as one trace at a time."""
    from atmanrl.generate import render_prompt
    from atmanrl.saliency import Trace, compute_saliency, plan_batches
    from conftest import make_tiny_model

    assert plan_batches([5, 9, 7], batch_size=2) == [[0, 1], [2]]
    assert plan_batches([5, 9, 7], batch_size=None, token_budget=27) == [[1, 2, 0]]
    assert plan_batches([5, 9, 7], batch_size=None, token_budget=18) == [[1, 2], [0]]
    assert plan_batches([5, 9, 7], batch_size=1, token_budget=100) == [[1], [2], [0]]
    assert plan_batches([50], token_budget=10) == [[0]]  # too long for the budget: alone, never dropped

    model = make_tiny_model("llama", len(tokenizer))
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "Question: 2 + 3?"}])
    cots = ["2 + 3 = 5.", "We add. 2 plus 3 makes 5, so 2 + 3 = 5.", "Two and three: 5."]
    traces = [Trace(prompt, c, "\n#### 5", (6, 7)) for c in cots]
    for method, opts in (("learned", {"steps": 3}), ("leave_one_out", {})):
        one = compute_saliency(model, tokenizer, traces, method, batch_size=1, **opts)
        budget = compute_saliency(
            model, tokenizer, traces, method, batch_size=None, token_budget=10_000, **opts
        )
        for a, b in zip(one, budget, strict=True):
            assert a.reasoning == b.reasoning
            torch.testing.assert_close(torch.tensor(a.scores), torch.tensor(b.scores), atol=1e-4, rtol=1e-4)


def test_variants_logprob_is_the_same_in_any_chunking(tokenizer):
    """The public core's unit of leave-one-out, AtMan and the removal curves: chunking is only a memory knob."""
    from atmanrl.masked import MaskedBatch, encode, prefix_cache, variants_logprob
    from conftest import make_tiny_model

    model = make_tiny_model("llama", len(tokenizer))
    batch = MaskedBatch.build([encode(tokenizer, TRACES[0])], "answer", tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        prefix = prefix_cache(model, batch)
        n = batch.cot_valid.shape[1]
        values = torch.eye(n) * torch.finfo(model.dtype).min
        small = variants_logprob(model, batch, prefix, 0, values, chunk=2)
        large = variants_logprob(model, batch, prefix, 0, values, chunk=n)
    assert small.shape == (n,)
    torch.testing.assert_close(small, large)


def test_spread_scatter_and_logit_columns_match_the_plain_ops(tokenizer):
    """The capture-friendly ops (a scatter instead of one_hot, logit columns found on the host) compute exactly
    what the plain ops did, gradients included."""
    import torch.nn.functional as F

    from atmanrl.masked import MaskedBatch, encode, masked_logprob, prefix_cache

    model = make_tiny_model("llama", len(tokenizer))
    batch = MaskedBatch.build([encode(tokenizer, t) for t in TRACES], "answer", tokenizer.pad_token_id, "cpu")
    values = torch.randn(batch.cot_valid.shape, requires_grad=True)
    onehot = F.one_hot(batch.cot_pos, batch.input_ids.shape[1]).float()
    plain = torch.einsum("bn,bnt->bt", values * batch.cot_valid, onehot)
    spread = batch.spread(values)
    torch.testing.assert_close(spread, plain)
    (g1,) = torch.autograd.grad((spread * torch.arange(spread.shape[1])).sum(), values)
    (g2,) = torch.autograd.grad((plain * torch.arange(plain.shape[1])).sum(), values)
    torch.testing.assert_close(g1, g2)

    assert torch.equal(batch.logit_cols, torch.unique(batch.tgt_pos - 1))
    with torch.no_grad():
        prefix = prefix_cache(model, batch)
        bias = batch.spread(-3 * torch.rand(batch.cot_valid.shape))
        fast = masked_logprob(model, batch, prefix, bias)
        from dataclasses import replace

        slow = masked_logprob(model, replace(batch, logit_cols=None), prefix, bias)
    torch.testing.assert_close(fast, slow)


def test_verify_only_lowers_scores_by_the_leave_one_out_share(tokenizer):
    """verify keeps a gate where removing the token costs at least `verify` of the gap, and scales it down
    by the measured share elsewhere: never raises a score."""
    model = make_tiny_model("llama", len(tokenizer))
    plain = compute_saliency(model, tokenizer, TRACES, "learned", steps=4)
    checked = compute_saliency(model, tokenizer, TRACES, "learned", steps=4, verify=0.5)
    loo = compute_saliency(model, tokenizer, TRACES, "leave_one_out")
    for p, c, lo in zip(plain, checked, loo, strict=True):
        gap = max(p.answer_logprob - p.extras["removed_logprob"], 0.1)
        for sp, sc, drop in zip(p.scores, c.scores, lo.scores, strict=True):
            share = min(max(drop / gap, 0.0), 1.0)
            assert sc == pytest.approx(sp * min(1.0, share / 0.5), abs=1e-4)
    with pytest.raises(UserError, match="verify"):
        compute_saliency(model, tokenizer, TRACES[:1], "learned", verify=2.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_replay_gives_the_eager_scores(tokenizer):
    """Captured once, replayed for the rest of the steps and for later batches of the same shapes (other data
    copied into the graph's buffers): always the eager scores."""
    from atmanrl.masked import Encoded
    from atmanrl.saliency import frozen, make_method, score_encoded

    model = make_tiny_model("llama", len(tokenizer)).cuda()
    eager = compute_saliency(model, tokenizer, TRACES, "learned", steps=6, cuda_graph=False)
    graph = compute_saliency(model, tokenizer, TRACES, "learned", steps=6)
    for a, b in zip(eager, graph, strict=True):
        torch.testing.assert_close(torch.tensor(a.scores), torch.tensor(b.scores), atol=1e-5, rtol=1e-5)

    def rows(seed):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(10, len(tokenizer), (3, 40), generator=g).tolist()
        return [Encoded(r, 10, [Token("x", i, i + 1) for i in range(25)], 35, [36, 37]) for r in ids]

    kept, fresh = make_method("learned", steps=6, chain=False), None
    with frozen(model):
        for seed in (0, 1, 2):
            fresh = make_method("learned", steps=6, chain=False, cuda_graph=False)
            want = score_encoded(fresh, model, rows(seed), 0, torch.device("cuda"))[0]
            got = score_encoded(kept, model, rows(seed), 0, torch.device("cuda"))[0]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(kept._graphs) == 1  # one capture, reused by the later batches


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("scope", ["answer", "all"])
def test_shared_prompts_give_the_same_cache_and_scores(tokenizer, arch, scope, monkeypatch):
    """A GRPO group's rollouts share their prompt: computing it once gives the keys/values (and so the scores)
    of one forward over every row, with CoTs of different lengths and a row with another prompt."""
    from atmanrl.masked import MaskedBatch, encode, prefix_cache

    model = make_tiny_model(arch, len(tokenizer))
    cots = ["5 - 2 = 3.", "Tom eats 2 of 5, so 3 are left, 5 - 2 = 3.", "Three."]
    traces = [Trace(PROMPT, c, "\n#### 3", (6, 7)) for c in cots] + [TRACES[1]]
    batch = MaskedBatch.build([encode(tokenizer, t) for t in traces], scope, tokenizer.pad_token_id, "cpu")
    shared = prefix_cache(model, batch)
    plain = prefix_cache(model, batch, share_prompts=False)
    real = batch.attention_mask[:, : batch.P].bool()[:, None, :, None]
    for (ks, vs), (kp, vp) in zip(shared, plain, strict=True):
        torch.testing.assert_close(ks * real, kp * real, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(vs * real, vp * real, atol=1e-5, rtol=1e-4)
    a = compute_saliency(model, tokenizer, traces, "learned", steps=3, scope=scope)
    import functools

    import atmanrl.saliency.base as base

    monkeypatch.setattr(base, "prefix_cache", functools.partial(prefix_cache, share_prompts=False))
    b = compute_saliency(model, tokenizer, traces, "learned", steps=3, scope=scope)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(torch.tensor(x.scores), torch.tensor(y.scores), atol=1e-4, rtol=1e-4)


def test_answer_tokens_after_the_target_are_left_out_exactly(tokenizer):
    """Columns after the last target predict nothing scored: a longer answer tail changes no log-prob."""
    model = make_tiny_model("llama", len(tokenizer))
    short = Trace(PROMPT, TRACES[0].reasoning, "\n#### 3", (6, 7))
    long = Trace(PROMPT, TRACES[0].reasoning, "\n#### 3 apples are left over.", (6, 7))
    batches = [
        MaskedBatch.build([encode(tokenizer, t)], "answer", tokenizer.pad_token_id, "cpu")
        for t in (short, long)
    ]
    assert batches[0].input_ids.shape == batches[1].input_ids.shape
    with torch.no_grad():
        lps = [masked_logprob(model, b, prefix_cache(model, b)) for b in batches]
    torch.testing.assert_close(lps[0], lps[1])
    a, b = (compute_saliency(model, tokenizer, [t], "learned", steps=3)[0] for t in (short, long))
    assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_prefix_dtype_bfloat16_stays_close_and_auto_is_exact_where_it_would_not_pay(tokenizer):
    from atmanrl.masked import prefix_compute_dtype
    from atmanrl.saliency import make_method

    model = make_tiny_model("llama", len(tokenizer))
    assert prefix_compute_dtype(model, "model") is None
    assert prefix_compute_dtype(model, "bfloat16") is torch.bfloat16
    assert prefix_compute_dtype(model.to(torch.bfloat16), "auto") is None  # already bfloat16
    model.float()
    assert make_method("learned", preset="reward").prefix_dtype == "auto"
    assert make_method("learned").prefix_dtype == "model"  # attribution stays exact
    with pytest.raises(UserError, match="prefix_dtype"):
        make_method("learned", prefix_dtype="fp8")
    exact = compute_saliency(model, tokenizer, TRACES, "learned", steps=4, prefix_dtype="model")
    low = compute_saliency(model, tokenizer, TRACES, "learned", steps=4, prefix_dtype="bfloat16")
    for x, y in zip(exact, low, strict=True):
        assert x.answer_logprob == pytest.approx(y.answer_logprob, abs=0.05)
        assert x.scores == pytest.approx(y.scores, abs=0.05)
        assert x.scores != y.scores  # it did run in bfloat16
