"""How far a cheaper reward mask's token scores move from the validated one, on tune data only (docs/saliency.md).

The reward's mask (preset `reward`) runs a fixed number of SGD steps from g = 0.9 and stops before it converges,
so its step count and learning rate are part of what was validated, not only its cost. This runs the preset and
each setting of `--grid` on the same tune traces (the planted tune families and the reward-validity tune split's
L/V/P/E completions, scored the way the reward scores them) and reports, per trace set, the token-score changes
of `prefix_precision.compare` (largest, mean, share above 0.1, rank correlation within a trace, trace mean) and
how often the top content token stays the same (`top1_agree`; planted hit@1 is decided by it).

    python benchmarks/mask_fidelity.py --grid '[{"steps": 12, "lr": 12.5}, {"steps": 10, "lr": 15}]'   # ~6 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def top1_agree(reference, other) -> float:
    """Share of traces whose highest-scoring content token (letters or digits) is the same in both runs."""
    from atmanrl.masked import content_mask

    same = []
    for a, b in zip(reference, other, strict=True):
        idx = [i for i, c in enumerate(content_mask(a.tokens)) if c] or list(range(len(a.scores)))
        same.append(max(idx, key=lambda i: a.scores[i]) == max(idx, key=lambda i: b.scores[i]))
    return sum(same) / len(same)


def tune_traces(model, tok, planted_cases: int, problems: int, data_dir: Path) -> dict[str, list]:
    """The tune split's traces: planted tune families, and GSM8K tune problems' L/V/P/E completions."""
    import reward_validity

    from atmanrl.planted import families_for, make_cases
    from atmanrl.rewards import SaliencyReward

    out = {"planted": [c.trace for c in make_cases(tok, planted_cases, 0, families=families_for("tune"))]}
    if problems:
        task, rows = reward_validity.problems("gsm8k", "tune", problems, data_dir)
        recs = [
            r for r in reward_validity.build(task, rows, "tune", tok) if r["kind"] in ("L", "V", "P", "E")
        ]
        reward = SaliencyReward(task="gsm8k", model=model, tokenizer=tok)
        traces = reward.traces(
            [r["prompt"] for r in recs], [r["completion"] for r in recs], [r["gold"] for r in recs]
        )
        out["gsm8k"] = [t for t in traces if t is not None]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument(
        "--grid", required=True, help="JSON list of option dicts applied on top of preset `reward`"
    )
    p.add_argument("--planted-cases", type=int, default=12, help="cases per planted tune family")
    p.add_argument("--problems", type=int, default=30, help="GSM8K tune problems (0: planted only)")
    p.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    p.add_argument("--out", default=None, help="write the results as JSON")
    args = p.parse_args(argv)
    from run import reward_mask_options

    grid = reward_mask_options(p, "--grid", args.grid)

    import torch
    from prefix_precision import compare

    from atmanrl.models import load_model
    from atmanrl.saliency import compute_saliency

    torch.manual_seed(0)
    model, tok = load_model(args.model)
    sets = tune_traces(model, tok, args.planted_cases, args.problems, Path(args.data_dir))

    def scores(options: dict) -> tuple[dict, float]:
        t0 = time.perf_counter()
        got = {
            k: compute_saliency(model, tok, v, "learned", preset="reward", **options) for k, v in sets.items()
        }
        return got, time.perf_counter() - t0

    reference, ref_s = scores({})
    results = {"reference": {"options": {}, "seconds": ref_s}, "runs": []}
    for options in grid:
        got, secs = scores(options)
        row = {"options": options, "seconds": secs, "seconds_over_reference": secs / ref_s}
        for k in sets:
            row[k] = {**compare(reference[k], got[k]), "top1_agree": top1_agree(reference[k], got[k])}
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
    print(f"\npreset reward against {', '.join(f'{k} ({len(v)} traces)' for k, v in sets.items())}")
    print(
        "| options | time | "
        + " | ".join(f"{k}: top-1 same / rank corr. min / trace mean moved max" for k in sets)
        + " |"
    )
    print("|---|---|" + "---|" * len(sets))
    for r in results["runs"]:
        cells = [
            f"{r[k]['top1_agree']:.2f} / {r[k]['spearman_min']:.2f} / {r[k]['trace_mean_change_max']:.3f}"
            for k in sets
        ]
        print(
            f"| {json.dumps(r['options'])} | {r['seconds_over_reference']:.2f}x | " + " | ".join(cells) + " |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
