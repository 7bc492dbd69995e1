"""GRPO training with AtManRL rewards, on TRL's GRPOTrainer.

`atmanrl train RECIPE.yaml [--key value ...]` reads like open-r1's `grpo.py`: parse, seed, data, model,
rewards, trainer, train, save, plot. A recipe is a YAML of `TrainScriptArguments`, TRL's `GRPOConfig` and
`ModelConfig` keys; command-line `--key value` pairs override it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .errors import UserError
from .options import TRAIN_USAGE, TrainScriptArguments, train_help  # noqa: F401  (TrainScriptArguments: API)

log = logging.getLogger(__name__)


def make_parser():
    from trl import GRPOConfig, ModelConfig, TrlParser

    return TrlParser((TrainScriptArguments, GRPOConfig, ModelConfig), prog="atmanrl train")


def _check_recipe_keys(path: Path) -> None:
    """Name unknown keys before TRL parses (and before GRPOConfig's own checks, such as bf16 on CPU)."""
    import dataclasses

    import yaml
    from trl import GRPOConfig, ModelConfig

    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(recipe, dict):
        raise UserError(f"recipe {path} must be a YAML mapping of keys to values")
    known = {f.name for t in (TrainScriptArguments, GRPOConfig, ModelConfig) for f in dataclasses.fields(t)}
    unknown = sorted(set(recipe) - known - {"env"})
    if unknown:
        raise UserError(f"recipe {path}: unknown keys {', '.join(unknown)}; see `atmanrl train --help`")


SCALE_REWARDS = ("group", "batch", "none")  # what GRPOTrainer accepts


def parse_recipe(recipe: str | Path | None, overrides: list[str]) -> tuple[Any, Any, Any]:
    """(script args, GRPOConfig, ModelConfig) from a YAML recipe plus `--key value` overrides."""
    args = list(overrides)
    if recipe is not None:
        from .recipes import recipe_path

        path = recipe_path(recipe)
        _check_recipe_keys(path)
        args = ["--config", str(path), *args]
    parser = make_parser()
    import torch

    if not torch.cuda.is_available() and "--dry_run" in args:
        # GRPOConfig refuses bf16 without a GPU at parse time; a dry run on a laptop still checks the rest.
        args += ["--bf16", "false"]
    try:
        script, training_args, model_args = parser.parse_args_and_config(args)[:3]
        if script.dataset_split is not None:  # the 0.1 spelling, accepted for one release
            log.warning("dataset_split is deprecated: use split (same meaning)")
            script.split = script.dataset_split
        if (
            training_args.scale_rewards not in SCALE_REWARDS
        ):  # TRL checks it only at the first step's advantages
            raise UserError(
                f"scale_rewards {training_args.scale_rewards!r} is not one of {', '.join(SCALE_REWARDS)} "
                "(docs/training.md): set it in the recipe or with --scale_rewards none"
            )
        return script, training_args, model_args
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "not used by the HfArgumentParser" in msg:  # unknown --key value overrides on the command line
            keys = re.findall(r"'(--[\w.-]+)'", msg)
            raise UserError(
                f"unknown train options {', '.join(keys) or msg}: see `atmanrl train --help` for the keys"
            ) from e
        if "Unknown arguments from config file" in msg:
            keys = re.findall(r"'--([\w.-]+)'", msg)
            raise UserError(
                f"recipe {recipe}: unknown keys {', '.join(keys)}; see `atmanrl train --help`"
            ) from e
        raise UserError(f"recipe {recipe}: {msg}") from e
    except SystemExit as e:  # argparse already printed the unknown/invalid command-line option
        raise UserError(f"invalid command-line overrides {overrides}: see `atmanrl train --help`") from e


# --- pieces -----------------------------------------------------------------------------------------


def _task_kw(script: TrainScriptArguments) -> dict[str, Any]:
    from .data import task_options

    return task_options(script.task, level=script.level, subjects=script.subjects, fewshot=script.fewshot)


def task_from(script: TrainScriptArguments):
    from .data import get_task

    return get_task(script.task, **_task_kw(script))


def _evaluates(training_args) -> bool:
    return str(getattr(training_args, "eval_strategy", "no")).split(".")[-1].lower() != "no"


def build_dataset(script: TrainScriptArguments, seed: int, split: str | None = None):
    """A `datasets.Dataset` with conversational `prompt`s and the `gold`/`task` columns the rewards read.

    `split` "test" is the evaluation set: `eval_limit` problems of the task's held-out split."""
    from datasets import Dataset

    task = task_from(script)
    split = split or script.split
    limit = script.eval_limit if split != script.split else script.limit
    examples = task.load(script.data_dir, split=split, limit=limit, seed=seed)
    if not examples:
        raise UserError(f"no training examples for task {script.task!r}: check data_dir / split")
    return Dataset.from_list(
        [{"prompt": task.messages(e), "gold": e.gold, "task": e.task, "id": e.id} for e in examples]
    )


def build_rewards(script: TrainScriptArguments, weights: list[float] | None) -> list:
    from .rewards import get_reward

    if weights is not None and len(weights) != len(script.rewards):
        raise UserError(
            f"reward_weights has {len(weights)} entries for {len(script.rewards)} rewards {script.rewards}"
        )
    task_kw = {"task": script.task, **_task_kw(script)}
    own = _reward_options(script.reward_options, script.rewards)
    funcs = []
    for name in script.rewards:
        if name == "saliency":
            funcs.append(
                get_reward("saliency", config=saliency_config(script, own.get("saliency")), **task_kw)
            )
        else:
            funcs.append(
                get_reward(name, **declared(name, {**task_kw, **own.get(name, {})}, own.get(name, {})))
            )
    return funcs


def saliency_config(script, override: dict[str, Any] | None = None):
    """The saliency reward's `SaliencyRewardConfig` from a recipe's `saliency_*` keys (`recipe_key`), then
    `reward_options: {saliency: {...}}` on top (the config's own names)."""
    import dataclasses
    import json

    from .defaults import SaliencyRewardConfig, recipe_key

    values = {f.name: getattr(script, recipe_key(f.name)) for f in dataclasses.fields(SaliencyRewardConfig)}
    text = values["method_options"]
    if isinstance(text, str):  # JSON on the command line; a YAML mapping arrives as a dict
        try:
            values["method_options"] = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as e:
            raise UserError(f"saliency_options is not valid JSON ({e.msg}): {text}") from e
    unknown = sorted(set(override or {}) - set(values))
    if unknown:
        raise UserError(
            f"reward_options: the saliency reward has no option {unknown}; it takes {sorted(values)}"
        )
    return SaliencyRewardConfig(**{**values, **(override or {})})


def _reward_options(text: Any, rewards: list[str]) -> dict[str, dict[str, Any]]:
    """`reward_options` (a YAML mapping, or JSON on the command line): {reward name: {option: value}}."""
    import json

    if not text:
        return {}
    try:
        options = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise UserError(f"reward_options is not valid JSON ({e.msg}): {text}") from e
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise UserError('reward_options must map reward names to options, e.g. {"format": {"task": "arith"}}')
    unknown = sorted(set(options) - set(rewards))
    if unknown:
        raise UserError(f"reward_options names {unknown}, which are not in rewards {rewards}")
    return options


def declared(name: str, offered: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The options reward `name`'s factory declares, from those `offered` (the task's, and its own). An option
    the user gave (`given`, from reward_options) that the factory does not take is an error, not dropped."""
    import inspect

    from .rewards import REWARDS

    if name not in REWARDS:  # get_reward names the valid ones
        return offered
    params = inspect.signature(REWARDS[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    bad = sorted(set(given) - set(params))
    if bad:
        raise UserError(f"reward {name!r} has no option {bad}: it takes {sorted(params) or 'none'}")
    return {k: v for k, v in offered.items() if k in params}


def latest_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def model_check(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """(report line, problem or None) for a dry run: an embedded alias, an existing model folder, or a Hub id that
    is cached here or reachable (HF_HUB_OFFLINE=1 or no network: it must be cached)."""
    from .models import EMBEDDED, resolve_model_path

    if name in EMBEDDED:
        return f"model: embedded alias {name}", None
    try:
        resolve_model_path(name)  # a local-looking path that does not exist, a folder without config.json
    except UserError as e:
        return f"model: {name}", f"model: {e}"
    if Path(name).expanduser().exists():
        return f"model: local folder {name}", None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return f"model: Hugging Face id {name} (cached here)", None
    if HF_HUB_OFFLINE:
        return (
            f"model: Hugging Face id {name}",
            f"model: {name} is not cached and HF_HUB_OFFLINE=1 forbids the download",
        )
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import HfApi
    from huggingface_hub.constants import ENDPOINT

    host = urlparse(ENDPOINT).hostname or "huggingface.co"
    try:  # a quick look first: without a network the Hub client retries for half a minute
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as e:
        return (
            f"model: Hugging Face id {name}",
            f"model: {name} is not cached here and {host} is not reachable ({e})",
        )
    try:
        HfApi().model_info(name, revision=revision, timeout=10)
    except Exception as e:  # noqa: BLE001  (no network, a gated or missing repo: each says why in its message)
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        return (
            f"model: Hugging Face id {name}",
            f"model: {name} is not cached here and the Hub did not answer ({why})",
        )
    return f"model: Hugging Face id {name} (reachable; downloaded at train time)", None


def dry_run(script, training_args, model_args) -> tuple[list[str], list[str]]:
    """Check everything a run needs except the weights: (report lines, problems that would stop the run here)."""
    import importlib.util

    from .attention import SUPPORTED
    from .models import resolve_dtype

    problems: list[str] = []
    lines = [f"recipe keys: ok (output_dir={training_args.output_dir}, max_steps={training_args.max_steps})"]
    build_rewards(script, training_args.reward_weights)
    lines.append(
        f"rewards: {', '.join(script.rewards)} (weights {training_args.reward_weights or 'all 1.0'})"
    )
    for split, what in (
        (script.split, "data"),
        *((("test", "eval data"),) if _evaluates(training_args) else ()),
    ):
        try:
            n = len(build_dataset(script, training_args.seed, split=split))
            lines.append(f"{what}: {script.task}/{split} reachable, {n} examples")
        except UserError as e:
            problems.append(f"{what}: {script.task}/{split} NOT reachable here: {e}")
    line, problem = model_check(model_args.model_name_or_path, model_args.model_revision)
    lines.append(line)
    if problem:
        problems.append(problem)
    try:
        dtype = resolve_dtype(model_args.dtype or "float32", "cpu" if training_args.use_cpu else None)
        lines.append(f"dtype: {str(dtype).replace('torch.', '')}")
    except UserError as e:
        problems.append(f"dtype: {e}")
    impl = model_args.attn_implementation or "sdpa"
    if "saliency" in script.rewards and impl not in SUPPORTED:
        problems.append(
            f"attn_implementation: the saliency reward manipulates attention, which needs "
            f"{' or '.join(SUPPORTED)}, not {impl!r}: set attn_implementation: sdpa"
        )
    if getattr(training_args, "use_vllm", False) and importlib.util.find_spec("vllm") is None:
        problems.append("use_vllm: vLLM is not installed here: pip install vllm, or set use_vllm: false")
    if getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False):
        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append("load_in_4bit/8bit: bitsandbytes is not installed here: pip install bitsandbytes")
    return lines, problems


class PlainLog(TrainerCallback):
    """One line per logged step: the step and its metrics, rounded (what a log file of a run should hold)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
            print(f"step {state.global_step}/{state.max_steps}: {shown}", flush=True)
        return control


class FinalCheckpoint(TrainerCallback):
    """Make the last step save a checkpoint, so a run of any length is resumable from its end."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_save = True
        return control


def plot_curves(log_history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Training curves (reward components, accuracy, CoT length, saliency stats) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(
        {k for h in log_history for k in h if k.startswith(("rewards/", "saliency/")) and k.endswith("/mean")}
        | {k for h in log_history for k in h if k in ("reward", "completions/mean_length")}
        | {k for h in log_history for k in h if k.startswith("saliency/")}
    )
    if not keys:
        return None
    cols = 3
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# --- main -------------------------------------------------------------------------------------------


def main(script: TrainScriptArguments, training_args, model_args) -> dict[str, Any]:
    from transformers import set_seed
    from trl import GRPOTrainer, get_peft_config, get_quantization_config
    from trl.trainer.callbacks import RichProgressCallback

    from .models import load_model, resolve_dtype, resolve_model_path

    if script.dry_run:
        lines, problems = dry_run(script, training_args, model_args)
        for line in lines:
            print(line)
        for p in problems:
            print(f"PROBLEM {p}")
        print(
            "dry run: ok, the run can start here" if not problems else f"dry run: {len(problems)} problem(s)"
        )
        return {"dry_run": True, "problems": problems}

    import torch

    log.info("torch threads: %d", torch.get_num_threads())
    set_seed(training_args.seed)
    dataset = build_dataset(script, training_args.seed)
    reward_funcs = build_rewards(script, training_args.reward_weights)

    eval_dataset = (
        build_dataset(script, training_args.seed, split="test") if _evaluates(training_args) else None
    )

    path = resolve_model_path(model_args.model_name_or_path)
    model, tokenizer = load_model(
        path,
        dtype=resolve_dtype(model_args.dtype or "float32", "cpu" if training_args.use_cpu else None),
        attn_implementation=model_args.attn_implementation or "sdpa",
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
        revision=model_args.model_revision,
        quantization_config=get_quantization_config(model_args),
    )
    if training_args.gradient_checkpointing:
        model.config.use_cache = False

    resume = training_args.resume_from_checkpoint  # TRL's key: a checkpoint path
    if resume and not Path(resume).is_dir():
        raise UserError(f"resume_from_checkpoint: no such checkpoint folder {resume}")
    if script.resume and not resume:
        resume = latest_checkpoint(training_args.output_dir)
        if resume is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", training_args.output_dir)
    # On a terminal, rich's live table; in a log file (ab, CI, nohup) one plain line per logged step: rich
    # redraws its table into a file hundreds of lines at a time, with cut headers
    live = sys.stdout.isatty() and os.environ.get("ATMANRL_NO_PROGRESS") != "1"
    training_args.disable_tqdm = True
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[RichProgressCallback(), FinalCheckpoint()] if live else [FinalCheckpoint(), PlainLog()],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # rich's table, or PlainLog's line, shows the same logs
    if not live:  # TRL's rich sample tables would fill a log file: the samples stay in completions/*.parquet
        trainer.num_completions_to_print = 0
    for fn in reward_funcs:
        if hasattr(fn, "bind"):
            fn.bind(trainer)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    summary = {
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "checkpoint": latest_checkpoint(training_args.output_dir),
    }
    if script.plot and trainer.is_world_process_zero():
        png = plot_curves(trainer.state.log_history, Path(training_args.output_dir) / "training_curves.png")
        summary["plot"] = str(png) if png else None
    if hasattr(trainer, "end"):
        trainer.end()
    return summary


def split_recipe(argv: list[str]) -> tuple[str | None, list[str]]:
    """(recipe, overrides): the recipe is `--config PATH` or the first .yaml/.yml token, wherever it stands."""
    args = list(argv)
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise UserError(
                "--config needs a recipe path, e.g. --config recipes/smollm2-135m/arith_atmanrl.yaml"
            )
        return args[i + 1], args[:i] + args[i + 2 :]
    for i, a in enumerate(args):
        if a.endswith((".yaml", ".yml")) and not a.startswith("-"):
            return a, args[:i] + args[i + 1 :]
    return None, args


def print_help_all() -> None:
    """`atmanrl train --help-all`: atmanrl's keys, then TRL's full GRPOConfig and ModelConfig keys (loads TRL)."""
    print(train_help())
    print("\nTRL's GRPOConfig and ModelConfig keys (https://huggingface.co/docs/trl):")
    full = make_parser().format_help().splitlines()
    start = next((i for i, line in enumerate(full) if line.strip().startswith("--output_dir")), 0)
    print("\n".join(full[start:]))


def cli(argv: list[str]) -> int:
    """Entry for `atmanrl train RECIPE.yaml [--key value ...]` (argv excludes `train`)."""
    if "--help-all" in argv:
        print_help_all()
        return 0
    if "-h" in argv or "--help" in argv:
        print(train_help())
        return 0
    if not argv:
        print(TRAIN_USAGE + "\nThe full list of keys: atmanrl train --help")
        return 2
    recipe, overrides = split_recipe(argv)
    # The vocabulary of the other commands: --model (TRL's model_name_or_path) and --dry-run.
    synonyms = {"--dry-run": "--dry_run", "--model": "--model_name_or_path"}
    overrides = [synonyms.get(a, a) for a in overrides]
    script, training_args, model_args = parse_recipe(recipe, overrides)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = main(script, training_args, model_args)
    if summary.get("dry_run"):
        return 1 if summary["problems"] else 0
    print(
        f"trained {summary['global_step']} steps; checkpoint={summary['checkpoint']}; plot={summary.get('plot')}"
    )
    return 0
