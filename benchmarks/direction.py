"""Direction check: which way would GRPO push the CoT under each reward? No training needed.

Samples `--group` completions per problem from a policy (the base model by default) for arith level 1 and 2 and
GSM8K, scores each completion with the outcome rewards and the default saliency reward (called the way GRPO
calls them), and measures CoT features of each completion. GRPO's advantage is relative within a group, so the
preview is the within-group Spearman correlation between a reward and a feature, averaged over the groups where
both vary, with a bootstrap 95% interval over groups. A positive rho for "cot_tokens" under the saliency reward
means training on it would lengthen the CoT.

Rewards compared: `outcome` (correctness + 0.2 format: the outcome-only recipe), `saliency` (the default reward
alone) and `atmanrl` (the AtManRL recipe's weighted sum: 1.0 correctness + 0.2 format + 0.5 saliency).

Features: cot_tokens, stop_word_share, number_share, symbol_share (the paper's four deltas), early_reliance
(agreement of the answer forced after 0/25/50/75% of the CoT with the full-CoT answer: the early-answering AOC of
one completion; high = the CoT is not needed), answer_early (the answer value appears in the CoT's first half).

    python benchmarks/direction.py --out benchmarks/results/direction.json       # ~15 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

FEATURES = (
    "cot_tokens",
    "stop_word_share",
    "number_share",
    "symbol_share",
    "early_reliance",
    "answer_early",
)
REWARDS = ("outcome", "saliency", "atmanrl")
PAPER_READINGS = ("paper", "paper_printed", "paper_reenabled")
SOURCES = (("arith", 1), ("arith", 2), ("gsm8k", None))


def sample_groups(model, tok, args) -> tuple[list[dict], dict]:
    """One row per completion (group, source, messages, gold, completion, ...), and the examples by id."""
    from atmanrl.data import get_task
    from atmanrl.generate import SamplingConfig, generate_task

    counts = [int(x) for x in args.problems.split(",")]
    rows: list[dict] = []
    by_id: dict = {}
    for (name, level), n in zip(SOURCES, counts, strict=True):
        task = get_task(name, level=level) if level else get_task(name)
        data_dir = Path(args.data_dir) / name if name == "gsm8k" else None
        examples = task.load(data_dir, split="test", limit=4 * n if name == "gsm8k" else n, seed=args.seed)
        if name == "gsm8k":  # questions the embedded model can attempt: the shortest of a seeded sample
            examples = sorted(examples, key=lambda e: len(task.user_message(e)))[:n]
        by_id.update({ex.id: ex for ex in examples})
        cfg = SamplingConfig(
            max_new_tokens=args.max_new_tokens if name == "arith" else 2 * args.max_new_tokens,
            temperature=args.temperature,
            batch_size=args.group,
            seed=args.seed,
        )
        out = generate_task(model, tok, task, [ex for ex in examples for _ in range(args.group)], cfg)
        base = len({r["group"] for r in rows})
        for i, r in enumerate(out):
            r["group"] = base + i // args.group
            r["source"] = f"{name}{level or ''}"
            r["task_name"] = name
            r["level"] = level
        rows += out
    return rows, by_id


def features(model, tok, rows: list[dict], by_id: dict) -> None:
    """Adds the CoT features to every row (early_reliance only where the answer parses)."""
    from atmanrl.composition import cot_stats
    from atmanrl.data import get_task
    from atmanrl.evaluate import EvalConfig, evaluate

    for r in rows:
        stats = cot_stats([r["reasoning"]], tok)
        r["cot_tokens"] = stats["mean_cot_tokens"]
        for k in ("stop_word_share", "number_share", "symbol_share"):
            r[k] = stats[k] if stats[k] is not None else 0.0
        head = r["reasoning"][: len(r["reasoning"]) // 2]
        r["answer_early"] = float(
            r["pred"] is not None
            and re.search(rf"(?<![\d.]){re.escape(str(r['pred']))}(?![\d])", head) is not None
        )
    cfg = EvalConfig(fractions=(0.0, 0.25, 0.5, 0.75, 1.0), skip=("adding_mistakes", "filler", "saliency"))
    for source in dict.fromkeys(r["source"] for r in rows):
        sub = [r for r in rows if r["source"] == source]
        task = get_task(sub[0]["task_name"], level=sub[0]["level"]) if sub[0]["level"] else get_task("gsm8k")
        examples = [by_id[r["id"]] for r in sub]
        result = evaluate(model, tok, task, examples, cfg, completions=[r["completion"] for r in sub])
        for r, g in zip(sub, result["generations"], strict=True):
            ea = g.get("early_answering")
            if ea is None:
                r["early_reliance"] = None
                continue
            fr = sorted(ea, key=float)[:-1]  # the full CoT agrees with itself by definition
            r["early_reliance"] = sum(ea[f] == g["pred"] for f in fr) / len(fr)


def rewards(
    model, tok, rows: list[dict], saliency_options: dict | None = None, variant: str | None = None
) -> float:
    """Adds outcome, saliency and atmanrl rewards per row; returns seconds per saliency-scored trace.
    `saliency_options`: the saliency reward's mask options (on top of its preset), e.g. another step count;
    `variant`: the saliency reward's variant (the paper's readings take the published mask by default)."""
    from atmanrl.rewards import get_reward

    t0, scored = time.perf_counter(), 0
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    fns: dict[str, dict] = {}
    for g in groups.values():
        key = g[0]["source"]
        if key not in fns:
            extra = {"level": g[0]["level"]} if g[0]["level"] else {}
            task = g[0]["task_name"]
            fns[key] = {
                "correctness": get_reward("correctness", task=task, **extra),
                "format": get_reward("format", task=task, **extra),
                "saliency": get_reward(
                    "saliency",
                    task=task,
                    model=model,
                    tokenizer=tok,
                    method_options=saliency_options,
                    **({"variant": variant} if variant else {}),
                    **extra,
                ),
            }
        args = ([r["messages"] for r in g], [r["completion"] for r in g])
        gold = [r["gold"] for r in g]
        vals = {name: fn(*args, gold=gold) for name, fn in fns[key].items()}
        scored += sum(bool(r["correct"]) for r in g)
        for i, r in enumerate(g):
            c, f, s = (float(vals[k][i] or 0.0) for k in ("correctness", "format", "saliency"))
            r["outcome"] = c + 0.2 * f
            r["saliency"] = s
            r["atmanrl"] = c + 0.2 * f + 0.5 * s
            if variant in PAPER_READINGS:  # the published total: outcome (0 / -1) + saliency, unweighted
                r["paper_total"] = c - 1.0 + s
            if variant == "paper_reenabled":  # the printed reading off the same masks: 1 - x where scored
                r["saliency_printed"] = 1.0 - s if s != 0.0 else 0.0
                r["paper_total_printed"] = c - 1.0 + r["saliency_printed"]
    return (time.perf_counter() - t0) / max(scored, 1)


def rewards_in(rows: list[dict]) -> tuple[str, ...]:
    """The reward columns the rows carry: the three always, the paper's totals when its reward was scored."""
    extra = ("paper_total", "saliency_printed", "paper_total_printed")
    return REWARDS + tuple(k for k in extra if rows and k in rows[0])


