import json
import subprocess
import sys

from atmanrl.cli import main


def test_generate_writes_rows_and_accuracy(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    rc = main(
        [
            "generate",
            "--model",
            str(tiny_dir),
            "--task",
            "arith",
            "--limit",
            "4",
            "--max-new-tokens",
            "6",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        assert {"id", "prompt", "completion", "reasoning", "answer", "gold", "correct"} <= set(r)
        assert r["reasoning"] + r["answer"] == r["completion"]
    assert "accuracy=" in capsys.readouterr().out


def test_generate_is_reproducible_under_seed(tiny_dir, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        main(
            [
                "generate",
                "--model",
                str(tiny_dir),
                "--task",
                "arith",
                "--limit",
                "3",
                "--max-new-tokens",
                "5",
                "--temperature",
                "1.0",
                "--seed",
                "7",
                "--output",
                str(out),
            ]
        )
        outs.append(out.read_text())
    assert outs[0] == outs[1]


def test_data_command_gsm8k_and_mmlu(shared_data, capsys):
    assert main(["data", "--task", "gsm8k", "--data-dir", str(shared_data / "gsm8k"), "--show", "1"]) == 0
    assert "examples=1319" in capsys.readouterr().out
    assert (
        main(["data", "--task", "mmlu", "--data-dir", str(shared_data / "mmlu"), "--subjects", "virology"])
        == 0
    )
    assert "virology: 166" in capsys.readouterr().out


def test_user_errors_are_one_line(capsys):
    assert main(["data", "--task", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "choose one of arith, gsm8k, mmlu" in err


def test_offline_hub_dataset_names_local_option(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert main(["data", "--task", "gsm8k"]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_unwritable_output_fails_before_loading(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--model", "nope", "--output", str(blocker / "out.jsonl")]) == 2
    assert "choose another output path" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "atmanrl.cli", "generate", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--data-dir" in out.stdout and "--temperature" in out.stdout
