import logging
import math

import pytest

from atmanrl.errors import UserError
from atmanrl.rewards import REWARDS, finite_or_zero, get_reward


def test_registry_holds_outcome_rewards():
    assert {"correctness", "format"} <= set(REWARDS)
    with pytest.raises(UserError, match="correctness"):
        get_reward("nope")


def test_correctness_plain_and_conversational():
    fn = get_reward("correctness", task="gsm8k")
    assert fn.__name__ == "correctness"
    completions = [
        "2 + 2 = 4\n#### 4",
        "I think 5\n#### 5",
        [{"role": "assistant", "content": "so\n#### 1,000"}],
        "no answer",
    ]
    assert fn(["p"] * 4, completions, gold=["4", "4", "1000", "3"]) == [1.0, 0.0, 1.0, 0.0]


def test_correctness_none_without_gold_and_per_row_task():
    fn = get_reward("correctness", task="gsm8k")
    out = fn(["p", "p"], ["#### 3", "Answer: c"], gold=[None, "C"], task=["gsm8k", "mmlu"])
    assert out == [None, 1.0]


@pytest.mark.parametrize(
    "completion, ok",
    [
        ("2 + 2 = 4.\n#### 4", 1.0),
        ("2 + 2 = 4.\n#### 4\n#### 5", 0.0),
        ("#### 4", 0.0),  # no reasoning at all
        ("2 + 2 = 4.\n#### 4 apples", 0.0),
        ("the answer is 4", 0.0),
    ],
)
def test_format_math(completion, ok):
    assert get_reward("format", task="arith")(["p"], [completion]) == [ok]


def test_format_mmlu():
    fn = get_reward("format", task="mmlu")
    assert fn(["p", "p"], ["Because.\nAnswer: B", "Because. Answer B"]) == [1.0, 0.0]


def test_non_finite_become_zero(caplog):
    with caplog.at_level(logging.WARNING):
        out = finite_or_zero([1.0, math.nan, math.inf, None], "x")
    assert out == [1.0, 0.0, 0.0, None]
    assert "2 non-finite" in caplog.text
