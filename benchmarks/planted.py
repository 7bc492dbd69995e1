"""Planted-distractor benchmark: does a saliency method find the one CoT sentence the answer depends on?

The cases and metrics (hit@1, AUC, AUC on the result tokens, sink@1, s/case) live in `atmanrl.planted`;
this is the command line that runs them for every method and template family.

Template families (FAMILIES) are split: defaults are set on `--split tune`; `--split heldout` is reported.

    python benchmarks/planted.py                           # every method, defaults, held-out families
    python benchmarks/planted.py --split tune --methods learned --config '[{"steps": 30}, {"lam": 0.1}]'
    python benchmarks/planted.py --methods learned,leave_one_out --config '{"learned": {"preset": "reward"}}'

With several runs, each one after the first is compared with the first on the same cases: the mean paired AUC
difference with a 95% bootstrap interval over cases (an interval that includes 0 is no measurable difference).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from atmanrl.planted import (  # noqa: F401  (re-exported: tests and scripts import them from here)
    FAMILIES,
    Case,
    Family,
    auc,
    families_for,
    make_cases,
    result_span,
    run,
    score_case,
)
from atmanrl.saliency import METHODS


def config_text(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def table(results: list[dict]) -> str:
    fams = list(results[0].get("families", {})) if results else []
    lines = [
        "| method | config | hit@1 | AUC | AUC result | sink@1 | s/case | "
        + " | ".join(f"{f} hit@1/AUC" for f in fams)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(fams),
    ]
    for r in results:
        cfg = config_text(r["config"]) or "defaults"
        per = " | ".join(f"{r['families'][f]['hit1']:.2f} / {r['families'][f]['auc']:.2f}" for f in fams)
        lines.append(
            f"| {r['method']} | {cfg} | {r['hit1']:.2f} | {r['auc']:.2f} | {r['auc_result']:.2f} | {r['sink1']:.2f} "
            f"| {r['s_per_case']:.2f} | {per} |"
        )
    return "\n".join(lines)


def paired_auc(results: list[dict]) -> list[dict]:
    """Each run after the first against the first, case by case: AUC difference, 95% bootstrap interval."""
    from atmanrl.stats import paired_diff_ci

    def aucs(r: dict) -> list[float | None]:  # a case without relevant or distractor tokens has no AUC (nan)
        return [None if math.isnan(c["auc"]) else c["auc"] for c in r["cases"]]

    out, first = [], aucs(results[0])
    for r in results[1:]:
        diff, lo, hi = paired_diff_ci(aucs(r), first)
        out.append({"run": label(r), "against": label(results[0]), "auc_diff": diff, "lo": lo, "hi": hi})
    return out


def label(r: dict) -> str:
    return r["method"] + (f" ({config_text(r['config'])})" if r["config"] else "")


def configs_for(method: str, config) -> list[dict]:
    """--config: one dict for every method, a list of them (a grid), or a dict keyed by method names."""
    if isinstance(config, dict) and config and set(config) <= set(METHODS):
        config = config.get(method, {})
    return config if isinstance(config, list) else [config]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--split", default="heldout", help="tune | heldout | words | all: which template families"
    )
    ap.add_argument("--cases", type=int, default=12, help="cases per family")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--config",
        default="{}",
        help="JSON options for every method in --methods, a JSON list of them (a grid), or a JSON object keyed "
        'by method name (\'{"learned": {"preset": "reward"}}\': the other methods keep their defaults)',
    )
    ap.add_argument("--out", default="planted.json")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); 1 is steadier on a busy machine",
    )
    args = ap.parse_args(argv)

    import torch

    from atmanrl.models import load_model

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    cases = make_cases(tok, args.cases, args.seed, families=families_for(args.split))
    configs = json.loads(args.config)
    results = []
    for method in args.methods.split(","):
        for config in configs_for(method, configs):
            results.append(run(model, tok, cases, method, **config))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print(
        f"\nsplit {args.split}: {', '.join(families_for(args.split))}, {args.cases} cases each\n"
        + table(results)
    )
    for r, p in zip(results[1:], paired_auc(results), strict=True):
        r["auc_vs_first"] = p
        d, lo, hi = p["auc_diff"], p["lo"], p["hi"]
        told = "no case has an AUC in both runs" if d is None else f"{d:+.3f}"
        told += f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else ""
        print(f"AUC {p['run']} - {p['against']}: {told}")
    Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
