"""The A/B report: per-problem metrics of every evaluated model, bootstrap intervals, paired differences, curves.

Every model of an A/B run is evaluated on the same held-out problems, so each metric is a list of per-problem
values (None where a problem has no value, e.g. no parseable answer for the faithfulness tests). An arm's value is
the mean over its seeds of each seed's mean over problems; intervals resample seeds, then problems within them
(`stats.seed_problem_ci`), so they hold both sources of noise. Differences pair seed s of one arm with seed s of
the other (the same data order) and each problem with itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .ab import CURVES, METRICS, OUTCOME_ONLY, ABConfig, models, reference, run_dir
from .composition import cot_stats
from .cot_prefixes import early_statements
from .data import get_task, task_options
from .evaluate import area_over_curve, pass_at_k
from .heatmap import page
from .io import atomic_write_text
from .report import esc, png, table
from .stats import excludes_zero, mean, seed_problem_ci, seed_problem_diff_ci, seeds_agree


def per_problem(
    report: Path, task, tokenizer, composition: str = "auto"
) -> dict[str, dict[str, float | None]]:
    """metric -> {problem id: value} from one `atmanrl eval` folder (+ its saliency_reward.json).

    Token shares are per problem (each CoT's own share), so an arm's share is the mean over problems (a macro
    average, which the paired bootstrap over problems needs); `eval` pools every CoT's tokens (a micro average)."""
    rows = [json.loads(line) for line in (report / "generations.jsonl").read_text().splitlines() if line]
    reward_file = report / "saliency_reward.json"
    rewards = json.loads(reward_file.read_text()) if reward_file.exists() else {}
    metrics_file = report / "metrics.json"
    passing = json.loads(metrics_file.read_text()).get("pass_at_k", {}) if metrics_file.exists() else {}
    out: dict[str, dict[str, float | None]] = {key: {} for key, _, _ in METRICS}
    for r in rows:
        i, pred = r["id"], r["pred"]
        out["accuracy"][i] = float(bool(r["correct"]))
        has_cot = bool(r["reasoning"].strip())
        stats = cot_stats([r["reasoning"]], tokenizer, composition) if has_cot else {}
        out["cot_tokens"][i] = stats.get("mean_cot_tokens", 0.0) if has_cot else 0.0
        for k in ("stop_word_share", "number_share", "symbol_share"):
            out[k][i] = stats.get(k)
            out[f"spacy_{k}"][i] = stats.get(f"spacy_{k}")
        if "pass_correct" in r and passing.get("samples"):
            out["pass_at_k"][i] = pass_at_k(passing["samples"], r["pass_correct"], passing["k"])
        ea = r.get("early_answering")
        if ea and pred is not None:
            fr = sorted(ea, key=float)
            agree = [float(ea[f] is not None and task.is_correct(ea[f], pred)) for f in fr]
            out["early_aoc"][i] = area_over_curve([float(f) for f in fr], agree)
            out["early_stated"][i], out["early_unstated"][i] = early_statements(
                task, tokenizer, r["reasoning"], pred, ea
            )
        am = r.get("adding_mistakes")
        if am and pred is not None:
            out["mistake_changed"][i] = float(am["value"] is None or not task.is_correct(am["value"], pred))
        if "filler" in r and pred is not None:
            out["filler_agreement"][i] = float(r["filler"] is not None and task.is_correct(r["filler"], pred))
        if i in rewards:
            out["saliency_reward"][i] = rewards[i]
    return out


def _runs(evals: dict[str, dict[str, dict[str, float | None]]], names: list[str], key: str, ids: list[str]):
    """Per run (seed), per problem in `ids` order: the metric's value or None."""
    return [[evals[n][key].get(i) for i in ids] for n in names]


def curves(path: Path) -> list[dict[str, Any]]:
    """The run's log history (per-step metrics) from its latest checkpoint's trainer_state.json."""
    from transformers.trainer_utils import get_last_checkpoint

    latest = get_last_checkpoint(str(path)) if path.is_dir() else None
    state = Path(latest) / "trainer_state.json" if latest else None
    return json.loads(state.read_text())["log_history"] if state is not None and state.exists() else []


MIN_BASE = 0.005  # the smallest baseline value a relative change is given against


def percent(x: float) -> str:
    """A relative change as a signed percentage, with a decimal where it is under one percent (the paper's -0.4%)."""
    return f"{x:+.1%}" if abs(x) < 0.01 else f"{x:+.0%}"


def _seconds(path: Path, read) -> float | None:
    try:
        value = read(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # missing, or written by an older atmanrl
        return None
    return float(value) if value is not None else None


def costs(cfg: ABConfig) -> dict[str, dict[str, float | None]]:
    """Wall seconds of every training run (ab_done.json) and evaluation (metrics.json): what sizing needs.

    A resumed run counts only its last part; the saliency scoring of the rollouts is not in them."""
    return {
        "train": {
            f"{arm}-s{s}": _seconds(run_dir(cfg, arm, s) / "ab_done.json", lambda d: d.get("seconds"))
            for s in cfg.seeds
            for arm in cfg.arms
        },
        "eval": {
            name: _seconds(
                Path(cfg.output) / "eval" / name / "metrics.json", lambda d: d["meta"]["total_seconds"]
            )
            for name in models(cfg)
        },
    }


def cost_line(result: dict[str, Any]) -> str:
    """One line of what the A/B cost, from the runs that recorded it."""
    parts = []
    for what, label in (("train", "training"), ("eval", "evaluation")):
        known = [v for v in result.get("seconds", {}).get(what, {}).values() if v is not None]
        if known:
            parts.append(
                f"{label} {sum(known) / 3600:.1f} h over {len(known)} runs (mean {mean(known) / 60:.0f} min)"
            )
    return "Cost (wall time): " + "; ".join(parts) + "." if parts else ""


# the accuracy a saliency arm may lose against outcome-only and still count as keeping it
ACCURACY_MARGIN = 0.02


def pair_label(key: str) -> str:
    """A difference key "arm-reference" as the reports print it: "arm − reference"."""
    return key.replace("-", " − ", 1)


def accuracy_verdict(d: dict[str, Any]) -> str:
    """Whether an accuracy difference (arm - outcome-only) keeps accuracy within ACCURACY_MARGIN: "kept" when its
    whole interval lies above -margin, "lost" when it lies below, else "not shown" (the data cannot tell)."""
    lo, hi = d.get("lo"), d.get("hi")
    if lo is None or hi is None:
        return "not shown"
    if lo >= -ACCURACY_MARGIN:
        return "kept"
    return "lost" if hi < -ACCURACY_MARGIN else "not shown"


def accuracy_checks(result: dict[str, Any]) -> dict[str, str]:
    """ "arm-reference" -> `accuracy_verdict` for every saliency arm against every outcome-only arm it is compared
    with (the paper arm against both its own setting's baseline and ours)."""
    acc = result["metrics"]["accuracy"]
    keys = [k for k in comparison_keys(result) if k.split("-", 1)[0] not in OUTCOME_ONLY]
    return {k: accuracy_verdict(acc[k]) for k in keys if k.split("-", 1)[1] in OUTCOME_ONLY}


def accuracy_line(result: dict[str, Any]) -> str:
    acc = result["metrics"]["accuracy"]
    parts = [f"{pair_label(k)} {_diff(acc[k])}: {v}" for k, v in accuracy_checks(result).items()]
    if not parts:
        return ""
    return (
        f"Accuracy against outcome-only (kept: the whole interval above −{ACCURACY_MARGIN:.2f}; lost: the whole "
        "interval below it): " + "; ".join(parts) + "."
    )


def comparisons(arms: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(arm, what it is compared with): every arm with the first, and an arm with its own setting's baseline."""
    own = [(a, r) for a in arms[1:] if (r := reference(a, arms)) != arms[0]]
    return [(a, arms[0]) for a in arms[1:]] + own


def analyse(cfg: ABConfig) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from .models import resolve_model_path

    extra = task_options(cfg.eval_task, level=cfg.eval_level)
    task = get_task(cfg.eval_task, **extra)
    tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model))  # CoT lengths in the base's tokens
    evals = {
        name: per_problem(Path(cfg.output) / "eval" / name, task, tok, cfg.composition)
        for name in models(cfg)
    }
    ids = sorted(evals["base"]["accuracy"])
    for name, ev in evals.items():
        if sorted(ev["accuracy"]) != ids:
            raise ValueError(f"{name} was evaluated on other problems than the base model: rerun its eval")
    arms, baseline = list(cfg.arms), cfg.arms[0]
    groups = {"base": ["base"], **{arm: [f"{arm}-s{s}" for s in cfg.seeds] for arm in arms}}
    pairs = comparisons(arms) + [(a, "base") for a in arms]
    kw = {"n_boot": cfg.n_boot}
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(cfg).items()},
        "n_problems": len(ids),
        "arms": arms,
        "baseline": baseline,
        "references": {a: reference(a, arms) for a in arms[1:]},
        "comparisons": [f"{a}-{b}" for a, b in comparisons(arms)],
    }
    metrics: dict[str, Any] = {}
    for key, label, paper in METRICS:
        m: dict[str, Any] = {"label": label, "paper_relative": paper}
        runs = {g: _runs(evals, names, key, ids) for g, names in groups.items()}
        for g in groups:
            m[g] = dict(zip(("mean", "lo", "hi"), seed_problem_ci(runs[g], **kw), strict=True))
        for s in cfg.seeds:
            for arm in arms:
                m[f"{arm}-s{s}"] = mean([v for v in evals[f"{arm}-s{s}"][key].values() if v is not None])
        for a, b in pairs:
            d, lo, hi = seed_problem_diff_ci(runs[a], runs[b], **kw)
            agree = seeds_agree(runs[a], runs[b])
            m[f"{a}-{b}"] = {"diff": d, "lo": lo, "hi": hi, "seeds_agree": agree}
            m[f"{a}-{b}"]["excludes_0"] = excludes_zero(lo, hi) and agree is not False
        for a in arms[1:]:
            r = reference(a, arms)
            ref, d = m[r]["mean"], m[f"{a}-{r}"]["diff"]
            # against a reference near 0 (a share it drove to nothing) a ratio is meaningless: no value
            m[f"{a}-relative"] = (
                d / ref if d is not None and ref is not None and abs(ref) >= MIN_BASE else None
            )
            if paper is not None and a not in OUTCOME_ONLY:
                m[f"{a}-same_direction_as_paper"] = (
                    m[f"{a}-{r}"]["excludes_0"] and d is not None and (d > 0) == (paper > 0)
                )
        metrics[key] = m
    result["metrics"] = metrics
    result["accuracy_kept"] = accuracy_checks(result)
    result["seconds"] = costs(cfg)
    result["curves"] = {
        f"{arm}-s{s}": [
            {k: h[k] for k in ("step", *CURVES) if k in h}
            for h in curves(run_dir(cfg, arm, s))
            if "step" in h
        ]
        for s in cfg.seeds
        for arm in arms
    }
    return result


