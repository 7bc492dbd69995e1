"""Evaluation metrics, the HTML report and `compare`, on tiny random models (one slow end-to-end run)."""

import json
import random
import re
import time

import pytest
import torch

from atmanrl.cli import main
from atmanrl.compare import compare_runs
from atmanrl.cot_prefixes import early_statements, states_answer, truncate_cot
from atmanrl.data import Arith, Parsed, get_task
from atmanrl.evaluate import (
    NUMBER_RE,
    EvalConfig,
    answer_context,
    corrupt_number,
    cot_stats,
    evaluate,
    forced_prefix,
    make_filler,
    removal_curves,
    removal_masks,
)
from atmanrl.generate import SamplingConfig, render_prompt, sample
from atmanrl.report import flatten, render_report, write_report
from atmanrl.saliency import Token, Trace, compute_saliency
from conftest import make_tiny_model

FAST = EvalConfig(answer_tokens=4, method_options={"learned": {"steps": 3}}, heatmaps=1)
KEYS = {
    "accuracy": {"n", "accuracy", "parsed"},
    "cot_stats": {
        "n",
        "mean_cot_tokens",
        "mean_cot_words",
        "stop_word_share",
        "number_share",
        "symbol_share",
        "spacy_source",
        "spacy_number_share",
        "spacy_stop_word_share",
        "spacy_symbol_share",
    },
    "pass_at_k": {"n", "k", "samples", "temperature", "pass@4", "pass@1"},
    "early_answering": {"n", "fractions", "accuracy", "agreement", "aoc", "agreement_unstated", "n_unstated"},
    "adding_mistakes": {"n", "mode", "skipped_no_number", "changed_share", "accuracy", "parsed"},
    "filler": {"n", "unit", "accuracy", "agreement"},
    "saliency": {"n", "ks", "methods"},
}
METHOD_KEYS = {
    "n",
    "deletion",
    "insertion",
    "aopc_deletion",
    "aopc_insertion",
    "base_logprob",
    "removed_logprob",
    "seconds",
    "config",
    "examples",
}


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return make_tiny_model("llama", len(tokenizer), attn_implementation="sdpa")


@pytest.fixture(scope="module")
def evaluated(tiny, tokenizer):
    """evaluate() on hand-written, parseable arith completions; one carries a <script> tag."""
    task = get_task("arith")
    examples = task.load(limit=3, seed=1)
    completions = [f"{ex.reference}\n#### {ex.gold}" for ex in examples]
    completions[0] = "<script>alert(1)</script> " + completions[0]
    completions[2] = f"I just know it.\n#### {examples[2].gold}"  # no number in the CoT: skipped by mistakes
    return evaluate(tiny, tokenizer, task, examples, FAST, completions=completions)


def assert_keys(metrics):
    for group, keys in KEYS.items():
        assert keys <= set(metrics[group]), (group, keys - set(metrics[group]))
    for name in ("attention_gradient", "learned", "random"):
        assert METHOD_KEYS <= set(metrics["saliency"]["methods"][name])
    assert metrics["planted"] == {"skipped": True}


# ----------------------------------------------------------------------------- pure helpers


def test_cot_stats_exact_shares():
    # words: The cat has 3 apples + 2 = 5 .  -> stop: The, has; numbers: 3 2 5; symbols: + = .
    s = cot_stats(["The cat has 3 apples + 2 = 5.", "So 10%"])  # So(stop) 10(number) %(symbol)
    assert s["n"] == 2 and s["mean_cot_words"] == 6.5
    assert s["stop_word_share"] == pytest.approx(3 / 13)
    assert s["number_share"] == pytest.approx(4 / 13)
    assert s["symbol_share"] == pytest.approx(4 / 13)
    assert cot_stats([""])["stop_word_share"] is None


def test_cot_tokens_counted_with_the_model_tokenizer(tokenizer):
    text = "2 + 3 = 5."
    assert cot_stats([text, text], tokenizer)["mean_cot_tokens"] == len(tokenizer(text)["input_ids"])


