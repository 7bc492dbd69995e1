"""Each command's options as one dataclass: the single source of its flags, defaults and help.

A field becomes `--field-name` (aliases, choices, a group, a deprecated spelling and positional arguments come
from its metadata; see `option`), and the parsed flags become the dataclass again (`from_namespace`), so a
command works on typed options. Shared groups (model, data, saliency) are dataclasses that commands inherit.
Library configs (`SamplingConfig`, `EvalConfig`, `ABConfig`) take the fields of the same names
(`config_from_options`). This module imports neither torch nor transformers: `--help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from typing import Any, TypeVar

from .defaults import DEFAULT_METHODS, DEFAULT_MODEL, VARIANT_PARAMS, SaliencyRewardConfig, recipe_key  # noqa: F401  (re-exported: the CLI's defaults)
from .defaults import LEARNED_PRESETS as PRESETS

T = TypeVar("T")

LEARNED_PRESETS = tuple(PRESETS)  # the --preset choices


class Deprecated(argparse.Action):
    """An old spelling, accepted for one release with a warning that names the new one."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        logging.getLogger("atmanrl").warning("%s is deprecated: use %s", option_string, self.new)
        setattr(namespace, self.dest, values)


def option(
    default: Any = None,
    help: str = "",
    *,
    group: str | None = None,
    aliases: tuple[str, ...] = (),
    deprecated: tuple[str, ...] = (),
    choices: tuple | None = None,
    required: bool = False,
    metavar: str | None = None,
    nargs: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option. `nargs` makes it positional."""
    meta = {k: v for k, v in locals().items() if k != "default"}  # every argument but the default
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _scalar(hint: Any) -> type:
    """int from `int | None`, list from `list[str]`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return origin or hint


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argparse option per field of `cls`, in field order, in the groups the fields name."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    for f in fields(cls):
        m = f.metadata
        if m.get("group") and m["group"] not in groups:
            groups[m["group"]] = parser.add_argument_group(m["group"])
        where = groups[m["group"]] if m.get("group") else parser
        kind = _scalar(hints[f.name])
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        kw: dict[str, Any] = {"help": m.get("help", "")}
        for key in ("choices", "metavar"):
            if m.get(key) is not None:
                kw[key] = m[key]
        if m.get("nargs") is not None:
            where.add_argument(f.name, nargs=m["nargs"], default=default, **kw)
            continue
        flags = [f"--{f.name.replace('_', '-')}", *m.get("aliases", ())]
        if kind is bool:
            where.add_argument(*flags, dest=f.name, action="store_true", **kw)
            continue
        where.add_argument(*flags, dest=f.name, type=kind, default=default, required=m["required"], **kw)
        for old in m.get("deprecated", ()):
            where.add_argument(
                old, dest=f.name, type=kind, action=Deprecated, new=flags[0], help=argparse.SUPPRESS
            )


def from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})  # type: ignore[call-arg]


def config_from_options(cls: type[T], options: Any, **overrides: Any) -> T:
    """A library config dataclass from the options of the same names (`overrides` for the ones that need
    parsing), so a command's flags and its library config cannot drift apart field by field."""
    given = {f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)}
    return cls(**(given | overrides))  # type: ignore[call-arg]


def csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


# --- shared groups ------------------------------------------------------------------------------------


