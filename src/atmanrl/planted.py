"""Planted-distractor cases: one relevant computation sentence among distractors, in template families.

Each case is a synthetic arithmetic rollout: a question, a CoT with exactly ONE relevant computation sentence
("7 * 6 = 42.") hidden among distractor sentences (some with numbers that are not the answer), and the answer
segment "\\n#### 42". Metrics, over content tokens only (a letter or digit; see `content_mask`):
- hit@1: the top-scored content token lies in the relevant sentence;
- AUC: ROC-AUC of the scores, relevant vs distractor content tokens;
- sink@1: share of cases whose top token over ALL tokens is punctuation/whitespace (sentence ends act as sinks);
- s/case: wall time per case.

Template families (FAMILIES) are split: defaults are set on the "tune" families; "heldout" is reported.
`benchmarks/planted.py` is the command line; `atmanrl eval --planted N` runs the original family.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from .errors import UserError
from .saliency import Saliency, Trace, compute_saliency, content_mask

NAMES = ["Sam", "Mia", "Leo", "Ava", "Noah", "Zoe", "Eli", "Ivy", "Max", "Lily", "Owen", "Ruby"]
ITEMS = [
    ("boxes", "pens"),
    ("bags", "apples"),
    ("shelves", "books"),
    ("trays", "cookies"),
    ("packs", "cards"),
    ("crates", "bottles"),
]


@dataclass(frozen=True)
class Family:
    """One template family: the question, the relevant sentence, and the distractor sentences.

    Templates see {n} (name), {a}, {b}, {ans}, {box}, {item}; distractors also {x}, {y} (numbers that are
    never a number of the computation) and {w} (a word).
    """

    split: str  # "tune" (defaults are set on these), "heldout" or "words" (reported only)
    question: str
    relevant: str
    distractors: tuple[str, ...]
    op: str = "*"


SHOP = (
    "The shop had {x} {w} on the shelf.",
    "{n} paid with a note and got change.",
    "A {w} costs {y} cents there.",
    "{n} counted the {w} twice to be sure.",
    "The trip home took {x} minutes.",
    "Everyone at the shop was friendly.",
    "{n} keeps the {item} in a {w}.",
    "Last week {n} had {y} {w}.",
)
STORY = (
    "The friend lives {x} houses away.",
    "{n} also owns a {w}.",
    "It rained for {y} hours that day.",
    "The {w} in the garden was green.",
    "{n} is in grade {x} at school.",
    "They met at the {w} near the park.",
    "The clock showed {y} minutes past noon.",
    "Nobody else wanted a {w}.",
)
LABELS = (
    "The {box} are painted {w}.",
    "A label on one says number {x}.",
    "{n} stacked them by the door.",
    "The room is {y} steps long.",
    "Someone left a {w} on top.",
    "The delivery came at {x} o'clock.",
    "{n} hummed a song while working.",
    "Only {y} of the lights were on.",
)
SCHOOL = (
    "The bell rang {x} times before class.",
    "{n} sat next to the {w}.",
    "The teacher wrote {y} words on the board.",
    "Lunch was at half past {x}.",
    "{n} forgot a {w} at home.",
    "The hallway smelled of fresh paint.",
    "Bus number {y} was late again.",
    "A {w} hung above the door.",
)
PICK_Q = "{n} picked {a} {item} in the morning and {b} in the afternoon. How many {item} did {n} pick?"
ADD_Q = "{n} has {a} {item} and buys {b} more. How many {item} does {n} have now?"
SUB_Q = "{n} had {a} {item} and gave {b} to a friend. How many {item} are left?"
MUL_Q = "There are {a} {box} and each holds {b} {item}. How many {item} are there in all?"

FAMILIES: dict[str, Family] = {
    # tune: the original 12-case benchmark ("a * b = ans." among small talk), a sum among shop sentences, and a
    # sum with its unit among school sentences.
    "mul_smalltalk": Family(
        "tune",
        "{n} has {a} {box} with {b} {item} in each. How many {item} does {n} have?",
        "{a} * {b} = {ans}.",
        (
            "{n} likes the color blue.",
            "The store opens at {x} in the morning.",
            "{n} walked {x} blocks to get there.",
            "It was a sunny day.",
            "{n}'s friend is {y} years old.",
            "The weather was nice and warm.",
            "There were {x} people waiting in line.",
            "{n} wore a red hat.",
        ),
    ),
    "add_shop": Family("tune", ADD_Q, "{a} + {b} = {ans}.", SHOP, "+"),
    # added in 0.3 (after the held-out families were first reported): more variety to tune on, new templates only
    "pick_school": Family("tune", PICK_Q, "{a} + {b} = {ans} {item}.", SCHOOL, "+"),
    # held out: other questions, operations and distractor templates (sentences with a word and with a number).
    "sub_story": Family("heldout", SUB_Q, "{a} - {b} = {ans}.", STORY, "-"),
    "mul_labels": Family("heldout", MUL_Q, "{a} * {b} = {ans}.", LABELS),
    # words: the relevant sentence is mostly words; the answer needs only its result, so sentence-level AUC is
    # bounded for every token-level method (reported separately, never tuned on).
    "add_words": Family("words", ADD_Q, "Adding {b} to {a} gives {ans} {item}.", SHOP, "+"),
    "sub_words": Family(
        "words", SUB_Q, "After giving away {b}, {n} has {a} - {b} = {ans} {item} left.", STORY, "-"
    ),
    "mul_words": Family("words", MUL_Q, "{a} groups of {b} make {ans} {item} in all.", LABELS),
}
WORDS = ["lamp", "kite", "blanket", "bucket", "ribbon", "candle", "basket", "drum"]


@dataclass
class Case:
    trace: Trace
    relevant: tuple[int, int]  # char span of the relevant sentence in trace.reasoning
    answer: int
    family: str = "mul_smalltalk"


def families_for(split: str) -> list[str]:
    if split == "all":
        return list(FAMILIES)
    names = [k for k, f in FAMILIES.items() if f.split == split]
    if not names:
        raise UserError(f"planted split must be tune, heldout, words or all, got {split!r}")
    return names


def make_cases(
    tokenizer, n: int = 12, seed: int = 0, n_distractors: int = 4, families: list[str] | None = None
) -> list[Case]:
    """`n` seeded cases per family (default: the original family only) rendered with the chat template."""
    names = families or ["mul_smalltalk"]
    cases = []
    for fam in names:
        f = FAMILIES[fam]
        rng = random.Random(f"{seed}-{fam}" if fam != "mul_smalltalk" else seed)
        for i in range(n):
            name, (box, item) = NAMES[i % len(NAMES)], ITEMS[rng.randrange(len(ITEMS))]
            a, b = rng.randint(3, 9), rng.randint(3, 9)
            if f.op == "-":
                a, b = a + b + rng.randint(1, 5), b
            ans = a * b if f.op == "*" else a + b if f.op == "+" else a - b
            fmt = dict(n=name, a=a, b=b, ans=ans, box=box, item=item)
            question = f.question.format(**fmt)
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )

            def num(avoid=(a, b, ans), rng=rng):  # distractor numbers never equal a number of the computation
                return str(rng.choice([v for v in range(2, 60) if v not in avoid]))

            sents = [
                s.format(**fmt, x=num(), y=num(), w=rng.choice(WORDS))
                for s in rng.sample(f.distractors, n_distractors)
            ]
            relevant = f.relevant.format(**fmt)
            k = rng.randrange(1, n_distractors + 1)  # never first: the CoT opens with a distractor
            sents.insert(k, relevant)
            reasoning = " ".join(sents)
            start = reasoning.index(relevant)
            answer = f"\n#### {ans}"
            trace = Trace(prompt, reasoning, answer, (answer.index(str(ans)), len(answer)))
            cases.append(Case(trace, (start, start + len(relevant)), ans, fam))
    return cases


def auc(pos: list[float], neg: list[float]) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count 1/2)."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def score_case(
    sal: Saliency, relevant: tuple[int, int], result: tuple[int, int] | None = None
) -> dict[str, float]:
    """hit@1, AUC and sink@1 against the relevant sentence; with `result` (the char span of the computed
    number inside it) also auc_result: the result's tokens against the distractors' content tokens."""
    content = content_mask(sal.tokens)
    inside = [t.start < relevant[1] and t.end > relevant[0] for t in sal.tokens]
    idx = [i for i, c in enumerate(content) if c]
    top = max(idx, key=lambda i: sal.scores[i])
    top_all = max(range(len(sal.scores)), key=lambda i: sal.scores[i])
    return {
        "hit1": float(inside[top]),
        "auc": auc([sal.scores[i] for i in idx if inside[i]], [sal.scores[i] for i in idx if not inside[i]]),
        "sink1": float(not content[top_all]),
        **(
            {}
            if result is None
            else {
                "auc_result": auc(
                    [
                        sal.scores[i]
                        for i in idx
                        if sal.tokens[i].start < result[1] and sal.tokens[i].end > result[0]
                    ],
                    [sal.scores[i] for i in idx if not inside[i]],
                )
            }
        ),
    }


def result_span(case: Case) -> tuple[int, int]:
    """Char span of the computed number (the answer) inside the relevant sentence."""
    lo, hi = case.relevant
    at = case.trace.reasoning.rindex(str(case.answer), lo, hi)
    return at, at + len(str(case.answer))


def run(model, tokenizer, cases: list[Case], method: str, batch_size: int = 12, **config) -> dict:
    t0 = time.perf_counter()
    sals = compute_saliency(
        model, tokenizer, [c.trace for c in cases], method=method, batch_size=batch_size, **config
    )
    seconds = (time.perf_counter() - t0) / len(cases)
    rows = [score_case(s, c.relevant, result_span(c)) for s, c in zip(sals, cases, strict=True)]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    per_family = {}
    for fam in dict.fromkeys(c.family for c in cases):
        sub = [r for r, c in zip(rows, cases, strict=True) if c.family == fam]
        per_family[fam] = {k: sum(r[k] for r in sub) / len(sub) for k in ("hit1", "auc")}
    cases_out = [
        {"family": c.family, "hit1": r["hit1"], "auc": r["auc"]} for r, c in zip(rows, cases, strict=True)
    ]  # per case, so two methods on the same cases compare pairwise (benchmarks/planted.py)
    return {
        "method": method,
        "config": config,
        **mean,
        "s_per_case": seconds,
        "families": per_family,
        "cases": cases_out,
    }
