"""Non-collapse: does the saliency reward still vary within GRPO groups once the policy is confident?

Samples `--group` completions for each of `--problems` held-out problems from a (trained) checkpoint, at the
recipes' temperature, and scores every group the way GRPO calls the reward. GRPO learns only from differences
within a group, so the check is the share of groups whose reward has a standard deviation above 0. Reported for
every reward setting given, plus the share of groups with at least two correct rollouts (only those can differ
through saliency: incorrect rollouts get 0), the mean gap log p(A|x,R) - log p(A|x,R removed), the mean
unmodified log p(A) (the policy's confidence), and the share of zero rewards among correct rollouts.

    atmanrl train recipes/smollm2-135m/arith_outcome.yaml         # the confident policy: outcome-only GRPO
    python benchmarks/non_collapse.py --model runs/smollm2-135m/arith_outcome \\
        --rewards '[{}, {"variant": "salient_fraction", "tau": 0.1, "method_options": {"preset": "v0.1"}}]'

Both readings of the paper's reward on the same mask options are scored once: the printed one (`paper_printed`)
is derived from the re-enabled one's masks (1 - its value where a rollout was scored), marked `"derived": true`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def rollouts(model, tok, args) -> list[dict]:
    from atmanrl.data import get_task
    from atmanrl.generate import SamplingConfig, generate_task

    task = get_task(args.task, level=args.level) if args.task == "arith" else get_task(args.task)
    examples = task.load(args.data_dir, split="test", limit=args.problems, seed=args.seed)
    cfg = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.group,
        seed=args.seed,
    )
    rows = generate_task(model, tok, task, [ex for ex in examples for _ in range(args.group)], cfg)
    for i, r in enumerate(rows):
        r["group"] = i // args.group
    return rows


def score_groups(model, tok, rows: list[dict], task: str, options: dict, level: int) -> dict:
    """Every group's rewards, which rollouts were scored (got a saliency result), the logged gap and log p(A)."""
    from atmanrl.rewards import get_reward

    extra = {"level": level} if task == "arith" else {}
    fn = get_reward("saliency", task=task, model=model, tokenizer=tok, **extra, **options)
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    t0, n_traces = time.perf_counter(), 0
    out: dict = {"groups": [], "rewards": [], "scored": [], "gaps": [], "lps": []}
    for g in groups.values():
        metrics: dict[str, float] = {}
        logged: dict[str, list] = {}
        rewards = fn(
            [r["messages"] for r in g],
            [r["completion"] for r in g],
            gold=[r["gold"] for r in g],
            log_metric=lambda k, v, m=metrics: m.__setitem__(k, v),
            log_extra=lambda k, v, m=logged: m.__setitem__(k, v),
        )
        n_traces += sum(bool(r["correct"]) for r in g)
        out["groups"].append(g)
        out["rewards"].append(rewards)
        out["scored"].append([v is not None for v in logged.get("saliency_gap", [None] * len(g))])
        if "saliency/gap" in metrics:
            out["gaps"].append(metrics["saliency/gap"])
            out["lps"].append(metrics["saliency/answer_logprob"])
    out["seconds_per_trace"] = (time.perf_counter() - t0) / max(n_traces, 1)
    return out


def printed_from_reenabled(scored: dict) -> dict:
    """The printed reading of the paper's reward off the same masks: mean Hn = 1 - the re-enabled reading where a
    rollout was scored, 0 where it was not (what the reward gives an ineligible rollout)."""
    rewards = [
        [1.0 - v if s else 0.0 for v, s in zip(rs, ss, strict=True)]
        for rs, ss in zip(scored["rewards"], scored["scored"], strict=True)
    ]
    return {**scored, "rewards": rewards}


def summarise(scored: dict, options: dict, rows: list[dict]) -> dict:
    stds, with_two, zeros = [], 0, []
    for g, rewards in zip(scored["groups"], scored["rewards"], strict=True):
        stds.append(statistics.pstdev(rewards))
        correct = [v for v, r in zip(rewards, g, strict=True) if r["correct"]]
        with_two += len(correct) >= 2
        zeros += [v == 0 for v in correct]
    n = len(scored["groups"])
    return {
        "options": options,
        "groups": n,
        "varying_share": sum(s > 0 for s in stds) / len(stds),
        "two_correct_share": with_two / n,
        "zero_share_correct": sum(zeros) / max(len(zeros), 1),
        "mean_gap": statistics.fmean(scored["gaps"]) if scored["gaps"] else float("nan"),
        "mean_answer_logprob": statistics.fmean(scored["lps"]) if scored["lps"] else float("nan"),
        "accuracy": sum(bool(r["correct"]) for r in rows) / len(rows),
        "s_per_scored_trace": scored["seconds_per_trace"],
        "rewards": scored["rewards"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint folder (an outcome-only GRPO run) or model id")
    ap.add_argument("--task", default="arith")
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=1, help="data order and sampling")
    ap.add_argument(
        "--rewards", default="[{}]", help="JSON list of SaliencyReward options; {} = library defaults"
    )
    ap.add_argument("--rollouts", default=None, help="JSONL cache: read if it exists, else written")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args(argv)

    import torch

    from atmanrl.models import load_model

    torch.manual_seed(args.seed)
    model, tok = load_model(args.model)
    cache = Path(args.rollouts) if args.rollouts else None
    if cache is not None and cache.exists():
        rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    else:
        rows = rollouts(model, tok, args)
        if cache is not None:
            cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = []
    print(
        "| reward | groups varying | groups with >= 2 correct | zero share (correct) | mean gap | mean log p(A) | s/trace |"
    )
    print("|---|---|---|---|---|---|---|")
    todo = json.loads(args.rewards)
    for options in todo:
        if {**options, "variant": "paper_reenabled"} in todo and options.get("variant") == "paper_printed":
            continue  # derived below from the re-enabled reading's masks: one mask per rollout, two readings
        scored = score_groups(model, tok, rows, args.task, options, args.level)
        results.append(summarise(scored, options, rows))
        printed = {**options, "variant": "paper_printed"}
        if options.get("variant") == "paper_reenabled" and printed in todo:
            results.append({**summarise(printed_from_reenabled(scored), printed, rows), "derived": True})
        for r in results[-2:] if results[-1].get("derived") else results[-1:]:
            print(
                f"| {json.dumps(r['options']) if r['options'] else 'defaults'} | {r['varying_share']:.2f} | "
                f"{r['two_correct_share']:.2f} | {r['zero_share_correct']:.2f} | {r['mean_gap']:.2f} | "
                f"{r['mean_answer_logprob']:.3f} | {r['s_per_scored_trace']:.2f} |",
                flush=True,
            )
    print(f"accuracy of the rollouts: {results[0]['accuracy']:.2f} ({len(rows)} rollouts)")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
