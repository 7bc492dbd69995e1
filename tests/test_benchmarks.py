"""The signal benchmarks build what they claim: correct, answer-carrying completions of every kind, and planted
cases whose relevant span holds the result, split into disjoint template families."""

import json
import math
import sys
from pathlib import Path

from atmanrl.data import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import planted  # noqa: E402
import reward_validity  # noqa: E402
import testbed  # noqa: E402


def test_reward_validity_builds_correct_completions_of_every_kind(tokenizer, shared_data):
    task, rows = reward_validity.problems("gsm8k", "tune", 3, shared_data)
    _, report = reward_validity.problems("gsm8k", "report", 3, shared_data)
    assert not {r.id for r in rows} & {r.id for r in report}  # tune and report never share a problem
    records = reward_validity.build(task, rows, "tune", tokenizer)
    assert [r["kind"] for r in records[:6]] == list(reward_validity.KINDS)
    gsm8k = get_task("gsm8k")
    for r in records:
        parsed = gsm8k.parse(r["completion"])
        assert gsm8k.is_correct(parsed.value, r["gold"]), r
        hinted = "Hint" in r["prompt"][-1]["content"]
        assert hinted == (r["kind"] in ("D", "C"))
    by = {r["kind"]: r["completion"] for r in records[:6]}
    n = {k: len(tokenizer(v, add_special_tokens=False)["input_ids"]) for k, v in by.items()}
    assert n["V"] > n["L"] and abs(n["P"] - n["L"]) <= 20 and by["E"].endswith(by["L"])
    # the extra kinds: a wrong final step, a skipped one, and one filler style each; the held-out style only in
    # the report split
    extra = reward_validity.build(task, rows, "tune", tokenizer, extra_kinds=True)
    kinds = {r["kind"] for r in extra}
    assert {"W", "S", "V:hedging", "V:meta", "V:restating", "E:stated", "E:guess"} <= kinds
    assert "V:selfcheck" not in kinds and "E:midway" not in kinds
    report_records = reward_validity.build(task, report, "report", tokenizer, extra_kinds=True)
    assert {"V:selfcheck", "E:midway"} <= {r["kind"] for r in report_records}
    # every early answer states the gold value before L's last line, and keeps all of L's lines
    for r in extra + report_records:
        if r["kind"].startswith("E:"):
            cot = r["completion"].rsplit("\n####", 1)[0]
            plain = next(
                x for x in extra + report_records if x["problem"] == r["problem"] and x["kind"] == "L"
            )
            last = plain["completion"].rsplit("\n####", 1)[0].split("\n")[-1]
            assert r["gold"] in cot[: cot.index(last)], r
            assert all(line in cot for line in plain["completion"].rsplit("\n####", 1)[0].split("\n"))
    for r in extra:
        assert gsm8k.is_correct(gsm8k.parse(r["completion"]).value, r["gold"]), r
    first = {r["kind"]: r["completion"] for r in extra if r["problem"] == extra[0]["problem"]}
    if "W" in first:
        assert first["W"] != first["L"] and first["W"].count("\n") == first["L"].count("\n")
        assert first["S"].count("\n") == first["L"].count("\n") - 1


def test_planted_families_are_split_and_hold_their_result(tokenizer):
    tune, held = planted.families_for("tune"), planted.families_for("heldout")
    assert len(planted.FAMILIES) >= 3 and tune and held and not set(tune) & set(held)
    for case in planted.make_cases(tokenizer, 4, 0, families=planted.families_for("all")):
        lo, hi = planted.result_span(case)
        assert case.trace.reasoning[lo:hi] == str(case.answer)
        assert case.relevant[0] <= lo < hi <= case.relevant[1]
        assert case.trace.answer.strip() == f"#### {case.answer}"


def test_gpu_benchmark_runs_on_cpu(tmp_path):
    """`benchmarks/gpu.py` is the same code on any device: on CPU every method is timed and finite (graph against
    eager is compared on CUDA only, where the graph path exists)."""
    import gpu

    out = tmp_path / "gpu.json"
    res = gpu.main(
        [
            "--device",
            "cpu",
            "--shapes",
            "tiny",
            "--batch",
            "2",
            "--prompt",
            "12",
            "--cot",
            "20",
            "--out",
            str(out),
        ]
    )
    r = res["shapes"]["tiny"]
    assert json.loads(out.read_text())["shapes"]["tiny"]["learned_s"] == r["learned_s"]
    for m in gpu.METHODS:
        assert r[f"{m}_s"] > 0 and r[f"{m}_finite"]
    assert r["generate_s"] > 0 and "learned_graph_max_score_diff" not in r  # graph vs eager: CUDA only
    for name in (
        "paper",
        "paper_answer",
    ):  # the published mask's step and fixed passes (timings: not checked)
        assert {f"{name}_per_step_s", f"{name}_fixed_s", f"{name}_200_steps_s"} <= set(r)
    assert "launches_per_mask_step_graph" not in r  # counted on CUDA only
    assert r["learned_attribution_s"] > 0 and r["learned_attribution_finite"]
    assert math.isfinite(r["learned_fixed_s"]) and math.isfinite(r["learned_per_step_s"])