def _diff(d: dict[str, Any]) -> str:
    """A difference with its interval, marked where the seeds' own differences disagree in sign."""
    return _ci(d) + (" (seeds disagree)" if d.get("seeds_agree") is False else "")


def interval_note(result: dict[str, Any]) -> str:
    n = len(result["config"]["seeds"])
    if n == 1:
        return "mean [95% bootstrap interval over problems; one seed, so seed-to-seed noise is not in it]"
    return (
        f"mean [95% bootstrap interval resampling the {n} seeds, then problems within them]; a difference "
        "counts as an effect only if its interval excludes 0 and every seed's own difference has its sign"
    )


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("mean", m.get("diff")) is None:
        return "–"
    v = m.get("mean", m.get("diff"))
    lo, hi = m.get("lo"), m.get("hi")
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{v:.3f}"


# The paper's Table 1 columns: (metric key, header, scale to its units)
TABLE1 = (
    ("cot_tokens", "tokens/CoT", 1.0),
    ("spacy_number_share", "numbers %", 100.0),
    ("spacy_stop_word_share", "stop words %", 100.0),
    ("spacy_symbol_share", "symbols %", 100.0),
    ("pass_at_k", "pass@k %", 100.0),
)


def arm_references(result: dict[str, Any]) -> dict[str, str]:
    """Arm -> the arm it is measured against; a report written before references existed used the first."""
    arms = result["arms"]
    return result.get("references") or {a: arms[0] for a in arms[1:]}


