"""The bad-input catalogue (docs/reliability.md): every case gets a clear one-line message naming the line,
field or file and the fix; the CLI exits non-zero where it cannot proceed; good rows around a bad one are
still processed; no traceback unless --debug."""

from __future__ import annotations

import json
import logging

import pytest

from atmanrl.cli import main
from atmanrl.errors import UserError
from conftest import make_tiny_model

GOOD = {
    "id": "g",
    "prompt": "Tom has 3 apples and buys 4.",
    "reasoning": "Tom has 3. He buys 4, so 3 + 4 = 7.",
    "answer": "\n#### 7",
}


# --- saliency input rows: the bad row is skipped with its message, the good rows around it are scored ---

BAD_ROWS = {
    "malformed_jsonl": ("{oops", "malformed JSON"),
    "json_array_not_object": ("[1, 2]", "expected a JSON object"),
    "missing_id": (json.dumps({k: v for k, v in GOOD.items() if k != "id"}), "missing field 'id'"),
    "missing_answer": (
        json.dumps({k: v for k, v in GOOD.items() if k != "answer"}),
        "missing field 'answer'",
    ),
    "missing_reasoning": (
        json.dumps({k: v for k, v in GOOD.items() if k != "reasoning"}),
        "missing field 'reasoning'",
    ),
    "prompt_wrong_type": (json.dumps(GOOD | {"prompt": ["x"]}), "'prompt' must be a string"),
    "reasoning_wrong_type": (json.dumps(GOOD | {"reasoning": 3}), "'reasoning' must be a string"),
    "answer_wrong_type": (json.dumps(GOOD | {"answer": None}), "'answer' must be a string"),
    "empty_reasoning": (json.dumps(GOOD | {"reasoning": "  "}), "'reasoning' is empty"),
    "empty_answer": (json.dumps(GOOD | {"answer": ""}), "no parseable answer"),
    "unparseable_answer": (json.dumps(GOOD | {"answer": "seven"}), "no parseable answer"),
    "answer_before_reasoning": (
        json.dumps(GOOD | {"reasoning": "#### 7\nTom has 3, buys 4."}),
        "already contains an answer line",
    ),
    "too_long_for_model": (json.dumps(GOOD | {"reasoning": "and 1 " * 600}), "more than the model's maximum"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_saliency_bad_row_is_skipped_and_neighbours_scored(case, tiny_dir, tmp_path, caplog, capsys):
    line, message = BAD_ROWS[case]
    traces = tmp_path / "t.jsonl"
    traces.write_text(
        json.dumps(GOOD | {"id": "before"}) + "\n" + line + "\n" + json.dumps(GOOD | {"id": "after"}) + "\n"
    )
    out = tmp_path / "s.jsonl"
    with caplog.at_level(logging.WARNING):
        rc = main(
            [
                "saliency",
                "--model",
                str(tiny_dir),
                "--input",
                str(traces),
                "--output",
                str(out),
                "--methods",
                "attention_gradient",
            ]
        )
    assert rc == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["before", "after"]
    warning = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(message in w and "t.jsonl:2" in w for w in warning), warning
    assert "skipped=1" in capsys.readouterr().out


def test_non_utf8_bytes_are_a_skipped_line(tiny_dir, tmp_path, caplog):
    traces = tmp_path / "t.jsonl"
    traces.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe{\n")
    out = tmp_path / "s.jsonl"
    assert (
        main(
            [
                "saliency",
                "--model",
                str(tiny_dir),
                "--input",
                str(traces),
                "--output",
                str(out),
                "--methods",
                "random",
            ]
        )
        == 0
    )
    assert "not UTF-8" in caplog.text and len(out.read_text().splitlines()) == 1


# --- CLI cases that cannot proceed: exit 2 and one line naming the fix ---


def _cases(shared_data, tmp_path, tiny_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: arith\nnot_a_key: 1\n")
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- a\n- b\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [unclosed\n")
    model = ["--model", str(tiny_dir)]
    return {
        "unknown_task": (["data", "--task", "chess"], "choose one of arith, gsm8k, mmlu"),
        "unknown_split": (["data", "--task", "arith", "--split", "dev"], "choose one of train, test"),
        "zero_limit": (["data", "--task", "arith", "--limit", "0"], "--limit must be at least 1"),
        "arith_level": (["data", "--task", "arith", "--level", "7"], "choose one of 1, 2, 3, 4, 5"),
        "mmlu_subject": (
            ["data", "--task", "mmlu", "--data-dir", str(shared_data / "mmlu"), "--subjects", "cooking"],
            "unknown MMLU subject",
        ),
        "mmlu_folder_without_csvs": (["data", "--task", "mmlu", "--data-dir", str(tmp_path)], "no MMLU CSVs"),
        "gsm8k_folder_without_split": (
            ["data", "--task", "gsm8k", "--data-dir", str(tmp_path)],
            "test.jsonl",
        ),
        "unknown_method": (
            [
                "saliency",
                *model,
                "--input",
                str(empty),
                "--output",
                str(tmp_path / "o"),
                "--methods",
                "magic",
            ],
            "attention_gradient",
        ),
        "missing_input": (
            ["saliency", *model, "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")],
            "does not exist",
        ),
        "empty_input": (
            ["saliency", *model, "--input", str(empty), "--output", str(tmp_path / "o")],
            "no usable rows",
        ),
        "missing_model_path": (
            ["generate", "--model", str(tmp_path / "no-model"), "--output", str(tmp_path / "o")],
            "no such folder",
        ),
        "unwritable_output": (
            ["generate", *model, "--output", str(blocker / "o.jsonl")],
            "choose another output path",
        ),
        "unwritable_html": (
            [
                "saliency",
                *model,
                "--input",
                str(empty),
                "--output",
                str(tmp_path / "o"),
                "--html",
                str(blocker / "x.html"),
            ],
            "choose another output path",
        ),
        "recipe_missing": (["train", str(tmp_path / "nope.yaml")], "no recipe"),
        "recipe_unknown_key": (["train", str(recipe), "--dry-run"], "unknown keys not_a_key"),
        "recipe_not_mapping": (["train", str(notmap), "--dry-run"], "must be a YAML mapping"),
        "recipe_bad_yaml": (["train", str(broken), "--dry-run"], "not valid YAML"),
        "unknown_reward": (
            [
                "train",
                "recipes/smollm2-135m/arith_outcome.yaml",
                "--dry-run",
                "--rewards",
                "vibes",
                "--reward_weights",
                "1",
            ],
            "choose from",
        ),
        "reward_weights_length": (
            ["train", "recipes/smollm2-135m/arith_outcome.yaml", "--dry-run", "--reward_weights", "1"],
            "reward_weights has 1 entries",
        ),
        "saliency_options_json": (
            ["train", "recipes/smollm2-135m/arith_atmanrl.yaml", "--dry-run", "--saliency_options", "{lr: 1"],
            "saliency_options is not valid JSON",
        ),
        "single_generation": (
            [
                "train",
                "recipes/smollm2-135m/arith_outcome.yaml",
                "--dry-run",
                "--num_generations",
                "1",
                "--per_device_train_batch_size",
                "1",
            ],
            "at least 2 generations per prompt",
        ),
        "unknown_saliency_variant": (
            ["train", "recipes/smollm2-135m/arith_atmanrl.yaml", "--dry-run", "--saliency_variant", "loud"],
            "salient_fraction",
        ),
    }


CLI_CASES = [
    "unknown_task",
    "unknown_split",
    "zero_limit",
    "arith_level",
    "mmlu_subject",
    "mmlu_folder_without_csvs",
    "gsm8k_folder_without_split",
    "unknown_method",
    "missing_input",
    "empty_input",
    "missing_model_path",
    "unwritable_output",
    "unwritable_html",
    "recipe_missing",
    "recipe_unknown_key",
    "recipe_not_mapping",
    "recipe_bad_yaml",
    "unknown_reward",
    "reward_weights_length",
    "saliency_options_json",
    "single_generation",
    "unknown_saliency_variant",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_user_errors_are_one_line_without_traceback(
    case, shared_data, tmp_path, tiny_dir, capsys, monkeypatch
):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    argv, message = _cases(shared_data, tmp_path, tiny_dir)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    assert message in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_debug_flag_shows_the_traceback():
    with pytest.raises(UserError):
        main(["--debug", "data", "--task", "chess"])


# --- API-level cases ---


def test_unsupported_attention_backend(tokenizer):
    from atmanrl.saliency import Trace, compute_saliency

    model = make_tiny_model("llama", len(tokenizer))
    model.config._attn_implementation = "flash_attention_2"
    trace = Trace("Q: 3 + 4?", "3 + 4 = 7.", "\n#### 7", (6, 7))
    with pytest.raises(UserError, match="sdpa"):
        compute_saliency(model, tokenizer, [trace], "attention_gradient")


def test_tokenizer_without_pad_token_gets_eos(tokenizer):
    from atmanrl.models import prepare_tokenizer

    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tok.pad_token = None
    assert prepare_tokenizer(tok).pad_token == tok.eos_token


def test_tokenizer_without_chat_template_falls_back_with_warning(tokenizer, caplog):
    from atmanrl.generate import render_prompt

    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tok.chat_template = None
    with caplog.at_level(logging.WARNING):
        text = render_prompt(tok, [{"role": "user", "content": "2+2?"}])
    assert "User: 2+2?" in text and text.endswith("Assistant:")
    assert "no chat template" in caplog.text


def test_zero_length_cot_in_training_gets_zero_saliency(tokenizer):
    from atmanrl.rewards import get_reward

    model = make_tiny_model("llama", len(tokenizer))
    fn = get_reward("saliency", task="arith", steps=1, model=model, tokenizer=tokenizer)
    prompt = [{"role": "user", "content": "Question: 2 + 3?"}]
    assert fn([prompt, prompt], ["#### 5", "\n#### 5"], gold=["5", "5"]) == [0.0, 0.0]


def test_trust_remote_code_warns(caplog, tmp_path):
    from atmanrl.models import load_model

    with caplog.at_level(logging.WARNING), pytest.raises(UserError):
        load_model(str(tmp_path / "none"), trust_remote_code=True)
    assert "trust_remote_code=True" in caplog.text


def test_offline_uncached_hub_model_names_local_path(monkeypatch, tmp_path):
    from atmanrl.models import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="pass a local folder"):
        load_model("some-org/some-model-that-is-not-cached")


def test_offline_run_never_opens_a_socket(monkeypatch, tiny_dir, shared_data, tmp_path):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    out = tmp_path / "o.jsonl"
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_dir),
                "--task",
                "gsm8k",
                "--data-dir",
                str(shared_data / "gsm8k"),
                "--limit",
                "2",
                "--max-new-tokens",
                "4",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    # the random model's completions rarely parse: saliency reads a hand-written trace, so it surely scores
    traces = tmp_path / "traces.jsonl"
    row = {"id": "t", "prompt": "Q: 3 + 4?\n", "reasoning": "3 + 4 = 7.", "answer": "\n#### 7"}
    traces.write_text(json.dumps(row) + "\n")
    argv = [
        "saliency",
        "--model",
        str(tiny_dir),
        "--input",
        str(traces),
        "--output",
        str(tmp_path / "s.jsonl"),
    ]
    assert main([*argv, "--methods", "random,learned", "--saliency-steps", "1"]) == 0
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 1