def test_forced_prefix_and_truncation(tokenizer):
    assert forced_prefix(get_task("arith"), tokenizer, "5") == "#### "
    assert forced_prefix(get_task("mmlu"), tokenizer, "B") == "Answer:"  # ' B' is one token: no bare space
    cot = "Ann has 2 pens. 2 + 3 = 5.\n"
    assert truncate_cot(tokenizer, cot, 1.0) == cot and truncate_cot(tokenizer, cot, 0.0) == ""
    half = truncate_cot(tokenizer, cot, 0.5)
    assert cot.startswith(half) and 0 < len(half) < len(cot)
    assert answer_context("P", cot, "#### ") == "P" + cot + "#### "
    assert answer_context("P", "Ann has", "#### ") == "PAnn has\n#### "


@pytest.mark.parametrize("seed", range(5))
def test_corrupt_number_changes_exactly_one(seed):
    text = "Ann has 12 apples and gets 3.5 more: 12 + 3.5 = 15.5, then 0 left."
    c = corrupt_number(text, random.Random(seed))
    before, after = NUMBER_RE.findall(text), NUMBER_RE.findall(c.text)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1
    assert changed[0] == (c.old, c.new) and float(c.new) >= 0 and c.text[c.span[0] : c.span[1]] == c.new
    assert corrupt_number(text, random.Random(seed)) == c  # deterministic under the seed
    assert corrupt_number("no digits here", random.Random(seed)) is None


@pytest.mark.parametrize("n", [1, 7, 53])
def test_filler_has_the_cot_token_length(tokenizer, n):
    filler = make_filler(tokenizer, n)
    assert len(tokenizer(filler, add_special_tokens=False)["input_ids"]) == n and set(filler) == {" ", "."}


def test_removal_masks_rank_content_tokens_only():
    tokens = [Token(t, 0, 0) for t in ["Ann", " has", ".", " 5", "\n"]]
    deletion, insertion = removal_masks([0.1, 0.5, 9.0, 0.9, 8.0], tokens, [0, 50, 100])
    assert deletion == [[], [1, 3], [0, 1, 3]]  # '.' and '\n' score high but are never removed
    assert insertion == [[0, 1, 3], [0], []]


# ----------------------------------------------------------------------------- model-based metrics


class EchoTask(Arith):
    """Any text after '#### ' is the answer: lets a random model 'answer' deterministically."""

    def parse(self, completion):
        i = completion.find("#### ")
        if i < 0 or not completion[i + 5 :]:
            return Parsed((0, len(completion)))
        return Parsed((0, i), (i, len(completion)), completion[i + 5 :], (i + 5, len(completion)))

    def is_correct(self, value, gold):
        return value is not None and value == gold


def test_early_agreement_counts_only_prefixes_that_do_not_state_the_answer(tokenizer):
    task = get_task("arith")
    assert states_answer(task, "8 - 2 = 6", "6") and not states_answer(task, "8 - 2 =", "6")
    assert not states_answer(task, "16 - 10 =", "6")  # a number that contains the answer's digits is not it
    assert states_answer(task, "it is 1,200", "1200")
    cot = "8 - 2 = 6 apples."
    cut = {f: truncate_cot(tokenizer, cot, f) for f in (0.0, 0.25, 0.5, 0.75, 1.0)}
    stated = {f for f in cut if f < 1 and states_answer(task, cut[f], "6")}
    assert stated and stated != set(cut) - {1.0}  # the short CoT's last partial prefix already holds "6"
    # every answer is right: only the prefixes without "6" count, and the full CoT never does
    answers = {str(f): "6" for f in cut}
    assert early_statements(task, tokenizer, cot, "6", answers)[1] == 1.0
    answers.update({str(f): "8" for f in cut if f not in stated})  # wrong wherever the CoT has not said it
    assert early_statements(task, tokenizer, cot, "6", answers) == (len(stated) / 4, 0.0)
    assert early_statements(task, tokenizer, cot, "6", {"1.0": "6"}) == (None, None)  # no partial prefix


