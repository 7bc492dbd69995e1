"""Scoring traces files: JSONL rows in, per-method saliency and saliency rewards out (`atmanrl saliency`,
`atmanrl explain`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .data import Parsed, Task, get_task, parse_letter, parse_math
from .defaults import VARIANT_PARAMS, SaliencyRewardConfig
from .errors import UserError
from .generate import render_prompt
from .io import read_jsonl
from .models import max_length
from .progress import progress_bar
from .saliency import Saliency, Trace, compute_saliency, get_method, method_options
from .saliency_reward import add_mention_support, answer_mentions
from .saliency_variants import applicable_variants, cot_gap

log = logging.getLogger(__name__)

REQUIRED = ("id", "prompt", "reasoning", "answer")


def parse_answer(answer: str, task: Task | None) -> Parsed:
    """The task's parser, or (no task) `#### N`, then `Answer: X`."""
    if task is not None:
        return task.parse(answer)
    p = parse_math(answer)
    return p if p.value is not None else parse_letter(answer)


def row_to_trace(row: dict[str, Any], tokenizer, task: Task | None, max_tokens: int | None = None) -> Trace:
    """Raise `UserError` naming the field when the row cannot be scored."""
    for key in REQUIRED:
        if key not in row:
            raise UserError(f"missing field '{key}' (need {', '.join(REQUIRED)})")
    for key in ("prompt", "reasoning", "answer"):
        if not isinstance(row[key], str):
            raise UserError(f"field '{key}' must be a string, got {type(row[key]).__name__}")
    if not row["reasoning"].strip():
        raise UserError("field 'reasoning' is empty: there is no chain of thought to score")
    parsed = parse_answer(row["answer"], task)
    if parsed.value_span is None:
        raise UserError(
            "no parseable answer in field 'answer': expected '#### <number>' or 'Answer: <letter>'"
        )
    early = parse_answer(row["reasoning"], task)
    if early.value is not None:
        line = row["reasoning"][early.answer[0] :].split("\n")[0]
        raise UserError(
            f"field 'reasoning' already contains an answer line ({line!r}): the answer belongs in 'answer', "
            "after the reasoning"
        )
    messages = row.get("messages")
    if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
        messages = [{"role": "user", "content": row["prompt"]}]
    r = len(row["reasoning"])
    span = (parsed.value_span[0] + r, parsed.value_span[1] + r)
    trace = Trace.from_completion(
        render_prompt(tokenizer, messages), row["reasoning"] + row["answer"], r, span
    )
    if max_tokens is not None:
        parts = (trace.prompt, trace.reasoning, trace.answer)
        n = sum(len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in parts)
        if n > max_tokens:
            raise UserError(
                f"the trace has {n} tokens, more than the model's maximum of {max_tokens}: "
                "shorten 'reasoning' or 'prompt'"
            )
    return trace


