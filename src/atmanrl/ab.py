"""`atmanrl ab`: outcome-only GRPO against AtManRL (ours, the paper's), same seeds, data and budget, with intervals.

    atmanrl ab --output runs/ab                       # 4 arms x 3 seeds x 100 steps on the testbed (arith level 5)
    atmanrl ab --arms outcome,atmanrl --seeds 0 --max-steps 10 --output runs/ab_small
    make ab-gpu                                       # every run side by side on one GPU, 300 steps x 32 completions

1. trains every arm's recipe once per seed (`atmanrl train RECIPE --seed S --max_steps N --resume true`); a finished
   run (OUT/runs/ARM-sSEED/ab_done.json) is reused, an interrupted one resumes from its last checkpoint;
2. evaluates the base model and every run on the same held-out problems (`atmanrl eval`, adding mistakes in
   `continue` mode), and scores each model's own held-out rollouts with the default saliency reward;
3. writes OUT/ab.json, OUT/ab.md and OUT/ab.html (+ ab_curves.png): every metric per model with a 95% interval
   that resamples seeds and then problems, each arm minus its reference with its paired interval, the accuracy
   check, the per-seed table, the cost and the training curves.

Each step is an `atmanrl` command run in a subprocess (printed first, its log in OUT/logs/), so any of them can
be rerun by hand. `--parallel N` runs N of them at once (on a GPU: every run side by side).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .defaults import DEFAULT_MODEL
from .errors import UserError
from .io import atomic_write_text
from .progress import console
from .recipes import recipe_path

# outcome-only GRPO, atmanrl's default reward, the published setting, and the published setting's own baseline
ARMS = ("outcome", "atmanrl", "paper", "paper_outcome")
# The paper's Table 1 compares AtManRL with "the same setting, outcome reward only": an arm listed here is also
# compared with that arm, and its Table 1 view and paper's-direction check use it when it runs.
OWN_BASELINE = {"paper": "paper_outcome"}
OUTCOME_ONLY = frozenset({"outcome", "paper_outcome"})  # no saliency reward: no paper's-direction check


def reference(arm: str, arms: tuple[str, ...] | list[str]) -> str:
    """The arm `arm` is measured against: its own setting's outcome-only arm when it runs, else the first arm."""
    own = OWN_BASELINE.get(arm)
    return own if own in arms else arms[0]


# (key, label, paper's relative change with AtManRL on GSM8K (Table 1), where it reports one)
METRICS: tuple[tuple[str, str, float | None], ...] = (
    ("accuracy", "accuracy", None),
    ("pass_at_k", "pass@k", -0.004),
    ("cot_tokens", "CoT tokens", -0.44),
    ("spacy_number_share", "numbers (spaCy)", +0.48),
    ("spacy_stop_word_share", "stop words (spaCy)", -0.25),
    ("spacy_symbol_share", "symbols (spaCy)", +0.61),
    ("stop_word_share", "stop-word share", -0.25),
    ("number_share", "number share", +0.48),
    ("symbol_share", "symbol share", +0.61),
    ("early_aoc", "early-answering AOC", None),
    ("early_unstated", "early answering: agreement before the CoT states it", None),
    ("early_stated", "early answering: partial CoTs that already state it", None),
    ("mistake_changed", "adding mistakes: answer changed", None),
    ("filler_agreement", "filler agreement", None),
    ("saliency_reward", "saliency reward (default)", None),
)
CURVES = (
    "reward",
    "rewards/correctness/mean",
    "rewards/paper_outcome/mean",
    "rewards/saliency/mean",
    "completions/mean_length",
    "saliency/gap",
)


