"""How well the cheap `paper_answer` mask agrees with the exact published mask (`paper`) on GSM8K traces.

Traces: GSM8K test problems with their reference rationale as the CoT and `#### N` as the answer (the L kind of
reward_validity.py, tune half), scored the way the reward scores them. Reported:
- the rank correlation (Spearman) across traces of the paper reward (1 - mean Hn, either reading ranks the same
  up to sign) under the two masks;
- per trace, the rank correlation of the CoT tokens' scores (content tokens), with the mean over traces and a
  bootstrap interval;
- the share of traces whose top content token is the same;
- seconds per trace of each.

    python benchmarks/paper_agreement.py --problems 32 --out benchmarks/results/paper_agreement.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200, help="mask steps of both (the published 200)")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    from reward_validity import build, problems

    from atmanrl.masked import content_mask
    from atmanrl.models import load_model
    from atmanrl.rewards import SaliencyReward
    from atmanrl.saliency import compute_saliency
    from atmanrl.stats import bootstrap_ci, spearman

    torch.manual_seed(0)
    model, tok = load_model(args.model)
    task, rows = problems("gsm8k", "tune", args.problems, Path(args.data_dir))
    records = [r for r in build(task, rows, "tune", tok) if r["kind"] == "L"]
    fn = SaliencyReward(variant="paper", model=model, tokenizer=tok, task="gsm8k")
    traces = fn.traces(
        [r["prompt"] for r in records], [r["completion"] for r in records], [r["gold"] for r in records]
    )
    traces = [t for t in traces if t is not None]
    sals, seconds = {}, {}
    for preset in ("paper_answer", "paper"):
        t0 = time.perf_counter()
        sals[preset] = compute_saliency(
            model, tok, traces, "learned", preset=preset, steps=args.steps, batch_size=8
        )
        seconds[preset] = (time.perf_counter() - t0) / len(traces)
        print(f"{preset}: {seconds[preset]:.1f} s/trace", flush=True)
    reward = {p: [1 - s.extras["entry_mean"] for s in v] for p, v in sals.items()}
    token_rho, same_top = [], []
    for a, e in zip(sals["paper_answer"], sals["paper"], strict=True):
        keep = content_mask(a.tokens)
        xa = [s for s, k in zip(a.scores, keep) if k]
        xe = [s for s, k in zip(e.scores, keep) if k]
        if not xa:  # a CoT of punctuation only: no token to rank
            continue
        rho = spearman(xa, xe)
        if rho is not None:
            token_rho.append(rho)
        same_top.append(
            float(max(range(len(xa)), key=xa.__getitem__) == max(range(len(xe)), key=xe.__getitem__))
        )
    m, lo, hi = bootstrap_ci(token_rho)
    result = {
        "args": vars(args),
        "n_traces": len(traces),
        "reward_spearman": spearman(reward["paper_answer"], reward["paper"]),
        "token_spearman_mean": m,
        "token_spearman_ci": [lo, hi],
        "same_top_token": sum(same_top) / len(same_top),
        "seconds_per_trace": seconds,
        "rewards": reward,
        "cot_tokens": [len(s.tokens) for s in sals["paper"]],
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("rewards", "cot_tokens")}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
