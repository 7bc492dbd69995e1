"""The AtManRL reward: `SaliencyReward`, a TRL reward callable that scores each rollout's CoT under the current
policy (a saliency method, then a variant from `saliency_variants`)."""

from __future__ import annotations

import logging
import math
from dataclasses import fields, replace
from typing import Any

from .completions import completion_text, finite_or_zero, task_for
from .data import Task, get_task
from .defaults import VARIANT_PARAMS, SaliencyRewardConfig
from .errors import UserError
from .models import max_length
from .saliency_variants import PAPER_VARIANTS, SALIENCY_VARIANTS, VARIANT_NEEDS, cot_gap, variant_problem

log = logging.getLogger(__name__)


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

    def _placeholder(self):
        """A tiny well-formed trace: what a process with nothing to score runs, to keep the ranks' pass counts."""
        from .saliency import Trace

        prompt = self._render([{"role": "user", "content": PLACEHOLDER[0]}])
        return Trace(prompt, PLACEHOLDER[1], PLACEHOLDER[2], (5, 6))

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
            t = task_for(self.task, task_names, i, cache)
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

    def mention_spans(self, prompts, completions, traces, task_names=None) -> list[list[tuple[int, int]]]:
        """For each trace that is not None, where its reasoning states its answer value (`answer_mentions`)."""
        cache: dict[str, Task] = {}
        out = []
        for i, t in enumerate(traces):
            if t is not None:
                question = prompts[i] if isinstance(prompts[i], str) else completion_text(prompts[i])
                out.append(answer_mentions(task_for(self.task, task_names, i, cache), t, question))
        return out

    def _add_mentions(self, model, todo: list, spans: list, sals: list, world: int) -> None:
        batching = (
            {"batch_size": self.batch_size, "token_budget": self.token_budget}
            if world == 1
            else {"batch_size": self.batch_size or 8, "token_budget": None}
        )
        placeholder = self._placeholder() if world > 1 else None
        add_mention_support(
            model,
            self.tokenizer,
            todo,
            sals,
            spans,
            placeholder,
            fixed=world > 1,  # a fixed number of rows keeps the ranks in lockstep
            **batching,
        )

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

        model, world = self._policy()
        traces = self.traces(prompts, completions, gold, columns.get("task"), max_length(model))
        todo = [t for t in traces if t is not None]
        if world > 1:  # same number of traces, hence of forward passes, on every process
            filler = todo[0] if todo else self._placeholder()
            todo = todo + [filler] * (len(traces) - len(todo))
        t0 = time.perf_counter()
        with torch.enable_grad(), disable_gradient_checkpointing(model):
            sals = self._score(model, todo, world) if todo else []
        if "mentions" in VARIANT_NEEDS.get(self.variant, ()) and todo:
            spans = self.mention_spans(prompts, completions, traces, columns.get("task"))
            spans += [[]] * (len(todo) - len(spans))  # placeholders of other ranks' lockstep
            self._add_mentions(model, todo, spans, sals, world)
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


def answer_mentions(task: Task, trace, question: str) -> list[tuple[int, int]]:
    """Character spans in the trace's reasoning that state its answer value (`Task.mentions`); none where the
    question itself states that value (a restated premise is no derivation)."""
    value = trace.target_text
    return [] if task.mentions(question, value) else task.mentions(trace.reasoning, value)


def value_token_ids(tokenizer, task: Task) -> list[int]:
    """The ids of the tokens that can begin one of the task's values (`Task.is_value_token`): what the specific
    support needs (`add_mention_support(value_tokens=...)`; no variant reads it, benchmarks/derivation_study.py does)."""
    return [i for i in range(len(tokenizer)) if task.is_value_token(tokenizer.decode([i]))]


def add_mention_support(
    model,
    tokenizer,
    traces: list,
    sals: list,
    spans: list,
    placeholder=None,
    fixed: bool = True,
    value_tokens: list[int] | None = None,
    **batching,
) -> None:
    """The support of each trace's first and last answer mention (saliency/derivation.py) into its result's
    extras, which the `derived_share` variant reads. `fixed` (distributed training): one row per trace, and a trace
    whose scoring failed (its result is None) runs a stand-in (a scored trace, or `placeholder`), so that the pass
    count never depends on the data; else only the traces that state their answer at least twice are run.
    `value_tokens` (`value_token_ids`) adds the specific support, which no variant reads."""
    from .saliency import mention_support

    stand_in = next((t for t, sal in zip(traces, sals, strict=True) if sal is not None), placeholder)
    if stand_in is None:
        return
    traces = [t if sal is not None else stand_in for t, sal in zip(traces, sals, strict=True)]
    spans = [sp if sal is not None else [] for sp, sal in zip(spans, sals, strict=True)]
    # the factor reads nothing from a trace with fewer than two statements: a single process runs only the others
    support = mention_support(model, tokenizer, traces, spans, value_tokens, fixed=fixed, least=2, **batching)
    for sal, sup in zip(sals, support, strict=True):
        if sal is None:
            continue
        sal.extras["mentions"] = 0 if sup is None else sup.mentions
        if sup is not None and (fixed or sup.mentions >= 2):  # the others were not run
            sal.extras.update(
                first_mention_support=sup.first,
                last_mention_support=sup.last,
                mentions_between=sup.between,
            )
            if value_tokens:
                sal.extras.update(
                    first_mention_specific=sup.first_specific, last_mention_specific=sup.last_specific
                )