def test_planted_compares_methods_case_by_case(tokenizer):
    """Per-method options, and each run after the first paired with it on the same cases (a bootstrap interval)."""
    from conftest import make_tiny_model

    assert planted.configs_for("learned", {"learned": {"preset": "reward"}}) == [{"preset": "reward"}]
    assert planted.configs_for("atman", {"learned": {"preset": "reward"}}) == [{}]
    assert planted.configs_for("atman", {"steps": 3}) == [{"steps": 3}]  # option names are not method names
    assert planted.configs_for("learned", [{"lam": 0.1}, {}]) == [{"lam": 0.1}, {}]

    model = make_tiny_model("llama", len(tokenizer))
    cases = planted.make_cases(tokenizer, 3, 0, families=planted.families_for("heldout"))
    runs = [
        planted.run(model, tokenizer, cases, "attention_gradient"),
        planted.run(model, tokenizer, cases, "learned", steps=2, chain=False),
    ]
    assert [c["family"] for c in runs[1]["cases"]] == [c.family for c in cases]
    assert runs[1]["auc"] == sum(c["auc"] for c in runs[1]["cases"]) / len(cases)
    (pair,) = planted.paired_auc(runs)
    diffs = [b["auc"] - a["auc"] for a, b in zip(runs[0]["cases"], runs[1]["cases"], strict=True)]
    assert abs(pair["auc_diff"] - sum(diffs) / len(diffs)) < 1e-9
    assert pair["lo"] <= pair["auc_diff"] <= pair["hi"]
    assert pair["run"] == "learned (steps=2, chain=False)" and pair["against"] == "attention_gradient"


def test_prefix_precision_compares_token_scores():
    """The precision benchmark's numbers: token changes, the share above 0.1, rank correlation, trace means."""
    from types import SimpleNamespace as S

    import prefix_precision

    exact = [S(scores=[0.1, 0.5, 0.9]), S(scores=[0.2, 0.4, 0.6])]
    fast = [S(scores=[0.1, 0.7, 0.9]), S(scores=[0.2, 0.6, 0.4])]
    r = prefix_precision.compare(exact, fast)
    assert abs(r["max"] - 0.2) < 1e-9 and abs(r["mean"] - 0.6 / 6) < 1e-9
    assert abs(r["share_over_0.1"] - 3 / 6) < 1e-9
    # the first trace keeps its order, the second swaps two tokens (Spearman 0.5)
    assert abs(r["spearman_min"] - 0.5) < 1e-9 and abs(r["spearman_mean"] - 0.75) < 1e-9
    assert abs(r["trace_mean_change_max"] - 0.2 / 3) < 1e-9


def test_planted_pairing_skips_cases_without_an_auc():
    nan = float("nan")
    first = {"method": "a", "config": {}, "cases": [{"auc": 0.5}, {"auc": nan}, {"auc": 0.7}]}
    second = {"method": "b", "config": {"lam": 1}, "cases": [{"auc": 0.6}, {"auc": 0.9}, {"auc": 0.9}]}
    (pair,) = planted.paired_auc([first, second])
    assert abs(pair["auc_diff"] - 0.15) < 1e-9  # (0.1 + 0.2) / 2: the nan case is left out, not the whole run
    assert pair["lo"] <= pair["auc_diff"] <= pair["hi"] and pair["run"] == "b (lam=1)"


def test_bench_keys_and_p4_exactness(tokenizer):
    """p5 names its batches as the docs do, and p4 compares the cache in the model's dtype: equal scores even where
    the reward preset would run its prefix in bfloat16."""
    import run

    from conftest import make_tiny_model

    model = make_tiny_model("llama", len(tokenizer))
    p5 = run.bench_p5(model, tokenizer, quick=True, also=[{"steps": 2}])
    for key in ("64", "256", "256_batch4"):
        assert p5[f"p5_loo_over_learned_{key}"] == p5[f"p5_loo_s_{key}"] / p5[f"p5_learned_s_{key}"]
    assert "p5_loo_over_learned_1024" not in p5  # --quick leaves out the longest CoT
    # another mask setting is timed once, at the goal's size, against the same leave-one-out run
    (also,) = p5["p5_also"]
    assert also["options"] == {"steps": 2}
    assert also["loo_over_learned"] == p5["p5_loo_s_256"] / also["learned_s"]
    p4 = run.bench_p4(model, tokenizer, quick=True)
    assert p4["p4_max_score_diff"] < 1e-4


