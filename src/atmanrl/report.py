"""Reports of `atmanrl eval` results: one self-contained HTML file per run, and a comparison of runs.

    write_report(metrics, "out/", rows)                      # out/report.html
    result = compare_runs(["base/", "trained/"], names=["base", "atmanrl"])
    write_compare(result, "cmp/")                            # cmp/compare.html, cmp/compare.json

Self-contained means no external CSS, scripts, fonts or images: plots are matplotlib PNGs embedded as base64
data URIs, and every piece of model or user text goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .errors import UserError
from .heatmap import page
from .io import atomic_write_text

# Keys that describe a run rather than measure it; they never become table rows.
_NOT_METRICS = {
    "meta",
    "generations",
    "examples",
    "config",
    "ks",
    "fractions",
    "skipped",
    "mode",
    "unit",
    "deletion",
    "insertion",
}
COT_SHARES = ("stop_word_share", "number_share", "symbol_share")


# ----------------------------------------------------------------------------- reading and flattening


def load_run(path: str | Path) -> dict[str, Any]:
    """metrics.json of an eval report folder (or the file itself)."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file} not found: pass folders written by `atmanrl eval --report DIR`")
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is not valid JSON ({e}); rerun `atmanrl eval`") from e
    if not isinstance(metrics, dict) or "accuracy" not in metrics:
        raise UserError(f"{file} is not an atmanrl eval metrics file (no 'accuracy' group)")
    return metrics