def comparison_keys(result: dict[str, Any]) -> list[str]:
    """The report's "arm-reference" difference keys, in column order (older reports: every arm vs the first)."""
    return result.get("comparisons") or [f"{a}-{result['baseline']}" for a in result["arms"][1:]]


def reference_note(result: dict[str, Any]) -> str:
    """What each arm's relative change is against, in words."""
    own = [f"{a} against {r}" for a, r in arm_references(result).items() if r != result["baseline"]]
    return f"relative change against {result['baseline']}" + (f" ({', '.join(own)})" if own else "")


def table1(result: dict[str, Any]) -> str:
    """The paper's Table 1 columns for every arm (Markdown), with the relative change against each arm's
    reference (`reference_note`)."""
    k = result["config"].get("pass_k", 4)
    head = [h.replace("pass@k", f"pass@{k}") for _, h, _ in TABLE1]
    lines = ["| arm | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for arm in ["base", *result["arms"]]:
        cells = []
        for key, _, scale in TABLE1:
            m = result["metrics"][key]
            v = m[arm]["mean"]
            text = "–" if v is None else f"{v * scale:.1f}"
            rel = m.get(f"{arm}-relative")
            if arm in arm_references(result) and rel is not None:
                text += f" ({percent(rel)})"
            cells.append(text)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(result: dict[str, Any]) -> str:
    """One row per run (arm, seed), one column per metric: how much the seeds of one arm agree (Markdown)."""
    metrics = result["metrics"]
    lines = ["| run | " + " | ".join(m["label"] for m in metrics.values()) + " |"]
    lines.append("|---|" + "---|" * len(metrics))
    for arm in result["arms"]:
        for seed in result["config"]["seeds"]:
            cells = [metrics[k].get(f"{arm}-s{seed}") for k in metrics]
            lines.append(
                f"| {arm}-s{seed} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in cells) + " |"
            )
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """The comparison as Markdown: the Table 1 view, then every metric with intervals (what docs/ quote)."""
    arms, refs = result["arms"], arm_references(result)
    checked = [a for a in refs if a not in OUTCOME_ONLY]
    pairs = comparison_keys(result)
    head = ["metric", "base", *arms, *map(pair_label, pairs), "paper's direction"]
    head += [f"{a} vs {refs[a]}: same way, CI excludes 0" for a in checked]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in result["metrics"].values():
        paper = "–" if m["paper_relative"] is None else percent(m["paper_relative"])
        same = [
            "–" if m["paper_relative"] is None else ("yes" if m.get(f"{a}-same_direction_as_paper") else "no")
            for a in checked
        ]
        cells = [m["label"], _ci(m["base"]), *(_ci(m[a]) for a in arms)]
        cells += [_diff(m[p]) for p in pairs] + [paper, *same]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        f"Table 1 view ({reference_note(result)}; none where its value is under {MIN_BASE}):\n\n"
        + table1(result)
        + f"\n\nEvery metric: {interval_note(result)}:\n\n"
        + "\n".join(lines)
        + (f"\n\n{acc}" if (acc := accuracy_line(result)) else "")
        + "\n\nPer seed:\n\n"
        + per_seed_table(result)
        + (f"\n\n{cost}" if (cost := cost_line(result)) else "")
    )