def test_early_answering_at_full_cot_reproduces_the_answer(tiny, tokenizer):
    task = EchoTask()
    [ex] = task.load(limit=1)
    prompt = render_prompt(tokenizer, task.messages(ex))
    cot = ex.reference + "\n"
    [answer] = sample(
        tiny, tokenizer, [answer_context(prompt, cot, "#### ")], SamplingConfig(batch_size=1), 4
    )
    cfg = EvalConfig(answer_tokens=4, batch_size=1, skip=("adding_mistakes", "filler", "saliency"))
    m = evaluate(tiny, tokenizer, task, [ex], cfg, completions=[cot + "#### " + answer])
    assert m["generations"][0]["early_answering"]["1.0"] == answer
    assert m["early_answering"]["agreement"][-1] == 1.0
    assert m["early_answering"]["aoc"] == pytest.approx(
        1
        - sum(
            (a + b) / 2 * 0.25
            for a, b in zip(m["early_answering"]["agreement"], m["early_answering"]["agreement"][1:])
        )
    )


def test_deletion_at_zero_is_the_base_logprob(tiny, tokenizer):
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "Ann has 2 pens and gets 3. How many?"}])
    trace = Trace(prompt, "Ann has 2 pens. 2 + 3 = 5.\n", "#### 5", (5, 6))
    [sal] = compute_saliency(tiny, tokenizer, [trace], "random")
    [curve] = removal_curves(tiny, tokenizer, [trace], [sal], [0, 50, 100])
    assert curve["deletion"][0] == pytest.approx(sal.answer_logprob, abs=1e-4)
    assert curve["insertion"][-1] == pytest.approx(sal.answer_logprob, abs=1e-4)
    assert curve["insertion"][0] == pytest.approx(curve["deletion"][-1], abs=1e-5)  # both: no content left
    assert curve["deletion"][-1] != pytest.approx(curve["deletion"][0], abs=1e-6)  # removal has an effect


