"""Both readings of the paper's reward on reward_validity.py's kinds, next to atmanrl's default reward.

The two readings come from one mask per trace: `paper_printed` is the mean of Hn over the causal entries and
`paper_reenabled` is 1 - that mean, so the mask is learned once and both are read off it (every record of
reward_validity.py is correct and has a CoT, so neither reading gates a record the other scores).

    python benchmarks/paper_readings.py --split report --preset paper_answer \
        --out benchmarks/results/paper_readings.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--split", default="report", choices=["tune", "report"])
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--preset", default="paper_answer", choices=["paper", "paper_answer"])
    ap.add_argument("--default", action="store_true", help="also score atmanrl's default reward")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    from reward_validity import build, problems, score, summarise, table

    from atmanrl.models import load_model

    torch.manual_seed(0)
    model, tok = load_model(args.model)
    task, rows = problems("gsm8k", args.split, args.problems, Path(args.data_dir))
    records = build(task, rows, args.split, tok)
    from atmanrl.rewards import get_reward

    printed, spt = score(
        model, tok, records, "gsm8k", {"variant": "paper_printed", "method_options": {"preset": args.preset}}
    )
    # a record the reward does not score (gated, or failed) is 0 under both readings, not 1 - 0
    gate = get_reward("saliency", task="gsm8k", model=model, tokenizer=tok, variant="paper")
    eligible = [
        t is not None
        for t in gate.traces(
            [r["prompt"] for r in records], [r["completion"] for r in records], [r["gold"] for r in records]
        )
    ]
    results = [
        {
            "options": {"variant": "paper_printed", "preset": args.preset},
            "rewards": printed,
            "s_per_trace": spt,
        },
        {
            "options": {"variant": "paper_reenabled", "preset": args.preset},
            "rewards": [1.0 - v if ok else 0.0 for v, ok in zip(printed, eligible, strict=True)],
            "s_per_trace": spt,
        },
    ]
    if args.default:
        rewards, spt = score(model, tok, records, "gsm8k", {})
        results.append({"options": {}, "rewards": rewards, "s_per_trace": spt})
    for r in results:
        r["summary"] = summarise(records, r["rewards"])
    print(f"gsm8k, split {args.split}, {len(rows)} problems, mask {args.preset}\n" + table(results))
    out = {"args": vars(args), "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
