"""`atmanrl compare`: eval reports side by side, the headline and the paper's Table 1 view first.

result = compare_runs(["eval_base", "eval_atmanrl"], names=["base", "atmanrl"])
print_compare(result)                  # the headline and the Table 1 view (full=True: every metric)
write_compare(result, "cmp")           # cmp/compare.html and cmp/compare.json
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import UserError
from .heatmap import page
from .io import atomic_write_text, write_json
from .report import (
    esc,
    flatten,
    fmt,
    load_run,
    plot_accuracy,
    plot_cot_stats,
    plot_early_answering,
    plot_saliency,
    table,
)


def relative_delta(value: float | None, base: float | None) -> float | None:
    """(value - base) / |base|; None where undefined (a missing value or a zero base)."""
    if value is None or base is None or base == 0 or any(map(math.isnan, (value, base))):
        return None
    return (value - base) / abs(base)


def compare_runs(paths: list[str | Path], names: list[str] | None = None) -> dict[str, Any]:
    """Load eval folders and line up their scalar metrics, with deltas against the first run."""
    if len(paths) < 2:
        raise UserError("compare needs at least two report folders")
    names = names or [Path(p).name or str(p) for p in paths]
    if len(names) != len(paths):
        raise UserError(f"--names has {len(names)} names for {len(paths)} folders")
    runs = [load_run(p) for p in paths]
    flats = [flatten(m) for m in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    rows = []
    for key in keys:
        values = [f.get(key) for f in flats]
        rows.append(
            {
                "metric": key,
                "values": values,
                "delta": [None if v is None or values[0] is None else v - values[0] for v in values[1:]],
                "relative": [relative_delta(v, values[0]) for v in values[1:]],
            }
        )
    return {"names": names, "paths": [str(p) for p in paths], "rows": rows, "runs": runs}


# The paper's Table 1 columns: (flattened metric key, header, scale to the paper's units)
TABLE1_KEYS = (
    ("cot_stats.mean_cot_tokens", "tokens/CoT", 1.0),
    ("cot_stats.spacy_number_share", "numbers %", 100.0),
    ("cot_stats.spacy_stop_word_share", "stop words %", 100.0),
    ("cot_stats.spacy_symbol_share", "symbols %", 100.0),
    ("pass_at_k.pass@{k}", "pass@{k} %", 100.0),
)


def table1_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, one row per run): the paper's Table 1 columns, each with its change relative to the first run."""
    runs = result.get("runs", [])
    k = next((r.get("pass_at_k", {}).get("k") for r in runs if r.get("pass_at_k", {}).get("k")), 4)
    by_key = {row["metric"]: row for row in result["rows"]}
    header = ["run"] + [h.format(k=k) for _, h, _ in TABLE1_KEYS]
    out = []
    for i, name in enumerate(result["names"]):
        cells = [name]
        for key, _, scale in TABLE1_KEYS:
            row = by_key.get(key.format(k=k))
            v = None if row is None else row["values"][i]
            text = "–" if v is None else f"{v * scale:.1f}"
            if i and row is not None and row["relative"][i - 1] is not None:
                text += f" ({row['relative'][i - 1]:+.0%})"
            cells.append(text)
        out.append(cells)
    return header, out


# The headline a user reads first: (flattened key, label, which way is better: +1 up, -1 down). The four CoT
# features are "better" the way the paper reports AtManRL moving them; the faithfulness tests the way that means
# the answer depends on the CoT (docs/evaluation.md).
HEADLINE = (
    ("accuracy.accuracy", "accuracy (greedy)", +1),
    ("pass_at_k.pass@{k}", "pass@{k}", +1),
    ("cot_stats.mean_cot_tokens", "CoT tokens", -1),
    ("cot_stats.spacy_number_share", "numbers (spaCy)", +1),
    ("cot_stats.spacy_stop_word_share", "stop words (spaCy)", -1),
    ("cot_stats.spacy_symbol_share", "symbols (spaCy)", +1),
    ("early_answering.aoc", "early answering AOC (CoT needed)", +1),
    ("adding_mistakes.changed_share", "adding mistakes: answer changed", +1),
    ("filler.agreement", "filler: same answer without the CoT", -1),
)


def headline_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline metrics of a comparison: label, values, changes against the first run, and for each change
    whether it is good (True), bad (False) or none (None)."""
    runs = result.get("runs", [])
    k = next((r.get("pass_at_k", {}).get("k") for r in runs if r.get("pass_at_k", {}).get("k")), 4)
    by_key = {row["metric"]: row for row in result["rows"]}
    out = []
    for key, label, better in HEADLINE:
        row = by_key.get(key.format(k=k))
        if row is None:
            continue
        good = [None if not d else (d > 0) == (better > 0) for d in row["delta"]]
        out.append({"label": label.format(k=k), "metric": row["metric"], **row, "good": good})
    return out


def delta_text(relative: float | None, delta: float | None) -> str:
    """'-44%'; where the first run's value is 0 the relative change is undefined: '+0.25 abs'."""
    if relative is not None:
        return f"{100 * relative:+.0f}%"
    if delta:
        return f"{delta:+.3g} abs"
    return "–" if delta is None else "0"


