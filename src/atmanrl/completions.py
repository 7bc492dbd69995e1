"""What every reward reads from TRL's call: the completion's text, the task of each row, and finite values out."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from .data import Task, get_task

log = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]


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


def task_for(default: Task, names: list[str] | None, i: int, cache: dict[str, Task]) -> Task:
    """Row i's task: its `task` column where a mixed dataset has one, else `default`."""
    if names is None or not names[i] or names[i] == default.name:
        return default
    if names[i] not in cache:
        cache[names[i]] = get_task(names[i])
    return cache[names[i]]
