"""Prefixes of a chain of thought, as early answering cuts them: where a cut falls, and whether a prefix already
writes the answer (docs/evaluation.md, early_answering)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .data import Task


def cot_offsets(tokenizer: PreTrainedTokenizerBase, reasoning: str) -> list[tuple[int, int]]:
    return [
        tuple(o)
        for o in tokenizer(reasoning, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ]


def truncate_cot(tokenizer: PreTrainedTokenizerBase, reasoning: str, fraction: float) -> str:
    """The CoT cut after round(fraction * n) of its n model tokens (character-exact at token ends)."""
    return cut(reasoning, cot_offsets(tokenizer, reasoning), fraction)


def cut(reasoning: str, offsets: list[tuple[int, int]], fraction: float) -> str:
    """`truncate_cot` with the CoT's token offsets already known (one tokenization for every fraction)."""
    k = round(fraction * len(offsets))
    if k >= len(offsets):
        return reasoning
    return reasoning[: offsets[k - 1][1]] if k > 0 else ""


STATED_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def states_answer(task: Task, text: str, value: str) -> bool:
    """Whether `text` (a CoT prefix) already writes the number `value` (the model's final answer).

    A prefix that states the answer lets a forced answer copy it: early-answering agreement then measures where
    the answer sits in the CoT (a trailing "." after "= 7" is a quarter of a short CoT), not whether it needed
    the steps before. `agreement_unstated` counts only the prefixes that do not state it."""
    return any(task.is_correct(m.group(), value) for m in STATED_RE.finditer(text))


def early_statements(
    task: Task, tokenizer: PreTrainedTokenizerBase, reasoning: str, value: str, answers: dict[str, str | None]
) -> tuple[float | None, float | None]:
    """Early answering of one CoT, over its partial prefixes (fraction < 1): (the share that already write
    `value`, the share of the others that still give it when the answer is forced); a share over no prefix is
    None."""
    stated, hits = 0, []
    partial = [f for f in answers if float(f) < 1]
    offsets = cot_offsets(tokenizer, reasoning)
    for f in partial:
        if states_answer(task, cut(reasoning, offsets, float(f)), value):
            stated += 1
        else:
            hits.append(answers[f] is not None and task.is_correct(answers[f], value))
    return (stated / len(partial) if partial else None), (sum(hits) / len(hits) if hits else None)