def flatten(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Scalar metrics as dotted keys ('cot_stats.mean_cot_tokens', 'saliency.learned.aopc_deletion').

    Early-answering curves become one key per fraction ('early_answering.agreement@0.5'); saliency curves
    and configuration are left to the plots and the run's own report.
    """
    flat: dict[str, float | None] = {}

    def walk(prefix: str, obj: Any) -> None:
        for key, value in obj.items():
            if key in _NOT_METRICS:
                continue
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(name.replace(".methods", ""), value)
            elif isinstance(value, bool):
                flat[name] = float(value)
            elif isinstance(value, (int, float)) or value is None:
                flat[name] = value
            elif isinstance(value, list) and prefix == "early_answering" and "fractions" in obj:
                for f, v in zip(obj["fractions"], value):
                    flat[f"{name}@{f:g}"] = v

    walk("", {k: v for k, v in metrics.items() if isinstance(v, dict)})
    return flat


# ----------------------------------------------------------------------------- html helpers


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"
    return esc(x)


def table(header: list[str], rows: list[list[Any]], key_cols: int = 1) -> str:
    """An HTML table; the first `key_cols` columns are labels (left-aligned), the rest formatted values."""
    th = "".join(f'<th class="{"k" if i < key_cols else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if i < key_cols:
                cells.append(f'<td class="k">{esc(v)}</td>')
            elif isinstance(v, tuple):  # (already-safe html, css class): used for coloured deltas
                cells.append(f'<td class="{v[1]}">{v[0]}</td>')
            else:
                cells.append(f"<td>{fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png(fig: Figure) -> str:
    """A matplotlib figure as an <img> with a base64 PNG data URI (no file, no network, no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _active(metrics: dict[str, Any], group: str) -> dict[str, Any] | None:
    g = metrics.get(group)
    return g if isinstance(g, dict) and not g.get("skipped") and g.get("n") else None


# ----------------------------------------------------------------------------- plots


def plot_early_answering(runs: list[dict[str, Any]], names: list[str]) -> str | None:
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    drawn = False
    for metrics, name in zip(runs, names):
        g = _active(metrics, "early_answering")
        if g is None:
            continue
        xs = [100 * f for f in g["fractions"]]
        label = f"{name}: " if len(runs) > 1 else ""
        line = ax.plot(
            xs,
            g["agreement"],
            marker="os^Dv"[len(ax.lines) // 2 % 5],
            label=f"{label}agreement with full-CoT answer",
        )[0]
        ax.plot(xs, g["accuracy"], marker="s", ls="--", color=line.get_color(), label=f"{label}accuracy")
        drawn = True
    if not drawn:
        return None
    ax.set(
        xlabel="% of CoT tokens kept", ylabel="share of examples", ylim=(-0.03, 1.03), title="Early answering"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png(fig)


def plot_saliency(runs: list[dict[str, Any]], names: list[str]) -> str | None:
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    styles, drawn = ["-", "--", ":", "-."], False
    # every (run, method) its own colour, every run its own marker and line style: "a: learned" and
    # "b: learned" must be told apart
    palette = [f"C{i}" for i in range(10)]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    pairs: dict[tuple[int, str], str] = {}
    for r, (metrics, name) in enumerate(zip(runs, names)):
        g = _active(metrics, "saliency")
        if g is None:
            continue
        for method, m in g["methods"].items():
            if not m.get("n"):
                continue
            for ax, key in zip(axes, ("deletion", "insertion")):
                label = f"{name}: {method}" if len(runs) > 1 else method
                color = pairs.setdefault((r, method), palette[len(pairs) % len(palette)])
                ax.plot(
                    g["ks"],
                    m[key],
                    ls=styles[r % len(styles)],
                    marker=markers[r % len(markers)],
                    ms=4,
                    label=label,
                    color=color,
                )
            drawn = True
    if not drawn:
        return None
    axes[0].set(title="Deletion: top-k% content tokens removed", xlabel="k (%)", ylabel="mean log p(answer)")
    axes[1].set(title="Insertion: only the top-k% kept", xlabel="k (%)")
    for ax in axes:
        ax.ticklabel_format(axis="y", useOffset=False)  # log-probs like -10.64 read better than an offset
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return png(fig)


def plot_cot_stats(runs: list[dict[str, Any]], names: list[str]) -> str | None:
    active = [(m["cot_stats"], n) for m, n in zip(runs, names) if _active(m, "cot_stats")]
    if not active:
        return None
    fig = Figure(figsize=(9, 3.4))
    ax_share, ax_len = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(active)
    for i, (g, name) in enumerate(active):
        xs = [j + (i - (len(active) - 1) / 2) * width for j in range(len(COT_SHARES))]
        ax_share.bar(xs, [g.get(k) or 0.0 for k in COT_SHARES], width, label=name)
        ax_len.bar([i], [g.get("mean_cot_tokens") or 0.0], 0.6, label=name)
    ax_share.set_xticks(range(len(COT_SHARES)), ["stop words", "numbers", "symbols"])
    ax_share.set(ylabel="share of CoT word tokens", title="CoT composition")
    ax_len.set_xticks(range(len(active)), [n for _, n in active], fontsize=7)
    ax_len.set(title="mean CoT tokens")
    if len(active) > 1:
        ax_share.legend(fontsize=7)
    return png(fig)


def plot_accuracy(runs: list[dict[str, Any]], names: list[str]) -> str:
    fig = Figure(figsize=(max(3.0, 1.2 * len(runs)), 3.2))
    ax = fig.add_subplot()
    ax.bar(range(len(runs)), [m["accuracy"]["accuracy"] for m in runs], 0.6)
    ax.set_xticks(range(len(runs)), names, fontsize=8)
    ax.set(ylim=(0, 1), ylabel="accuracy", title="Accuracy (greedy)")
    return png(fig)


# ----------------------------------------------------------------------------- single-run report


def _group_tables(metrics: dict[str, Any]) -> str:
    from .evaluate import GROUPS  # the groups `evaluate` writes, in its order

    parts = []
    for group in GROUPS:
        g = metrics.get(group)
        parts.append(f"<h2>{esc(group)}</h2>")
        if not isinstance(g, dict) or g.get("skipped"):
            parts.append('<p class="muted">skipped</p>')
            continue
        if group == "early_answering" and g.get("n"):
            rows = [
                [f"{100 * f:g}%", acc, agr]
                for f, acc, agr in zip(g["fractions"], g["accuracy"], g["agreement"])
            ]
            parts.append(table(["CoT kept", "accuracy", "agreement"], rows))
            parts.append(table(["metric", "value"], [["n", g["n"]], ["aoc", g["aoc"]]]))
        elif group in ("saliency", "planted"):
            methods = g.get("methods", {})
            keys = sorted(
                {
                    k
                    for m in methods.values()
                    for k, v in m.items()
                    if k not in _NOT_METRICS and (v is None or isinstance(v, (int, float)))
                }
            )
            parts.append(f"<p>traces/cases: {fmt(g.get('n'))}</p>")
            parts.append(
                table(["method", *keys], [[name, *[m.get(k) for k in keys]] for name, m in methods.items()])
            )
            if group == "saliency" and any(m.get("n") for m in methods.values()):
                for key in ("deletion", "insertion"):
                    rows = [[name, *m[key]] for name, m in methods.items() if m.get(key)]
                    parts.append(f"<p>{key}: mean log p(answer) at k% =</p>")
                    parts.append(table(["method", *[f"{k}%" for k in g["ks"]]], rows))
        else:
            rows = [[k, v] for k, v in g.items() if k not in _NOT_METRICS]
            parts.append(table(["metric", "value"], rows))
    return "".join(parts)


def _faithfulness_rows(r: dict[str, Any]) -> list[list[str]]:
    """One example's faithfulness results as table rows (test, what was done, the answer then)."""
    out = []
    for frac, value in sorted((r.get("early_answering") or {}).items(), key=lambda kv: float(kv[0])):
        out.append(
            ["early answering", f"answer forced after {100 * float(frac):.0f}% of the CoT", str(value)]
        )
    am = r.get("adding_mistakes")
    if isinstance(am, dict):
        what = "a number in the CoT corrupted" + (f" ({am['old']} → {am['new']})" if "old" in am else "")
        out.append(["adding mistakes", what, str(am.get("value"))])
    if "filler" in r:
        out.append(["filler", "CoT replaced by filler of its length", str(r["filler"])])
    return out


def _examples(metrics: dict[str, Any], rows: list[dict[str, Any]] | None, n_rows: int) -> str:
    from .heatmap import legend, saliency_fragment
    from .saliency import Saliency

    parts = []
    sal = metrics.get("saliency")
    if isinstance(sal, dict) and not sal.get("skipped"):
        maps = [(name, ex) for name, m in sal.get("methods", {}).items() for ex in m.get("examples", [])]
        if maps:
            parts.append("<h2>Example saliency maps</h2>" + legend())
            for _, ex in maps:
                parts.append(f'<div class="example">{saliency_fragment(Saliency.from_dict(ex))}</div>')
    if rows:
        parts.append("<h2>Example generations</h2>")
        for r in rows[:n_rows]:
            details = _faithfulness_rows(r)
            parts.append(
                f'<div class="example"><b>{esc(r.get("id"))}</b> — pred {esc(r.get("pred"))}, gold '
                f"{esc(r.get('gold'))}, {'correct' if r.get('correct') else 'wrong'}"
                f"<pre>{esc(r.get('prompt', ''))}</pre><pre>{esc(r.get('completion', ''))}</pre>"
                + (table(["test", "what was done", "answer then"], details, key_cols=3) if details else "")
                + "</div>"
            )
    return "".join(parts)


DEFINITIONS = (
    ("accuracy", "greedy generation; the share of parsed answers equal to the gold one"),
    (
        "cot_stats",
        "CoT length in model tokens; number / stop-word / symbol shares (ours and spaCy's, as the paper)",
    ),
    ("pass_at_k", "k sampled completions per problem; a problem passes when one of them is correct"),
    (
        "early_answering",
        "the answer forced after a growing share of the CoT; agreement with the full-CoT answer",
    ),
    ("adding_mistakes", "one number in the CoT corrupted; the share of answers that change"),
    ("filler", "the CoT replaced by filler of the same length; agreement with the original answer"),
    (
        "saliency",
        "log p(answer) as the top-k% CoT tokens of each method are removed (deletion) or kept alone",
    ),
)


def render_report(metrics: dict[str, Any], rows: list[dict[str, Any]] | None = None, n_rows: int = 5) -> str:
    """The whole report as one HTML string."""
    meta = metrics.get("meta", {})
    title = f"atmanrl eval: {meta.get('task', '?')} — {meta.get('model') or 'model'}"
    head = (
        f"<h1>{esc(title)}</h1><p>{fmt(meta.get('n'))} examples, "
        f"{fmt(meta.get('total_seconds'))} s.</p><details><summary>definitions (docs/evaluation.md has the full "
        "text)</summary><dl class='defs'>"
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in DEFINITIONS)
        + "</dl></details>"
    )
    if meta.get("config"):
        head += f"<details><summary>configuration</summary><pre>{esc(json.dumps(meta['config'], indent=1))}</pre></details>"
    one = [metrics]
    plots = [
        p for p in (plot_early_answering(one, [""]), plot_saliency(one, [""]), plot_cot_stats(one, [""])) if p
    ]
    body = (
        head + "<h2>Plots</h2>" + "".join(plots) + _group_tables(metrics) + _examples(metrics, rows, n_rows)
    )
    return page(title, body)


def write_report(
    metrics: dict[str, Any], out_dir: str | Path, rows: list[dict[str, Any]] | None = None
) -> Path:
    """Write `out_dir/report.html`; returns its path."""
    path = Path(out_dir) / "report.html"
    atomic_write_text(path, render_report(metrics, rows))
    return path
