import json
import logging

import pytest

from atmanrl.data import ARITH_LEVELS, get_task, math_equal, normalize_number, parse_letter, parse_math
from atmanrl.errors import UserError


@pytest.mark.parametrize(
    "text, value",
    [
        ("So the total is 1,234 apples.\n#### 1,234", "1234"),
        ("She owes money.\n#### -5", "-5"),
        ("Each costs 3.50.\n#### 3.50", "3.5"),
        ("Half of 9 is 4.5\n####4.5", "4.5"),
        ("The price is\n#### $18", "18"),
        ("We get \\boxed{12} first, then \\boxed{42}.", "42"),
        ("First try\n#### 7\nWait, no.\n#### 8", "7"),
        ("Nothing to see here: 18 apples.", None),
        ("#### banana", None),
    ],
)
def test_parse_math_values(text, value):
    assert parse_math(text).value == value


def test_parse_math_spans_split_reasoning_and_answer():
    text = "Tom has 18 apples. 18 + 2 = 20.\n#### 20"
    p = parse_math(text)
    reasoning, answer = p.split(text)
    assert reasoning == "Tom has 18 apples. 18 + 2 = 20.\n"
    assert answer == "#### 20"
    assert text[p.value_span[0] : p.value_span[1]] == "20"
    # the answer number also appears inside the reasoning: the span must point at the answer line
    text = "20 is a guess. 18 + 2 = 20.\n#### 20"
    p = parse_math(text)
    assert p.value_span[0] > text.index("\n")


def test_parse_math_no_answer_keeps_everything_as_reasoning():
    p = parse_math("I am not sure.")
    assert p.reasoning == (0, 14) and p.answer is None and p.value_span is None


@pytest.mark.parametrize(
    "text, value",
    [
        ("It is a planet.\nAnswer: B", "B"),
        ("it must be that.\nanswer: b", "B"),
        ("The answer is: (C)", "C"),
        ("Answer: D\nAnswer: A", "D"),
        ("I think so.", None),
        ("Answer: E", None),
    ],
)
def test_parse_letter(text, value):
    assert parse_letter(text).value == value


def test_normalize_and_math_equal():
    assert normalize_number("1,234") == "1234"
    assert normalize_number("7.0") == "7"
    assert normalize_number("abc") is None
    assert math_equal("1234", "1,234")
    assert math_equal("0.5", "1/2")
    assert not math_equal("12", "13")
    assert not math_equal(None, "1")


def test_gsm8k_local_folder(shared_data):
    task = get_task("gsm8k")
    rows = task.load(shared_data / "gsm8k", split="test", limit=20, seed=0)
    assert len(rows) == 20
    assert all(r.gold == normalize_number(r.gold) for r in rows)
    assert all("<<" not in r.reference for r in rows)
    full = task.load(shared_data / "gsm8k" / "train.jsonl", shuffle=False)
    assert len(full) == 7473


def test_gsm8k_seed_fixes_order(shared_data):
    task = get_task("gsm8k")
    a = [r.id for r in task.load(shared_data / "gsm8k", limit=10, seed=1)]
    b = [r.id for r in task.load(shared_data / "gsm8k", limit=10, seed=1)]
    c = [r.id for r in task.load(shared_data / "gsm8k", limit=10, seed=2)]
    assert a == b and a != c


def test_gsm8k_bad_rows_are_skipped_and_counted(tmp_path, caplog):
    good = {"question": "1+1?", "answer": "1+1=2\n#### 2"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"question": "q"}),
        json.dumps({"question": "q", "answer": "no hashes"}),
        json.dumps(good | {"question": "2+2?", "answer": "#### 4"}),
    ]
    path = tmp_path / "test.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    with caplog.at_level(logging.WARNING):
        rows = get_task("gsm8k").load(tmp_path, shuffle=False)
    assert [r.gold for r in rows] == ["2", "4"]
    assert "skipped 4 rows" in caplog.text


def test_mmlu_local_csvs(shared_data):
    task = get_task("mmlu", subjects="astronomy,virology")
    rows = task.load(shared_data / "mmlu", limit=None)
    assert {r.meta["subject"] for r in rows} == {"astronomy", "virology"}
    assert all(r.gold in "ABCD" and len(r.meta["choices"]) == 4 for r in rows)
    msg = task.messages(rows[0])[-1]["content"]
    assert "A. " in msg and "D. " in msg


def test_mmlu_wrong_columns_skipped(tmp_path, caplog):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "toy_test.csv").write_text('q1,a,b,c,d,A\nq2,a,b,C\n"q3",a,b,c,d,Z\nq4,a,b,c,d,d\n')
    with caplog.at_level(logging.WARNING):
        rows = get_task("mmlu").load(tmp_path, shuffle=False)
    assert [r.gold for r in rows] == ["A", "D"]
    assert "skipped 2 rows" in caplog.text


def test_unknown_names_list_valid_ones(shared_data):
    with pytest.raises(UserError, match="arith, gsm8k, mmlu"):
        get_task("nope")
    with pytest.raises(UserError, match="astronomy"):
        get_task("mmlu", subjects="astrology").load(shared_data / "mmlu")
    with pytest.raises(UserError, match="level"):
        get_task("arith", level=9)
    with pytest.raises(UserError, match="split"):
        get_task("arith").load(split="validation")


@pytest.mark.parametrize("level", sorted(ARITH_LEVELS))
def test_arith_is_seeded_and_consistent(level):
    task = get_task("arith", level=level)
    a = task.load(limit=50, seed=3)
    assert [e.question for e in a] == [e.question for e in task.load(limit=50, seed=3)]
    assert [e.question for e in a] != [e.question for e in task.load(limit=50, seed=4)]
    train = {e.question for e in task.load(split="train", limit=50, seed=3)}
    assert train != {e.question for e in a}
    for e in a:
        # the reference CoT, run as arithmetic, reaches the gold answer
        assert e.reference.split(" = ")[-1].rstrip(".") == e.gold
        assert int(e.gold) >= 0
        assert e.meta["steps"] == ARITH_LEVELS[level].steps


def test_the_testbed_never_tests_on_a_training_problem():
    """Level 5 (the A/B testbed) splits the problem space by a hash of the question: no held-out problem is a
    training problem, whatever the seeds (levels 1-4, drawn from per-split streams, can repeat one)."""
    task = get_task("arith", level=5)
    test = {e.question for e in task.load(split="test", limit=300, seed=1234)}
    assert len(test) > 250  # a real split, not a handful of repeats
    for seed in (0, 1, 2):
        train = {e.question for e in task.load(split="train", limit=2000, seed=seed)}
        assert len(train) > 1000 and not test & train
    repeats = [
        {e.question for e in get_task("arith", level=1).load(split=s, limit=2000, seed=0)}
        for s in ("train", "test")
    ]
    assert repeats[0] & repeats[1]  # what the hash split is for: level 1's streams do share problems
