"""Print an `atmanrl ab` report (ab.json) as the Markdown tables docs/results.md quotes, every number cited.

Each number is a link to its JSON pointer in the result file, the form tests/test_doc_numbers.py checks, so a
table pasted into the docs stays true to the file it cites:

    python benchmarks/ab_doc_table.py benchmarks/results/ab_testbed.json > /tmp/tables.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atmanrl.ab_report import arm_references, comparison_keys, reference_note

TABLE1 = ("cot_tokens", "spacy_number_share", "spacy_stop_word_share", "spacy_symbol_share", "pass_at_k")


def cite(value: float | None, link: str, pointer: str, digits: int) -> str:
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}" if pointer.endswith(("/diff", "-relative")) else f"{value:.{digits}f}"
    return f"[{text.replace('-', '−')}]({link}#{pointer})"


def interval(m: dict, key: str, link: str, ptr: str, digits: int) -> str:
    """mean [lo, hi], each cited; `key` is the value's own name in `m` (mean or diff)."""
    if m.get(key) is None:
        return "–"
    lo, hi = (cite(m.get(k), link, f"{ptr}/{k}", digits) for k in ("lo", "hi"))
    return f"{cite(m[key], link, f'{ptr}/{key}', digits)} [{lo}, {hi}]"


def tables(result: dict, link: str) -> str:
    metrics, arms = result["metrics"], result["arms"]
    refs, pairs = arm_references(result), comparison_keys(result)
    digits = {"cot_tokens": 1}
    out = [f"Table 1 view: mean over seeds ({reference_note(result)}):", ""]
    out += [
        "| arm | " + " | ".join(metrics[k]["label"] for k in TABLE1) + " |",
        "|---|" + "---|" * len(TABLE1),
    ]
    for arm in ["base", *arms]:
        cells = []
        for k in TABLE1:
            d = digits.get(k, 3)
            cell = cite(metrics[k][arm]["mean"], link, f"/metrics/{k}/{arm}/mean", d)
            if arm in refs and metrics[k].get(f"{arm}-relative") is not None:
                cell += f" ({cite(metrics[k][f'{arm}-relative'], link, f'/metrics/{k}/{arm}-relative', 2)})"
            cells.append(cell)
        out.append(f"| {arm} | " + " | ".join(cells) + " |")
    head = ["metric", "base", *arms, *(p.replace("-", " − ", 1) for p in pairs)]
    out += ["", "Every metric, mean [95% interval over seeds, then problems]:", ""]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, m in metrics.items():
        d = digits.get(k, 3)
        cells = [m["label"]] + [interval(m[a], "mean", link, f"/metrics/{k}/{a}", d) for a in ["base", *arms]]
        for p in pairs:
            pair = m[p]
            cell = interval(pair, "diff", link, f"/metrics/{k}/{p}", d)
            if pair.get("seeds_agree") is False:
                cell += " (seeds disagree)"
            elif pair.get("excludes_0"):
                cell = f"**{cell}**"
            cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    seeds = result["config"]["seeds"]
    out += ["", "Per seed:", "", "| metric | " + " | ".join(f"{a}-s{s}" for s in seeds for a in arms) + " |"]
    out.append("|---|" + "---|" * (len(seeds) * len(arms)))
    for k, m in metrics.items():
        d = digits.get(k, 3)
        runs = [cite(m.get(f"{a}-s{s}"), link, f"/metrics/{k}/{a}-s{s}", d) for s in seeds for a in arms]
        out.append(f"| {m['label']} | " + " | ".join(runs) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path, help="an ab.json, e.g. benchmarks/results/ab_testbed.json")
    ap.add_argument(
        "--link", default=None, help="the file's path as docs/ link it (default: ../<result>, from docs/)"
    )
    args = ap.parse_args()
    print(tables(json.loads(args.result.read_text()), args.link or f"../{args.result.as_posix()}"))


if __name__ == "__main__":
    main()
