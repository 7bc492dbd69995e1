"""What GRPO's groups taught each run of an A/B: the advantages of groups that were all right or all wrong, and,
on arith level 5, which operation the model wrote for each kind of question, in training and on the held-out set.

GRPO learns only from a group whose rewards differ. With TRL's default `scale_rewards: group` the advantages are
divided by the group's std, so in a group whose answers are all right a saliency reward that differs by a few
hundredths between completions becomes an advantage near ±1: this script measures those differences and how
much advantage each run got from them. It reads
the logged rollouts (`log_completions`, OUT/runs/RUN/completions/*.parquet) and the evaluations' generations; no
model is loaded, so it is safe to run beside the A/B.

    python benchmarks/ab_groups.py runs/ab_testbed --out benchmarks/results/ab_testbed_groups.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from statistics import median

from atmanrl.completions import completion_text

# arith level 5 writes "NAME gets N more ITEM." (addition) or "NAME gives away N ITEM." (subtraction)
KINDS = {"gets": "add", "gives away": "sub"}
OPERATOR = re.compile(r"\d+\s*([+\-])\s*\d+")


def kind(question: str) -> str | None:
    found = {k for word, k in KINDS.items() if word in question}
    return found.pop() if len(found) == 1 else None


def operators(text: str) -> set[str]:
    return set(OPERATOR.findall(text))


def right(row: dict) -> float:
    """1.0 for a right answer: `correctness` is 1/0, the published `paper_outcome` 0/-1."""
    if "correctness" in row:
        return float(row["correctness"] == 1.0)
    return float(row.get("paper_outcome") == 0.0)


def _share(rows: list[dict], key: str) -> float | None:
    return sum(r[key] for r in rows) / len(rows) if rows else None


def _written(text: str) -> dict[str, float]:
    ops = operators(text)
    return {"adds": float("+" in ops), "subtracts": float("-" in ops)}


def _by_kind(rows: list[dict]) -> dict:
    """Per question kind: how many rows, and the share right, adding and subtracting."""
    out = {}
    for k in ("add", "sub"):
        part = [r for r in rows if r["kind"] == k]
        out[k] = {"n": len(part), **{key: _share(part, key) for key in ("correct", "adds", "subtracts")}}
    return out


def spread(groups: list[list[float | None]]) -> dict | None:
    """Median and largest within-group range (max - min) over the groups that logged a value, or None."""
    ranges = sorted(
        max(v) - min(v) for g in groups if (v := [x for x in g if x is not None and math.isfinite(x)])
    )
    return {"median": median(ranges), "max": ranges[-1], "n": len(ranges)} if ranges else None


def training(run: Path, block: int = 10) -> dict | None:
    """The groups whose answers were all right or all wrong, their mean |advantage| and (all right) how far their
    saliency rewards spread; per block of steps and question kind, accuracy and the share that add or subtract."""
    import pandas as pd

    files = sorted((run / "completions").glob("*.parquet"))
    if not files:
        return None
    rows = []
    for f in files:
        for r in pd.read_parquet(f).to_dict("records"):
            question = str(r["prompt"][-1]["content"]) if len(r["prompt"]) else ""
            rows.append(
                {
                    "step": int(r["step"]),
                    "question": question,
                    "kind": kind(question),
                    "correct": right(r),
                    "abs_advantage": abs(float(r["advantage"])),
                    "saliency": r.get("saliency"),
                    **_written(completion_text(list(r["completion"]))),
                }
            )
    groups: dict[tuple[int, str], list[dict]] = {}  # a GRPO group: one question's completions at one step
    for r in rows:
        groups.setdefault((r["step"], r.pop("question")), []).append(r)
    solved = [g for g in groups.values() if all(r["correct"] == 1.0 for r in g)]
    failed = [g for g in groups.values() if all(r["correct"] == 0.0 for r in g)]
    last = max(r["step"] for r in rows)
    blocks = []
    for lo in range(1, last + 1, block):
        part = [r for r in rows if lo <= r["step"] < lo + block]
        blocks.append({"steps": f"{lo}-{min(lo + block - 1, last)}", **_by_kind(part)})
    return {
        "steps": last,
        "groups": len(groups),
        "solved_groups": len(solved),
        # what a group whose answers were all right taught: 0 without a reward that varies among right answers
        "solved_mean_abs_advantage": _share([r for g in solved for r in g], "abs_advantage"),
        # max - min of the saliency reward within each such group: what the std division blew up
        "solved_saliency_range": spread([[r["saliency"] for r in g] for g in solved]),
        "failed_groups": len(failed),
        "failed_mean_abs_advantage": _share([r for g in failed for r in g], "abs_advantage"),
        "blocks": blocks,
    }


def held_out(folder: Path) -> dict:
    """Accuracy and the operation written, per question kind, on the evaluation's held-out problems."""
    rows = [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines() if line]
    return _by_kind(
        [
            {"kind": kind(r["prompt"]), "correct": float(bool(r["correct"])), **_written(r["reasoning"])}
            for r in rows
        ]
    )


def analyse(folder: Path) -> dict:
    runs = sorted(p for p in (folder / "runs").iterdir() if p.is_dir())
    evals = sorted(p for p in (folder / "eval").iterdir() if (p / "generations.jsonl").exists())
    return {
        "training": {r.name: t for r in runs if (t := training(r)) is not None},
        "held_out": {e.name: held_out(e) for e in evals},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="an `atmanrl ab --output` folder")
    ap.add_argument("--out", type=Path, help="write the JSON here (default: print it)")
    args = ap.parse_args()
    result = analyse(args.folder)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    for name, t in result["training"].items():
        print(
            f"{name}: {t['solved_groups']} of {t['groups']} groups all right, mean |advantage| there "
            f"{t['solved_mean_abs_advantage'] or 0:.3f}"
        )
    for name, h in result["held_out"].items():
        print(f"{name}: " + ", ".join(f"{k} {v['correct']:.2f} (adds {v['adds']:.2f})" for k, v in h.items()))


if __name__ == "__main__":
    main()
