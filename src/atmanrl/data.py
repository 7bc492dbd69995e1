"""Tasks: prompts, answer parsers, correctness checks and gold answers for GSM8K, MMLU and `arith`.

A task is one class in a registry. To add one, subclass `Task`, set `name`, implement `rows` (and
`parse`/`is_correct` if the answer format differs), and decorate it with `@register_task`.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Example:
    """One problem. `gold` is the canonical answer string (a number or a letter)."""

    id: str
    question: str
    gold: str
    task: str
    reference: str | None = None  # a reference chain of thought, where the source has one
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Parsed:
    """A completion split into its reasoning span and its answer segment, as character offsets.

    `answer` runs from the start of the final answer line to the end of the completion; `value` is the
    parsed answer (a normalised number or an upper-case letter) and `value_span` its offsets. With no
    parseable answer, `answer`, `value` and `value_span` are None and the reasoning is the whole text.
    """

    reasoning: tuple[int, int]
    answer: tuple[int, int] | None = None
    value: str | None = None
    value_span: tuple[int, int] | None = None

    def split(self, text: str) -> tuple[str, str]:
        """(reasoning text, answer text)."""
        r = text[self.reasoning[0] : self.reasoning[1]]
        a = text[self.answer[0] : self.answer[1]] if self.answer else ""
        return r, a


class Skipped(Counter):
    """Counts skipped rows by reason, and warns once at the end of a load."""

    def warn(self, source: str) -> None:
        if self:
            detail = ", ".join(f"{n} {why}" for why, n in self.most_common())
            log.warning("%s: skipped %d rows (%s)", source, sum(self.values()), detail)


# --- answers --------------------------------------------------------------------------------------

_NUM = r"-?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_HASH_RE = re.compile(r"####\s*(?P<v>" + _NUM + r")")
_BOXED_RE = re.compile(r"\\boxed\{\s*(?P<v>" + _NUM + r")\s*\}")
# a number in running text, not part of a longer token ("x2", "3rd" and "v1.5" are no mentions of 2, 3, 1.5)
_MENTION_RE = re.compile(r"(?<![\w.])\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w]|\.\d)")
_NUMBER_TOKEN_RE = re.compile(r"\s?\$?\s?\d[\d,.]*|\s?\$")
_LETTER_RE = re.compile(r"answer\s*(?:is)?\s*[:：]\s*\(?(?P<v>[A-Da-d])\b\)?", re.IGNORECASE)


def normalize_number(s: str) -> str | None:
    """'1,234' -> '1234', '$5' -> '5', '-3.50' -> '-3.5', '7.0' -> '7'; None when not a number."""
    t = s.replace(",", "").replace("$", "").replace(" ", "").strip()
    if re.fullmatch(r"-?\d+", t):  # exact, however long (float() would round 20-digit integers)
        return str(int(t))
    try:
        x = float(t)
    except ValueError:
        return None
    if x != x or x in (float("inf"), float("-inf")):
        return None
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def parse_math(text: str) -> Parsed:
    """The first `#### N` is the answer; failing that, the last `\\boxed{N}`.

    The first `####` because the model commits to its answer there: small models often keep writing
    further `####` lines, which belong to the answer segment and never change the answer. For `\\boxed`
    the last one counts, since reasoning often boxes intermediate results.
    """
    for rx, pick in ((_HASH_RE, 0), (_BOXED_RE, -1)):
        matches = list(rx.finditer(text))
        if matches:
            m = matches[pick]
            value = normalize_number(m.group("v"))
            if value is None:
                continue
            start = _line_start(text, m.start())
            return Parsed((0, start), (start, len(text)), value, m.span("v"))
    return Parsed((0, len(text)))


def parse_letter(text: str) -> Parsed:
    """The first `Answer: X` (case-insensitive) is the answer, as for `####`."""
    m = _LETTER_RE.search(text)
    if m is None:
        return Parsed((0, len(text)))
    start = _line_start(text, m.start())
    return Parsed((0, start), (start, len(text)), m.group("v").upper(), m.span("v"))


def math_equal(pred: str | None, gold: str) -> bool:
    """Numeric equality through math-verify, after our normalisation (commas, $, trailing zeros)."""
    if pred is None:
        return False
    a, b = normalize_number(pred), normalize_number(gold)
    if a is not None and b is not None and a == b:
        return True
    from math_verify import parse, verify

    try:
        return bool(verify(parse(b or gold), parse(a or pred)))
    except Exception:  # math-verify raises on exotic input; a failed parse is simply not a match
        return False


# --- tasks ------------------------------------------------------------------------------------------

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def task_options(name: str, **offered: Any) -> dict[str, Any]:
    """The options task `name` takes (its `options`), picked from the union the CLI and recipes offer."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(sorted(TASKS))}")
    return {k: v for k, v in offered.items() if k in TASKS[name].options}


