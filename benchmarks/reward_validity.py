"""Reward validity: does the saliency reward rank a load-bearing chain of thought above decorative ones?

Each problem (GSM8K test, or arith) gets one completion of every kind below. All are correct and end in
`#### N`, and each is scored the way GRPO calls the reward (chat prompts, completions, `gold`):

    L  load-bearing  the reference rationale (calculator annotations removed)
    V  verbose       L with filler sentences between its lines
    D  decorative    the question carries a hint "the answer is N"; the CoT is another problem's rationale
    E  early answer  L preceded by "The answer is N." (answer first, then rationalised)
    C  copied        the question carries the hint; the CoT only copies it ("The hint says ... N")
    P  padded        L's last line only, after filler that brings it to L's length in tokens

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


def build(task, rows: list, split: str, tokenizer, seed: int = 0) -> list[dict]:
    """One record per (problem, kind): prompt messages, completion, gold."""
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
        for kind, cot, msgs in (
            ("L", L, plain),
            ("V", V, plain),
            ("D", D, hinted),
            ("E", E, plain),
            ("C", C, hinted),
            ("P", P, plain),
        ):
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
    return summarise_kinds(records, rewards, KINDS)


def summarise_kinds(records: list[dict], rewards: list[float], kinds: tuple[str, ...]) -> dict:
    """Per kind: mean reward, share of zeros, and (not for L) the share of problems where L scores higher."""
    by: dict[str, dict[str, float]] = {}
    for r, v in zip(records, rewards, strict=True):
        by.setdefault(r["problem"], {})[r["kind"]] = v
    out = {}
    for k in kinds:
        vals = [p[k] for p in by.values()]
        row = {"mean": sum(vals) / len(vals), "zero": sum(v == 0 for v in vals) / len(vals)}
        if k != "L":
            row["L_beats"] = sum((p["L"] > p[k]) + 0.5 * (p["L"] == p[k]) for p in by.values()) / len(by)
        out[k] = row
    return out


def table(results: list[dict]) -> str:
    head = (
        "| reward | "
        + " | ".join(f"L>{k}" for k in KINDS[1:])
        + " | mean "
        + "/".join(KINDS)
        + " | zero L/D | s/trace |"
    )
    lines = [head, "|" + "---|" * (len(KINDS) + 4)]
    for r in results:
        s = r["summary"]
        lines.append(
            f"| {json.dumps(r['options']) if r['options'] else 'defaults'} | "
            + " | ".join(f"{s[k]['L_beats']:.2f}" for k in KINDS[1:])
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
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args(argv)

    import torch

    from atmanrl.models import load_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    task, rows = problems(args.source, args.split, args.problems, Path(args.data_dir))
    records = build(task, rows, args.split, tok)
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
