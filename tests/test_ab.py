"""The A/B harness: bootstrap statistics, reuse and resume of runs, and the per-problem comparison."""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from atmanrl import ab
from atmanrl.ab import ABConfig
from atmanrl.ab_report import accuracy_verdict, analyse, markdown, per_problem, render
from atmanrl.data import get_task
from atmanrl.errors import UserError
from atmanrl.stats import (
    bootstrap_ci,
    excludes_zero,
    grouped_spearman,
    paired_diff_ci,
    ranks,
    seed_problem_ci,
    seed_problem_diff_ci,
    seeds_agree,
    spearman,
)

ROOT = Path(__file__).resolve().parents[1]


def test_bootstrap_intervals_cover_the_mean_and_are_seeded():
    rng = random.Random(0)
    xs = [rng.gauss(1.0, 1.0) for _ in range(200)]
    m, lo, hi = bootstrap_ci(xs)
    assert lo < m < hi and hi - lo < 0.5
    assert bootstrap_ci(xs) == (m, lo, hi)  # same inputs, same interval
    assert bootstrap_ci([]) == (None, None, None)


def test_paired_differences_see_a_shift_that_unpaired_noise_would_hide():
    rng = random.Random(1)
    base = [rng.gauss(0, 5) for _ in range(100)]  # large between-problem spread
    shifted = [b + 0.3 + rng.gauss(0, 0.1) for b in base]
    d, lo, hi = paired_diff_ci(shifted, base)
    assert d == pytest.approx(0.3, abs=0.05) and excludes_zero(lo, hi)
    d, lo, hi = paired_diff_ci(base, base)
    assert (d, lo, hi) == (0.0, 0.0, 0.0) and not excludes_zero(lo, hi)
    assert paired_diff_ci([1.0, None], [None, 2.0]) == (None, None, None)
    with pytest.raises(ValueError):
        paired_diff_ci([1.0], [1.0, 2.0])


def test_spearman_handles_ties_and_constant_groups():
    assert ranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # GRPO sees no difference in a constant group
    rho, lo, hi, n = grouped_spearman([[1, 2, 3], [0, 0, 0], [1, 2, 3]], [[1, 2, 3], [1, 2, 3], [3, 2, 1]])
    assert n == 2 and rho == pytest.approx(0.0) and lo <= 0 <= hi


