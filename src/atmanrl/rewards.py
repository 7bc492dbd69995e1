"""Reward registry. Every reward is a plain callable with TRL's contract:

    reward(prompts, completions, completion_ids=None, **columns) -> list[float | None]

`None` means "not applicable" (TRL then leaves the sample out of that reward). A recipe names rewards
and their weights; `get_reward(name, **options)` builds them. To add one, write a factory that returns
such a callable and decorate it with `@register_reward("name")`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

from .data import Task, get_task
from .errors import UserError

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
            out.append(float(t.is_correct(t.parse(completion_text(c)).value, str(gold[i]))))
        return finite_or_zero(out, "correctness")

    return reward


_MATH_LINE = re.compile(r"^####\s*-?\$?\s*[\d,]*\d(?:\.\d+)?\s*$")
_LETTER_LINE = re.compile(r"^answer\s*:\s*\(?[A-D]\)?\s*$", re.IGNORECASE)


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
            line = _LETTER_LINE if t.name == "mmlu" else _MATH_LINE
            ok = parsed.value is not None and bool(reasoning.strip()) and bool(line.match(answer.strip()))
            out.append(float(ok))
        return out

    return reward