def curves_figure(result: dict[str, Any]):
    """The per-step training curves of every run (a colour per arm), or None without any."""
    from matplotlib.figure import Figure

    keys = [k for k in CURVES if any(k in h for run in result["curves"].values() for h in run)]
    if not keys:
        return None
    fig = Figure(figsize=(4.2 * len(keys), 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colors = {"outcome": "tab:blue", "atmanrl": "tab:red", "paper": "tab:green", "paper_outcome": "tab:olive"}
    for ax, key in zip(axes, keys, strict=True):
        for name, run in result["curves"].items():
            pts = [(h["step"], h[key]) for h in run if key in h]
            if pts:
                ax.plot(
                    *zip(*pts), color=colors.get(name.rsplit("-s", 1)[0], "tab:gray"), alpha=0.8, label=name
                )
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    return fig


def _plot_curves(result: dict[str, Any]) -> str:
    fig = curves_figure(result)
    return (
        png(fig)
        if fig is not None
        else "<p>No training curves found (no checkpoint with trainer_state.json).</p>"
    )


def _split(markdown_table: str) -> tuple[list[str], list[list[str]]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown_table.splitlines()]
    return rows[0], rows[2:]


def render(result: dict[str, Any]) -> str:
    arms = result["arms"]
    pairs = comparison_keys(result) + [f"{a}-base" for a in arms]
    header = ["metric", "base", *arms, *map(pair_label, pairs)]
    rows = []
    for m in result["metrics"].values():
        cells = [m["label"]]
        for g in ("base", *arms):
            cells.append((esc(_ci(m[g])), ""))
        for pair in pairs:
            d = m[pair]
            cls = "" if not d["excludes_0"] else ("up" if d["diff"] > 0 else "down")
            cells.append((esc(_diff(d)), cls))
        rows.append(cells)
    cfg = result["config"]
    body = (
        f"<h1>atmanrl A/B: {esc(', '.join(arms))}</h1>"
        f"<p>{result['n_problems']} held-out {esc(cfg['eval_task'])} problems; seeds {esc(cfg['seeds'])}; "
        f"{esc(cfg['max_steps'])} steps per run.</p><h2>Table 1 view</h2><p>The paper's columns (spaCy shares, "
        f"pass@k); in brackets the {esc(reference_note(result))}.</p>"
        + table(*_split(table1(result)))
        + f"<h2>Every metric</h2><p>{esc(interval_note(result).capitalize())}. An arm's value is the mean "
        "over its seeds; a difference pairs seeds and problems and is coloured only when it counts as an "
        "effect.</p>"
        + table(header, rows)
        + (f"<p>{esc(acc)}</p>" if (acc := accuracy_line(result)) else "")
        + "<h2>Per seed</h2>"
        + table(*_split(per_seed_table(result)))
        + "<h2>Training curves</h2>"
        + _plot_curves(result)
    )
    return page("atmanrl A/B", body)


def write_ab(cfg: ABConfig) -> Path:
    result = analyse(cfg)
    out = Path(cfg.output)
    atomic_write_text(out / "ab.json", json.dumps(result, indent=1))
    atomic_write_text(out / "ab.md", markdown(result) + "\n")
    atomic_write_text(out / "ab.html", render(result))
    fig = curves_figure(result)
    if fig is not None:
        fig.savefig(out / "ab_curves.png", dpi=80, bbox_inches="tight")
    print(markdown(result))
    return out / "ab.html"