def get_task(name: str, **options: Any) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)


MATH_SYSTEM = (
    "Solve the math problem step by step, one short sentence per step. "
    "End with the final answer on its own line as `#### <number>`."
)
MMLU_SYSTEM = (
    "Answer the multiple-choice question. Think step by step in a few short sentences, then end with "
    "the final answer on its own line as `Answer: <letter>`, one of A, B, C or D."
)
# One worked exchange before the question: small instruct models follow a demonstrated format far more
# reliably than a described one (SmolLM2-135M on arith level 1, greedy, 32 problems: 47% accuracy and
# 75% parseable answers with the format only in the system prompt, 66% and 100% with this exchange).
MATH_DEMO = (
    "Question: Ann has 2 pens. Ann gets 3 more pens. How many pens does Ann have now?",
    "Ann starts with 2 pens. She gets 3 more, so 2 + 3 = 5.\n#### 5",
)
MMLU_DEMO = (
    "Question: Which gas do plants take in for photosynthesis?\nA. Oxygen\nB. Carbon dioxide\nC. Helium\nD. Neon",
    "Plants take in carbon dioxide and release oxygen during photosynthesis.\nAnswer: B",
)


class Task:
    """Base class: prompt, parser, correctness and data loading for one task."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ("fewshot",)  # the constructor's options the CLI and recipes may set
    # the well-formed final answer line (the `format` reward): `#### N` for numeric tasks
    answer_line: ClassVar[re.Pattern[str]] = re.compile(r"^####\s*-?\$?\s*[\d,]*\d(?:\.\d+)?\s*$")
    system_prompt: ClassVar[str] = MATH_SYSTEM
    demo: ClassVar[tuple[str, str] | None] = MATH_DEMO
    max_new_tokens: ClassVar[int] = 256
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, fewshot: bool = True):
        self.fewshot = fewshot  # prepend the worked `demo` exchange

    def messages(self, ex: Example) -> list[dict[str, str]]:
        """Chat messages: system prompt, the worked demo exchange (if `fewshot`), then the question."""
        msgs = [{"role": "system", "content": self.system_prompt}]
        if self.fewshot and self.demo:
            msgs += [
                {"role": "user", "content": self.demo[0]},
                {"role": "assistant", "content": self.demo[1]},
            ]
        return msgs + [{"role": "user", "content": self.user_message(ex)}]

    def user_message(self, ex: Example) -> str:
        return f"Question: {ex.question}"

    def parse(self, completion: str) -> Parsed:
        return parse_math(completion)

    def is_correct(self, value: str | None, gold: str) -> bool:
        return math_equal(value, gold)

    def format_answer(self, gold: str) -> str:
        """The well-formed final answer line, as the prompt asks for it."""
        return f"#### {gold}"

    def mentions(self, text: str, value: str) -> list[tuple[int, int]]:
        """Character spans in `text` that state the answer `value` (the `derived_share` reward looks for the
        first place a CoT states its answer): every number equal to it, however written (1,000 / $5 / 7.0)."""
        # plain normalised equality: math-verify (is_correct) costs milliseconds per number, and a reward calls
        # this for every number of every rollout
        want = normalize_number(value)
        return [m.span() for m in _MENTION_RE.finditer(text) if normalize_number(m.group()) == want]

    def is_value_token(self, text: str) -> bool:
        """Can a token with this text begin an answer value (a number)? The specific support of an answer mention
        (saliency/derivation.py) takes out what the CoT does for the whole class ("The answer is" makes some
        number likely) to see what it does for one value."""
        return bool(_NUMBER_TOKEN_RE.fullmatch(text))

    def load(
        self,
        data_dir: str | Path | None = None,
        split: str = "test",
        limit: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ) -> list[Example]:
        """Load examples. With `shuffle`, `seed` fixes the order before `limit` takes the first N."""
        if split not in self.splits:
            raise UserError(
                f"task {self.name!r} has no split {split!r}: choose one of {', '.join(self.splits)}"
            )
        if limit is not None and limit < 1:
            raise UserError(f"--limit must be at least 1, got {limit}")
        skipped = Skipped()
        rows = list(self.rows(data_dir, split, seed, limit, skipped))
        skipped.warn(f"{self.name}/{split}")
        if shuffle:
            random.Random(seed).shuffle(rows)
        return rows[:limit] if limit else rows

    def rows(self, data_dir, split, seed, limit, skipped: Skipped) -> Iterator[Example]:
        """The split's examples in source order (`load` shuffles and limits). What a new task implements; a
        malformed source row is counted in `skipped[reason] += 1` and never stops the rest."""
        raise NotImplementedError


def _hub(name: str, config: str | None, split: str, local_flag: str):
    """Load a Hub dataset, turning offline / missing errors into one actionable line."""
    import os

    try:
        from datasets import load_dataset

        return load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types for "not cached / unreachable"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        why = "offline mode is on and it is not cached" if offline else str(e).splitlines()[0][:200]
        raise UserError(
            f"cannot load {name} from the Hub ({why}): pass {local_flag} with a local copy"
        ) from e


@register_task
class GSM8K(Task):
    name = "gsm8k"

    def rows(self, data_dir, split, seed, limit, skipped):
        if data_dir is None:
            records = (
                (f"{split}-{i}", r) for i, r in enumerate(_hub("openai/gsm8k", "main", split, "--data-dir"))
            )
        else:
            records = _read_jsonl_records(_gsm8k_file(Path(data_dir), split), skipped)
        for rid, r in records:
            ex = self._example(rid, r)
            if isinstance(ex, str):
                skipped[ex] += 1
            else:
                yield ex

    def _example(self, rid: str, r: Any) -> Example | str:
        if not isinstance(r, dict):
            return "not a JSON object"
        q, a = r.get("question"), r.get("answer")
        if not isinstance(q, str) or not q.strip():
            return "missing 'question'"
        if not isinstance(a, str) or "####" not in a:
            return "'answer' without '#### N'"
        ref, _, gold = a.rpartition("####")
        gold = normalize_number(gold)
        if gold is None:
            return "non-numeric gold after '####'"
        ref = re.sub(r"<<[^>]*>>", "", ref).strip()  # calculator annotations are not reasoning text
        return Example(str(r.get("id", rid)), q.strip(), gold, self.name, ref)


def _gsm8k_file(path: Path, split: str) -> Path:
    if path.is_file():
        return path
    candidate = path / f"{split}.jsonl"
    if not candidate.is_file():
        raise UserError(
            f"{candidate} not found: --data-dir must be a GSM8K jsonl file or a folder with {split}.jsonl"
        )
    return candidate


def _read_jsonl_records(path: Path, skipped: Counter) -> Iterator[tuple[str, Any]]:
    """Yield (line id, parsed object); malformed lines are counted, never fatal."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield f"{path.stem}-{n}", json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                skipped["malformed JSON lines"] += 1


