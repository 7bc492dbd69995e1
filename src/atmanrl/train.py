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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .errors import UserError

log = logging.getLogger(__name__)


@dataclass
class TrainScriptArguments:
    """atmanrl's own recipe keys (the rest are TRL's `GRPOConfig` and `ModelConfig`)."""

    task: str = field(default="arith", metadata={"help": "task: arith, gsm8k or mmlu"})
    data_dir: str | None = field(default=None, metadata={"help": "local GSM8K/MMLU copy (default: the Hub)"})
    dataset_split: str = field(default="train", metadata={"help": "split to train on"})
    limit: int | None = field(default=None, metadata={"help": "use at most N training problems"})
    level: int = field(default=1, metadata={"help": "arith difficulty level"})
    subjects: str | None = field(default=None, metadata={"help": "mmlu: comma-separated subjects"})
    fewshot: bool = field(default=True, metadata={"help": "prepend the task's worked example exchange"})
    rewards: list[str] = field(
        default_factory=lambda: ["correctness", "format", "saliency"],
        metadata={"help": "reward names from atmanrl.rewards.REWARDS; weights go in `reward_weights`"},
    )
    saliency_variant: str = field(
        default="needed_share",
        metadata={"help": "needed_share (default), salient_fraction, cot_reliance or concentration"},
    )
    saliency_method: str = field(default="learned", metadata={"help": "saliency method behind the reward"})
    saliency_steps: int | None = field(
        default=None,
        metadata={
            "help": "mask optimisation steps (default: the method's, 15; or its preset's, e.g. paper 200)"
        },
    )
    saliency_options: str | None = field(
        default=None,
        metadata={
            "help": 'extra saliency options as JSON, e.g. \'{"lr": 0.2, "lam": 1.0, "scope": "answer"}\''
        },
    )
    saliency_tau: float = field(
        default=0.5, metadata={"help": "salient_fraction only: threshold on the score"}
    )
    saliency_margin: float = field(
        default=1.0,
        metadata={"help": "needed_share: the CoT must raise log p(answer) by this many nats, else reward 0"},
    )
    saliency_correct_only: bool = field(
        default=True, metadata={"help": "saliency reward for correct rollouts only"}
    )
    min_reasoning_tokens: int = field(default=5, metadata={"help": "shorter CoTs get saliency 0"})
    resume: bool = field(
        default=False, metadata={"help": "continue from the latest checkpoint-N in output_dir"}
    )
    dry_run: bool = field(default=False, metadata={"help": "validate the recipe without loading weights"})
    plot: bool = field(default=True, metadata={"help": "write training_curves.png to output_dir at the end"})


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


def parse_recipe(recipe: str | Path | None, overrides: list[str]) -> tuple[Any, Any, Any]:
    """(script args, GRPOConfig, ModelConfig) from a YAML recipe plus `--key value` overrides."""
    args = list(overrides)
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise UserError(
                f"recipe {path} not found: pass a YAML file, e.g. recipes/smollm2-135m/arith_atmanrl.yaml"
            )
        _check_recipe_keys(path)
        args = ["--config", str(path), *args]
    parser = make_parser()
    import torch

    if not torch.cuda.is_available() and "--dry_run" in args:
        # GRPOConfig refuses bf16 without a GPU at parse time; a dry run on a laptop still checks the rest.
        args += ["--bf16", "false"]
    try:
        return parser.parse_args_and_config(args)
    except ValueError as e:
        msg = str(e).splitlines()[0]
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


def build_dataset(script: TrainScriptArguments, seed: int):
    """A `datasets.Dataset` with conversational `prompt`s and the `gold`/`task` columns the rewards read."""
    from datasets import Dataset

    task = task_from(script)
    examples = task.load(script.data_dir, split=script.dataset_split, limit=script.limit, seed=seed)
    if not examples:
        raise UserError(f"no training examples for task {script.task!r}: check data_dir / dataset_split")
    return Dataset.from_list(
        [{"prompt": task.messages(e), "gold": e.gold, "task": e.task, "id": e.id} for e in examples]
    )