def _fake_eval(folder, rows, rewards):
    folder.mkdir(parents=True)
    (folder / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text("{}")
    (folder / "saliency_reward.json").write_text(json.dumps(rewards))


def _row(i, reasoning, pred, gold, early, mistake, filler):
    return {
        "id": f"p{i}",
        "reasoning": reasoning,
        "pred": pred,
        "gold": gold,
        "correct": pred == gold,
        "early_answering": dict(zip(("0.0", "0.5", "1.0"), early, strict=True)),
        "adding_mistakes": {"value": mistake},
        "filler": filler,
    }


def test_per_problem_metrics_follow_the_eval_rows(tmp_path, tokenizer):
    rows = [
        _row(0, "3 + 4 = 7.\n", "7", "7", ["1", "7", "7"], "8", "2"),  # answers early, mistake changes it
        _row(1, "The friend is nice, so the answer is 5.\n", "5", "6", ["1", "2", "5"], "5", "5"),
    ]
    _fake_eval(tmp_path / "e", rows, {"p0": 0.8, "p1": 0.0})
    m = per_problem(tmp_path / "e", get_task("arith"), tokenizer)
    assert m["accuracy"] == {"p0": 1.0, "p1": 0.0}
    assert m["mistake_changed"] == {"p0": 1.0, "p1": 0.0}
    assert m["filler_agreement"] == {"p0": 0.0, "p1": 1.0}
    assert m["early_aoc"]["p0"] < m["early_aoc"]["p1"]  # p1 needs its whole CoT
    # before its CoT writes "7", p0 gave it at half its CoT and not at 0%; p1 never gave 5 early
    assert m["early_unstated"] == {"p0": 0.5, "p1": 0.0}
    assert m["early_stated"] == {"p0": 0.0, "p1": 0.0}  # neither half-CoT has written its answer yet
    assert m["number_share"]["p0"] > m["number_share"]["p1"]
    assert m["stop_word_share"]["p0"] < m["stop_word_share"]["p1"]
    assert m["saliency_reward"] == {"p0": 0.8, "p1": 0.0}


def test_analyse_pairs_problems_and_marks_the_papers_directions(tmp_path, tokenizer, monkeypatch):
    """An AtManRL arm with denser, shorter CoTs on every problem: its differences exclude 0 and point the
    paper's way; the outcome arm equals the base and shows no effect."""
    cfg = ABConfig(
        output=str(tmp_path), seeds=(0,), arms=("outcome", "atmanrl"), n_boot=200, composition="lexical"
    )
    monkeypatch.setattr("atmanrl.ab_report.curves", lambda path: [{"step": 1, "reward": 0.5}])
    verbose = (
        "Well, we have the numbers here and then we add them together so that we get {} as the answer.\n"
    )
    n = 30
    for name in ("base", "outcome-s0"):
        rows = [
            _row(i, verbose.format(i + 2), str(i + 2), str(i + 2), ["1", "1", "1"], "1", "1")
            for i in range(n)
        ]
        _fake_eval(tmp_path / "eval" / name, rows, {f"p{i}": 0.1 for i in range(n)})
    dense = [
        _row(i, f"{i} + 2 = {i + 2}.\n", str(i + 2), str(i + 2), ["1", "1", "1"], "1", "1") for i in range(n)
    ]
    _fake_eval(tmp_path / "eval" / "atmanrl-s0", dense, {f"p{i}": 0.6 for i in range(n)})
    result = analyse(cfg)
    m = result["metrics"]
    assert result["n_problems"] == n
    assert (
        m["cot_tokens"]["atmanrl-outcome"]["excludes_0"]
        and m["cot_tokens"]["atmanrl-same_direction_as_paper"]
    )
    assert m["number_share"]["atmanrl-same_direction_as_paper"]
    assert m["stop_word_share"]["atmanrl-same_direction_as_paper"]
    assert m["spacy_number_share"]["atmanrl-same_direction_as_paper"]
    assert m["cot_tokens"]["atmanrl-relative"] < 0
    assert not m["cot_tokens"]["outcome-base"]["excludes_0"]
    assert m["saliency_reward"]["atmanrl-outcome"]["diff"] == pytest.approx(0.5)
    assert "| CoT tokens |" in markdown(result)
    html = render(result)
    assert "<img" in html and "atmanrl − outcome" in html and "Table 1 view" in html
    assert "| atmanrl |" in markdown(result) and "tokens/CoT" in markdown(result)


def test_four_arms_train_evaluate_and_report_against_their_references(tmp_path, tokenizer, monkeypatch):
    calls = []
    monkeypatch.setattr(ab, "_cli", lambda argv, log, threads=None: calls.append(argv))
    cfg = ABConfig(output=str(tmp_path), seeds=(0,), max_steps=10, n_boot=100, composition="lexical")
    assert cfg.arms == ("outcome", "atmanrl", "paper", "paper_outcome")  # the default
    cfg.validate()
    ab.train_all(cfg)
    recipes = [a[1] for a in calls]
    assert [r.split("/")[-1] for r in recipes] == [
        "arith_outcome.yaml",
        "arith_atmanrl.yaml",
        "arith_paper.yaml",
        "arith_paper_outcome.yaml",
    ]
    monkeypatch.setattr("atmanrl.ab_report.curves", lambda path: [])
    n = 12
    for name, cot in (
        ("base", "{} + 1 = {}.\n"),
        ("outcome-s0", "{} + 1 = {}.\n"),
        ("atmanrl-s0", "{} + 1 = {}.\n"),
        ("paper-s0", "Well, {} and one more make {} in the end.\n"),
        ("paper_outcome-s0", "So {} + 1 = {} now.\n"),
    ):
        rows = [
            _row(i, cot.format(i, i + 1), str(i + 1), str(i + 1), ["1", "1", "1"], "1", "1") for i in range(n)
        ]
        for r in rows:
            r["pass_correct"] = 2
        _fake_eval(tmp_path / "eval" / name, rows, {})
        (tmp_path / "eval" / name / "metrics.json").write_text(
            json.dumps({"pass_at_k": {"k": 4, "samples": 4}, "meta": {"total_seconds": 1800.0}})
        )
    (ab.run_dir(cfg, "paper", 0) / "ab_done.json").write_text("{}")  # written by an older atmanrl: no seconds
    result = analyse(cfg)
    m = result["metrics"]
    # the paper arm is measured against its own setting's outcome-only arm, as the paper's Table 1 is
    assert result["references"] == {
        "atmanrl": "outcome",
        "paper": "paper_outcome",
        "paper_outcome": "outcome",
    }
    tokens = m["cot_tokens"]
    assert {"paper-outcome", "paper-paper_outcome", "paper_outcome-outcome"} <= set(tokens)
    assert tokens["paper-relative"] == pytest.approx(
        tokens["paper-paper_outcome"]["diff"] / tokens["paper_outcome"]["mean"]
    )
    assert "paper-same_direction_as_paper" in tokens and "paper_outcome-same_direction_as_paper" not in tokens
    assert m["pass_at_k"]["paper"]["mean"] == 1.0
    assert m["spacy_stop_word_share"]["paper-paper_outcome"]["diff"] > 0
    text = markdown(result)
    assert "| paper |" in text and "pass@4" in text and "paper − paper_outcome" in text
    assert "paper vs paper_outcome: same way" in text and "paper against paper_outcome" in text
    # outcome's CoTs have no stop word: no ratio against 0; the paper's -0.4% on pass@4 keeps its decimal
    assert m["spacy_stop_word_share"]["atmanrl-relative"] is None and "-0.4%" in text
    assert "paper − paper_outcome" in render(result)
    # every saliency arm against every outcome-only arm it is compared with; equal accuracy is kept
    assert result["accuracy_kept"] == {
        "atmanrl-outcome": "kept",
        "paper-outcome": "kept",
        "paper-paper_outcome": "kept",
    }
    assert (
        "Accuracy against outcome-only" in text and "paper − paper_outcome 0.000 [0.000, 0.000]: kept" in text
    )
    cost = result["seconds"]
    assert set(cost["eval"].values()) == {1800.0} and len(cost["eval"]) == 5
    assert cost["train"]["outcome-s0"] >= 0 and cost["train"]["paper-s0"] is None
    assert "evaluation 2.5 h over 5 runs (mean 30 min)" in text and "training 0.0 h over 3 runs" in text


def test_finished_runs_are_reused_and_unfinished_ones_resume(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ab, "_cli", lambda argv, log, threads=None: calls.append(argv))
    cfg = ABConfig(output=str(tmp_path), seeds=(0, 1), max_steps=3)
    done = ab.run_dir(cfg, "outcome", 0) / "ab_done.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    ab.train_all(cfg)
    trained = [(a[a.index("--output_dir") + 1], a[a.index("--seed") + 1]) for a in calls]
    assert (str(ab.run_dir(cfg, "outcome", 0)), "0") not in trained and len(trained) == 7
    assert all(a[a.index("--resume") + 1] == "true" and a[a.index("--max_steps") + 1] == "3" for a in calls)
    assert (ab.run_dir(cfg, "atmanrl", 1) / "ab_done.json").exists()


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(UserError, match="recipe"):
        ABConfig(output=str(tmp_path), outcome_recipe="nope.yaml").validate()
    with pytest.raises(UserError, match="seeds"):
        ABConfig(output=str(tmp_path), seeds=()).validate()
    with pytest.raises(UserError, match="arms"):
        ABConfig(output=str(tmp_path), arms=("outcome", "nope")).validate()
    with pytest.raises(UserError, match="arms"):
        ABConfig(output=str(tmp_path), arms=("paper",)).validate()


def test_seed_then_problem_intervals_widen_when_seeds_disagree():
    rng = random.Random(2)
    agree = [[1.0 + rng.gauss(0, 0.5) for _ in range(100)] for _ in range(3)]
    spread = [[r + shift for r in run] for run, shift in zip(agree, (-1.0, 0.0, 1.0), strict=True)]
    m1, lo1, hi1 = seed_problem_ci(agree, n_boot=500)
    m2, lo2, hi2 = seed_problem_ci(spread, n_boot=500)
    assert m1 == pytest.approx(m2) and lo1 < m1 < hi1
    assert hi2 - lo2 > 3 * (hi1 - lo1)  # the seeds' disagreement is part of the noise
    assert seed_problem_ci([[1.0, None], [None, None]]) == (1.0, 1.0, 1.0)
    d, lo, hi = seed_problem_diff_ci([[x + 0.2 for x in run] for run in agree], agree, n_boot=500)
    assert d == pytest.approx(0.2) and excludes_zero(lo, hi)
    d, lo, hi = seed_problem_diff_ci(agree, [agree[0]], n_boot=500)  # one base run against every seed
    assert d == pytest.approx(m1 - sum(agree[0]) / 100) and lo <= d <= hi
    with pytest.raises(ValueError):
        seed_problem_diff_ci(agree, agree[:2])


def test_the_report_has_a_row_per_seed(tmp_path, tokenizer, monkeypatch):
    cfg = ABConfig(
        output=str(tmp_path), seeds=(0, 1), arms=("outcome", "atmanrl"), n_boot=100, composition="lexical"
    )
    monkeypatch.setattr("atmanrl.ab_report.curves", lambda path: [])
    for name, right in (
        ("base", 6),
        ("outcome-s0", 6),
        ("outcome-s1", 8),
        ("atmanrl-s0", 4),
        ("atmanrl-s1", 10),
    ):
        rows = [
            _row(i, f"{i} + 1 = {i + 1}.\n", str(i + 1 if i < right else 0), str(i + 1), ["1"] * 3, "1", "1")
            for i in range(12)
        ]
        _fake_eval(tmp_path / "eval" / name, rows, {})
    result = analyse(cfg)
    acc = result["metrics"]["accuracy"]
    assert acc["atmanrl-s0"] == pytest.approx(4 / 12) and acc["atmanrl-s1"] == pytest.approx(10 / 12)
    assert acc["atmanrl"]["mean"] == pytest.approx(7 / 12)
    text = markdown(result)
    assert "| atmanrl-s1 | 0.833 |" in text and "Per seed" in text
    assert "Per seed" in render(result)


@pytest.mark.slow
def test_the_gpu_command_runs_every_run_side_by_side_on_a_cpu(tmp_path, tiny_dir):
    """`make ab-gpu` with a tiny configuration: 4 arms trained and evaluated two at a time in subprocesses,
    then the report. On a GPU the same command runs 12 runs of 300 steps (docs/results.md)."""
    import subprocess

    out = tmp_path / "ab"
    tiny = "--per_device_train_batch_size 2 --num_generations 2 --max_completion_length 8 --limit 4"
    args = [
        f"AB_GPU_DIR={out}",
        f"AB_GPU_ARGS=--parallel 2 --max-steps 1 --save-steps 1 --train-args '{tiny}'",
        f"AB_ARGS=--model {tiny_dir} --seeds 0 --eval-limit 2 --pass-k 1 --composition lexical",
    ]
    plan = subprocess.run(
        ["make", "-n", "ab-gpu"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert (
        "--parallel 12" in plan and "--max-steps 300" in plan and "--per_device_train_batch_size 32" in plan
    )
    r = subprocess.run(["make", "ab-gpu", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((out / "ab.json").read_text())
    assert result["arms"] == ["outcome", "atmanrl", "paper", "paper_outcome"] and result["n_problems"] == 2
    for arm in result["arms"]:
        assert (out / "runs" / f"{arm}-s0" / "ab_done.json").exists()
        assert json.loads((out / "eval" / f"{arm}-s0" / "saliency_reward.json").read_text())
    logs = {p.name for p in (out / "logs").iterdir()}
    assert {"train-paper-s0.log", "eval-base.log"} <= logs


def test_one_run_at_a_time_goes_seed_by_seed_with_a_report_after_each(tmp_path, monkeypatch):
    calls, reports = [], []
    monkeypatch.setattr(ab, "_cli", lambda argv, log, threads=None: calls.append(argv[0]))
    monkeypatch.setattr(ab, "score_rollouts", lambda cfg, model, report: None)
    cfg = ABConfig(output=str(tmp_path), seeds=(0, 1, 2), arms=("outcome", "atmanrl"), max_steps=2)
    ab.main(cfg, report=lambda c: reports.append(c.seeds))
    assert reports == [(0,), (0, 1)]  # the caller writes the full report after the last seed
    # seed 0's runs are trained and evaluated before seed 1 trains
    assert calls[:5] == ["train", "train", "eval", "eval", "eval"] and calls[5] == "train"


def test_a_folder_is_resumed_only_with_its_own_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(ab, "_cli", lambda argv, log, threads=None: None)
    monkeypatch.setattr(ab, "score_rollouts", lambda cfg, model, report: None)
    first = ABConfig(output=str(tmp_path), seeds=(0,), arms=("outcome", "atmanrl"), eval_level=1, max_steps=2)
    ab.main(first)
    with pytest.raises(UserError, match="eval_level: 1 there, 5 now"):
        ab.main(replace(first, eval_level=5))
    ab.main(replace(first, seeds=(0, 1), n_boot=10))  # more seeds, another report: the same experiment
    with pytest.raises(UserError, match="distinct seeds"):
        ABConfig(output=str(tmp_path), seeds=(0, 0)).validate()
    with pytest.raises(UserError, match="level"):
        ABConfig(output=str(tmp_path), eval_level=9).validate()


def test_a_failed_run_side_by_side_starts_no_queued_one_and_is_named(tmp_path):
    started = []

    def fn(job):
        started.append(job)
        if job == 0:
            raise UserError("run 0 failed: see logs/train-0.log")

    cfg = ABConfig(output=str(tmp_path), parallel=2)
    with pytest.raises(UserError, match="train-0.log"):
        ab._each(cfg, list(range(40)), fn)
    assert len(started) < 40


def test_accuracy_is_kept_only_when_the_whole_interval_clears_the_margin():
    assert accuracy_verdict({"diff": 0.0, "lo": -0.019, "hi": 0.02}) == "kept"
    assert accuracy_verdict({"diff": 0.0, "lo": -0.05, "hi": 0.05}) == "not shown"  # too wide to tell
    assert accuracy_verdict({"diff": -0.1, "lo": -0.15, "hi": -0.03}) == "lost"
    assert accuracy_verdict({"diff": None, "lo": None, "hi": None}) == "not shown"


def test_a_difference_whose_seeds_disagree_is_no_effect():
    up = [[1.0] * 50, [1.0] * 50, [1.0] * 50]
    mixed = [[3.0] * 50, [3.0] * 50, [-1.0] * 50]  # mean +1.67, but one seed goes the other way
    zero = [[0.0] * 50] * 3
    assert seeds_agree(up, zero) is True and seeds_agree(mixed, zero) is False
    assert seeds_agree(up[:1], zero[:1]) is None  # one seed: nothing to agree on
    assert seeds_agree(up, [zero[0]]) is True  # the base model, one run against every seed


def benchmark_recipe(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "benchmarks/recipes" / f"{name}.yaml").read_text())


def test_the_a_b_recipes_of_the_docs_differ_from_the_shipped_ones_only_in_the_advantage_scaling():
    # docs/results.md reads the committed A/B's outcome and atmanrl arms as "the shipped recipes with TRL's std
    # division", and the scale_none runs as "the shipped recipes": any other difference would be a second,
    # unreported change
    import yaml

    from atmanrl.recipes import recipe_path

    for name in ("atmanrl", "outcome"):
        shipped = yaml.safe_load(recipe_path(f"smollm2-135m/arith_{name}.yaml").read_text())
        scale_none = benchmark_recipe(f"arith_{name}_scale_none")
        group = benchmark_recipe(f"arith_{name}_group")
        assert scale_none == shipped, name
        assert shipped.pop("scale_rewards") == "none" and group.pop("scale_rewards") == "group"
        assert group == shipped, name


def test_the_lower_weight_recipe_changes_only_the_saliency_weight_of_the_scale_none_one():
    # docs/results.md compares the two runs on one seed as "weight 0.5 against 0.2, nothing else changed"
    scale_none = benchmark_recipe("arith_atmanrl_scale_none")
    lower = benchmark_recipe("arith_atmanrl_scale_none_w02")
    weights = dict(zip(lower.pop("rewards"), lower.pop("reward_weights")))
    assert weights == {"correctness": 1.0, "format": 0.2, "saliency": 0.2}
    assert dict(zip(scale_none.pop("rewards"), scale_none.pop("reward_weights")))["saliency"] == 0.5
    assert lower == scale_none
