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


def test_every_saliency_reward_setting_is_declared_once_and_recipes_and_flags_agree():
    """SaliencyRewardConfig is the one declaration: each field is a recipe key with its default and help, the
    variants' parameters are flags of the saliency and explain commands with the same defaults, and a recipe's
    keys reach the reward unchanged."""
    import dataclasses

    from atmanrl.defaults import VARIANT_PARAMS, SaliencyRewardConfig, recipe_key
    from atmanrl.options import ExplainCommand, SaliencyCommand, TrainScriptArguments

    keys = {f.name: f for f in dataclasses.fields(TrainScriptArguments)}
    for f in dataclasses.fields(SaliencyRewardConfig):
        key = keys[recipe_key(f.name)]
        assert key.default == f.default and key.metadata["help"] == f.metadata["help"], f.name
    saliency_keys = {k for k in keys if k.startswith("saliency_")} | {"min_reasoning_tokens"}
    assert saliency_keys == {recipe_key(f.name) for f in dataclasses.fields(SaliencyRewardConfig)}
    for command in (SaliencyCommand, ExplainCommand):
        flags = {f.name: f for f in dataclasses.fields(command)}
        for name in VARIANT_PARAMS:
            assert flags[name].default == getattr(SaliencyRewardConfig, name), (command.__name__, name)
            assert (
                SaliencyRewardConfig.__dataclass_fields__[name].metadata["help"]
                in flags[name].metadata["help"]
            )


def test_a_recipes_saliency_keys_reach_the_reward(tmp_path):
    from atmanrl.train import build_rewards, parse_recipe

    overrides = ["--dry_run", "true", "--saliency_scale", "2.5", "--saliency_variant", "cot_reliance"]
    overrides += [
        "--saliency_method",
        "attention_gradient",
        "--reward_options",
        '{"saliency": {"margin": 3.0}}',
    ]
    script, args, _ = parse_recipe("smollm2-135m/arith_atmanrl.yaml", overrides)
    fn = build_rewards(script, args.reward_weights)[-1]
    assert (fn.config.scale, fn.config.variant, fn.config.margin) == (2.5, "cot_reliance", 3.0)
    assert fn.variant_kw == {
        "tau": 0.5,
        "scale": 2.5,
        "margin": 3.0,
        "support_margin": 1.0,
        "derived_support": 3.0,
    }
