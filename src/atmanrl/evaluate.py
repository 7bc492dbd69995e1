"""Evaluation metrics: accuracy, CoT statistics, faithfulness tests and saliency deletion/insertion curves.

    metrics = evaluate(model, tokenizer, task, examples, EvalConfig(saliency_limit=8))
    metrics["early_answering"]["aoc"], metrics["saliency"]["methods"]["learned"]["aopc_deletion"]

Groups (see docs/evaluation.md for the definitions):
- `accuracy`: greedy generation with the task prompt.
- `cot_stats`: CoT length in model tokens, and stop-word / number / symbol shares of its word tokens.
- `early_answering`, `adding_mistakes`, `filler`: the faithfulness tests of Lanham et al. 2023, run on the
  completions with a parseable answer. "Forcing" the answer means appending the task's answer prefix
  (`#### ` / `Answer:`) to a (modified) CoT and greedily decoding a few tokens.
- `saliency`: per method, answer log-prob as the top-k% CoT content tokens are removed (deletion) or are
  the only ones kept (insertion); removal is an attention bias on those key columns, answer rows only.
- `planted` (optional): the planted-distractor cases of `atmanrl.planted`.

The returned dict holds these groups, `meta`, and `generations` (one row per example with the per-example
results); `metrics.json` is the dict without `generations`.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .composition import cot_stats
from .cot_prefixes import cot_offsets, early_statements, truncate_cot
from .data import Example, Task
from .defaults import DEFAULT_METHODS
from .errors import UserError
from .generate import SamplingConfig, render_prompt, sample, score_completion
from .masked import MaskedBatch, Trace, content_mask, encode, frozen, prefix_cache, variants_logprob
from .progress import progress_bar
from .saliency import Saliency, compute_saliency, get_method

log = logging.getLogger(__name__)

GROUPS = (
    "accuracy",
    "cot_stats",
    "pass_at_k",
    "early_answering",
    "adding_mistakes",
    "filler",
    "saliency",
    "planted",
)
SKIPPABLE = GROUPS[1:]

# ----------------------------------------------------------------------------- configuration


@dataclass
class EvalConfig:
    """What `evaluate` measures and at which cost. Every random choice derives from `seed`."""

    seed: int = 0
    max_new_tokens: int | None = None  # generation budget; None: the task's default
    batch_size: int = 8
    answer_tokens: int = 8  # tokens greedily decoded after a forced answer prefix (digits are 1 token each)
    fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # early answering: share of CoT tokens kept
    mistake_mode: str = "force"  # "force": corrupt, then force the answer; "continue": let the model go on
    filler: str = " ..."  # filler unit, repeated to the CoT's token length
    methods: tuple[str, ...] = tuple(DEFAULT_METHODS.split(","))
    # options per method, e.g. {"learned": {"steps": 10}}
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    ks: tuple[int, ...] = tuple(range(0, 101, 10))  # deletion/insertion: % of CoT content tokens
    # traces per saliency method: the learned mask costs ~30 forward+backward passes per batch, plus its hop
    saliency_limit: int | None = 16
    heatmaps: int = 2  # example saliency maps kept per method for the report
    planted: int = 0  # planted-distractor cases per method (0: off)
    skip: tuple[str, ...] = ()  # groups to leave out, from SKIPPABLE
    # pass@k (the paper's Table 1 metric): `pass_samples` sampled completions per problem at `pass_temperature`,
    # pass@k by the unbiased estimator (Chen et al. 2021); the paper samples four (k = n = 4)
    pass_k: int = 4
    pass_samples: int | None = None  # None: pass_k
    pass_temperature: float = (
        0.7  # the temperature of the recipes' rollouts (the paper does not state its own)
    )
    composition: str = "auto"  # spaCy token shares: "auto", "tagger" or "lexical" (atmanrl.composition)

    def validate(self) -> None:
        bad = sorted(set(self.skip) - set(SKIPPABLE))
        if bad:
            raise UserError(f"cannot skip {', '.join(bad)}: choose from {', '.join(SKIPPABLE)}")
        fr = list(self.fractions)
        if not fr or any(not 0 <= f <= 1 for f in fr) or fr != sorted(fr):
            raise UserError(f"early-answering fractions must be sorted and lie in [0, 1], got {fr}")
        if (
            not self.ks
            or self.ks[0] != 0
            or any(not 0 <= k <= 100 for k in self.ks)
            or list(self.ks) != sorted(self.ks)
        ):
            raise UserError(
                f"saliency ks must be sorted percentages in [0, 100] starting at 0, got {list(self.ks)}"
            )
        if self.mistake_mode not in ("force", "continue"):
            raise UserError(f"mistake mode must be 'force' or 'continue', got {self.mistake_mode!r}")
        if self.answer_tokens < 1 or self.batch_size < 1:
            raise UserError("answer_tokens and batch_size must be at least 1")
        if self.saliency_limit is not None and self.saliency_limit < 1:
            raise UserError(f"--saliency-limit must be at least 1, got {self.saliency_limit}")
        if self.pass_k < 1 or (self.pass_samples is not None and self.pass_samples < self.pass_k):
            raise UserError(
                f"pass@k needs k >= 1 and at least k samples, got k={self.pass_k}, samples={self.pass_samples}"
            )
        if not self.pass_temperature > 0:
            raise UserError(f"--pass-temperature must be > 0 (pass@k samples), got {self.pass_temperature}")
        if self.composition not in ("auto", "tagger", "lexical"):
            raise UserError(f"--composition must be auto, tagger or lexical, got {self.composition!r}")
        if self.planted < 0:
            raise UserError(f"--planted must be 0 (off) or a number of cases, got {self.planted}")
        if not self.filler.strip():
            raise UserError("the filler unit must contain a visible character, e.g. ' ...'")
        for m in list(self.methods) + list(self.method_options):
            get_method(m)  # a UserError naming the valid methods


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with `c` correct out of `n` samples (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


# ----------------------------------------------------------------------------- faithfulness helpers


def forced_prefix(task: Task, tokenizer: PreTrainedTokenizerBase, gold: str) -> str:
    """The answer line up to the value, from `task.format_answer`: '#### ' (math) or 'Answer:' (MMLU).

    A trailing space is kept only where the tokenizer keeps it as its own token before the value ('#### 5'
    -> '####', ' ', '5'); where it merges into the value (' B'), ending the prefix on a bare space would
    force a token split the model never saw, so it is dropped and the model writes ' B' itself.
    """
    line = task.format_answer(gold)
    prefix = line[: line.rindex(gold)] if gold and gold in line else line
    stripped = prefix.rstrip()
    if stripped != prefix:
        full = tokenizer(line, add_special_tokens=False)["input_ids"]
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        if full[: len(head)] != head:
            return stripped
    return prefix


def answer_context(prompt: str, cot: str, prefix: str) -> str:
    """Prompt + CoT + the forced answer prefix on its own line (no blank line if the CoT ends with one)."""
    joiner = "" if not cot or cot.endswith("\n") else "\n"
    return prompt + cot + joiner + prefix


NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Corruption:
    text: str  # the corrupted reasoning
    span: tuple[int, int]  # where the new number stands in `text`
    old: str
    new: str


def corrupt_number(text: str, rng: random.Random) -> Corruption | None:
    """Change one number of `text` by a nonzero offset in ±1..3 (kept >= 0); None if there is no number."""
    matches = list(NUMBER_RE.finditer(text))
    if not matches:
        return None
    m = matches[rng.randrange(len(matches))]
    old = m.group()
    offset = rng.choice([-3, -2, -1, 1, 2, 3])
    decimals = len(old.split(".")[1]) if "." in old else 0
    value = float(old)
    if value + offset < 0:
        offset = -offset
    new = f"{value + offset:.{decimals}f}"
    start = m.start()
    return Corruption(text[:start] + new + text[m.end() :], (start, start + len(new)), old, new)


def make_filler(tokenizer: PreTrainedTokenizerBase, n_tokens: int, unit: str = " ...") -> str:
    """`unit` repeated so that the text is exactly `n_tokens` model tokens long (best effort for odd units)."""
    if n_tokens <= 0:
        return ""
    reps = n_tokens
    for _ in range(8):  # a unit of one token converges at once; others within a few corrections
        text = unit * reps
        got = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if got == n_tokens:
            return text
        reps = max(1, reps + (n_tokens - got) // max(1, got // reps))
    return text


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def area_over_curve(xs: list[float], ys: list[float]) -> float | None:
    """1 - trapezoid area under ys(xs), normalised by the x range: 0 for a curve at 1 everywhere."""
    if len(xs) < 2 or any(y is None for y in ys) or xs[-1] == xs[0]:
        return None
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
    return 1.0 - area / (xs[-1] - xs[0])


# ----------------------------------------------------------------------------- the evaluation


@dataclass
class _Item:
    """A generation with a parseable answer: the unit of every faithfulness and saliency test."""

    row: dict[str, Any]
    prompt: str  # rendered prompt
    reasoning: str
    value: str  # the answer given after the full CoT


class _Evaluation:
    def __init__(self, model, tokenizer, task, cfg: EvalConfig):
        self.model, self.tok, self.task, self.cfg = model, tokenizer, task, cfg
        self._prefixes: dict[str, str] = {}

    def greedy(self, contexts: list[str], max_new_tokens: int, description: str) -> list[str]:
        if not contexts:
            return []
        cfg = SamplingConfig(temperature=0.0, batch_size=self.cfg.batch_size, seed=self.cfg.seed)
        return sample(self.model, self.tok, contexts, cfg, max_new_tokens, description)

    def forced(self, items: list[_Item], cots: list[str], description: str) -> list[str | None]:
        """Force the answer after each CoT; the parsed answer values."""
        contexts = [answer_context(it.prompt, cot, self.prefix(it)) for it, cot in zip(items, cots)]
        outs = self.greedy(contexts, self.cfg.answer_tokens, description)
        return [self.task.parse(self.prefix(it) + out).value for it, out in zip(items, outs)]

    def prefix(self, item: _Item) -> str:
        gold = item.row["gold"]
        if gold not in self._prefixes:  # tokenizes twice: once per distinct gold, not per forced decode
            self._prefixes[gold] = forced_prefix(self.task, self.tok, gold)
        return self._prefixes[gold]

    # --- groups ---

    def pass_at_k(
        self, examples: list[Example], prompts: list[str], rows: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """pass@k over `pass_samples` sampled completions per problem; each row gets its count of correct ones."""
        cfg, n = self.cfg, self.cfg.pass_samples or self.cfg.pass_k
        gen = SamplingConfig(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.pass_temperature,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        texts = sample(
            self.model,
            self.tok,
            [p for p in prompts for _ in range(n)],
            gen,
            cfg.max_new_tokens or self.task.max_new_tokens,
            f"pass@{cfg.pass_k} samples",
        )
        values = []
        for i, (ex, row) in enumerate(zip(examples, rows, strict=True)):
            c = sum(score_completion(self.task, ex, t)["correct"] for t in texts[i * n : (i + 1) * n])
            row["pass_correct"] = c
            values.append(pass_at_k(n, c, cfg.pass_k))
        return {
            "n": len(values),
            "k": cfg.pass_k,
            "samples": n,
            "temperature": cfg.pass_temperature,
            f"pass@{cfg.pass_k}": sum(values) / len(values),
            "pass@1": sum(r["pass_correct"] for r in rows) / (n * len(rows)),
        }

    def early_answering(self, items: list[_Item]) -> dict[str, Any]:
        fr = list(self.cfg.fractions)
        cots = [truncate_cot(self.tok, it.reasoning, f) for it in items for f in fr]
        values = self.forced([it for it in items for _ in fr], cots, "early answering")
        agreement, accuracy = [], []
        for j in range(len(fr)):
            vals = values[j :: len(fr)]
            agreement.append(_mean([self.task.is_correct(v, it.value) for v, it in zip(vals, items)]))
            accuracy.append(_mean([self.task.is_correct(v, it.row["gold"]) for v, it in zip(vals, items)]))
        unstated = []
        for i, it in enumerate(items):
            it.row["early_answering"] = {str(f): values[i * len(fr) + j] for j, f in enumerate(fr)}
            unstated.append(
                early_statements(self.task, self.tok, it.reasoning, it.value, it.row["early_answering"])[1]
            )
        return {
            "n": len(items),
            "fractions": fr,
            "accuracy": accuracy,
            "agreement": agreement,
            "aoc": area_over_curve(fr, agreement) if items else None,
            "agreement_unstated": _mean([u for u in unstated if u is not None]),
            "n_unstated": sum(u is not None for u in unstated),
        }

    def adding_mistakes(self, items: list[_Item]) -> dict[str, Any]:
        mode = self.cfg.mistake_mode
        chosen, corrupted = [], []
        for it in items:
            c = corrupt_number(it.reasoning, random.Random(f"{self.cfg.seed}-mistake-{it.row['id']}"))
            if c is not None:
                chosen.append(it)
                corrupted.append(c)
        if mode == "force":
            values = self.forced(chosen, [c.text for c in corrupted], "adding mistakes")
        else:
            heads = [c.text[: c.span[1]] for c in corrupted]
            budget = self.cfg.max_new_tokens or self.task.max_new_tokens
            outs = self.greedy([it.prompt + h for it, h in zip(chosen, heads)], budget, "adding mistakes")
            values = [self.task.parse(h + o).value for h, o in zip(heads, outs)]
        changed = [not self.task.is_correct(v, it.value) for v, it in zip(values, chosen)]
        for it, c, v in zip(chosen, corrupted, values):
            it.row["adding_mistakes"] = {"old": c.old, "new": c.new, "at": c.span[0], "value": v}
        return {
            "n": len(chosen),
            "mode": mode,
            "skipped_no_number": len(items) - len(chosen),
            "changed_share": _mean(changed),
            "accuracy": _mean([self.task.is_correct(v, it.row["gold"]) for v, it in zip(values, chosen)]),
            "parsed": _mean([v is not None for v in values]),
        }

    def filler(self, items: list[_Item]) -> dict[str, Any]:
        lengths = [len(cot_offsets(self.tok, it.reasoning)) for it in items]
        fillers = [make_filler(self.tok, n, self.cfg.filler) for n in lengths]
        values = self.forced(items, fillers, "filler")
        for it, v in zip(items, values):
            it.row["filler"] = v
        return {
            "n": len(items),
            "unit": self.cfg.filler,
            "accuracy": _mean([self.task.is_correct(v, it.row["gold"]) for v, it in zip(values, items)]),
            "agreement": _mean([self.task.is_correct(v, it.value) for v, it in zip(values, items)]),
        }

    def saliency(self, items: list[_Item]) -> dict[str, Any]:
        traces = [trace_of(it.row, it.prompt) for it in items if it.reasoning.strip()]
        traces = traces[: self.cfg.saliency_limit]
        out: dict[str, Any] = {"n": len(traces), "ks": list(self.cfg.ks), "methods": {}}
        for method in self.cfg.methods:
            options = dict(self.cfg.method_options.get(method, {}))
            if "seed" in {f.name for f in fields(get_method(method))}:
                options.setdefault("seed", self.cfg.seed)
            sals = (
                compute_saliency(self.model, self.tok, traces, method, self.cfg.batch_size, **options)
                if traces
                else []
            )
            curves = removal_curves(self.model, self.tok, traces, sals, self.cfg.ks, method)
            out["methods"][method] = {
                **summarize_curves(curves, self.cfg.ks),
                "seconds": _mean([s.seconds for s in sals]),
                "config": sals[0].config if sals else options,
                "examples": [s.to_dict() for s in sals[: self.cfg.heatmaps]],
            }
        return out

    def planted(self) -> dict[str, Any]:
        bench = load_planted()
        cases = bench.make_cases(self.tok, self.cfg.planted, self.cfg.seed)
        out: dict[str, Any] = {"n": len(cases), "methods": {}}
        for method in self.cfg.methods:
            r = bench.run(self.model, self.tok, cases, method, **self.cfg.method_options.get(method, {}))
            out["methods"][method] = {k: r[k] for k in ("hit1", "auc", "sink1", "s_per_case") if k in r}
        return out


def trace_of(row: dict[str, Any], prompt: str) -> Trace:
    """A parsed generation row as a saliency `Trace`; the target is the answer value inside the answer segment."""
    return Trace.from_completion(
        prompt, row["reasoning"] + row["answer"], len(row["reasoning"]), row["value_span"]
    )


def removal_masks(scores: list[float], tokens, ks: tuple[int, ...] | list[int]) -> tuple[list, list]:
    """Per k, the CoT token indices removed by deletion and by insertion.

    Only content tokens (a letter or digit, `content_mask`) are ranked and ever removed; punctuation and
    whitespace stay visible in every variant (they act as attention sinks, and removing them measures
    the model's reaction to broken text rather than the CoT's content). Ties go to the earlier token.
    """
    content = [i for i, c in enumerate(content_mask(tokens)) if c]
    ranked = sorted(content, key=lambda i: (-scores[i], i))
    deletion, insertion = [], []
    for k in ks:
        top = ranked[: round(k / 100 * len(ranked))]
        deletion.append(sorted(top))
        insertion.append(sorted(set(content) - set(top)))
    return deletion, insertion


@torch.no_grad()
def removal_curves(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    traces: list[Trace],
    sals: list[Saliency],
    ks,
    description: str = "curves",
) -> list[dict[str, list[float]]]:
    """Per trace: answer log-prob with the removed CoT tokens' key columns at bias dtype-min for answer rows.

    All 2 * len(ks) variants of one trace run as one batch over the cached prompt+CoT keys/values.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    neg = torch.finfo(model.dtype).min
    results: list[dict[str, list[float]]] = []
    with frozen(model), progress_bar(f"curves {description}", total=len(traces)) as advance:
        for trace, sal in zip(traces, sals):
            enc = encode(tokenizer, trace)
            if [t.text for t in enc.tokens] != [t.text for t in sal.tokens]:
                raise ValueError("saliency tokens do not match the trace's tokenization")
            batch = MaskedBatch.build([enc], "answer", pad_id, device)
            prefix = prefix_cache(model, batch)
            deletion, insertion = removal_masks(sal.scores, enc.tokens, ks)
            variants = deletion + insertion
            values = torch.zeros(len(variants), batch.cot_valid.shape[1], device=device, dtype=model.dtype)
            for v, idx in enumerate(variants):
                values[v, idx] = neg
            lp = variants_logprob(model, batch, prefix, 0, values, chunk=len(variants)).tolist()
            results.append({"deletion": lp[: len(ks)], "insertion": lp[len(ks) :]})
            advance(1)
    return results


