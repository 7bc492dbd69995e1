"""Does the embedded model need its CoT on a task? Accuracy with and without the CoT, greedy and sampled.

    python benchmarks/testbed.py --levels 5,1 --problems 300 --out benchmarks/results/testbed.json

Per arith level, on the held-out problems the A/B evaluates (`--seed` 1234, the test split):
- with CoT: the model writes its CoT and answer, as `atmanrl eval` does (greedy), and sampled at 0.7;
- without CoT: the answer line is forced right after the prompt (`#### `), greedy and sampled at 0.7;
- groups: `--group` sampled completions for each of the first `--group-problems` problems, and the share of
  those groups with both a right and a wrong answer (a GRPO group whose reward varies).
A testbed for the A/B wants greedy accuracy with CoT in 0.3-0.7 and at most half of it without (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from atmanrl.data import get_task
from atmanrl.evaluate import answer_context, forced_prefix
from atmanrl.generate import SamplingConfig, render_prompt, sample, score_completion
from atmanrl.models import load_model, resolve_model_path
from atmanrl.stats import bootstrap_ci


def share(xs: list[bool]) -> dict[str, float | None]:
    m, lo, hi = bootstrap_ci([float(x) for x in xs])
    return {"mean": m, "lo": lo, "hi": hi, "n": len(xs)}


def measure(model, tok, level: int, args) -> dict:
    t = time.perf_counter()
    task = get_task("arith", level=level)
    exs = task.load(split="test", limit=args.problems, seed=args.seed)
    prompts = [render_prompt(tok, task.messages(e)) for e in exs]
    greedy = SamplingConfig(temperature=0.0, batch_size=args.batch_size, seed=args.seed)
    hot = SamplingConfig(temperature=args.temperature, batch_size=args.batch_size, seed=args.seed)
    outs = sample(model, tok, prompts, greedy, task.max_new_tokens, f"L{level} with CoT, greedy")
    with_cot = [score_completion(task, e, o)["correct"] for e, o in zip(exs, outs, strict=True)]
    prefixes = [forced_prefix(task, tok, e.gold) for e in exs]
    direct = [answer_context(p, "", q) for p, q in zip(prompts, prefixes, strict=True)]

    def no_cot(cfg, label):
        answers = sample(model, tok, direct, cfg, args.answer_tokens, label)
        return [
            task.is_correct(task.parse(q + a).value, e.gold)
            for e, q, a in zip(exs, prefixes, answers, strict=True)
        ]

    without = no_cot(greedy, f"L{level} without CoT, greedy")
    without_hot = no_cot(hot, f"L{level} without CoT, sampled")
    hot_cot = sample(model, tok, prompts, hot, task.max_new_tokens, f"L{level} with CoT, sampled")
    with_hot = [score_completion(task, e, o)["correct"] for e, o in zip(exs, hot_cot, strict=True)]
    m, g = min(args.group_problems, len(exs)), args.group
    grouped = sample(
        model, tok, [p for p in prompts[:m] for _ in range(g)], hot, task.max_new_tokens, "groups"
    )
    right = [score_completion(task, exs[i // g], o)["correct"] for i, o in enumerate(grouped)]
    groups = [right[i * g : (i + 1) * g] for i in range(m)]
    return {
        "level": level,
        "with_cot_greedy": share(with_cot),
        "without_cot_greedy": share(without),
        "with_cot_sampled": share(with_hot),
        "without_cot_sampled": share(without_hot),
        "groups_mixed": share([0 < sum(x) < g for x in groups]),
        "group_size": g,
        "without_over_with_greedy": sum(without) / max(sum(with_cot), 1),
        "example": {"question": exs[0].question, "completion": outs[0]},
        "seconds": time.perf_counter() - t,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--levels", default="5,1", help="arith levels, comma-separated")
    p.add_argument("--problems", type=int, default=300, help="held-out problems per level")
    p.add_argument("--seed", type=int, default=1234, help="which held-out problems (the A/B's eval_seed)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--group", type=int, default=8, help="completions per GRPO-like group")
    p.add_argument("--group-problems", type=int, default=64)
    p.add_argument("--answer-tokens", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="benchmarks/results/testbed.json")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    model, tok = load_model(resolve_model_path(args.model))
    results = []
    for level in (int(x) for x in args.levels.split(",")):
        results.append(measure(model, tok, level, args))
        r = results[-1]
        print(
            f"L{level}: with CoT {r['with_cot_greedy']['mean']:.3f} greedy, {r['with_cot_sampled']['mean']:.3f} sampled;"
            f" without {r['without_cot_greedy']['mean']:.3f} / {r['without_cot_sampled']['mean']:.3f};"
            f" mixed groups {r['groups_mixed']['mean']:.2f}",
            flush=True,
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