def print_compare(result: dict[str, Any], console=None, full: bool = False) -> None:
    """The comparison as rich tables: the headline (coloured by whether a change is better) and the Table 1 view,
    then with `full` every value and every relative delta against the first run.

    Two tables, and no column narrower than its widest cell: a value is never cut to "0.0…" on a narrow
    terminal (rich wraps the table instead).
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    names = result["names"]
    rows = result["rows"]

    def tables(title: str, headers: list[str], cells: list[list[str]]) -> None:
        """As many tables as it takes for every column to fit at full width (value columns split in groups)."""
        widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(headers, start=1)]
        first = max(len("metric"), *(len(r[0]) for r in cells))
        groups, cur, used = [], [], first + 4
        for j, w in enumerate(widths):
            if cur and used + w + 3 > console.width:
                groups.append(cur)
                cur, used = [], first + 4
            cur.append(j)
            used += w + 3
        groups.append(cur)
        for g in groups:
            t = Table(title=title)
            t.add_column("metric", style="bold", no_wrap=True, min_width=first)
            for j in g:
                t.add_column(headers[j], justify="right", no_wrap=True, min_width=widths[j])
            for r in cells:
                t.add_row(r[0], *(r[j + 1] for j in g))
            console.print(t)

    head_cells = [
        [
            h["label"],
            *(fmt(v) for v in h["values"]),
            *(
                f"[{'green' if g else 'red'}]{delta_text(r, d)}[/]" if g is not None else delta_text(r, d)
                for r, d, g in zip(h["relative"], h["delta"], h["good"])
            ),
        ]
        for h in headline_rows(result)
    ]
    if head_cells:
        tables(
            f"headline (Δ vs {names[0]}: green better, red worse)",
            [*names, *(f"Δ {n}" for n in names[1:])],
            head_cells,
        )
    t1_head, t1_rows = table1_rows(result)
    tables(f"the paper's Table 1 view (Δ vs {names[0]})", t1_head[1:], t1_rows)
    if not full:
        console.print("[dim]every metric: compare.html (or atmanrl compare --full)")
        return
    values = [[row["metric"], *[fmt(v) for v in row["values"]]] for row in rows]
    tables("compare: values", names, values)
    if len(names) > 1:
        deltas = [
            [row["metric"], *[delta_text(r, d) for r, d in zip(row["relative"], row["delta"])]]
            for row in rows
        ]
        tables(f"compare: change vs {names[0]}", [f"Δ {n}" for n in names[1:]], deltas)


def render_compare(result: dict[str, Any]) -> str:
    names, runs = result["names"], result["runs"]
    header = ["metric", *names, *[f"Δ {n} vs {names[0]}" for n in names[1:]]]
    rows = []
    for row in result["rows"]:
        deltas = [
            (esc(delta_text(r, d)), "" if not d else "up" if d > 0 else "down")
            for r, d in zip(row["relative"], row["delta"])
        ]
        rows.append([row["metric"], *row["values"], *deltas])
    plots = [
        plot_accuracy(runs, names),
        plot_early_answering(runs, names),
        plot_cot_stats(runs, names),
        plot_saliency(runs, names),
    ]
    sources = table(
        ["name", "folder", "model", "task", "n"],
        [
            [
                n,
                p,
                r.get("meta", {}).get("model") or "",
                r.get("meta", {}).get("task", ""),
                str(r.get("meta", {}).get("n", "")),
            ]
            for n, p, r in zip(names, result["paths"], runs)
        ],
        key_cols=5,
    )
    head_rows = [
        [
            h["label"],
            *h["values"],
            *(
                (esc(delta_text(r, d)), "" if g is None else ("up" if g else "down"))
                for r, d, g in zip(h["relative"], h["delta"], h["good"])
            ),
        ]
        for h in headline_rows(result)
    ]
    headline = table(["metric", *names, *[f"Δ {n} vs {names[0]}" for n in names[1:]]], head_rows)
    body = (
        f"<h1>{esc('atmanrl compare: ' + ', '.join(names))}</h1>{sources}"
        "<h2>Headline</h2><p>Green: the change is better, red: worse (CoT features: the way the paper reports "
        "AtManRL moving them; faithfulness tests: the way that means the answer depends on the CoT).</p>"
        f"{headline}"
        "<h2>Table 1 view</h2><p>The paper's columns: CoT tokens, spaCy token shares (docs/paper.md) and "
        f"pass@k; in brackets the change relative to {esc(names[0])}.</p>{table(*table1_rows(result))}"
        f"<h2>Plots</h2>{''.join(p for p in plots if p)}"
        "<h2>Every metric</h2><p>Δ = relative change against the first run: (run − first) / |first| (the "
        "absolute change where the first value is 0). Green: up, red: down (whether up is good depends on the "
        "metric; the headline says).</p>"
        f"{table(header, rows)}"
    )
    return page("atmanrl compare", body)


def write_compare(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write `out_dir/compare.html` and `out_dir/compare.json` (tables without the full runs)."""
    out = Path(out_dir)
    write_json(out / "compare.json", {k: v for k, v in result.items() if k != "runs"})
    path = out / "compare.html"
    atomic_write_text(path, render_compare(result))
    return path
