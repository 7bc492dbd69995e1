"""Planted-distractor benchmark: does a saliency method find the one CoT sentence the answer depends on?

Each case is a synthetic arithmetic rollout: a question, a CoT with exactly ONE relevant computation sentence
("7 * 6 = 42.") hidden among distractor sentences (some with numbers that are not the answer), and the answer
segment "\\n#### 42". Metrics, over content tokens only (a letter or digit; see `content_mask`):
- hit@1: the top-scored content token lies in the relevant sentence;
- AUC: ROC-AUC of the scores, relevant vs distractor content tokens;
- sink@1: share of cases whose top token over ALL tokens is punctuation/whitespace (sentence ends act as sinks);
- s/case: wall time per case.

    python benchmarks/planted.py                           # every method, defaults
    python benchmarks/planted.py --methods learned --config '{"steps": 50, "lam": 0.5}'
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from atmanrl.saliency import METHODS, Saliency, Trace, compute_saliency, content_mask

NAMES = ["Sam", "Mia", "Leo", "Ava", "Noah", "Zoe", "Eli", "Ivy", "Max", "Lily", "Owen", "Ruby"]
ITEMS = [
    ("boxes", "pens"),
    ("bags", "apples"),
    ("shelves", "books"),
    ("trays", "cookies"),
    ("packs", "cards"),
    ("crates", "bottles"),
]
DISTRACTORS = [
    "{n} likes the color blue.",
    "The store opens at {h} in the morning.",
    "{n} walked {d} blocks to get there.",
    "It was a sunny day.",
    "{n}'s friend is {a} years old.",
    "The weather was nice and warm.",
    "There were {p} people waiting in line.",
    "{n} wore a red hat.",
]


@dataclass
class Case:
    trace: Trace
    relevant: tuple[int, int]  # char span of the relevant sentence in trace.reasoning
    answer: int


def make_cases(tokenizer, n: int = 12, seed: int = 0, n_distractors: int = 4) -> list[Case]:
    """`n` seeded cases rendered with the tokenizer's chat template."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        name, (box, item) = NAMES[i % len(NAMES)], ITEMS[rng.randrange(len(ITEMS))]
        a, b = rng.randint(3, 9), rng.randint(3, 9)
        ans = a * b
        question = f"{name} has {a} {box} with {b} {item} in each. How many {item} does {name} have?"
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )

        def num(avoid=(a, b, ans)):  # distractor numbers never equal a number of the computation
            return str(rng.choice([v for v in range(2, 60) if v not in avoid]))

        sents = [
            s.format(n=name, h=num(), d=num(), a=num(), p=num())
            for s in rng.sample(DISTRACTORS, n_distractors)
        ]
        relevant = f"{a} * {b} = {ans}."
        k = rng.randrange(1, n_distractors + 1)  # never first: the CoT opens with a distractor
        sents.insert(k, relevant)
        reasoning = " ".join(sents)
        start = reasoning.index(relevant)
        answer = f"\n#### {ans}"
        trace = Trace(prompt, reasoning, answer, (answer.index(str(ans)), len(answer)))
        cases.append(Case(trace, (start, start + len(relevant)), ans))
    return cases


def auc(pos: list[float], neg: list[float]) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count 1/2)."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def score_case(sal: Saliency, relevant: tuple[int, int]) -> dict[str, float]:
    content = content_mask(sal.tokens)
    inside = [t.start < relevant[1] and t.end > relevant[0] for t in sal.tokens]
    idx = [i for i, c in enumerate(content) if c]
    top = max(idx, key=lambda i: sal.scores[i])
    top_all = max(range(len(sal.scores)), key=lambda i: sal.scores[i])
    return {
        "hit1": float(inside[top]),
        "auc": auc([sal.scores[i] for i in idx if inside[i]], [sal.scores[i] for i in idx if not inside[i]]),
        "sink1": float(not content[top_all]),
    }


def run(model, tokenizer, cases: list[Case], method: str, batch_size: int = 12, **config) -> dict:
    t0 = time.perf_counter()
    sals = compute_saliency(
        model, tokenizer, [c.trace for c in cases], method=method, batch_size=batch_size, **config
    )
    seconds = (time.perf_counter() - t0) / len(cases)
    rows = [score_case(s, c.relevant) for s, c in zip(sals, cases, strict=True)]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    return {"method": method, "config": config, **mean, "s_per_case": seconds}


def table(results: list[dict]) -> str:
    lines = ["| method | config | hit@1 | AUC | sink@1 | s/case |", "|---|---|---|---|---|---|"]
    for r in results:
        cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items()) or "defaults"
        lines.append(
            f"| {r['method']} | {cfg} | {r['hit1']:.2f} | {r['auc']:.2f} | {r['sink1']:.2f} "
            f"| {r['s_per_case']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="{}", help="JSON options for every method named in --methods")
    ap.add_argument("--out", default="planted.json")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); 1 is steadier on a busy machine",
    )
    args = ap.parse_args(argv)

    import torch

    from atmanrl.models import load_model

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    cases = make_cases(tok, args.cases, args.seed)
    config = json.loads(args.config)
    results = []
    for method in args.methods.split(","):
        results.append(run(model, tok, cases, method, **config))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