@register_task
class MMLU(Task):
    """MMLU multiple choice. `subjects` selects subjects (names as in the CSV file names / `cais/mmlu`)."""

    name = "mmlu"
    options = ("fewshot", "subjects")
    answer_line = re.compile(r"^answer\s*:\s*\(?[A-D]\)?\s*$", re.IGNORECASE)
    system_prompt = MMLU_SYSTEM
    demo = MMLU_DEMO
    splits = ("test", "validation", "dev")
    _SPLIT_DIRS: ClassVar[dict[str, tuple[str, str]]] = {
        "test": ("test", "test"),
        "validation": ("val", "val"),
        "dev": ("dev", "dev"),
    }

    def __init__(self, subjects: str | list[str] | None = None, fewshot: bool = True):
        super().__init__(fewshot)
        if isinstance(subjects, str):
            subjects = [s.strip() for s in subjects.split(",") if s.strip()]
        self.subjects = subjects or None

    def user_message(self, ex: Example) -> str:
        choices = "\n".join(f"{k}. {v}" for k, v in zip("ABCD", ex.meta["choices"]))
        return f"Question: {ex.question}\n{choices}"

    def parse(self, completion: str) -> Parsed:
        return parse_letter(completion)

    def is_correct(self, value: str | None, gold: str) -> bool:
        return value is not None and value.strip().upper() == gold.strip().upper()

    def format_answer(self, gold: str) -> str:
        return f"Answer: {gold}"

    def mentions(self, text: str, value: str) -> list[tuple[int, int]]:
        """The answer letter where it names an option: "(B)", "B)", "option B", "answer is B", "B." ending a
        sentence; a bare capital would also match the article "A" and initials."""
        v = re.escape(value.strip().upper())
        rx = re.compile(
            rf"\(({v})\)|(?<![\w])({v})\)|(?:option|choice|answer(?: is)?|letter)\s*:?\s*({v})(?![\w])"
            rf"|(?<![\w])({v})(?=\.\s*$|\.\s*\n)",
            re.IGNORECASE,
        )
        return [m.span(next(g for g in range(1, 5) if m.group(g))) for m in rx.finditer(text)]

    def is_value_token(self, text: str) -> bool:
        """An option letter, with or without its parenthesis."""
        return bool(re.fullmatch(r"\s?\(?[A-Da-d]\)?", text))

    def rows(self, data_dir, split, seed, limit, skipped):
        if data_dir is None:
            yield from self._hub_rows(split, skipped)
        else:
            yield from self._csv_rows(Path(data_dir), split, skipped)

    def _hub_rows(self, split, skipped):
        for subject in self.subjects or ["all"]:
            for i, r in enumerate(_hub("cais/mmlu", subject, split, "--data-dir")):
                choices, answer = r.get("choices"), r.get("answer")
                if not (isinstance(choices, list) and len(choices) == 4 and answer in range(4)):
                    skipped["invalid choices/answer"] += 1
                    continue
                sub = r.get("subject") or subject
                yield Example(
                    f"{sub}-{i}",
                    r["question"].strip(),
                    "ABCD"[answer],
                    self.name,
                    None,
                    {"choices": choices, "subject": sub},
                )

    def _csv_rows(self, root: Path, split, skipped):
        folder, suffix = self._SPLIT_DIRS[split]
        files = sorted(root.glob(f"*_{suffix}.csv")) or sorted((root / folder).glob(f"*_{suffix}.csv"))
        if not files:
            raise UserError(
                f"no MMLU CSVs (*_{suffix}.csv) in {root} or {root / folder}: point --data-dir at the MMLU folder"
            )
        available = {f.name[: -len(f"_{suffix}.csv")]: f for f in files}
        if self.subjects:
            unknown = [s for s in self.subjects if s not in available]
            if unknown:
                raise UserError(
                    f"unknown MMLU subject(s) {', '.join(unknown)}: choose from {', '.join(available)}"
                )
            available = {s: available[s] for s in self.subjects}
        for subject, path in available.items():
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                for n, row in enumerate(csv.reader(f), 1):
                    if len(row) != 6:
                        skipped[f"rows without 6 columns ({path.name})"] += 1
                        continue
                    q, *choices, letter = (c.strip() for c in row)
                    if letter.upper() not in ("A", "B", "C", "D") or not q:
                        skipped[f"invalid answer letter ({path.name})"] += 1
                        continue
                    yield Example(
                        f"{subject}-{n}",
                        q,
                        letter.upper(),
                        self.name,
                        None,
                        {"choices": choices, "subject": subject},
                    )


