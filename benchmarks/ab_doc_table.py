"""Print an `atmanrl ab` report (ab.json) as the Markdown tables docs/results.md quotes, every number cited.

Each number is a link to its JSON pointer in the result file, the form tests/test_doc_numbers.py checks, so a
table pasted into the docs stays true to the file it cites:

    python benchmarks/ab_doc_table.py benchmarks/results/ab_testbed.json > /tmp/tables.md
    python benchmarks/ab_doc_table.py benchmarks/results/ab_testbed.json --verdicts   # one line per finding
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atmanrl.ab_report import (
    ACCURACY_MARGIN,
    accuracy_checks,
    arm_references,
    comparison_keys,
    interval_note,
    pair_label,
    reference_note,
)

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
    head = ["metric", "base", *arms, *map(pair_label, pairs)]
    out += ["", f"Every metric, {interval_note(result)} (bold: an effect):", ""]
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


FEATURES = TABLE1[:4]  # the paper's four CoT features; its pass@k (-0.4%) says "no loss", not a direction
# The faithfulness tests, and which way each reads "the answer depends more on the CoT": +1 higher, -1 lower
FAITHFUL_WAY = {
    "early_aoc": +1,
    "early_unstated": -1,
    "mistake_changed": +1,
    "filler_agreement": -1,
    "saliency_reward": +1,
}


def verdict(m: dict, key: str, pair: str) -> str:
    """A difference in words: which way it goes, or why it is no effect, and how it sits with the paper."""
    d = m[pair]
    if d.get("diff") is None:
        return "no value"
    if d.get("seeds_agree") is False:
        return "no effect (the seeds' own differences disagree in sign)"
    if not d.get("excludes_0"):
        return "no effect (the interval includes 0)"
    up = d["diff"] > 0
    text = f"{'higher' if up else 'lower'}, the interval excludes 0"
    if key in FEATURES and m.get("paper_relative") is not None:
        text += ": the paper's way" if up == (m["paper_relative"] > 0) else ": opposite to the paper"
    if key in FAITHFUL_WAY:
        text += ": more faithful" if up == (FAITHFUL_WAY[key] > 0) else ": less faithful"
    return text


def verdicts(result: dict, link: str) -> str:
    """One line per (comparison, metric) the issue asks about: the paper's four CoT features, accuracy and pass@k,
    and every faithfulness test; each with its cited interval, and last the accuracy check."""
    metrics, digits = result["metrics"], {"cot_tokens": 1}
    keys = ("accuracy", *TABLE1, *FAITHFUL_WAY)
    out = []
    for pair in comparison_keys(result):
        out += ["", f"{pair_label(pair)}:"]
        for k in keys:
            if k in metrics and pair in metrics[k]:
                cell = interval(metrics[k][pair], "diff", link, f"/metrics/{k}/{pair}", digits.get(k, 3))
                out.append(f"- {metrics[k]['label']}: {cell}: {verdict(metrics[k], k, pair)}")
    checks = accuracy_checks(result)
    if checks:
        out += ["", f"Accuracy within {ACCURACY_MARGIN * 100:.0f} points of outcome-only:"]
        out += [f"- {pair_label(pair)}: {v}" for pair, v in checks.items()]
    return "\n".join(out).lstrip("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path, help="an ab.json, e.g. benchmarks/results/ab_testbed.json")
    ap.add_argument(
        "--link", default=None, help="the file's path as docs/ link it (default: ../<result>, from docs/)"
    )
    ap.add_argument("--verdicts", action="store_true", help="one line per finding instead of the tables")
    args = ap.parse_args()
    result, link = json.loads(args.result.read_text()), args.link or f"../{args.result.as_posix()}"
    print(verdicts(result, link) if args.verdicts else tables(result, link))


if __name__ == "__main__":
    main()
