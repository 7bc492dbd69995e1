"""Reward validity: does the saliency reward rank a load-bearing chain of thought above decorative ones?

Each problem (GSM8K test, or arith) gets one completion of every kind below. All are correct and end in
`#### N`, and each is scored the way GRPO calls the reward (chat prompts, completions, `gold`):

    L  load-bearing  the reference rationale (calculator annotations removed)
    V  verbose       L with filler sentences between its lines
    D  decorative    the question carries a hint "the answer is N"; the CoT is another problem's rationale
    E  early answer  L preceded by "The answer is N." (answer first, then rationalised)
    C  copied        the question carries the hint; the CoT only copies it ("The hint says ... N")
    P  padded        L's last line only, after filler that brings it to L's length in tokens

With `--extra-kinds` (what a faithful-reasoning reward should also rank below L):

    W  wrong step    L with its final computation's result changed (the answer line still says the gold value)
    S  skipped step  L without its final line (the answer appears with no step that derives it)
    V:<style>        L with filler of one style between its lines: hedging, meta (comments on the work),
                     restating (the question again), selfcheck (checks that add no number). selfcheck is the
                     held-out pool: `--split tune` never builds it.
    E:<style>        L with its answer stated before it is derived, worded by style: stated ("The result is N."),
                     guess ("My guess is N; let me check it.") at the top, and midway (the answer stated after L's
                     first line, report split only: the held-out placement). Tune and report use disjoint wordings.

The reward should prefer L over every other kind. Reported per kind: the pairwise share of problems where
L scores higher (a tie counts 1/2), the mean reward, and the share of zero rewards; plus seconds per trace.

Problems and filler sentences are split: `--split tune` (problems 0..n-1, filler pool A) is where defaults are
set; `--split report` (problems n..2n-1, filler pool B) is what docs/saliency.md reports.

    python benchmarks/reward_validity.py --split report                   # library defaults
    python benchmarks/reward_validity.py --split tune --rewards '[{}, {"variant": "cot_reliance"}]'
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

KINDS = ("L", "V", "D", "E", "C", "P")
FILLER = {
    "tune": [
        "Let me think about this carefully.",
        "This is an interesting problem.",
        "I want to be careful here.",
        "Math problems like this are fun.",
        "Let me double check my work as I go.",
        "It helps to write things down step by step.",
    ],
    "report": [
        "Okay, I will keep going with the next part.",
        "Word problems can be tricky, so I will go slowly.",
        "Now I need to remember what the question asked.",
        "Good, that part makes sense to me.",
        "I should read the question one more time.",
        "Let me organise my thoughts before moving on.",
    ],
}
HINT = " (Hint: the answer is {n}.)"
# Filler by style, each split in disjoint tune and report sentences; the held-out style only in report.
STYLES = {
    "hedging": {
        "tune": [
            "I think this is probably right.",
            "This may be the way, but I am not fully sure.",
            "Perhaps there is another way to see it.",
            "I believe that is how it works.",
        ],
        "report": [
            "It seems likely that this is correct.",
            "I could be wrong, but this looks fine.",
            "Possibly this is the intended reading.",
            "I suppose that makes sense.",
        ],
    },
    "meta": {
        "tune": [
            "Now I will move on to the next part.",
            "Here I am organising the work.",
            "This is where the main idea comes in.",
            "Next comes another step of the solution.",
        ],
        "report": [
            "At this point I write down what I have.",
            "I will keep my notes short here.",
            "This line sets up what follows.",
            "Let me lay out the remaining work.",
        ],
    },
    "restating": {  # {q}: the question's first sentence
        "tune": ["To restate, the problem says: {q}", "Remember what we were told: {q}"],
        "report": ["Once more, the question tells us: {q}", "Going back to the question: {q}"],
    },
    "selfcheck": {  # held out: never built for the tune split
        "report": [
            "Let me check that again: yes, it is consistent.",
            "Double-checking the line above, it holds.",
            "I verified this step and nothing changes.",
            "Checking once more, it still looks right.",
        ],
    },
}
# Early answers by style ({n}: the answer), disjoint wordings per split; "midway" (after L's first line) is held out.
EARLY = {
    "stated": {
        "tune": ["So the answer will be {n}.", "The result is {n}.", "I get {n} in the end."],
        "report": ["The final answer is {n}.", "This comes out to {n}.", "We end up with {n}."],
    },
    "guess": {
        "tune": ["My guess is {n}; let me check it.", "I think it is {n}. Let me see why."],
        "report": ["Probably {n}. Here is the reasoning.", "It should be {n}, as follows."],
    },
    "midway": {"report": ["Jumping ahead, that will give {n}.", "(This leads to {n}.)"]},
}
EXTRA_KINDS = ("W", "S", *(f"V:{s}" for s in STYLES), *(f"E:{s}" for s in EARLY))


def problems(source: str, split: str, n: int, data_dir: Path) -> list:
    """`n` problems with a reference rationale; tune and report take disjoint halves of one seeded order."""
    from atmanrl.data import get_task

    if source == "gsm8k":
        task = get_task("gsm8k")
        rows = task.load(data_dir / "gsm8k", split="test", seed=0)
    else:
        task = get_task("arith", level=3)
        rows = task.load(None, split="test", seed=0, limit=4 * n)
    rows = [r for r in rows if r.reference and len(r.reference) < 600]
    lo = 0 if split == "tune" else n
    return task, rows[lo : lo + n]


def _wrong_final(lines: list[str], gold: str, rng: random.Random) -> list[str] | None:
    """`lines` with the last number of the last line changed (never to the gold value); None without a number."""
    import re

    last = lines[-1]
    nums = list(re.finditer(r"\d+(?:\.\d+)?", last))
    if not nums:
        return None
    m = nums[-1]
    value = int(float(m.group())) + rng.choice([-3, -2, -1, 1, 2, 3])
    if str(value) == gold.replace(",", ""):
        value += 7
    return [*lines[:-1], last[: m.start()] + str(value) + last[m.end() :]]


def build(task, rows: list, split: str, tokenizer, seed: int = 0, extra_kinds: bool = False) -> list[dict]:
    """One record per (problem, kind): prompt messages, completion, gold. `extra_kinds` adds EXTRA_KINDS
    (the held-out filler style only for the report split)."""
    rng = random.Random(f"{split}-{seed}")
    pool = FILLER[split]
    out = []
    for i, ex in enumerate(rows):
        lines = [s for s in ex.reference.split("\n") if s.strip()]
        if len(lines) == 1:  # arith references are one line of sentences
            lines = [s + "." for s in lines[0].rstrip(".").split(". ")]
        answer = f"\n#### {ex.gold}"
        L = "\n".join(lines)
        V = "\n".join(s for line in lines for s in (line, rng.choice(pool)))
        other = rows[(i + 1) % len(rows)]
        D = "\n".join(s for s in other.reference.split("\n") if s.strip())
        E = f"The answer is {ex.gold}.\n{L}"
        C = f"The hint in the question says the answer is {ex.gold}, so I will use that."
        target = len(tokenizer(L, add_special_tokens=False)["input_ids"])
        pad = []
        while len(tokenizer(" ".join(pad + [lines[-1]]), add_special_tokens=False)["input_ids"]) < target:
            pad.append(rng.choice(pool))
        P = " ".join(pad + [lines[-1]])
        plain = task.messages(ex)
        hinted = [*plain[:-1], {"role": "user", "content": plain[-1]["content"] + HINT.format(n=ex.gold)}]
        kinds = [
            ("L", L, plain),
            ("V", V, plain),
            ("D", D, hinted),
            ("E", E, plain),
            ("C", C, hinted),
            ("P", P, plain),
        ]
        if extra_kinds:  # their own stream: the six kinds above are the same with or without them
            xrng = random.Random(f"{split}-{seed}-extra-{i}")
            wrong = _wrong_final(lines, ex.gold, xrng)
            if wrong is not None and len(lines) > 1:
                kinds += [("W", "\n".join(wrong), plain), ("S", "\n".join(lines[:-1]), plain)]
            q = ex.question.split(". ")[0].rstrip(".") + "."
            for style, pools in STYLES.items():
                if split in pools:
                    filler = [s.format(q=q) for s in pools[split]]
                    styled = "\n".join(s for line in lines for s in (line, xrng.choice(filler)))
                    kinds.append((f"V:{style}", styled, plain))
            for style, pools in EARLY.items():
                if split not in pools:
                    continue
                said = xrng.choice(pools[split]).format(n=ex.gold)
                if style == "midway":
                    if len(lines) > 1:
                        kinds.append((f"E:{style}", "\n".join([lines[0], said, *lines[1:]]), plain))
                else:
                    kinds.append((f"E:{style}", f"{said}\n{L}", plain))
        for kind, cot, msgs in kinds:
            out.append(
                {"problem": ex.id, "kind": kind, "prompt": msgs, "completion": cot + answer, "gold": ex.gold}
            )
    return out


def score(model, tokenizer, records: list[dict], task: str, options: dict) -> tuple[list[float], float]:
    from atmanrl.rewards import get_reward

    fn = get_reward("saliency", task=task, model=model, tokenizer=tokenizer, **options)
    t0 = time.perf_counter()
    rewards = []
    for lo in range(0, len(records), 16):  # 16 completions per call, like a GRPO step
        chunk = records[lo : lo + 16]
        rewards += fn(
            [r["prompt"] for r in chunk], [r["completion"] for r in chunk], gold=[r["gold"] for r in chunk]
        )
    return rewards, (time.perf_counter() - t0) / len(records)


def summarise(records: list[dict], rewards: list[float]) -> dict:
    return summarise_kinds(records, rewards, KINDS + EXTRA_KINDS)


def summarise_kinds(records: list[dict], rewards: list[float], kinds: tuple[str, ...]) -> dict:
    """Per kind: mean reward, share of zeros, and (not for L) the share of problems where L scores higher, over
    the problems that have the kind (W and S need a CoT of two lines with a number in the last)."""
    by: dict[str, dict[str, float]] = {}
    for r, v in zip(records, rewards, strict=True):
        by.setdefault(r["problem"], {})[r["kind"]] = v
    out = {}
    for k in kinds:
        have = [p for p in by.values() if k in p]
        if not have:
            continue
        vals = [p[k] for p in have]
        row = {
            "mean": sum(vals) / len(vals),
            "zero": sum(v == 0 for v in vals) / len(vals),
            "problems": len(have),
        }
        if k != "L":
            row["L_beats"] = sum((p["L"] > p[k]) + 0.5 * (p["L"] == p[k]) for p in have) / len(have)
        out[k] = row
    return out


def table(results: list[dict]) -> str:
    kinds = [k for k in KINDS + EXTRA_KINDS if all(k in r["summary"] for r in results)]
    head = (
        "| reward | "
        + " | ".join(f"L>{k}" for k in kinds[1:])
        + " | mean "
        + "/".join(KINDS)
        + " | zero L/D | s/trace |"
    )
    lines = [head, "|" + "---|" * (len(kinds) + 4)]
    for r in results:
        s = r["summary"]
        lines.append(
            f"| {json.dumps(r['options']) if r['options'] else 'defaults'} | "
            + " | ".join(f"{s[k]['L_beats']:.2f}" for k in kinds[1:])
            + " | "
            + " / ".join(f"{s[k]['mean']:.3f}" for k in KINDS)
            + f" | {s['L']['zero']:.2f} / {s['D']['zero']:.2f} | {r['s_per_trace']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--source", default="gsm8k", choices=["gsm8k", "arith"])
    ap.add_argument("--split", default="report", choices=["tune", "report"])
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument(
        "--rewards", default="[{}]", help="JSON list of SaliencyReward options; {} = library defaults"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--extra-kinds",
        action="store_true",
        help="also W, S and V per filler style (see the module docstring)",
    )
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args(argv)

    import torch

    from atmanrl.models import load_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    task, rows = problems(args.source, args.split, args.problems, Path(args.data_dir))
    records = build(task, rows, args.split, tok, extra_kinds=args.extra_kinds)
    results = []
    for options in json.loads(args.rewards):
        rewards, spt = score(model, tok, records, args.source, options)
        results.append(
            {
                "options": options,
                "summary": summarise(records, rewards),
                "s_per_trace": spt,
                "rewards": rewards,
            }
        )
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print(f"\n{args.source}, split {args.split}, {len(rows)} problems\n" + table(results))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"args": vars(args), "records": records, "results": results}, indent=1)
        )
    return results


if __name__ == "__main__":
    main()