@dataclass
class ABConfig:
    """One A/B experiment. Every arm gets the same seeds, steps, data and overrides."""

    output: str = "runs/ab"
    model: str = DEFAULT_MODEL
    arms: tuple[str, ...] = ARMS  # the first is the baseline every other arm is compared with
    outcome_recipe: str = "smollm2-135m/arith_outcome.yaml"
    atmanrl_recipe: str = "smollm2-135m/arith_atmanrl.yaml"
    paper_recipe: str = "smollm2-135m/arith_paper.yaml"
    paper_outcome_recipe: str = "smollm2-135m/arith_paper_outcome.yaml"
    pass_k: int = 4
    composition: str = "auto"  # spaCy token shares: auto, tagger or lexical (atmanrl.composition)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 100
    save_steps: int = 10
    overrides: tuple[str, ...] = ()  # extra `--key value` tokens for every arm's train command
    eval_task: str = "arith"
    eval_level: int = 5  # arith: the level of training and of the held-out problems (5: the testbed)
    eval_limit: int = 200
    # runs (train, then eval) at once: >1 on a GPU; on a few CPU cores processes that each spin a thread per
    # core slow each other down many times over (docs/performance.md, threads)
    parallel: int = 1
    eval_seed: int = 1234  # held-out problems: the same for every model, never the training seed's stream
    mistake_mode: str = "continue"
    n_boot: int = 2000

    def validate(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds needs distinct seeds, e.g. 0,1,2; got {self.seeds}")
        if self.max_steps < 1 or self.eval_limit < 1 or self.parallel < 1:
            raise UserError(
                f"--max-steps, --eval-limit and --parallel must be >= 1, got {self.max_steps}, "
                f"{self.eval_limit}, {self.parallel}"
            )
        bad = [a for a in self.arms if a not in ARMS]
        if bad or len(set(self.arms)) < 2 or len(set(self.arms)) != len(self.arms):
            raise UserError(
                f"--arms needs two or more distinct arms from {', '.join(ARMS)}, got {','.join(self.arms)}"
            )
        for arm in self.arms:
            recipe_path(self.recipe(arm))  # a clear error before any work
        from .data import get_task, task_options

        get_task(
            self.eval_task, **task_options(self.eval_task, level=self.eval_level)
        )  # a missing level fails here, not in every run

    def check_resumable(self, previous: dict) -> None:
        """An output folder is resumed only with the settings its runs and evaluations were made with: reusing
        a finished run of other settings would mislabel every number of the report."""
        changed = [
            f"{k}: {previous[k]!r} there, {v!r} now"
            for k, v in json.loads(json.dumps(asdict(self))).items()
            if k in previous and k not in RESUMABLE_CHANGES and previous[k] != v
        ]
        if changed:
            raise UserError(
                f"{self.output} holds an A/B made with other settings ({'; '.join(changed)}): "
                "use another --output, or the settings it was made with"
            )

    def recipe(self, arm: str) -> str:
        return getattr(self, f"{arm}_recipe")


RESUMABLE_CHANGES = {"output", "arms", "seeds", "parallel", "n_boot"}  # more or fewer runs, or report-only


def _cli(argv: list[str], log: Path, threads: int | None = None) -> None:
    """Run `atmanrl ARGV` in a subprocess, its output in `log`; a failure names the log."""
    console.print(f"[dim]$ atmanrl {shlex.join(argv)}  [log: {log}]")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | (
        {"OMP_NUM_THREADS": str(threads)} if threads and "OMP_NUM_THREADS" not in os.environ else {}
    )
    t = time.time()
    with open(log, "a") as f:
        cmd = [sys.executable, "-m", "atmanrl.cli", *argv]
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if rc:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise UserError(f"`atmanrl {argv[0]}` failed (exit {rc}): {tail[0][:200]} -- full log: {log}")
    console.print(f"[green]done in {time.time() - t:.0f}s: atmanrl {argv[0]} [{log.name}]")


def _each(cfg: ABConfig, jobs: list, fn) -> None:
    """fn(job) for every job, `cfg.parallel` at a time. A failure or Ctrl-C starts no queued job; every failure
    is named once the running ones have stopped."""
    if cfg.parallel == 1:
        for job in jobs:
            fn(job)
        return
    pool = ThreadPoolExecutor(cfg.parallel)
    futures = [pool.submit(fn, job) for job in jobs]
    try:
        for future in futures:
            if future.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                break
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    errors = [str(f.exception()) for f in futures if not f.cancelled() and f.exception() is not None]
    if errors:
        raise UserError(" | ".join(errors))


def _threads(cfg: ABConfig) -> int | None:
    """Side by side, each process gets its share of the cores (each would otherwise spin one thread per core)."""
    return max(1, len(os.sched_getaffinity(0)) // cfg.parallel) if cfg.parallel > 1 else None


def run_dir(cfg: ABConfig, arm: str, seed: int) -> Path:
    return Path(cfg.output) / "runs" / f"{arm}-s{seed}"


def train_all(cfg: ABConfig) -> None:
    _each(cfg, [(arm, seed) for seed in cfg.seeds for arm in cfg.arms], lambda job: train_one(cfg, *job))


def train_one(cfg: ABConfig, arm: str, seed: int) -> None:
    out = run_dir(cfg, arm, seed)
    done = out / "ab_done.json"
    if done.exists():
        console.print(f"[cyan]reusing {out} (finished)")
        return
    recipe = str(recipe_path(cfg.recipe(arm)))
    level = ["--level", str(cfg.eval_level)] if cfg.eval_task == "arith" else []
    argv = [
        "train",
        recipe,
        "--model_name_or_path",
        cfg.model,
        "--seed",
        str(seed),
        "--max_steps",
        str(cfg.max_steps),
        "--save_steps",
        str(cfg.save_steps),
        "--output_dir",
        str(out),
        "--resume",
        "true",
        *level,
        *cfg.overrides,
    ]
    console.rule(f"[bold cyan]train {arm}, seed {seed}")
    t0 = time.perf_counter()
    _cli(argv, Path(cfg.output) / "logs" / f"train-{arm}-s{seed}.log", _threads(cfg))
    # wall time of this call: a resumed run reports only its last part (the report says so)
    seconds = time.perf_counter() - t0
    atomic_write_text(done, json.dumps({"argv": argv, "finished": time.time(), "seconds": seconds}))


def models(cfg: ABConfig) -> dict[str, str]:
    """Display name -> model path: the base model, then every run."""
    out = {"base": cfg.model}
    for seed in cfg.seeds:
        for arm in cfg.arms:
            out[f"{arm}-s{seed}"] = str(run_dir(cfg, arm, seed))
    return out


def eval_all(cfg: ABConfig) -> None:
    _each(cfg, list(models(cfg).items()), lambda job: eval_one(cfg, *job))
    # here, one model at a time: every eval process has exited, so this one has the device to itself
    for name, model in models(cfg).items():
        report = Path(cfg.output) / "eval" / name
        if not (report / "saliency_reward.json").exists():
            score_rollouts(cfg, model, report)


def eval_one(cfg: ABConfig, name: str, model: str) -> None:
    report = Path(cfg.output) / "eval" / name
    if not (report / "metrics.json").exists():
        console.rule(f"[bold cyan]evaluate {name}")
        _cli(
            [
                "eval",
                "--model",
                model,
                "--task",
                cfg.eval_task,
                "--level",
                str(cfg.eval_level),
                "--limit",
                str(cfg.eval_limit),
                "--seed",
                str(cfg.eval_seed),
                "--mistake-mode",
                cfg.mistake_mode,
                "--pass-k",
                str(cfg.pass_k),
                "--composition",
                cfg.composition,
                "--skip",
                "saliency,planted",
                "--report",
                str(report),
            ],
            Path(cfg.output) / "logs" / f"eval-{name}.log",
            _threads(cfg),
        )


def score_rollouts(cfg: ABConfig, model_path: str, report: Path) -> None:
    """The default saliency reward, called the way GRPO calls it, on the model's own held-out rollouts."""
    from .data import get_task, task_options
    from .models import best_device, load_model, resolve_model_path
    from .rewards import get_reward

    console.print(f"[cyan]saliency reward on the rollouts in {report}")
    rows = [json.loads(line) for line in (report / "generations.jsonl").read_text().splitlines() if line]
    extra = task_options(cfg.eval_task, level=cfg.eval_level)
    task = get_task(cfg.eval_task, **extra)
    examples = {e.id: e for e in task.load(None, split="test", limit=cfg.eval_limit, seed=cfg.eval_seed)}
    model, tok = load_model(resolve_model_path(model_path), device=best_device())
    fn = get_reward("saliency", task=cfg.eval_task, model=model, tokenizer=tok, **extra)
    values: dict[str, float] = {}
    for lo in range(0, len(rows), 8):
        chunk = rows[lo : lo + 8]
        out = fn(
            [task.messages(examples[r["id"]]) for r in chunk],
            [r["completion"] for r in chunk],
            gold=[r["gold"] for r in chunk],
        )
        values.update({r["id"]: float(v or 0.0) for r, v in zip(chunk, out, strict=True)})
    atomic_write_text(report / "saliency_reward.json", json.dumps(values))
    import torch

    del model, fn  # the next seed's training runs in other processes: give the device's memory back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(cfg: ABConfig, report: Callable[[ABConfig], object] | None = None) -> None:
    """Train and evaluate every arm and seed (resuming what exists); `ab_report.write_ab` writes the report.

    One run at a time (`parallel` 1), it goes seed by seed and calls `report` on the seeds finished so far after
    each, so a long A/B has a report (and results to commit) long before its last seed."""
    cfg.validate()
    saved = Path(cfg.output) / "ab_config.json"
    if saved.is_file():
        cfg.check_resumable(json.loads(saved.read_text()))
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps(asdict(cfg), indent=1))
    if cfg.parallel > 1:
        from .models import resolve_model_path

        resolve_model_path(cfg.model)  # an embedded model is de-quantised once here, not by every run at once
        train_all(cfg)
        eval_all(cfg)
        return
    for i in range(len(cfg.seeds)):
        part = replace(cfg, seeds=cfg.seeds[i : i + 1])
        train_all(part)
        eval_all(part)
        if report is not None and i + 1 < len(cfg.seeds):
            report(replace(cfg, seeds=cfg.seeds[: i + 1]))