def build_rewards(script: TrainScriptArguments, weights: list[float] | None) -> list:
    import json

    from .rewards import get_reward

    if weights is not None and len(weights) != len(script.rewards):
        raise UserError(
            f"reward_weights has {len(weights)} entries for {len(script.rewards)} rewards {script.rewards}"
        )
    task_kw = {"task": script.task, **_task_kw(script)}
    funcs = []
    for name in script.rewards:
        if name == "saliency":
            try:
                extra = json.loads(script.saliency_options) if script.saliency_options else {}
            except json.JSONDecodeError as e:
                raise UserError(
                    f"saliency_options is not valid JSON ({e.msg}): {script.saliency_options}"
                ) from e
            funcs.append(
                get_reward(
                    "saliency",
                    variant=script.saliency_variant,
                    method=script.saliency_method,
                    steps=script.saliency_steps,
                    tau=script.saliency_tau,
                    margin=script.saliency_margin,
                    correct_only=script.saliency_correct_only,
                    min_reasoning_tokens=script.min_reasoning_tokens,
                    method_options=extra,
                    **task_kw,
                )
            )
        else:
            funcs.append(get_reward(name, **task_kw))
    return funcs


def latest_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def dry_run(script, training_args, model_args) -> list[str]:
    """Check everything a run needs except the weights. Returns report lines; raises on a blocking problem."""
    from .models import EMBEDDED

    lines = [f"recipe keys: ok (output_dir={training_args.output_dir}, max_steps={training_args.max_steps})"]
    build_rewards(script, training_args.reward_weights)
    lines.append(
        f"rewards: {', '.join(script.rewards)} (weights {training_args.reward_weights or 'all 1.0'})"
    )
    try:
        n = len(build_dataset(script, training_args.seed))
        lines.append(f"data: {script.task}/{script.dataset_split} reachable, {n} examples")
    except UserError as e:
        lines.append(f"data: NOT reachable here: {e}")
    name = model_args.model_name_or_path
    if name in EMBEDDED:
        lines.append(f"model: embedded alias {name}")
    elif Path(name).exists():
        lines.append(f"model: local folder {name}")
    else:
        lines.append(f"model: Hugging Face id {name} (downloaded at train time unless cached)")
    return lines


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
    from trl import GRPOTrainer, get_peft_config
    from trl.trainer.callbacks import RichProgressCallback

    from .models import load_model, resolve_model_path

    if script.dry_run:
        for line in dry_run(script, training_args, model_args):
            print(line)
        return {"dry_run": True}

    set_seed(training_args.seed)
    dataset = build_dataset(script, training_args.seed)
    reward_funcs = build_rewards(script, training_args.reward_weights)

    path = resolve_model_path(model_args.model_name_or_path)
    model, tokenizer = load_model(
        path,
        dtype=model_args.dtype or "float32",
        attn_implementation=model_args.attn_implementation or "sdpa",
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
    )
    if training_args.gradient_checkpointing:
        model.config.use_cache = False

    resume = None
    if script.resume:
        resume = latest_checkpoint(training_args.output_dir)
        if resume is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", training_args.output_dir)
    training_args.disable_tqdm = True  # rich progress instead
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[RichProgressCallback(), FinalCheckpoint()],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the rich table shows the same logs
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


def cli(argv: list[str]) -> int:
    """Entry for `atmanrl train RECIPE.yaml [--key value ...]` (argv excludes `train`)."""
    if not argv or argv[0] in ("-h", "--help"):
        make_parser().print_help()
        return 0
    recipe, overrides = (argv[0], argv[1:]) if not argv[0].startswith("--") else (None, argv)
    overrides = ["--dry_run" if a == "--dry-run" else a for a in overrides]
    script, training_args, model_args = parse_recipe(recipe, overrides)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = main(script, training_args, model_args)
    if not summary.get("dry_run"):
        print(
            f"trained {summary['global_step']} steps; checkpoint={summary['checkpoint']}; plot={summary.get('plot')}"
        )
    return 0