def score_traces(
    model,
    tokenizer,
    traces: list[Trace],
    methods: list[str],
    scope: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    preset: str | None = None,
    task: Task | None = None,
    questions: list[str] | None = None,
    **variant_params: float,
) -> list[dict[str, Any]]:
    """Per trace: {"saliency": {method: Saliency}, "rewards": {variant: value}} (rewards when `learned` ran).
    `variant_params`: the reward variants' parameters (`VARIANT_PARAMS`; unset: `SaliencyRewardConfig`'s).
    `task` (else told from each answer: a number or a letter) and `questions` (else the rendered prompts) tell
    where a CoT states its answer, for `derived_share`."""
    unknown = sorted(set(variant_params) - set(VARIANT_PARAMS))
    if unknown:
        raise UserError(f"score_traces: no reward parameter {unknown}; valid: {', '.join(VARIANT_PARAMS)}")
    for m in methods:
        get_method(m)  # unknown names fail before any work
    out: list[dict[str, Any]] = [{"saliency": {}} for _ in traces]
    reward_sals: list[Saliency] = []
    # The rewards as GRPO computes them: from the reward's own mask (preset "reward"), not the attribution default;
    # the attribution pass is reused when it already was that mask.
    reward_pass = "learned" in methods and not (preset == "reward" and scope in (None, "answer"))
    with progress_bar("saliency", total=len(traces) * (len(methods) + reward_pass)) as advance:
        for m in methods:
            sals: list[Saliency] = []
            for lo in range(0, len(traces), batch_size):
                chunk = traces[lo : lo + batch_size]
                sals += compute_saliency(
                    model,
                    tokenizer,
                    chunk,
                    m,
                    batch_size=batch_size,
                    **method_options(m, scope=scope, steps=steps, seed=seed, preset=preset),
                )
                advance(len(chunk))
            for row, sal in zip(out, sals, strict=True):
                row["saliency"][m] = sal
            if m == "learned" and not reward_pass:
                reward_sals = sals
        if reward_pass:
            opts = method_options("learned", scope="answer", steps=steps, seed=seed, preset="reward")
            reward_sals = compute_saliency(model, tokenizer, traces, "learned", batch_size=batch_size, **opts)
            advance(len(traces))
    if reward_sals:
        _add_mentions(model, tokenizer, traces, reward_sals, task, questions)
        kw = {k: variant_params.get(k, getattr(SaliencyRewardConfig, k)) for k in VARIANT_PARAMS}
        for row, sal in zip(out, reward_sals, strict=True):
            row["rewards"] = {name: float(fn(sal, **kw)) for name, fn in applicable_variants(sal).items()}
    return out


def _add_mentions(model, tokenizer, traces: list[Trace], sals: list[Saliency], task, questions) -> None:
    """The answer mentions' support, as the reward measures it (`derived_share` reads it)."""
    numeric, letter = get_task("gsm8k"), get_task("mmlu")
    tasks = [task or (numeric if parse_math(f"#### {t.target_text}").value else letter) for t in traces]
    spans = [
        answer_mentions(k, t, q)
        for k, t, q in zip(tasks, traces, questions or [t.prompt for t in traces], strict=True)
    ]
    # one process: only the traces that state their answer twice are run
    add_mention_support(model, tokenizer, traces, sals, spans, fixed=False)


def to_json(scored: dict[str, Any]) -> dict[str, Any]:
    """One `score_traces` row as the `saliency` command writes it: the tokens once, then per method the scores
    and seconds, the answer's log-prob, the CoT's gap, and the rewards."""
    sals: dict[str, Saliency] = scored["saliency"]
    first = next(iter(sals.values()))
    out = {
        "tokens": first.to_dict()["tokens"],
        "scores": {m: s.scores for m, s in sals.items()},
        "answer_logprob": first.answer_logprob,
        "gap": cot_gap(first),
        "seconds": {m: s.seconds for m, s in sals.items()},
    }
    if "rewards" in scored:
        out["rewards"] = scored["rewards"]
    return out


def score_file(
    model, tokenizer, path: str | Path, methods: list[str], task: str | None = None, **kw: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """Score a traces JSONL. Returns (each usable input row with its `score_traces` result, one-line errors for
    the rows that were skipped)."""
    task_obj = get_task(task) if task else None
    errors: list[str] = []
    rows, traces = [], []
    for n, row in read_jsonl(path, errors):
        try:
            traces.append(row_to_trace(row, tokenizer, task_obj, max_length(model)))
            rows.append(row)
        except UserError as e:
            errors.append(f"{path}:{n}: {e}")
    for e in errors:
        log.warning("skipped %s", e)
    if not traces:
        return [], errors
    questions = [row["prompt"] for row in rows]
    scored = score_traces(model, tokenizer, traces, methods, task=task_obj, questions=questions, **kw)
    # an input row's own rewards (a file written by `explain`) must never stand in for this run's
    return [
        {k: v for k, v in row.items() if k != "rewards"} | s for row, s in zip(rows, scored, strict=True)
    ], errors