def test_mask_fidelity_compares_top_content_tokens():
    """A cheaper mask's top-1 agreement is read on content tokens: a sink (whitespace, punctuation) never counts."""
    from types import SimpleNamespace as S

    import mask_fidelity

    tokens = ["The", " ", "42", "."]
    # content top "42": the space and the "." score higher, but they are not content
    ref = S(tokens=tokens, scores=[0.5, 0.99, 0.8, 0.95])
    moved = S(tokens=tokens, scores=[0.9, 0.1, 0.2, 0.1])  # content top: "The"
    same_top = S(tokens=tokens, scores=[0.1, 0.0, 0.3, 0.9])
    assert mask_fidelity.top1_agree([ref], [ref]) == 1.0
    assert mask_fidelity.top1_agree([ref, ref], [moved, same_top]) == 0.5


def test_reward_mask_options_fail_early_naming_the_flag(capsys):
    """--p5-also / --grid: bad JSON, a non-list or an unknown option stops before any model work, naming the flag."""
    import argparse

    import pytest
    import run

    parser = argparse.ArgumentParser(prog="bench")
    assert run.reward_mask_options(parser, "--grid", '[{"steps": 8, "lr": 19}]') == [{"steps": 8, "lr": 19}]
    for text, says in (("[", "not valid JSON"), ('{"steps": 8}', "JSON list"), ('[{"stepz": 8}]', "stepz")):
        with pytest.raises(SystemExit):
            run.reward_mask_options(parser, "--grid", text)
        err = capsys.readouterr().err
        assert "--grid" in err and says in err
    # one object (direction.py --saliency-options): the same checks, and a list is refused
    assert run.reward_mask_options(parser, "--saliency-options", '{"steps": 8}', one=True) == {"steps": 8}
    for text, says in (('[{"steps": 8}]', "JSON object"), ('{"stepz": 8}', "stepz")):
        with pytest.raises(SystemExit):
            run.reward_mask_options(parser, "--saliency-options", text, one=True)
        err = capsys.readouterr().err
        assert "--saliency-options" in err and says in err


def test_the_testbed_measure_scores_the_forced_answer_against_the_gold(tokenizer, monkeypatch):
    """A fake model that answers right only when the answer line is forced right after the prompt, and writes a
    CoT with a wrong answer otherwise: without-CoT accuracy 1, with-CoT 0, no group mixed."""
    from types import SimpleNamespace

    task = get_task("arith", level=5)
    exs = task.load(split="test", limit=4, seed=1234)

    def fake_sample(model, tok, contexts, cfg, max_new_tokens, description):
        outs = []
        for c in contexts:
            ex = next(e for e in exs if e.question in c)
            forced = c.rstrip().endswith("####")
            outs.append(ex.gold if forced else f"I guess.\n#### {int(ex.gold) + 1}")
        return outs

    monkeypatch.setattr(testbed, "sample", fake_sample)
    args = SimpleNamespace(
        problems=4, seed=1234, batch_size=4, temperature=0.7, answer_tokens=3, group=2, group_problems=2
    )
    r = testbed.measure(None, tokenizer, 5, args)
    assert r["without_cot_greedy"]["mean"] == 1.0 and r["without_cot_sampled"]["mean"] == 1.0
    assert r["with_cot_greedy"]["mean"] == 0.0 and r["with_cot_sampled"]["mean"] == 0.0
    assert r["groups_mixed"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 2}


def test_the_ab_doc_tables_cite_what_the_result_file_says():
    import re

    import ab_doc_table

    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "benchmarks/results/ab_three_arms_short.json").read_text())
    text = ab_doc_table.tables(result, "x.json")
    cites = re.findall(r"\[([−+-]?\d+\.\d+)\]\(x\.json#(/[^)]+)\)", text)
    assert len(cites) > 100
    for printed, ptr in cites:
        value = result
        for part in ptr.lstrip("/").split("/"):
            value = value[part]
        assert abs(float(printed.replace("−", "-")) - value) <= 0.5 * 10 ** -len(printed.split(".")[1]) + 1e-9
    assert "| paper | " in text and "Per seed" in text
    # an interval that excludes 0 with the seeds agreeing is bold; a difference whose seeds disagree says so
    assert "**" in text
    result["metrics"]["accuracy"]["paper-outcome"]["seeds_agree"] = False
    assert "(seeds disagree)" in ab_doc_table.tables(result, "x.json")