# --- arith: synthetic word problems -------------------------------------------------------------

_NAMES = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gina", "Hugo", "Iris", "Jack", "Lena", "Max"]
_ITEMS = ["apples", "pens", "books", "stickers", "marbles", "cookies", "cards", "shells", "coins", "toys"]


@dataclass(frozen=True)
class ArithLevel:
    steps: int
    low: int
    high: int
    ops: str  # subset of "+-*"
    # Train and test draw from disjoint sets of questions (a hash of the text), so no held-out question is ever
    # trained on, whatever the seeds; the same sum can recur under another name. Levels 1-4 keep their
    # streams: committed results use them.
    disjoint_splits: bool = False


ARITH_LEVELS: dict[int, ArithLevel] = {
    1: ArithLevel(steps=1, low=1, high=10, ops="+-"),
    2: ArithLevel(steps=2, low=1, high=20, ops="+-"),
    3: ArithLevel(steps=3, low=2, high=30, ops="+-*"),
    4: ArithLevel(steps=4, low=2, high=60, ops="+-*"),
    # The A/B testbed (docs/results.md): one step, operands up to 20. The embedded model needs its CoT here:
    # greedy accuracy is mid-range with it and near 0 when made to answer without it.
    5: ArithLevel(steps=1, low=1, high=20, ops="+-", disjoint_splits=True),
}
TEST_SHARE = 4  # disjoint_splits: a quarter of all questions are kept for testing


