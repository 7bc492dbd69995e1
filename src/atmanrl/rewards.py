"""Reward registry. Every reward is a plain callable with TRL's contract:

    reward(prompts, completions, completion_ids=None, **columns) -> list[float | None]

`None` means "not applicable" (TRL then leaves the sample out of that reward). A recipe names rewards
and their weights; `get_reward(name, **options)` builds them. To add one, write a factory that returns
such a callable and decorate it with `@register_reward("name")`. The saliency reward lives in
`saliency_reward.py`, its variants in `saliency_variants.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .completions import RewardFn, completion_text, finite_or_zero, task_for
from .data import Task, get_task
from .errors import UserError
from .saliency_reward import SaliencyReward
from .saliency_variants import (  # noqa: F401  (the variants are part of this registry's API)
    PAPER_READING,
    PAPER_VARIANTS,
    SALIENCY_VARIANTS,
    VARIANT_NEEDS,
    VARIANT_READS,
    applicable_variants,
    concentration,
    cot_gap,
    cot_reliance,
    derivation_factor,
    derived_share,
    needed_share,
    paper_printed,
    paper_reenabled,
    register_variant,
    salient_fraction,
    variant_problem,
)

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
            t = task_for(default, names, i, cache)
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
            t = task_for(default, names, i, cache)
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


register_reward("saliency")(SaliencyReward)
