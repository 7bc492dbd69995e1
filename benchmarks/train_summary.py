"""Held-out summary of a trained model on arith level 1: accuracy, mean CoT length, and atmanrl 0.1's salient
fraction (the `v0.1` mask preset, content tokens, tau 0.1, correct answers with at least 5 CoT tokens), the
reward the runs of atmanrl 0.1 trained on (those results are no longer kept). Prints one JSON line.

    python benchmarks/train_summary.py runs/smollm2-135m/arith_atmanrl 50
"""

from __future__ import annotations

import json
import statistics
import sys

from atmanrl import load_model
from atmanrl.data import get_task
from atmanrl.generate import SamplingConfig, accuracy, generate_task
from atmanrl.rewards import salient_fraction
from atmanrl.saliency import compute_saliency
from atmanrl.trace_files import row_to_trace


def main(model_path: str, n: int, tau: float = 0.1) -> dict:
    model, tok = load_model(model_path)
    task = get_task("arith", level=1)
    rows = generate_task(model, tok, task, task.load(split="test", limit=n, seed=0), SamplingConfig(seed=0))
    cot = [len(tok(r["reasoning"], add_special_tokens=False)["input_ids"]) for r in rows]
    ok = [r for r, c in zip(rows, cot) if r["correct"] and c >= 5]
    traces = [row_to_trace(r, tok, task) for r in ok]
    sals = compute_saliency(model, tok, traces, "learned", preset="v0.1") if ok else []
    return {
        "model": model_path,
        "n": n,
        "accuracy": accuracy(rows),
        "mean_cot_tokens": statistics.mean(cot),
        f"salient_fraction_tau{tau}": statistics.mean(salient_fraction(s, tau=tau) for s in sals)
        if sals
        else None,
        "scored": len(sals),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
