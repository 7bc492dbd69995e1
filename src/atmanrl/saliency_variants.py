"""Saliency-reward variants: each maps one `Saliency` to a scalar, and declares what it reads.

A variant is a function `(sal, **params) -> float` registered with `@register_variant(name, reads=, needs=)`:
`reads` says which scores it can read ("gates" of the learned column mask, "entries" of the published matrix
mask, or "any"), `needs` which extra read-outs it wants in `Saliency.extras` ("mentions": saliency/derivation.py,
which `SaliencyReward` adds). The reward (`saliency_reward.py`) and the trace-file commands call them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .defaults import SaliencyRewardConfig
from .errors import UserError

# A variant maps one `Saliency` (CoT tokens + scores) to a scalar. Scores are read on content tokens only
# (a letter or digit): punctuation and sentence ends are attention sinks that score high under every method
# for structural reasons, and rewarding them would reward decoration.

SALIENCY_VARIANTS: dict[str, Callable[..., float]] = {}
# what each variant reads: "gates" (the learned column mask's gates in [0, 1]), "entries" (the learned matrix
# mask's entries: the published mask) or "any" (scores and log-probs every method gives)
VARIANT_READS: dict[str, str] = {}
# extra read-outs a variant needs beyond the method's (in `Saliency.extras`): "mentions" = the support of the first
# and last statement of the answer value in the CoT (saliency/derivation.py), which SaliencyReward adds
VARIANT_NEEDS: dict[str, tuple[str, ...]] = {}
READS = {
    "gates": (
        "learned",
        "column",
        "the learned column mask's gates: method 'learned' with a column preset (reward)",
    ),
    "entries": (
        "learned",
        "matrix",
        "the published mask's entries: method 'learned', preset 'paper' or 'paper_answer'",
    ),
}


def register_variant(name: str, reads: str = "any", needs: tuple[str, ...] = ()):
    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        SALIENCY_VARIANTS[name] = fn
        VARIANT_READS[name] = reads
        VARIANT_NEEDS[name] = needs
        return fn

    return deco


def variant_problem(variant: str, method: str, form: str | None) -> str | None:
    """Why `variant` cannot read what `method` (of mask form `form`) gives, or None when it can."""
    reads = VARIANT_READS.get(variant, "any")
    if reads == "any":
        return None
    want_method, want_form, what = READS[reads]
    if method != want_method or (form or "column") != want_form:
        return f"the {variant} variant reads {what}; method {method!r} (form {form or 'column'!r}) gives other scores"
    return None


def _check_reads(variant: str, sal) -> None:
    problem = variant_problem(
        variant, sal.method, sal.config.get("form") if isinstance(sal.config, dict) else None
    )
    if problem:
        raise UserError(problem)


def _content_scores(sal) -> list[float]:
    from .saliency import content_mask

    keep = content_mask(sal.tokens)
    return [s for s, k in zip(sal.scores, keep) if k] or list(sal.scores)


def cot_gap(sal) -> float:
    """log p(A | x, R) - log p(A | x, R removed): how much the CoT raises the answer (nats; the mask's scale)."""
    removed = sal.extras.get("removed_logprob")
    if removed is None:
        raise UserError(
            f"the saliency result of method {sal.method!r} carries no removed log-prob (log p(A | CoT removed)): "
            "score it with atmanrl.saliency.compute_saliency, which records it for every method"
        )
    return sal.answer_logprob - removed


@register_variant("needed_share", reads="gates")
def needed_share(sal, margin: float = SaliencyRewardConfig.margin, **_: Any) -> float:
    """The default. 0 when the CoT does not drive the answer (gap < `margin` nats); else the share of content
    CoT tokens the answer needs: the mean of the learned mask's gates, which the gap-normalised restore objective
    pushes to ~1 for tokens that carry their part of the gap and ~0 for the rest. It pushes toward CoTs that the
    answer depends on (a hint in the prompt or an answer guessed without the CoT earns 0) and, among those,
    toward dense ones (filler, restated questions and padding dilute the share)."""
    _check_reads("needed_share", sal)
    gap = cot_gap(sal)
    if not gap >= margin:
        return 0.0
    scores = [min(max(s, 0.0), 1.0) for s in _content_scores(sal)]
    return sum(scores) / max(len(scores), 1)


def derivation_factor(
    sal,
    support_margin: float = SaliencyRewardConfig.support_margin,
    derived_support: float = SaliencyRewardConfig.derived_support,
) -> float:
    """In [0, 1]: how little of the CoT justifies an answer it had already stated.

    1 - (1 - d) * h. h is the share of the CoT written between the first and the last statement of the answer
    value (0 with one statement: nothing comes after it); d in [0, 1] says how derived the first statement was: its
    support (nats the CoT before it adds to its log-prob, saliency/derivation.py) over the last one's (at least
    `support_margin`), or over `derived_support` when that gives more. A CoT that states its answer first and
    derives it afterwards gets about 1 - h, however the early statement is worded (the factor keys on the value,
    not the phrase); one that derives it and then restates it keeps about 1. 1 (no evidence) when the CoT states
    the answer value at most once, or the question states it (a restated premise is no derivation)."""
    if sal.extras.get("mentions", 0) < 2:
        return 1.0
    first, last = sal.extras["first_mention_support"], sal.extras["last_mention_support"]
    d = max(first / max(last, support_margin), first / derived_support)
    return 1.0 - (1.0 - min(max(d, 0.0), 1.0)) * sal.extras["mentions_between"]


@register_variant("derived_share", reads="gates", needs=("mentions",))
def derived_share(
    sal,
    margin: float = SaliencyRewardConfig.margin,
    support_margin: float = SaliencyRewardConfig.support_margin,
    derived_support: float = SaliencyRewardConfig.derived_support,
    **_: Any,
) -> float:
    """`needed_share` times `derivation_factor`: the share of the CoT the answer needs, paid in full only when the
    CoT derives its answer before stating it. A CoT that states its answer first and rationalises it afterwards
    earns little, however the early statement is worded (the factor keys on the value, not the phrase)."""
    _check_needs("derived_share", sal)
    return needed_share(sal, margin) * derivation_factor(sal, support_margin, derived_support)


def _check_needs(variant: str, sal) -> None:
    if "mentions" in VARIANT_NEEDS.get(variant, ()) and "mentions" not in sal.extras:
        raise UserError(
            f"the {variant} variant reads the answer mentions' support, which the saliency reward measures: "
            "score with get_reward('saliency', ...), or add atmanrl.saliency.mention_support's values to extras"
        )


@register_variant("salient_fraction")
def salient_fraction(sal, tau: float = SaliencyRewardConfig.tau, **_: Any) -> float:
    """Share of content CoT tokens with score > tau: dense reasoning in which most tokens matter."""
    scores = _content_scores(sal)
    return sum(s > tau for s in scores) / max(len(scores), 1)


@register_variant("cot_reliance")
def cot_reliance(sal, scale: float = SaliencyRewardConfig.scale, **_: Any) -> float:
    """clip((log p(A|x,R) - log p(A|x, R suppressed)) / scale, 0, 1): does the answer depend on the CoT at all."""
    return min(max(cot_gap(sal) / scale, 0.0), 1.0)


@register_variant("concentration")
def concentration(sal, **_: Any) -> float:
    """1 - H(g / sum g) / log |R| over content tokens: 1 when one token carries everything, 0 when uniform."""
    g = [max(s, 0.0) for s in _content_scores(sal)]
    total = sum(g)
    if len(g) < 2 or total <= 0:
        return 0.0
    h = -sum(p * math.log(p) for p in (x / total for x in g) if p > 0)
    return 1.0 - h / math.log(len(g))


def _entry_mean(sal, variant: str) -> float:
    _check_reads(variant, sal)
    return float(sal.extras["entry_mean"])


@register_variant("paper_printed", reads="entries")
def paper_printed(sal, **_: Any) -> float:
    """The paper's reward as printed: the mean of Hn = H / c over the causal entries of the CoT columns (1 when the
    mask stays at its start, 0 when the answer needed the whole CoT re-enabled). It pays CoTs the answer does not
    need; docs/paper.md measures both readings."""
    return _entry_mean(sal, "paper_printed")


@register_variant("paper_reenabled", reads="entries")
def paper_reenabled(sal, **_: Any) -> float:
    """The paper's reward as its text describes it ("how strongly the CoT must be re-enabled"): 1 - mean Hn over
    the causal entries of the CoT columns."""
    return 1.0 - _entry_mean(sal, "paper_reenabled")


# `paper`: the reading the measurements in docs/paper.md support
PAPER_READING = "paper_reenabled"
SALIENCY_VARIANTS["paper"], VARIANT_READS["paper"] = SALIENCY_VARIANTS[PAPER_READING], "entries"
PAPER_VARIANTS = ("paper", "paper_printed", "paper_reenabled")


def applicable_variants(sal) -> dict[str, Callable[..., float]]:
    """The variants that can read `sal` (each declares what it reads: `VARIANT_READS`)."""
    form = sal.config.get("form") if isinstance(sal.config, dict) else None
    return {
        n: fn
        for n, fn in SALIENCY_VARIANTS.items()
        if variant_problem(n, sal.method, form) is None
        and all(k in sal.extras for k in VARIANT_NEEDS.get(n, ()))
    }