def in_test_part(question: str) -> bool:
    """disjoint_splits: whether a question belongs to the test part (CRC-32, stable across runs and platforms)."""
    return zlib.crc32(question.encode()) % TEST_SHARE == 0


@register_task
class Arith(Task):
    """Seeded multi-step arithmetic word problems. No download; `level` sets steps and operand range.

    The train and test splits use disjoint seed streams, so a test problem is never a training problem
    drawn from the same stream position.
    """

    name = "arith"
    options = ("fewshot", "level")
    max_new_tokens = 128
    splits = ("train", "test")

    def __init__(self, level: int = 1, size: int = 1000, fewshot: bool = True):
        super().__init__(fewshot)
        if int(level) not in ARITH_LEVELS:
            raise UserError(
                f"arith level {level} does not exist: choose one of {', '.join(map(str, ARITH_LEVELS))}"
            )
        self.level, self.size = int(level), int(size)

    def rows(self, data_dir, split, seed, limit, skipped):
        if data_dir is not None:
            log.warning("arith is generated: --data-dir %s is ignored", data_dir)
        rng = random.Random(f"arith-{split}-{self.level}-{seed}")
        test = split != "train"
        for i in range(max(self.size, limit or 0)):
            ex = self.make_problem(rng, f"arith-{split}-L{self.level}-{i}")
            while ARITH_LEVELS[self.level].disjoint_splits and in_test_part(ex.question) != test:
                ex = self.make_problem(rng, ex.id)
            yield ex

    def make_problem(self, rng: random.Random, pid: str) -> Example:
        spec = ARITH_LEVELS[self.level]
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        total = rng.randint(spec.low, spec.high)
        sentences = [f"{name} has {total} {item}."]
        cot = [f"{name} starts with {total} {item}."]
        for _ in range(spec.steps):
            op = rng.choice(spec.ops)
            if op == "-" and total <= spec.low:
                op = "+"
            if op == "+":
                n = rng.randint(spec.low, spec.high)
                sentences.append(f"{name} gets {n} more {item}.")
                cot.append(f"{name} gets {n} more, so {total} + {n} = {total + n}.")
                total += n
            elif op == "-":
                n = rng.randint(spec.low, min(spec.high, total - 1))  # never below zero
                sentences.append(f"{name} gives away {n} {item}.")
                cot.append(f"{name} gives away {n}, so {total} - {n} = {total - n}.")
                total -= n
            else:
                n = rng.randint(2, 4)
                sentences.append(f"Then the number of {item} {name} has becomes {n} times as large.")
                cot.append(f"It becomes {n} times as large, so {total} * {n} = {total * n}.")
                total *= n
        question = " ".join(sentences) + f" How many {item} does {name} have now?"
        return Example(
            pid, question, str(total), self.name, " ".join(cot), {"level": self.level, "steps": spec.steps}
        )