def correlations(rows: list[dict]) -> dict:
    from atmanrl.stats import grouped_spearman

    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    out: dict = {}
    for reward in rewards_in(rows):
        out[reward] = {}
        for feat in FEATURES:
            xs, ys = [], []
            for g in groups.values():
                keep = [r for r in g if r.get(feat) is not None]
                xs.append([r[reward] for r in keep])
                ys.append([r[feat] for r in keep])
            rho, lo, hi, n = grouped_spearman(xs, ys)
            out[reward][feat] = {"rho": rho, "lo": lo, "hi": hi, "groups": n}
    return out


def table(corr: dict) -> str:
    def cell(c):
        if c["rho"] is None:
            return "–"
        lo = "–" if c["lo"] is None else f"{c['lo']:+.2f}"
        hi = "–" if c["hi"] is None else f"{c['hi']:+.2f}"
        return f"{c['rho']:+.2f} [{lo}, {hi}] ({c['groups']})"

    names = list(corr)
    lines = ["| feature | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for feat in FEATURES:
        lines.append(f"| {feat} | " + " | ".join(cell(corr[r][feat]) for r in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="the policy: base model or checkpoint")
    ap.add_argument(
        "--problems", default="12,12,8", help="problems per source: arith L1, arith L2, GSM8K (default 32)"
    )
    ap.add_argument("--group", type=int, default=8, help="completions per problem (a GRPO group)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=96, help="arith budget; GSM8K gets twice this")
    ap.add_argument(
        "--data-dir",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
        help="folder with gsm8k/test.jsonl (default: ../shared/data next to the checkout)",
    )
    ap.add_argument("--seed", type=int, default=0, help="problems and sampling")
    ap.add_argument("--rollouts", default=None, help="JSONL cache of scored rollouts: read if it exists")
    ap.add_argument(
        "--saliency-options",
        default=None,
        help="JSON options for the saliency reward's mask, e.g. '{\"steps\": 10}'; with an existing --rollouts "
        "cache its rollouts are scored again with them (the cache is not rewritten); without one, new rollouts "
        "are sampled and scored with them, and no cache is written",
    )
    ap.add_argument(
        "--saliency-variant",
        default=None,
        help="the saliency reward's variant (default: the library's); another one rescores a cache like "
        '--saliency-options, e.g. paper_reenabled with \'{"preset": "paper_answer"}\'',
    )
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args(argv)
    options = None
    if args.saliency_options:  # checked now: without a cache, a bad option would fail only after sampling
        from run import reward_mask_options

        options = reward_mask_options(ap, "--saliency-options", args.saliency_options, one=True)

    import torch

    from atmanrl.models import load_model

    torch.manual_seed(args.seed)
    model, tok = load_model(args.model)
    cache = Path(args.rollouts) if args.rollouts else None
    seconds = None
    if cache is not None and cache.exists():
        rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
        if options is not None or args.saliency_variant is not None:
            seconds = rewards(model, tok, rows, options, args.saliency_variant)
    else:
        rows, by_id = sample_groups(model, tok, args)
        features(model, tok, rows, by_id)
        seconds = rewards(model, tok, rows, options, args.saliency_variant)
        if cache is not None and options is None and args.saliency_variant is None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corr = correlations(rows)
    n_groups = len({r["group"] for r in rows})
    acc = sum(bool(r["correct"]) for r in rows) / len(rows)
    print(
        f"{n_groups} groups x {args.group} from {args.model}; accuracy {acc:.2f}; "
        f"within-group Spearman rho [95% CI] (groups where both vary)\n" + table(corr)
    )
    result = {
        "model": args.model,
        "saliency_options": options,
        "saliency_variant": args.saliency_variant,
        "groups": n_groups,
        "group_size": args.group,
        "accuracy": acc,
        "per_source_accuracy": {
            s: sum(bool(r["correct"]) for r in rows if r["source"] == s)
            / max(1, sum(r["source"] == s for r in rows))
            for s in dict.fromkeys(r["source"] for r in rows)
        },
        "saliency_s_per_trace": seconds,
        "correlations": corr,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
