"""Numbers in the docs that come from a run cite their result file, and say what the file says.

A cited number is a Markdown link from the number to the result file, with the value's JSON pointer as the
fragment: `[10.3](../benchmarks/results/paper_cost.json#/paper_answer_over_reward_64)`. The test reads the file
and checks the value at the pointer, rounded to the decimals the docs print, is the number printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITE = re.compile(r"\[([−+-]?\d+(?:\.\d+)?)\]\(([^)#\s]+\.json)#(/[^)\s]*)\)")


def citations() -> list[tuple[str, str, str, str]]:
    return [(d.name, m[0], m[1], m[2]) for d in DOCS for m in CITE.findall(d.read_text(encoding="utf-8"))]


def pointer(doc, ptr: str):
    from urllib.parse import unquote

    for part in unquote(ptr).lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def test_the_docs_cite_numbers():
    assert len(citations()) >= 10


@pytest.mark.parametrize("where, text, path, ptr", citations(), ids=lambda x: str(x)[:40])
def test_a_cited_number_is_what_its_result_file_says(where, text, path, ptr):
    doc_dir = ROOT / ("docs" if where != "README.md" else "")
    file = (doc_dir / path).resolve()
    assert file.is_file(), f"{where}: {path} does not exist"
    value = pointer(json.loads(file.read_text()), ptr)
    printed = float(text.replace("−", "-"))
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(float(value) - printed) <= 0.5 * 10**-decimals + 1e-9, (
        f"{where}: prints {text} for {path}#{ptr}, the file says {value}"
    )
