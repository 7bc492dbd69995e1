"""Reward registry. Every reward is a plain callable with TRL's contract:

    reward(prompts, completions, completion_ids=None, **columns) -> list[float | None]

`None` means "not applicable" (TRL then leaves the sample out of that reward). A recipe names rewards
and their weights; `get_reward(name, **options)` builds them. To add one, write a factory that returns
such a callable and decorate it with `@register_reward("name")`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from .data import Task, get_task
from .defaults import VARIANT_PARAMS, SaliencyRewardConfig
from .errors import UserError
from .models import max_length

log = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]
REWARDS: dict[str, Callable[..., RewardFn]] = {}


def register_reward(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    def deco(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        REWARDS[name] = factory
        return factory

    return deco


def get_reward(name: str, **options: Any) -> RewardFn:
    """Build a registered reward; its `__name__` is the registry name, so TRL logs `rewards/<name>/...`."""
    if name not in REWARDS:
        raise UserError(f"unknown reward {name!r}: choose from {', '.join(sorted(REWARDS))}")
    fn = REWARDS[name](**options)
    fn.__name__ = name  # type: ignore[attr-defined]
    return fn


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or for conversational data a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return ""


def finite_or_zero(values: list[float | None], name: str) -> list[float | None]:
    """Replace NaN/inf by 0 with a warning: non-finite numbers must never reach the trainer."""
    out, bad = [], 0
    for v in values:
        if v is not None and not math.isfinite(v):
            v, bad = 0.0, bad + 1
        out.append(v)
    if bad:
        log.warning("reward %s: %d non-finite values replaced by 0", name, bad)
    return out


def _task_for(default: Task, names: list[str] | None, i: int, cache: dict[str, Task]) -> Task:
    if names is None or not names[i] or names[i] == default.name:
        return default
    if names[i] not in cache:
        cache[names[i]] = get_task(names[i])
    return cache[names[i]]


@register_reward("correctness")
def correctness(task: str = "gsm8k", **task_options: Any) -> RewardFn:
    """1.0 when the parsed answer equals the `gold` column, else 0.0; None for rows without gold.

    A `task` column, where present, overrides the bound task per row (mixed datasets).
    """
    return _outcome(task, 1.0, 0.0, "correctness", **task_options)


@register_reward("paper_outcome")
def paper_outcome(task: str = "gsm8k", **task_options: Any) -> RewardFn:
    """The paper's outcome reward: 0.0 when the parsed answer equals the `gold` column, else -1.0 (no answer
    counts as wrong); None for rows without gold. It differs from `correctness` by a constant, which GRPO's group
    mean removes: the advantages are the same; the logged rewards are the published ones."""
    return _outcome(task, 0.0, -1.0, "paper_outcome", **task_options)


def _outcome(task: str, right: float, wrong: float, name: str, **task_options: Any) -> RewardFn:
    default = get_task(task, **task_options)

    def reward(prompts, completions, completion_ids=None, gold=None, **columns) -> list[float | None]:
        cache: dict[str, Task] = {}
        names = columns.get("task")
        out: list[float | None] = []
        for i, c in enumerate(completions):
            if gold is None or gold[i] in (None, ""):
                out.append(None)
                continue
            t = _task_for(default, names, i, cache)
            out.append(right if t.is_correct(t.parse(completion_text(c)).value, str(gold[i])) else wrong)
        return finite_or_zero(out, name)

    return reward


@register_reward("format")
def format_reward(task: str = "gsm8k", **task_options: Any) -> RewardFn:
    """1.0 when the completion ends with exactly one well-formed answer line (`#### N` / `Answer: X`)
    after some reasoning, else 0.0. Text after the answer line, or a second answer line, fails it."""
    default = get_task(task, **task_options)

    def reward(prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        cache: dict[str, Task] = {}
        names = columns.get("task")
        out: list[float | None] = []
        for i, c in enumerate(completions):
            t = _task_for(default, names, i, cache)
            text = completion_text(c)
            parsed = t.parse(text)
            reasoning, answer = parsed.split(text)
            ok = (
                parsed.value is not None
                and bool(reasoning.strip())
                and bool(t.answer_line.match(answer.strip()))
            )
            out.append(float(ok))
        return out

    return reward


# --- saliency rewards (docs/method.md) ----------------------------------------------------------------
# A variant maps one `Saliency` (CoT tokens + scores) to a scalar. Scores are read on content tokens only
# (a letter or digit): punctuation and sentence ends are attention sinks that score high under every method
# for structural reasons, and rewarding them would reward decoration.

SALIENCY_VARIANTS: dict[str, Callable[..., float]] = {}
# what each variant reads: "gates" (the learned column mask's gates in [0, 1]), "entries" (the learned matrix
# mask's entries: the published mask) or "any" (scores and log-probs every method gives)
VARIANT_READS: dict[str, str] = {}
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


def register_variant(name: str, reads: str = "any"):
    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        SALIENCY_VARIANTS[name] = fn
        VARIANT_READS[name] = reads
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
    suppressed = sal.extras.get("suppressed_logprob")
    if suppressed is None:
        raise UserError(
            f"the saliency result of method {sal.method!r} carries no suppressed log-prob: "
            "score it with atmanrl.saliency.compute_saliency, which records it for every method"
        )
    return sal.answer_logprob - suppressed


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
    return {n: fn for n, fn in SALIENCY_VARIANTS.items() if variant_problem(n, sal.method, form) is None}


PLACEHOLDER = ("Question: Ann has 2 pens and gets 3 more.", "Ann has 2 + 3 = 5 pens now.\n", "#### 5")


class SaliencyReward:
    """The AtManRL reward: saliency of each rollout's CoT under the *current* policy, reduced to one scalar.

    A plain callable with TRL's reward contract, holding the policy it scores with: `bind(trainer)` (done by
    `atmanrl train`) or `model=`/`tokenizer=` for standalone use. Only rollouts with a parseable answer (and,
    with `correct_only`, a correct one) and at least `min_reasoning_tokens` CoT tokens are scored; the others
    get 0. With several processes, every process scores the same number of traces (padding with a
    placeholder), so collective ops inside forward passes (ZeRO-3) stay in lockstep.
    """

    def __init__(
        self,
        config: SaliencyRewardConfig | None = None,
        model=None,
        tokenizer=None,
        task: str = "gsm8k",
        **options: Any,
    ):
        """`config` holds every setting (`defaults.SaliencyRewardConfig`); `options` may name any of its fields
        (they win over `config`), and the rest are the task's options."""
        from .saliency import get_method, make_method, method_options

        names = {f.name for f in fields(SaliencyRewardConfig)}
        cfg = replace(
            config or SaliencyRewardConfig(), **{k: options.pop(k) for k in list(options) if k in names}
        )
        task_options = options
        variant, method, steps = cfg.variant, cfg.method, cfg.steps
        self.config = cfg

        if variant not in SALIENCY_VARIANTS:
            raise UserError(
                f"unknown saliency variant {variant!r}: choose from {', '.join(SALIENCY_VARIANTS)}"
            )
        get_method(method)  # fail early on an unknown name
        self.variant, self.method = variant, method
        self.options = dict(cfg.method_options or {})
        if method == "learned":
            # the reward's own validated mask, not the attribution default (docs/saliency.md); the paper's reward
            # on the published mask (docs/paper.md)
            self.options.setdefault("preset", "paper" if variant in PAPER_VARIANTS else "reward")
        self.options = {**method_options(method, steps=steps), **self.options}  # explicit method options win
        if steps is not None and "steps" not in self.options:  # a method without steps: say so, not drop it
            log.warning(
                "saliency: steps=%s applies to the learned mask only; method %r ignores it", steps, method
            )
        self.variant_kw = {k: getattr(cfg, k) for k in VARIANT_PARAMS}
        # One step's rollouts in as few forwards as `token_budget` (traces x longest length) allows; at most
        # `batch_size` traces per forward (None: no cap). Multi-process runs use fixed groups of
        # `batch_size or 8`: a length-dependent number of forwards would break the ranks' lockstep.
        self.correct_only, self.min_reasoning_tokens = cfg.correct_only, cfg.min_reasoning_tokens
        self.batch_size, self.token_budget = cfg.batch_size, cfg.token_budget
        self.task = get_task(task, **task_options)
        self.model, self.tokenizer, self.trainer = model, tokenizer, None
        # Built once, so a bad option fails here, and what the method caches (CUDA step graphs) lasts the run.
        self.built = make_method(method, **self.options)
        problem = variant_problem(variant, method, getattr(self.built, "form", None))
        if problem:  # what the variant reads, which it declares, against what the method gives
            raise UserError(f"{problem} (cot_reliance works with every method)")
        self.__name__ = "saliency"

    def bind(self, trainer) -> SaliencyReward:
        if trainer.accelerator.num_processes > 1 and getattr(self.built, "chain", False):
            raise UserError(
                "saliency: the chained mask runs a data-dependent number of passes, which deadlocks multi-process "
                "training; use the reward preset (the default) or drop chain from saliency_options"
            )
        self.trainer = trainer
        self.tokenizer = trainer.processing_class
        return self

    def _policy(self):
        if self.trainer is None:
            if self.model is None or self.tokenizer is None:
                raise UserError(
                    "the saliency reward needs a policy: call bind(trainer) or pass model= and tokenizer="
                )
            return self.model, 1
        return self.trainer.accelerator.unwrap_model(
            self.trainer.model
        ), self.trainer.accelerator.num_processes

    def _render(self, prompt: Any) -> str:
        from .generate import render_prompt

        return prompt if isinstance(prompt, str) else render_prompt(self.tokenizer, prompt)

    def traces(self, prompts, completions, gold=None, task_names=None, limit: int | None = None) -> list[Any]:
        """One `Trace` per completion, or None where the rollout is not eligible for a saliency reward
        (no parseable or no correct answer, a CoT shorter than `min_reasoning_tokens`, or more than `limit`
        tokens in all)."""
        from .saliency import Trace

        cache: dict[str, Task] = {}
        out: list[Any] = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            t = _task_for(self.task, task_names, i, cache)
            text = completion_text(c)
            parsed = t.parse(text)
            if parsed.value is None or (
                self.correct_only and (gold is None or not t.is_correct(parsed.value, str(gold[i])))
            ):
                out.append(None)
                continue
            reasoning, _ = parsed.split(text)
            if (
                len(self.tokenizer(reasoning, add_special_tokens=False)["input_ids"])
                < self.min_reasoning_tokens
            ):
                out.append(None)
                continue
            trace = Trace.from_completion(self._render(p), text, parsed.answer[0], parsed.value_span)
            n = len(
                self.tokenizer(trace.prompt + trace.reasoning + trace.answer, add_special_tokens=False)[
                    "input_ids"
                ]
            )
            if limit is not None and n > limit:
                log.warning(
                    "saliency: a rollout of %d tokens exceeds the model's %d positions: reward 0", n, limit
                )
                out.append(None)
                continue
            out.append(trace)
        return out

    def _score(self, model, todo: list, world: int = 1) -> list:
        """Saliency for every trace; a batch that fails is retried trace by trace, and a trace that still
        fails (a tokenisation corner case) gets None, so one bad rollout never costs the step its rewards."""
        from .saliency import compute_saliency

        batching = (
            {"batch_size": self.batch_size, "token_budget": self.token_budget}
            if world == 1
            else {"batch_size": self.batch_size or 8}
        )
        try:
            return compute_saliency(model, self.tokenizer, todo, self.built, **batching)
        except UserError as e:
            log.warning("saliency batch failed (%s): scoring its %d traces one by one", e, len(todo))
        out = []
        for t in todo:
            try:
                out += compute_saliency(model, self.tokenizer, [t], self.built, batch_size=1)
            except UserError as e:
                log.warning("saliency: trace skipped with reward 0 (%s)", e)
                out.append(None)
        return out

    def __call__(
        self, prompts, completions, completion_ids=None, gold=None, log_metric=None, log_extra=None, **columns
    ):
        import time

        import torch
        from trl.models.utils import disable_gradient_checkpointing

        from .saliency import Trace

        model, world = self._policy()
        traces = self.traces(prompts, completions, gold, columns.get("task"), max_length(model))
        todo = [t for t in traces if t is not None]
        if world > 1:  # same number of traces, hence of forward passes, on every process
            filler = (
                todo[0]
                if todo
                else Trace(
                    self._render([{"role": "user", "content": PLACEHOLDER[0]}]),
                    PLACEHOLDER[1],
                    PLACEHOLDER[2],
                    (5, 6),
                )
            )
            todo = todo + [filler] * (len(traces) - len(todo))
        t0 = time.perf_counter()
        with torch.enable_grad(), disable_gradient_checkpointing(model):
            sals = self._score(model, todo, world) if todo else []
        seconds = time.perf_counter() - t0
        rewards: list[float | None] = []
        it = iter(sals)
        fn = SALIENCY_VARIANTS[self.variant]
        scored, values, per = [], [], []  # per: each rollout's Saliency or None, for the completion logs
        for t in traces:
            sal = next(it) if t is not None else None
            per.append(sal)
            if sal is None:
                rewards.append(0.0)
            else:
                scored.append(sal)
                values.append(float(fn(sal, **self.variant_kw)))
                rewards.append(values[-1])
        rewards = finite_or_zero(rewards, "saliency")
        if log_extra is not None:  # per-rollout columns of TRL's completion logs (completions/*.parquet)
            log_extra("saliency_gap", [round(cot_gap(s), 3) if s is not None else None for s in per])
            log_extra(
                "saliency_needed",
                ["" if s is None else " | ".join(t.text.strip() for t, _ in s.top(5)) for s in per],
            )
        if log_metric is not None:
            n = max(len(scored), 1)
            log_metric("saliency/eligible_frac", len(scored) / max(len(traces), 1))
            log_metric("saliency/seconds", seconds)
            if scored:
                stats = {
                    "saliency/mask_mean": sum(sum(s.scores) / max(len(s.scores), 1) for s in scored) / n,
                    "saliency/answer_logprob": sum(s.answer_logprob for s in scored) / n,
                    "saliency/gap": sum(cot_gap(s) for s in scored) / n,
                    f"saliency/{self.variant}": sum(values) / n,
                }
                for k, v in stats.items():
                    log_metric(k, v if math.isfinite(v) else 0.0)
        return rewards


register_reward("saliency")(SaliencyReward)
