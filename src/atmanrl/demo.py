"""`make demo`: the whole AtManRL story on the embedded model, on a CPU, in about 15 minutes.

1. generate chains of thought on `arith` and show which CoT tokens the answer needs (heatmap);
2. train two short GRPO runs with the same seed and budget: outcome rewards only, and AtManRL
   (outcome + saliency);
3. evaluate the base model and both runs (accuracy, CoT statistics, faithfulness, saliency quality);
4. compare the three in one report.

Every step is an `atmanrl` CLI command, printed before it runs, so each can be rerun by hand.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from .options import DemoCommand, add_options, from_namespace
from .progress import console

RECIPES = Path(__file__).resolve().parent / "recipes"


def run(title: str, argv: list[str]) -> None:
    from .cli import main as cli

    console.rule(f"[bold cyan]{title}")
    console.print(f"[dim]$ atmanrl {shlex.join(argv)}")
    t = time.time()
    rc = cli(argv)
    if rc:
        raise SystemExit(rc)
    console.print(f"[green]done in {time.time() - t:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m atmanrl.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, DemoCommand)
    args = from_namespace(DemoCommand, p.parse_args(argv))
    recipes = Path(args.recipes) if args.recipes else RECIPES / "smollm2-135m"
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seed, limit = str(args.seed), str(args.limit)
    t0 = time.time()

    def on_arith(model: str, n: str) -> list[str]:  # the options generate, explain and eval share
        return ["--model", model, "--task", "arith", "--limit", n, "--seed", seed]

    run(
        "1/5 Generate chains of thought on arith level 1 (synthetic, no download)",
        [
            "generate",
            *on_arith(args.model, limit),
            "--output",
            str(out / "generations.jsonl"),
        ],
    )
    run(
        "2/5 Which CoT tokens does the answer need? (learned AtManRL mask vs first-order gradient)",
        [
            "explain",
            *on_arith(args.model, "4"),
            "--methods",
            "learned,attention_gradient",
            "--html",
            str(out / "heatmap.html"),
        ],
    )

    runs = {}
    for kind in ("outcome", "atmanrl"):
        runs[kind] = out / "runs" / kind
        run(
            f"3/5 GRPO, {'outcome rewards only' if kind == 'outcome' else 'AtManRL: outcome + saliency'}"
            f" ({args.steps} steps, seed {seed})",
            [
                "train",
                str(recipes / f"arith_{kind}.yaml"),
                "--model_name_or_path",
                args.model,
                "--max_steps",
                str(args.steps),
                "--seed",
                seed,
                "--output_dir",
                str(runs[kind]),
                "--save_steps",
                str(max(args.steps, 1)),
            ],
        )

    reports = {"base": args.model, **{k: str(v) for k, v in runs.items()}}
    for name, model in reports.items():
        run(
            f"4/5 Evaluate {name}",
            [
                "eval",
                *on_arith(model, limit),
                "--report",
                str(out / "eval" / name),
            ],
        )
    run(
        "5/5 Compare base, outcome-only GRPO and AtManRL",
        [
            "compare",
            *[str(out / "eval" / n) for n in reports],
            "--names",
            ",".join(reports),
            "--output",
            str(out / "compare"),
        ],
    )

    console.rule("[bold green]demo finished")
    console.print(f"in {time.time() - t0:.0f}s; open these:")
    console.print(f"  heatmap:  {out / 'heatmap.html'}")
    console.print(f"  curves:   {runs['atmanrl'] / 'training_curves.png'}")
    console.print(f"  report:   {out / 'compare' / 'compare.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
