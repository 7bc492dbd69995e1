"""The reward's bfloat16 prefix pass against the exact one, token by token (docs/saliency.md).

On CPUs with native bfloat16 the reward's mask (preset `reward`, `prefix_dtype="auto"`) computes its prefix pass in
bfloat16. This runs the reward's mask both ways on sampled CoTs of fixed lengths and reports how far single token
scores move: the largest and mean change, the share of tokens that move by more than 0.1, the rank correlation
within a trace, and the largest change of a trace's mean score. On a CPU without bfloat16 both runs are exact.

    python benchmarks/prefix_precision.py                       # 8 traces at 128 and 256 CoT tokens
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def compare(exact, fast) -> dict:
    from atmanrl.stats import spearman

    d = [
        abs(x - y) for a, b in zip(exact, fast, strict=True) for x, y in zip(a.scores, b.scores, strict=True)
    ]
    rho = [r for a, b in zip(exact, fast, strict=True) if (r := spearman(a.scores, b.scores)) is not None]
    mean = [
        abs(sum(a.scores) / len(a.scores) - sum(b.scores) / len(b.scores))
        for a, b in zip(exact, fast, strict=True)
    ]
    return {
        "max": max(d),
        "mean": sum(d) / len(d),
        "share_over_0.1": sum(x > 0.1 for x in d) / len(d),
        "spearman_min": min(rho, default=None),
        "spearman_mean": sum(rho) / len(rho) if rho else None,
        "trace_mean_change_max": max(mean),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--traces", type=int, default=8)
    p.add_argument("--lengths", default="128,256", help="comma-separated CoT lengths in tokens")
    p.add_argument("--out", default=str(HERE / "results" / "prefix_precision.json"))
    args = p.parse_args(argv)

    from run import fixed_length_traces

    from atmanrl.models import load_model
    from atmanrl.saliency import compute_saliency

    model, tok = load_model(args.model)
    out = {}
    for n in map(int, args.lengths.split(",")):
        traces, _ = fixed_length_traces(model, tok, args.traces, n)
        exact = compute_saliency(model, tok, traces, "learned", preset="reward", prefix_dtype="model")
        fast = compute_saliency(model, tok, traces, "learned", preset="reward")
        out[str(n)] = compare(exact, fast)
        print(n, json.dumps(out[str(n)]), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
