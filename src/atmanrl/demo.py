"""`make demo`: the story on the embedded model, end to end, on a CPU.

Each step prints what it did and where its output is. Run `python -m atmanrl.demo --help`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .progress import console


def step(title: str) -> float:
    console.rule(f"[bold cyan]{title}")
    return time.time()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atmanrl.demo", description=__doc__)
    p.add_argument("--output", default="demo_out", help="folder for everything the demo writes")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--limit", type=int, default=16, help="arith problems to generate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    from .cli import main as cli

    t = step("1. Generate chains of thought on arith level 1 (synthetic, no download)")
    traces = out / "arith_generations.jsonl"
    rc = cli(
        [
            "generate",
            "--model",
            args.model,
            "--task",
            "arith",
            "--limit",
            str(args.limit),
            "--seed",
            str(args.seed),
            "--output",
            str(traces),
        ]
    )
    if rc:
        return rc
    console.print(f"[green]done in {time.time() - t:.0f}s: {traces}")
    console.rule("[bold green]demo finished")
    console.print(f"outputs in {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
