"""What a user meets one step past the README: model paths, devices, recipes, readable reports."""

import re

import pytest
import torch

from atmanrl.cli import main
from atmanrl.errors import UserError
from atmanrl.heatmap import token_style
from atmanrl.models import best_device, resolve_dtype, resolve_model_path
from atmanrl.recipes import copy_recipe, list_recipes, recipe_path


def test_an_interrupted_training_folder_names_its_latest_checkpoint(tmp_path):
    for n in (10, 20, 5):
        (tmp_path / f"checkpoint-{n}").mkdir()
    with pytest.raises(UserError, match="no final model") as e:
        resolve_model_path(str(tmp_path))
    assert str(tmp_path / "checkpoint-20") in str(e.value)


def test_a_missing_local_folder_is_called_that(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no such folder"):
        resolve_model_path("./runs/nope")
    assert resolve_model_path("org/model") == "org/model"  # a Hub id passes through


def test_dtype_auto_and_devices():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        resolve_dtype("auto-ish")
    assert best_device() in ("cuda", "mps", "cpu")


def test_eval_and_generate_default_to_auto_device_and_dtype():
    from atmanrl.cli import build_parser

    for cmd in (["generate", "--output", "x.jsonl"], ["eval", "--report", "r"], ["explain"]):
        args = build_parser().parse_args(cmd)
        assert (args.device, args.dtype) == ("auto", "auto")


def test_recipes_ship_with_the_package_and_copy_out(tmp_path, capsys):
    names = list_recipes()
    assert "smollm2-135m/arith_atmanrl.yaml" in names and "accelerate/ddp.yaml" in names
    assert recipe_path("recipes/smollm2-135m/arith_outcome.yaml").is_file()  # the checkout spelling
    out = copy_recipe("smollm2-135m/arith_atmanrl.yaml", tmp_path)
    assert out.read_text() == recipe_path("smollm2-135m/arith_atmanrl.yaml").read_text()
    with pytest.raises(UserError, match="exists"):
        copy_recipe("smollm2-135m/arith_atmanrl.yaml", tmp_path)
    assert main(["recipes"]) == 0
    assert "smollm2-135m/arith_atmanrl.yaml" in capsys.readouterr().out
    assert main(["recipes", "copy", "nope.yaml", str(tmp_path)]) == 2


def test_strong_tokens_get_white_text():
    assert "color:#fff" in token_style(1.0) and "color" not in token_style(0.3).replace("background", "")


def test_compare_table_never_cuts_values_on_a_narrow_terminal():
    from rich.console import Console

    from atmanrl.compare import print_compare

    result = {
        "names": ["base", "outcome-only", "atmanrl"],
        "rows": [
            {
                "metric": "cot_stats.mean_cot_tokens",
                "values": [31.4567, -10.25, 28.125],
                "relative": [None, -1.33, -0.11],
                "delta": [None, -41.7, -3.3],
            }
        ],
    }
    console = Console(width=50, record=True)
    print_compare(result, console)
    text = console.export_text()
    assert "…" not in text
    assert all(v in re.sub(r"\s+", "", text) for v in ("31.457", "-10.250", "28.125", "-133%"))


def test_one_vocabulary_with_old_spellings_accepted_and_warned(caplog):
    from atmanrl.cli import DEFAULT_METHODS, build_parser

    parser = build_parser()
    for cmd in (["saliency", "--input", "a", "--output", "b"], ["explain"], ["eval", "--report", "r"]):
        args = parser.parse_args([*cmd, "--model_name_or_path", "m", "--saliency-steps", "3"])
        assert (args.model, args.saliency_steps, args.methods) == ("m", 3, DEFAULT_METHODS)
    with caplog.at_level("WARNING", logger="atmanrl"):
        args = parser.parse_args(["explain", "--steps", "4"])
    assert args.saliency_steps == 4 and "use --saliency-steps" in caplog.text


def test_train_takes_the_same_names(caplog):
    from atmanrl.train import parse_recipe

    script, _, model_args = parse_recipe("smollm2-135m/arith_outcome.yaml", ["--split", "test"])
    assert script.split == "test"
    with caplog.at_level("WARNING", logger="atmanrl"):
        script, _, _ = parse_recipe("smollm2-135m/arith_outcome.yaml", ["--dataset_split", "test"])
    assert script.split == "test" and "dataset_split is deprecated" in caplog.text


def test_train_options_never_meet_atmanrls_own_parser():
    from atmanrl.cli import _split_train

    assert _split_train(["--debug", "train", "r.yaml", "--debug", "underflow_overflow"]) == (
        ["--debug"],
        ["r.yaml", "--debug", "underflow_overflow"],
    )
    assert _split_train(["eval", "--report", "r"]) is None


def test_train_takes_model_like_every_other_command(capsys):
    from atmanrl.train import cli

    assert cli(["smollm2-135m/arith_outcome.yaml", "--model", "smollm2-135m-instruct", "--dry-run"]) == 0
    assert "model: embedded alias smollm2-135m-instruct" in capsys.readouterr().out


def test_every_recipe_is_package_data():
    """`pip install atmanrl` ships what `atmanrl recipes` lists: each file matches a package-data glob."""
    import fnmatch
    import json
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    globs = json.loads(re.search(r"\[tool\.setuptools\.package-data\]\s*atmanrl = (\[.*?\])", text).group(1))
    for name in list_recipes():
        assert any(fnmatch.fnmatch(f"recipes/{name}", g) for g in globs), name


# --------------------------------------------------------------------- errors that come early, in the command's voice


def test_saliency_names_a_missing_input_before_loading_a_model(tmp_path, capsys, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("atmanrl.cli.model_from_options", no_model)
    rc = main(["saliency", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "s.jsonl")])
    assert rc == 2 and "--input" in capsys.readouterr().err


def test_a_mistyped_option_prints_the_commands_usage(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--limt", "2", "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "atmanrl generate: error: unrecognized arguments: --limt 2" in err
    assert "usage: atmanrl generate" in err


def test_an_unknown_train_option_is_named_in_atmanrls_words(capsys):
    rc = main(["train", "smollm2-135m/arith_atmanrl.yaml", "--no_such_key", "3", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown train options --no_such_key" in err and "HfArgumentParser" not in err


def test_a_failed_eval_leaves_no_empty_report_folder(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise UserError("boom")

    monkeypatch.setattr("atmanrl.cli._run_eval", fail)
    assert main(["eval", "--task", "arith", "--limit", "2", "--report", str(tmp_path / "rep")]) == 2
    assert not (tmp_path / "rep").exists()
    (tmp_path / "kept").mkdir()
    assert main(["eval", "--task", "arith", "--limit", "2", "--report", str(tmp_path / "kept")]) == 2
    assert (tmp_path / "kept").is_dir()  # a folder the user made stays


def test_the_readme_commands_outputs_are_ignored_by_git():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = ["s.html", "explain.html", "eval_try/metrics.json", "cmp/compare.html", "out.jsonl", "demo_out/x"]
    out = subprocess.run(["git", "check-ignore", *names], cwd=root, capture_output=True, text=True)
    assert sorted(out.stdout.split()) == sorted(names)


def test_one_version_everywhere_and_docs_name_only_released_ones():
    from pathlib import Path

    import atmanrl

    root = Path(__file__).resolve().parents[1]
    pyproject = re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M).group(1)
    changelog = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (root / "CHANGELOG.md").read_text(), re.M)
    assert atmanrl.__version__ == pyproject == changelog[0]
    released = {v.rsplit(".", 1)[0] for v in changelog}
    for path in [root / "README.md", *(root / "docs").glob("*.md")]:
        for v in re.findall(r"atmanrl (\d+\.\d+)\b", path.read_text()):
            assert v in released, f"{path.name} names atmanrl {v}, which CHANGELOG.md does not have"


# --------------------------------------------------------------------- pages say what they show


def _sal(method="learned", config=None):
    from atmanrl.saliency import Saliency, Token

    return Saliency(
        [Token("3", 0, 1), Token(" +", 1, 3), Token(" 4", 3, 5)],
        [0.9, 0.1, -0.4],
        -0.5,
        method,
        config or {},
        0.25,
        "3 + 4",
        {"removed_logprob": -3.0},
    )


def test_a_saliency_page_names_its_context_scale_and_rewards():
    from atmanrl.heatmap import heatmap_html

    row = {
        "id": "p1",
        "prompt": "<b>Q</b>",
        "answer": "\n#### 7\n#### 7\nThe answer is 7",
        "correct": False,
        "saliency": {"learned": _sal()},
        "rewards": {"needed_share": 0.5},
    }
    doc = heatmap_html([row], "atmanrl explain", {"model": "m", "task": "arith", "learned preset": "reward"})
    assert "learned preset: <b>reward</b>" in doc and "class='scale'" in doc and "white = 0" in doc
    assert "<dt>needed_share</dt>" in doc  # the reward it prints is defined on the page
    assert "(0 in training: wrong answer)" in doc and "&lt;b&gt;Q&lt;/b&gt;" in doc
    assert doc.count("#### 7") == 1 and "2 more line(s) after the answer" in doc
    assert "s/trace (batch mean)" in doc


def test_saliency_show_writes_a_whole_page(tmp_path):
    page = _sal().show(tmp_path / "s.html")
    text = (tmp_path / "s.html").read_text()
    assert text == page and text.startswith("<!doctype html>") and "<title>atmanrl saliency: learned" in text
    assert "class='scale'" in text and "method: <b>learned</b>" in text


# --------------------------------------------------------------------- two torch processes on the same cores


def test_a_busy_machine_gets_one_thread_unless_the_user_chose(caplog):
    from atmanrl.cli import cpu_threads

    env: dict = {}
    assert cpu_threads(env, load=1.9, cores=2) == "busy: 1 thread" and env == {"OMP_NUM_THREADS": "1"}
    assert "busy" in caplog.text and "OMP_NUM_THREADS" in caplog.text
    env = {}
    assert cpu_threads(env, load=0.2, cores=2).startswith("idle") and env == {}  # alone: torch's default
    for mine in ({"OMP_NUM_THREADS": "2"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        env = dict(mine)
        assert cpu_threads(env, load=5.0, cores=2).startswith("threads as set") and env == mine


def test_commands_log_their_thread_count(tiny_dir, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="atmanrl")
    argv = ["generate", "--model", str(tiny_dir), "--task", "arith", "--limit", "1", "--max-new-tokens", "2"]
    assert main([*argv, "--output", str(tmp_path / "g.jsonl")]) == 0
    assert re.search(r"\d+ torch threads", caplog.text)


def test_limit_states_its_default_and_a_whole_split_warns_before_the_model_loads(
    tmp_path, caplog, monkeypatch
):
    import argparse

    from atmanrl.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    eval_help = next(a for a in sub.choices["eval"]._actions if "--limit" in a.option_strings)
    assert "default: every example of the split" in eval_help.help

    def no_model(*a, **k):
        raise UserError("stop before the model")

    monkeypatch.setattr("atmanrl.cli.model_from_options", no_model)
    assert main(["eval", "--task", "arith", "--report", str(tmp_path / "r")]) == 2
    assert "evaluating all 1000 arith examples (no --limit)" in caplog.text


def test_compare_plots_give_every_run_its_own_colour_and_marker(monkeypatch):
    import atmanrl.report as report

    figs = []
    monkeypatch.setattr(report, "png", lambda fig: figs.append(fig) or "")
    curve = {"n": 2, "deletion": [0.0, -1.0], "insertion": [-1.0, 0.0]}
    run = {"saliency": {"n": 2, "ks": [0, 100], "methods": {"learned": curve}}}
    report.plot_saliency([run, run], ["a", "b"])
    lines = figs[0].axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a: learned", "b: learned"]
    assert lines[0].get_color() != lines[1].get_color() and lines[0].get_marker() != lines[1].get_marker()
