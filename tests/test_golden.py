"""Golden file: `atmanrl saliency` on a fixed traces file and a fixed tiny model writes the same rows as when the
file was recorded. A refactor must not move a score; a change that does so on purpose re-records the file:

    ATMANRL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

and says why in its commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atmanrl.cli import main

GOLDEN = Path(__file__).parent / "golden"
METHODS = "learned,leave_one_out,attention_gradient,random"


def test_saliency_output_matches_the_golden_file(tiny_dir, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    args = [
        "saliency",
        "--model",
        str(tiny_dir),
        "--input",
        str(GOLDEN / "traces.jsonl"),
        "--output",
        str(out),
    ]
    assert main([*args, "--methods", METHODS, "--saliency-steps", "4", "--seed", "0"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for r in rows:
        r.pop("seconds")  # wall time: the only field allowed to change
    golden = GOLDEN / "saliency.jsonl"
    if os.environ.get("ATMANRL_UPDATE_GOLDEN") == "1":
        golden.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = [json.loads(x) for x in golden.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    for got, want in zip(rows, expected, strict=True):
        assert got["tokens"] == want["tokens"]
        assert set(got["scores"]) == set(want["scores"]) == set(METHODS.split(","))
        for m, scores in want["scores"].items():
            assert got["scores"][m] == pytest.approx(scores, abs=1e-3), (
                got["id"],
                m,
            )  # CPU-to-CPU float noise
        assert got["answer_logprob"] == pytest.approx(want["answer_logprob"], abs=1e-4)
        assert got["gap"] == pytest.approx(want["gap"], abs=1e-4)
        assert got["rewards"] == pytest.approx(want["rewards"], abs=1e-4)


def _numbers(tree, path=""):
    """Every number and string leaf of a metrics tree by its path, timings and run metadata left out."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if k in ("seconds", "meta", "config"):
                continue
            out |= _numbers(v, f"{path}/{k}")
        return out
    if isinstance(tree, (list, tuple)):
        out = {}
        for i, v in enumerate(tree):
            out |= _numbers(v, f"{path}/{i}")
        return out
    return {path: tree}


def test_eval_metrics_match_the_golden_file(tokenizer):
    """`atmanrl eval`'s computation (`evaluate`) on fixed completions and a fixed tiny model: every metric as
    recorded (re-record like the saliency file)."""
    from atmanrl.data import get_task
    from atmanrl.evaluate import EvalConfig, evaluate
    from conftest import make_tiny_model

    model = make_tiny_model("llama", len(tokenizer), attn_implementation="sdpa")
    task = get_task("arith")
    examples = task.load(limit=3, seed=1)
    completions = [f"{ex.reference}\n#### {ex.gold}" for ex in examples]
    completions[2] = f"I just know it.\n#### {examples[2].gold}"
    cfg = EvalConfig(
        answer_tokens=4, method_options={"learned": {"steps": 3}}, heatmaps=1, seed=0, composition="lexical"
    )
    got = _numbers(evaluate(model, tokenizer, task, examples, cfg, completions=completions))
    golden = GOLDEN / "eval_metrics.json"
    if os.environ.get("ATMANRL_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(golden.read_text())
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-3), key
        else:
            assert got[key] == value, key
