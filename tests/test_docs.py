"""The README and docs/ say what the code does: every `atmanrl` command in them parses, the cheap ones run, and
docs/cli.md names every option of every command."""

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from atmanrl.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every `atmanrl ...` command inside a fenced code block; a command continued over
    several lines with a trailing backslash is joined into one."""
    out = []
    for path in DOCS:
        in_block, pending = False, ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("```"):
                in_block, pending = not in_block, ""
                continue
            if not in_block:
                continue
            text = pending + " " + line.strip() if pending else line
            if text.rstrip().endswith("\\"):
                pending = text.rstrip()[:-1].strip()
                continue
            pending = ""
            cmd = text.split(" #")[0].strip()
            cmd = re.sub(r"^(\w+=\S+\s+)+", "", cmd)  # HF_HUB_OFFLINE=1 atmanrl ...
            if cmd.startswith("atmanrl "):
                out.append((path.name, cmd))
    return out


COMMANDS = doc_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) > 20


def _train_keys() -> set[str]:
    from trl import GRPOConfig, ModelConfig

    from atmanrl.train import TrainScriptArguments

    names = {f.name for t in (TrainScriptArguments, GRPOConfig, ModelConfig) for f in dataclasses.fields(t)}
    return (
        {f"--{n}" for n in names}
        | {f"--{n.replace('_', '-')}" for n in names}
        | {"--model", "--config", "--help"}
    )


@pytest.mark.parametrize("where, cmd", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_every_documented_command_parses(where, cmd, monkeypatch):
    argv = shlex.split(cmd)[1:]
    if argv[0] == "train":
        from atmanrl.train import split_recipe

        recipe, overrides = split_recipe(argv[1:])
        unknown = [a for a in overrides if a.startswith("--") and a not in _train_keys()]
        assert not unknown, f"{where}: unknown train options {unknown}"
        return
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:  # --help exits 0; an unknown option or a missing required one exits 2
        assert e.code == 0, f"{where}: `{cmd}` does not parse"


CHEAP = [
    (w, c) for w, c in COMMANDS if "--help" in c or "--dry-run" in c or c.split()[1] in ("data", "recipes")
]


@pytest.mark.parametrize("where, cmd", CHEAP, ids=[f"{w}:{c[:60]}" for w, c in CHEAP])
def test_the_cheap_documented_commands_run(where, cmd, monkeypatch, tmp_path, capsys):
    if "copy" in cmd:
        monkeypatch.chdir(tmp_path)
    else:
        monkeypatch.chdir(ROOT)
    argv = shlex.split(cmd)[1:]
    if "my_recipe.yaml" in cmd and "copy" not in cmd:  # the file a previous line of the docs copied out
        main(["recipes", "copy", "smollm2-135m/arith_atmanrl.yaml", str(tmp_path / "my_recipe.yaml")])
        argv = [str(tmp_path / "my_recipe.yaml") if a == "my_recipe.yaml" else a for a in argv]
    if "../shared/data" in cmd:
        shared = Path(__file__).resolve().parents[2] / "shared" / "data"
        if not shared.exists():
            pytest.skip("needs ../shared/data")
    try:
        rc = main(argv)
    except SystemExit as e:  # --help
        rc = e.code
    if rc == 1 and "--dry-run" in cmd:  # a GPU recipe's dry run may only miss what this machine lacks
        problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
        # vLLM, Hub data and a Hub model that this offline machine has not cached
        assert problems and all(
            p.startswith(("PROBLEM use_vllm", "PROBLEM data", "PROBLEM model: meta-llama/")) for p in problems
        ), problems
        return
    assert rc == 0, f"{where}: `{cmd}` exited {rc}"


def test_cli_md_names_every_option_of_every_command():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sp in sub.choices.items():
        if f"atmanrl {name}" not in text:
            missing.append(name)
        for a in sp._actions:
            if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help":
                if a.option_strings[0] not in text:
                    missing.append(f"{name} {a.option_strings[0]}")
    assert not missing, f"docs/cli.md does not mention: {missing}"