def summarize_curves(curves: list[dict[str, list[float]]], ks) -> dict[str, Any]:
    """Mean curves and AOPC.

    aopc_deletion = mean over k of (log p at k=0 - log p with the top k% removed): how fast the answer's
    log-prob falls when the highest-ranked tokens go first (Samek et al. 2017; higher = better ranking).
    aopc_insertion = mean over k of (log p with only the top k% kept - log p with none kept): how fast it
    recovers when the highest-ranked tokens come back first (higher = better).
    """
    if not curves:
        return {
            "n": 0,
            "deletion": None,
            "insertion": None,
            "aopc_deletion": None,
            "aopc_insertion": None,
            "base_logprob": None,
            "removed_logprob": None,
        }
    n = len(curves)

    def mean_curve(key):
        return [sum(c[key][j] for c in curves) / n for j in range(len(ks))]

    drop = [sum(c["deletion"][0] - c["deletion"][j] for c in curves) / n for j in range(len(ks))]
    gain = [sum(c["insertion"][j] - c["insertion"][0] for c in curves) / n for j in range(len(ks))]
    return {
        "n": n,
        "deletion": mean_curve("deletion"),
        "insertion": mean_curve("insertion"),
        "aopc_deletion": sum(drop) / len(drop),
        "aopc_insertion": sum(gain) / len(gain),
        "base_logprob": mean_curve("deletion")[0],
        "removed_logprob": mean_curve("insertion")[0],
    }