def test_the_ab_verdicts_say_which_way_each_finding_goes_and_cite_it():
    import ab_doc_table

    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "benchmarks/results/ab_testbed.json").read_text())
    longer = {"diff": 10.0, "lo": 9.0, "hi": 11.0, "seeds_agree": True, "excludes_0": True}
    result["metrics"]["cot_tokens"]["paper-paper_outcome"] = longer
    text = ab_doc_table.verdicts(result, "x.json")
    line = next(x for x in text.splitlines() if "/metrics/cot_tokens/paper-paper_outcome/diff" in x)
    # a longer CoT with its interval above 0 goes against the paper's -44%
    assert line.startswith("- CoT tokens: [+10.0]")
    assert line.endswith("higher, the interval excludes 0: opposite to the paper")
    m = result["metrics"]["filler_agreement"]
    m["atmanrl-outcome"] = {"diff": -0.1, "lo": -0.15, "hi": -0.05, "seeds_agree": True, "excludes_0": True}
    assert ab_doc_table.verdict(m, "filler_agreement", "atmanrl-outcome").endswith(
        "lower, the interval excludes 0: more faithful"
    )
    m["atmanrl-outcome"]["seeds_agree"] = False
    assert "disagree" in ab_doc_table.verdict(m, "filler_agreement", "atmanrl-outcome")
    m["atmanrl-outcome"] = {"diff": 0.01, "lo": -0.02, "hi": 0.04, "seeds_agree": True, "excludes_0": False}
    assert (
        ab_doc_table.verdict(m, "filler_agreement", "atmanrl-outcome")
        == "no effect (the interval includes 0)"
    )
    checks = result["accuracy_kept"]
    assert text.endswith("\n".join(f"- {k.replace('-', ' − ', 1)}: {v}" for k, v in checks.items()))


def test_ab_groups_measures_what_all_right_groups_taught_and_which_operation_was_written(tmp_path):
    import ab_groups
    import pandas as pd

    sub_q = "Question: Gina has 8 apples. Gina gives away 2 apples. How many apples does Gina have now?"
    add_q = "Question: Jack has 20 cookies. Jack gets 10 more cookies. How many cookies does Jack have now?"

    def rollouts(step, question, texts, correct, advantages, saliency):
        return pd.DataFrame(
            {
                "step": [step] * len(texts),
                "prompt": [[{"role": "user", "content": question}]] * len(texts),
                "completion": [[{"role": "assistant", "content": t}] for t in texts],
                "correctness": correct,
                "advantage": advantages,
                "saliency": saliency,
            }
        )

    done = tmp_path / "runs" / "atmanrl-s0" / "completions"
    done.mkdir(parents=True)
    # step 1: every answer right, yet a saliency reward that differs by 0.01 became advantages of +-1
    rollouts(1, add_q, ["20 + 10 = 30.\n#### 30"] * 2, [1.0, 1.0], [1.0, -1.0], [0.61, 0.62]).to_parquet(
        done / "c1.parquet"
    )
    rollouts(
        2, sub_q, ["8 + 2 = 10.\n#### 10", "8 - 2 = 6.\n#### 6"], [0.0, 1.0], [-0.5, 0.5], [0.0, 0.6]
    ).to_parquet(done / "c2.parquet")
    ev = tmp_path / "eval" / "atmanrl-s0"
    ev.mkdir(parents=True)
    rows = [
        {"prompt": sub_q, "reasoning": "8 + 2 = 10.\n", "correct": False},
        {"prompt": add_q, "reasoning": "20 + 10 = 30.\n", "correct": True},
    ]
    (ev / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ab_groups.analyse(tmp_path)
    t = result["training"]["atmanrl-s0"]
    assert (t["groups"], t["solved_groups"], t["failed_groups"]) == (2, 1, 0)
    assert t["solved_mean_abs_advantage"] == 1.0
    # the spread that the std division turned into those advantages: only the all-right group counts
    assert t["solved_saliency_range"]["n"] == 1 and math.isclose(t["solved_saliency_range"]["max"], 0.01)
    assert t["blocks"][0]["sub"] == {"n": 2, "correct": 0.5, "adds": 0.5, "subtracts": 0.5}
    h = result["held_out"]["atmanrl-s0"]
    assert h["sub"] == {"n": 1, "correct": 0.0, "adds": 1.0, "subtracts": 0.0}
    assert h["add"]["correct"] == 1.0
    assert ab_groups.right({"paper_outcome": 0.0}) == 1.0 and ab_groups.right({"paper_outcome": -1.0}) == 0.0
