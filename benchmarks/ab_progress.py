"""Training curves of an A/B that is still running: per run, means over blocks of 10 steps from its latest
checkpoint, and whether it finished. No model is loaded; safe to run beside the A/B.

    python benchmarks/ab_progress.py runs/ab_testbed --out benchmarks/results/ab_testbed_progress.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atmanrl.ab_report import curves

KEYS = (
    "reward",
    "rewards/correctness/mean",
    "rewards/paper_outcome/mean",
    "rewards/saliency/mean",
    "completions/mean_length",
)


def progress(folder: Path, block: int = 10) -> dict:
    runs = {}
    for run in sorted((folder / "runs").iterdir()):
        hist = [h for h in curves(run) if "step" in h and "reward" in h]
        if not hist:
            continue
        keys = [k for k in KEYS if any(k in h for h in hist)]
        blocks = [
            {
                "steps": f"{b[0]['step']}-{b[-1]['step']}",
                **{k: sum(h.get(k, 0.0) for h in b) / len(b) for k in keys},
            }
            for b in (hist[lo : lo + block] for lo in range(0, len(hist), block))
        ]
        runs[run.name] = {
            "finished": (run / "ab_done.json").exists(),
            "last_checkpoint_step": hist[-1]["step"],
            "blocks": blocks,
        }
    return {
        "note": f"training curves of {folder} so far, means over blocks of {block} steps from each run's latest "
        "checkpoint; the A/B evaluates a seed's runs once all of them have finished",
        "runs": runs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="the A/B's --output folder")
    p.add_argument("--out", default="benchmarks/results/ab_progress.json")
    args = p.parse_args()
    res = progress(args.folder)
    Path(args.out).write_text(json.dumps(res, indent=1))
    for name, r in res["runs"].items():
        correct = [
            b.get("rewards/correctness/mean", b.get("rewards/paper_outcome/mean")) for b in r["blocks"]
        ]
        print(name, "finished" if r["finished"] else f"at step {r['last_checkpoint_step']}", correct)


if __name__ == "__main__":
    main()