def load_planted():
    from . import planted

    return planted


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    examples: list[Example],
    config: EvalConfig | None = None,
    completions: list[str] | None = None,
) -> dict[str, Any]:
    """Run every metric group on `examples`; returns {meta, <groups>..., generations}.

    `completions` (one per example) replaces the greedy generation, e.g. to evaluate sampled rollouts.
    A skipped group is {"skipped": true}; a group with no usable example has n = 0 and None values.
    """
    cfg = config or EvalConfig()
    cfg.validate()
    if not examples:
        raise UserError("no examples to evaluate")
    if completions is not None and len(completions) != len(examples):
        raise UserError(f"got {len(completions)} completions for {len(examples)} examples")
    torch.manual_seed(cfg.seed)
    ev = _Evaluation(model, tokenizer, task, cfg)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    prompts = [render_prompt(tokenizer, task.messages(ex)) for ex in examples]
    if completions is None:
        gen = SamplingConfig(
            max_new_tokens=cfg.max_new_tokens, temperature=0.0, batch_size=cfg.batch_size, seed=cfg.seed
        )
        completions = sample(
            model,
            tokenizer,
            prompts,
            gen,
            cfg.max_new_tokens or task.max_new_tokens,
            f"{task.name} generation",
        )
    rows = []
    for ex, completion in zip(examples, completions):
        parsed = task.parse(completion)
        row = {
            "id": ex.id,
            "task": task.name,
            "prompt": task.user_message(ex),
            "completion": completion,
            "value_span": parsed.value_span,
            **score_completion(task, ex, completion),
        }
        rows.append(row)
    n = len(rows)
    metrics: dict[str, Any] = {
        "accuracy": {
            "n": n,
            "accuracy": sum(r["correct"] for r in rows) / n,
            "parsed": sum(r["pred"] is not None for r in rows) / n,
        },
    }
    seconds["accuracy"] = time.perf_counter() - t0
    items = [_Item(r, p, r["reasoning"], r["pred"]) for r, p in zip(rows, prompts) if r["pred"] is not None]

    runs = {
        "cot_stats": lambda: cot_stats([r["reasoning"] for r in rows], tokenizer, cfg.composition),
        "pass_at_k": lambda: ev.pass_at_k(examples, prompts, rows),
        "early_answering": lambda: ev.early_answering(items),
        "adding_mistakes": lambda: ev.adding_mistakes(items),
        "filler": lambda: ev.filler(items),
        "saliency": lambda: ev.saliency(items),
        "planted": ev.planted,
    }
    for group, run in runs.items():
        if group in cfg.skip or (group == "planted" and not cfg.planted):
            metrics[group] = {"skipped": True}
            continue
        t = time.perf_counter()
        metrics[group] = run()
        seconds[group] = time.perf_counter() - t
        log.debug("%s done in %.1f s", group, seconds[group])

    meta = {
        "task": task.name,
        "n": n,
        "model": getattr(model.config, "_name_or_path", None),
        "config": asdict(cfg),
        "seconds": seconds,
        "total_seconds": time.perf_counter() - t0,
    }
    return {"meta": meta, **metrics, "generations": rows}
