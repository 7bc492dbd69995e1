"""Sampling completions for a task and scoring them against the gold answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import Example, Task
from .progress import progress_bar

log = logging.getLogger(__name__)

# Used only for tokenizers without a chat template (base models): plain role-tagged text.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass
class SamplingConfig:
    """How completions are sampled. `temperature=0` means greedy decoding."""

    max_new_tokens: int | None = None  # None: the task's default
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """Messages -> prompt text through the tokenizer's chat template (or a plain fallback, with a warning)."""
    template = None
    if not getattr(tokenizer, "chat_template", None):
        if not getattr(tokenizer, "_atmanrl_warned_template", False):
            log.warning(
                "tokenizer %s has no chat template: using plain 'Role: text' prompts", tokenizer.name_or_path
            )
            tokenizer._atmanrl_warned_template = True
        template = FALLBACK_TEMPLATE
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=template
    )


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg: SamplingConfig,
    max_new_tokens: int,
    description: str = "generating",
) -> list[str]:
    """Complete rendered prompts in batches (left padding); returns completion texts."""
    torch.manual_seed(cfg.seed)
    tokenizer.padding_side = "left"
    out: list[str] = []
    kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    if cfg.temperature > 0:
        kw.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    with progress_bar(description, total=len(prompts)) as advance:
        for i in range(0, len(prompts), cfg.batch_size):
            batch = prompts[i : i + cfg.batch_size]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            ids = model.generate(**enc, **kw)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            advance(len(batch))
    return out


def score_completion(task: Task, ex: Example, completion: str) -> dict[str, Any]:
    """Split a completion into reasoning and answer, and check it against the gold answer."""
    parsed = task.parse(completion)
    reasoning, answer = parsed.split(completion)
    return {
        "reasoning": reasoning,
        "answer": answer,
        "pred": parsed.value,
        "gold": ex.gold,
        "correct": task.is_correct(parsed.value, ex.gold),
    }


def generate_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    examples: list[Example],
    cfg: SamplingConfig | None = None,
) -> list[dict[str, Any]]:
    """Generate one completion per example and return rows ready for JSONL.

    Each row has `id`, `prompt` (the user message), `messages`, `completion`, `reasoning`, `answer`,
    `pred`, `gold` and `correct`.
    """
    cfg = cfg or SamplingConfig()
    messages = [task.messages(ex) for ex in examples]
    prompts = [render_prompt(tokenizer, m) for m in messages]
    completions = sample(
        model, tokenizer, prompts, cfg, cfg.max_new_tokens or task.max_new_tokens, f"{task.name}"
    )
    rows = []
    for ex, msgs, completion in zip(examples, messages, completions):
        row = {
            "id": ex.id,
            "task": task.name,
            "prompt": msgs[-1]["content"],
            "messages": msgs,
            "completion": completion,
        }
        row.update(score_completion(task, ex, completion))
        rows.append(row)
    return rows


def accuracy(rows: list[dict[str, Any]]) -> float:
    return sum(bool(r["correct"]) for r in rows) / max(len(rows), 1)
