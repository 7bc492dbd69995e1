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

    from atmanrl.report import print_compare

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