def test_evaluate_has_every_group_and_per_example_results(evaluated):
    assert_keys(evaluated)
    assert evaluated["accuracy"] == {"n": 3, "accuracy": 1.0, "parsed": 1.0}
    assert evaluated["early_answering"]["n"] == 3 and len(evaluated["early_answering"]["agreement"]) == 5
    assert evaluated["adding_mistakes"]["n"] == 2 and evaluated["adding_mistakes"]["skipped_no_number"] == 1
    sal = evaluated["saliency"]
    assert sal["n"] == 3 and all(len(m["deletion"]) == len(sal["ks"]) == 11 for m in sal["methods"].values())
    row = evaluated["generations"][0]
    assert set(row["early_answering"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"} and "filler" in row


def test_adding_mistakes_continue_mode(tiny, tokenizer):
    task = get_task("arith")
    examples = task.load(limit=2, seed=2)
    completions = [f"{ex.reference}\n#### {ex.gold}" for ex in examples]
    cfg = EvalConfig(
        mistake_mode="continue", max_new_tokens=4, skip=("early_answering", "filler", "saliency")
    )
    m = evaluate(tiny, tokenizer, task, examples, cfg, completions=completions)
    assert m["adding_mistakes"]["n"] == 2 and m["adding_mistakes"]["mode"] == "continue"
    # the random model writes no '#### N' after the cut: every answer is unparseable, so all changed
    assert m["adding_mistakes"]["changed_share"] == 1.0 and m["adding_mistakes"]["parsed"] == 0.0


def test_planted_hook(tiny, tokenizer):
    from atmanrl.evaluate import SKIPPABLE, load_planted

    assert hasattr(load_planted(), "make_cases")  # atmanrl.planted ships with the package: never skipped
    task = get_task("arith")
    skip = tuple(g for g in SKIPPABLE if g != "planted")
    cfg = EvalConfig(planted=2, methods=("random",), skip=skip)
    m = evaluate(tiny, tokenizer, task, task.load(limit=1), cfg, completions=["x\n#### 1"])
    assert m["planted"]["n"] == 2 and {"hit1", "auc"} <= set(m["planted"]["methods"]["random"])


def test_bad_config_is_a_user_error(tiny, tokenizer):
    from atmanrl import UserError

    task = get_task("arith")
    for cfg in (EvalConfig(skip=("accuracy",)), EvalConfig(methods=("nope",)), EvalConfig(ks=(10, 20))):
        with pytest.raises(UserError):
            evaluate(tiny, tokenizer, task, task.load(limit=1), cfg)


# ----------------------------------------------------------------------------- report, CLI, compare


def test_report_is_self_contained_and_escaped(evaluated, tmp_path):
    metrics = {k: v for k, v in evaluated.items() if k != "generations"}
    path = write_report(metrics, tmp_path, evaluated["generations"])
    doc = path.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc and "<script" not in doc.lower()
    assert not re.search(r"https?://", doc) and "<link" not in doc
    assert doc.count('src="data:image/png;base64,') == 3  # early answering, deletion/insertion, CoT stats
    for group in KEYS:
        assert f"<h2>{group}</h2>" in doc
    assert render_report(metrics) == render_report(json.loads(json.dumps(metrics)))  # reproducible from JSON


def test_cli_eval_writes_metrics_report_and_generations(tiny_dir, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_dir),
            "--task",
            "arith",
            "--limit",
            "2",
            "--max-new-tokens",
            "6",
            "--saliency-config",
            '{"learned": {"steps": 2}}',
            "--report",
            str(out),
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert_keys(metrics)  # a random model parses nothing: groups keep their keys, with n = 0
    assert metrics["meta"]["model"] == str(tiny_dir) and metrics["early_answering"]["n"] == 0
    assert len((out / "generations.jsonl").read_text().splitlines()) == 2
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    assert "accuracy=" in capsys.readouterr().out


def test_cli_eval_user_errors(tmp_path, capsys):
    assert main(["eval", "--model", "nope", "--skip", "bogus", "--report", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot skip bogus" in err
    assert main(["eval", "--model", "nope", "--saliency-config", "{", "--report", str(tmp_path / "r")]) == 2
    assert "--saliency-config" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing"), str(tmp_path), "--output", str(tmp_path / "c")]) == 2
    assert "missing not found" in capsys.readouterr().err


def test_compare_tables_with_relative_deltas(evaluated, tmp_path, capsys):
    base = {k: v for k, v in evaluated.items() if k != "generations"}
    trained = json.loads(json.dumps(base))
    base["cot_stats"]["mean_cot_tokens"] = 100.0
    trained["cot_stats"]["mean_cot_tokens"] = 56.0
    trained["accuracy"]["accuracy"] = 0.5
    for name, m in (("a", base), ("b", trained)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--names",
                "base,atmanrl",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert "-44%" in capsys.readouterr().out
    result = json.loads((out / "compare.json").read_text())
    rows = {r["metric"]: r for r in result["rows"]}
    assert rows["cot_stats.mean_cot_tokens"]["relative"] == [pytest.approx(-0.44)]
    assert rows["accuracy.accuracy"]["values"] == [1.0, 0.5]
    assert "saliency.learned.aopc_deletion" in rows and "early_answering.agreement@0.5" in rows
    doc = (out / "compare.html").read_text()
    assert "-44%" in doc and doc.count("data:image/png;base64,") == 4 and not re.search(r"https?://", doc)
    # the headline comes first and colours changes by whether they are better: a shorter CoT (the paper's way)
    # green, a lower accuracy red
    head = doc[doc.index("<h2>Headline") : doc.index("<h2>Table 1")]
    assert '<td class="up">-44%</td>' in head and '<td class="down">-50%</td>' in head
    assert doc.index("<h2>Headline") < doc.index("<h2>Every metric")
    assert set(flatten(base)) == set(rows)
    with pytest.raises(Exception, match="names"):
        compare_runs([tmp_path / "a", tmp_path / "b"], names=["x"])


@pytest.mark.slow
def test_eval_embedded_model_end_to_end(tmp_path, capsys):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                "smollm2-135m-instruct",
                "--task",
                "arith",
                "--limit",
                "4",
                "--report",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert_keys(metrics)
    assert metrics["accuracy"]["parsed"] >= 0.5 and metrics["early_answering"]["n"] >= 2
    assert metrics["saliency"]["methods"]["learned"]["n"] >= 2
    print(f"eval end to end: {time.perf_counter() - t0:.0f} s", capsys.readouterr().out)
