"""Each command's options come from one dataclass (`atmanrl.options`): flags, defaults and help."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

import pytest

from atmanrl.cli import COMMANDS, build_parser
from atmanrl.options import ABCommand, EvalCommand, GenerateCommand, csv, from_namespace


def _default(f):
    return f.default_factory() if f.default is MISSING else f.default


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_flag_is_a_field_with_help_and_parses_back_into_the_dataclass(name):
    options = COMMANDS[name][0]
    parser = _subparser(name)
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == {f.name for f in fields(options)}
    assert all(f.metadata["help"] for f in fields(options)), f"{name}: a field without help"
    required = {
        "generate": ["--output", "o.jsonl"],
        "saliency": ["--input", "i.jsonl", "--output", "o.jsonl"],
        "eval": ["--report", "r"],
        "compare": ["a", "--output", "o"],
    }.get(name, [])
    ns = build_parser().parse_args([name, *required])
    parsed = from_namespace(options, ns)
    assert isinstance(parsed, options)
    for f in fields(options):  # what the user did not give is the dataclass default
        given = getattr(parsed, f.name)
        if f"--{f.name.replace('_', '-')}" not in required and f.name not in ("reports",):
            assert given == _default(f), f"{name} {f.name}"


@pytest.mark.parametrize(
    "command, config, convert",
    [
        (GenerateCommand, "atmanrl.generate:SamplingConfig", {}),
        (EvalCommand, "atmanrl.evaluate:EvalConfig", {"methods": csv, "skip": csv}),
        (ABCommand, "atmanrl.ab:ABConfig", {"seeds": lambda s: tuple(int(x) for x in csv(s)), "arms": csv}),
    ],
)
def test_command_defaults_are_the_library_config_defaults(command, config, convert):
    import importlib

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    lib = {f.name: _default(f) for f in fields(cls)}
    shared = [f for f in fields(command) if f.name in lib]
    assert shared
    for f in shared:
        value = convert.get(f.name, lambda v: v)(_default(f))
        assert value == lib[f.name], (
            f"{command.__name__}.{f.name}: {value!r} != {name}.{f.name} {lib[f.name]!r}"
        )


def test_every_preset_the_cli_offers_builds_and_the_default_model_is_embedded():
    from atmanrl.models import EMBEDDED
    from atmanrl.options import DEFAULT_MODEL, LEARNED_PRESETS
    from atmanrl.saliency import Learned, make_method

    assert DEFAULT_MODEL in EMBEDDED
    assert LEARNED_PRESETS == tuple(Learned.presets)  # the --preset choices are the method's own presets
    for preset in LEARNED_PRESETS:
        assert isinstance(make_method("learned", preset=preset), Learned)


def test_the_demo_takes_its_options_from_one_dataclass(capsys):
    from atmanrl.demo import main as demo
    from atmanrl.options import DemoCommand

    with pytest.raises(SystemExit) as e:
        demo(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(f"--{f.name}" in text and f.metadata["help"] for f in fields(DemoCommand))