@dataclass
class ModelOptions:
    model: str = option(
        DEFAULT_MODEL,
        "embedded alias, Hugging Face id or local folder (default: %(default)s)",
        group="model",
        aliases=("--model-name-or-path", "--model_name_or_path"),
    )
    dtype: str = option(
        "auto",
        "auto: bfloat16 on a GPU that supports it, else float32 (default: %(default)s)",
        group="model",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    device: str = option(
        "auto", "auto (cuda, then mps, then cpu), or a torch device (default: %(default)s)", group="model"
    )
    trust_remote_code: bool = option(
        False,
        "allow model code from the Hub to run (off by default; only for models you trust)",
        group="model",
    )


@dataclass
class TaskOptions:
    task: str = option(
        "arith",
        "task name: arith (synthetic, no download), gsm8k or mmlu (default: %(default)s)",
        group="data",
    )
    data_dir: str | None = option(
        None,
        "local data: a GSM8K folder/jsonl or an MMLU folder of CSVs (default: the Hugging Face Hub)",
        group="data",
    )
    split: str = option("test", "dataset split (default: %(default)s)", group="data")
    limit: int | None = option(
        None, "use at most N examples (default: every example of the split)", group="data"
    )
    seed: int = option(0, "seed for data order, arith problems and sampling", group="data")
    no_shuffle: bool = option(False, "keep file order instead of a seeded shuffle", group="data")
    level: int = option(
        1,
        "arith difficulty level: 1-4 by steps and operand range, 5 the A/B testbed (docs/data.md) (default: %(default)s)",
        group="data",
    )
    subjects: str | None = option(None, "mmlu: comma-separated subjects (default: all)", group="data")
    no_fewshot: bool = option(False, "drop the worked example exchange from the prompt", group="data")


STEPS_HELP = "mask optimisation steps of `learned` (default: 30, the reward's mask 15; train: saliency_steps)"


def reward_option(name: str) -> Any:
    """A flag made from a `SaliencyRewardConfig` field: its default and help, as the recipes have them."""
    f = next(f for f in fields(SaliencyRewardConfig) if f.name == name)
    return option(f.default, f"{f.metadata['help']} (default: %(default)s)", group="saliency")


# the reward variants' parameters as flags: declared once, in SaliencyRewardConfig (VARIANT_PARAMS names them)
VariantFlags = make_dataclass("VariantFlags", [(name, float, reward_option(name)) for name in VARIANT_PARAMS])


@dataclass
class SaliencyOptions(VariantFlags):
    methods: str = option(
        DEFAULT_METHODS,
        "comma-separated: learned, atman, leave_one_out, attention_gradient, grad_x_input, attention, random "
        "(default: %(default)s)",
        group="saliency",
    )
    scope: str | None = option(
        None,
        "query rows that see the mask: the answer's, or every row after the token (default: the method's or "
        "preset's: answer; the paper preset all)",
        group="saliency",
        choices=("answer", "all"),
    )
    saliency_steps: int | None = option(None, STEPS_HELP, group="saliency", deprecated=("--steps",))
    preset: str | None = option(
        None,
        "named setting of `learned`: reward (the saliency reward's one-hop mask, about half the cost), chained "
        "(the default, spelled out), paper (the published per-entry mask), paper_answer (its answer-rows "
        "approximation), additive_restore (atmanrl 0.1-0.4's reconstruction), v0.1 (atmanrl 0.1). Default: the "
        "library's (one hop through the CoT included). The reported rewards always use the reward's mask",
        group="saliency",
        choices=LEARNED_PRESETS,
    )

    def scoring(self) -> dict[str, Any]:
        """The options `trace_files.score_traces` takes, by its names."""
        return dict(
            scope=self.scope,
            steps=self.saliency_steps,
            seed=getattr(self, "seed", 0),
            preset=self.preset,
            **{k: getattr(self, k) for k in VARIANT_PARAMS},
        )


# --- one dataclass per command -------------------------------------------------------------------------


@dataclass
class DataCommand(TaskOptions):
    show: int = option(3, "examples to print (default: %(default)s)")


@dataclass
class GenerateCommand(TaskOptions, ModelOptions):
    output: str = option(None, "output JSONL file", group="sampling", aliases=("-o",), required=True)
    max_new_tokens: int | None = option(None, "default: the task's (arith 128, others 256)", group="sampling")
    temperature: float = option(0.0, "0 = greedy (default: %(default)s)", group="sampling")
    top_p: float = option(1.0, "nucleus sampling (default: %(default)s)", group="sampling")
    batch_size: int = option(8, "prompts per generate call (default: %(default)s)", group="sampling")


@dataclass
class SaliencyCommand(SaliencyOptions, ModelOptions):
    input: str = option(
        None, "traces JSONL (e.g. the output of `atmanrl generate`)", aliases=("-i",), required=True
    )
    output: str = option(None, "scores JSONL", aliases=("-o",), required=True)
    html: str | None = option(None, "also write a self-contained heatmap HTML")
    task: str | None = option(None, "answer parser to use (default: `#### N`, then `Answer: X`)")
    seed: int = option(0, "seed of the saliency methods that sample (default: %(default)s)")
    batch_size: int = option(8, "traces per forward (default: %(default)s)")


@dataclass
class ExplainCommand(SaliencyOptions, TaskOptions, ModelOptions):
    html: str = option("explain.html", "heatmap file (default: %(default)s)")
    output: str | None = option(None, "also write the scored rows as JSONL", aliases=("-o",))


@dataclass
class EvalCommand(TaskOptions, ModelOptions):
    report: str = option(None, "output folder", group="evaluation", required=True, metavar="DIR")
    max_new_tokens: int | None = option(None, "generation budget (default: the task's)", group="evaluation")
    batch_size: int = option(8, "prompts per generate call (default: %(default)s)", group="evaluation")
    methods: str = option(
        DEFAULT_METHODS, "saliency methods, comma-separated (default: %(default)s)", group="evaluation"
    )
    saliency_steps: int | None = option(None, STEPS_HELP, group="evaluation", deprecated=("--steps",))
    saliency_config: str = option(
        "{}", 'JSON options per method, e.g. \'{"learned": {"steps": 10}}\'', group="evaluation"
    )
    saliency_limit: int = option(16, "traces per saliency method (default: %(default)s)", group="evaluation")
    skip: str = option(
        "",
        "groups to leave out, comma-separated: cot_stats, pass_at_k, early_answering, adding_mistakes, filler, "
        "saliency",
        group="evaluation",
    )
    pass_k: int = option(4, "pass@k: k (the paper's Table 1: 4) (default: %(default)s)", group="evaluation")
    pass_samples: int | None = option(
        None, "pass@k: sampled completions per problem (default: k)", group="evaluation"
    )
    pass_temperature: float = option(
        0.7, "pass@k: sampling temperature (default: %(default)s)", group="evaluation"
    )
    composition: str = option(
        "auto",
        "spaCy token shares: tagger (en_core_web_sm), lexical (spaCy's lexical attributes) or auto (the tagger "
        "when installed) (default: %(default)s)",
        group="evaluation",
        choices=("auto", "tagger", "lexical"),
    )
    mistake_mode: str = option(
        "force",
        "after corrupting a number: force the answer, or let the model continue (default: %(default)s)",
        group="evaluation",
        choices=("force", "continue"),
    )
    answer_tokens: int = option(8, "tokens decoded after a forced answer prefix", group="evaluation")
    planted: int = option(
        0,
        "also run the planted-distractor cases (atmanrl.planted) on N cases (default: off)",
        group="evaluation",
        metavar="N",
    )


@dataclass
class CompareCommand:
    reports: list[str] = option([], "folders written by `atmanrl eval --report`", nargs="+", metavar="DIR")
    names: str | None = option(None, "comma-separated display names (default: folder names)")
    output: str = option(None, "output folder", aliases=("-o",), required=True, metavar="OUT")
    full: bool = option(False, "also print every metric (compare.html always has them)")


@dataclass
class RecipesCommand:
    action: str = option("list", "list, show or copy", nargs="?", choices=("list", "show", "copy"))
    name: str | None = option(None, "recipe name, e.g. smollm2-135m/arith_atmanrl.yaml", nargs="?")
    dest: str | None = option(None, "copy: destination file or folder (default: .)", nargs="?")
    force: bool = option(False, "copy: overwrite an existing file")


@dataclass
class ABCommand:
    output: str = option("runs/ab", "output folder (default: %(default)s)", aliases=("-o",), metavar="OUT")
    model: str = option(
        DEFAULT_MODEL,
        "base model of every arm (default: %(default)s)",
        aliases=("--model-name-or-path", "--model_name_or_path"),
    )
    arms: str = option(
        "outcome,atmanrl,paper,paper_outcome",
        "arms, comma-separated, the first is the baseline: outcome, atmanrl, paper (the published setting), "
        "paper_outcome (that setting's outcome-only baseline, which paper is also compared with) "
        "(default: %(default)s)",
    )
    outcome_recipe: str = option("smollm2-135m/arith_outcome.yaml", "YAML path or recipe name")
    atmanrl_recipe: str = option("smollm2-135m/arith_atmanrl.yaml", "YAML path or recipe name")
    paper_recipe: str = option("smollm2-135m/arith_paper.yaml", "YAML path or recipe name")
    paper_outcome_recipe: str = option("smollm2-135m/arith_paper_outcome.yaml", "YAML path or recipe name")
    pass_k: int = option(4, "pass@k of every evaluated model (default: %(default)s)")
    composition: str = option(
        "auto",
        "spaCy token shares: tagger, lexical or auto (default: %(default)s)",
        choices=("auto", "tagger", "lexical"),
    )
    seeds: str = option("0,1,2", "comma-separated training seeds (default: %(default)s)")
    max_steps: int = option(100, "GRPO steps per run (default: %(default)s)")
    save_steps: int = option(10, "checkpoint every N steps (resume point)")
    eval_task: str = option("arith", "held-out task (default: %(default)s)")
    eval_level: int = option(
        5,
        "arith level of training and of the held-out problems (default: %(default)s, the testbed where the "
        "embedded model needs its CoT: docs/results.md)",
        aliases=("--level",),
    )
    eval_limit: int = option(200, "held-out problems (default: %(default)s)")
    eval_seed: int = option(1234, "which held-out problems (same for every model)")
    train_args: str = option(
        "", "extra train options for every arm, e.g. '--num_generations 8 --max_completion_length 64'"
    )
    parallel: int = option(
        1,
        "runs trained (then evaluated) at once: 1 on a CPU; on a GPU every run side by side, as "
        "`make ab-gpu` does (default: %(default)s)",
    )


@dataclass
class DemoCommand:
    output: str = option("demo_out", "folder for everything the demo writes (default: %(default)s)")
    model: str = option(DEFAULT_MODEL, "model of every step (default: %(default)s)")
    seed: int = option(0, "seed of data, sampling and training (default: %(default)s)")
    steps: int = option(8, "GRPO steps of each training run (default: %(default)s)")
    limit: int = option(6, "problems for generation and for each evaluation (default: %(default)s)")
    recipes: str | None = option(
        None,
        "folder with arith_outcome.yaml and arith_atmanrl.yaml (default: the packaged smollm2-135m recipes)",
    )


# --- train: TRL's way (HfArgumentParser over this, GRPOConfig and ModelConfig) ----------------------------


@dataclass
class TrainKeys:
    """atmanrl's own recipe keys apart from the saliency reward's (`TrainScriptArguments` adds those)."""

    task: str = field(default="arith", metadata={"help": "task: arith, gsm8k or mmlu"})
    data_dir: str | None = field(
        default=None, metadata={"help": "local GSM8K/MMLU copy; unset: download from the Hub"}
    )
    split: str = field(default="train", metadata={"help": "split to train on (eval splits are always test)"})
    dataset_split: str | None = field(default=None, metadata={"help": "deprecated spelling of `split`"})
    limit: int | None = field(default=None, metadata={"help": "use at most N training problems"})
    level: int = field(default=1, metadata={"help": "arith difficulty level"})
    subjects: str | None = field(default=None, metadata={"help": "mmlu: comma-separated subjects"})
    fewshot: bool = field(
        default=True,
        metadata={"help": "prepend the task's worked example exchange (--fewshot false leaves it out)"},
    )
    rewards: list[str] = field(
        default_factory=lambda: ["correctness", "format", "saliency"],
        metadata={"help": "reward names from atmanrl.rewards.REWARDS; weights go in `reward_weights`"},
    )
    reward_options: str | None = field(
        default=None,
        metadata={
            "help": "each reward's own options, {name: {option: value}} (a YAML mapping, or JSON): passed to the "
            "reward's factory, which receives only the options it declares"
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the latest checkpoint-N in output_dir"}
    )
    dry_run: bool = field(
        default=False, metadata={"help": "validate the recipe without loading weights (also --dry-run)"}
    )
    eval_limit: int = field(
        default=64,
        metadata={
            "help": "held-out problems for evaluation during training (with eval_strategy steps/epoch)"
        },
    )
    plot: bool = field(default=True, metadata={"help": "write training_curves.png to output_dir at the end"})


def _saliency_recipe_keys() -> list[tuple[str, Any, Any]]:
    """The saliency reward's recipe keys, made from `SaliencyRewardConfig`: its one declaration of each setting
    (a recipe spells the method's options as JSON, or as a YAML mapping)."""
    hints = typing.get_type_hints(SaliencyRewardConfig)
    out = []
    for f in fields(SaliencyRewardConfig):
        kind = str | None if f.name == "method_options" else hints[f.name]
        out.append(
            (recipe_key(f.name), kind, field(default=f.default, metadata={"help": f.metadata["help"]}))
        )
    return out


TrainScriptArguments = make_dataclass(
    "TrainScriptArguments",
    _saliency_recipe_keys(),
    bases=(TrainKeys,),
    namespace={"__doc__": "atmanrl's recipe keys (the rest are TRL's `GRPOConfig` and `ModelConfig`)."},
)
TrainScriptArguments.__module__ = __name__


TRAIN_USAGE = """usage: atmanrl train RECIPE.yaml [--key value ...]

Train with GRPO (TRL's GRPOTrainer) on a recipe: a YAML of atmanrl's keys below plus TRL's GRPOConfig and
ModelConfig keys. `--key value` pairs, before or after the recipe, override it; `--config RECIPE.yaml` works too.

  atmanrl recipes                                        # the recipes that ship with atmanrl
  atmanrl train recipes/smollm2-135m/arith_atmanrl.yaml --max_steps 10 --output_dir runs/try
  atmanrl train RECIPE.yaml --dry-run                    # check data, model, rewards and setup; no training
  atmanrl train RECIPE.yaml --resume true                # continue from the latest checkpoint-N
  atmanrl train --help-all                               # also every TRL GRPOConfig / ModelConfig key
"""


# TRL's keys a recipe author sets most often (the rest: `atmanrl train --help-all`)
TRL_COMMON = (
    "model_name_or_path (alias --model)",
    "output_dir",
    "max_steps",
    "learning_rate",
    "per_device_train_batch_size",
    "num_generations",
    "max_completion_length",
    "temperature",
    "reward_weights",
    "scale_rewards",
    "beta",
    "save_steps",
    "seed",
    "use_vllm",
)


def train_help() -> str:
    """`atmanrl train --help`: the usage, atmanrl's recipe keys with their defaults, and the common TRL keys.
    Built from `TrainScriptArguments` without importing TRL (it loads torch)."""
    lines = [TRAIN_USAGE, "atmanrl keys (recipe key: or --key value):"]
    for f in fields(TrainScriptArguments):
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        shown = str(default).lower() if isinstance(default, bool) else default
        lines.append(f"  --{f.name:<24} {f.metadata.get('help', '')} (default: {shown})")
    lines += [
        "",
        "Booleans take true/false (--fewshot false). TRL's GRPOConfig and ModelConfig keys work the same way;",
        "the common ones: " + ", ".join(TRL_COMMON) + ".",
        "All of them: atmanrl train --help-all (https://huggingface.co/docs/trl). --dry-run checks a recipe.",
    ]
    return "\n".join(lines)
