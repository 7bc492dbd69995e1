"""Self-contained HTML heatmaps: the CoT coloured by saliency, one column per method.

No external resources (CSS, fonts, scripts): the file opens offline and can be attached anywhere. Every
piece of model or user text goes through `html.escape`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .io import atomic_write_text
from .masked import Token, content_mask

if TYPE_CHECKING:  # saliency imports this module (its renderer): the type only
    from .saliency import Saliency

# The one stylesheet of every atmanrl page: heatmaps, eval reports, compare and A/B pages
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1300px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.k,th.k{text-align:left;font-family:monospace}
.up{color:#1a7f37}.down{color:#b42318}.muted{color:#777}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap;word-break:break-word}
img{max-width:100%;height:auto}.example{border:1px solid #ddd;padding:.5em;margin:.6em 0}
.grid{display:grid;gap:12px;grid-template-columns:repeat(auto-fit,minmax(320px,1fr))}
.card{border:1px solid #ddd;border-radius:6px;padding:10px;background:#fff}
.card h3{margin:0 0 6px;font-size:13px} .meta{color:#666;font-size:12px;margin-bottom:6px}
.cot{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;line-height:1.7}
.prompt,.answer{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;background:#f6f6f6;
 padding:6px;border-radius:4px} .answer{background:#eef6ee}
.sink{outline:1px dotted #999} .legend{font-size:12px;color:#555}
.scale{display:inline-block;width:220px;height:12px;vertical-align:middle;border:1px solid #ccc;
 background:linear-gradient(to right,rgba(40,90,220,1),rgba(40,90,220,0) 50%,rgba(200,30,30,0) 50%,rgba(200,30,30,1))}
dl.defs{font-size:12px;color:#444} dl.defs dt{font-weight:600;display:inline} dl.defs dd{display:inline;margin:0 0 0 4px}
dl.defs dd:after{content:"";display:block}
"""

# What every page prints under "rewards": one line each (docs/saliency.md and docs/paper.md have the studies)
REWARD_DEFINITIONS = {
    "derived_share": "atmanrl's default reward: needed_share, times 1 - (the share of the CoT written after it first "
    "states its answer, when that statement was not derived from the CoT before it). Training gives it to correct "
    "rollouts only.",
    "needed_share": "the share of content CoT tokens the answer needs (the mean of the reward mask's gates), 0 when "
    "the CoT raises log p(answer) by less than the margin (atmanrl 0.2-0.5's default).",
    "salient_fraction": "share of content CoT tokens whose score exceeds tau.",
    "cot_reliance": "how much the CoT raises log p(answer): clip(gap / scale, 0, 1).",
    "concentration": "1 - normalised entropy of the scores: 1 when one token carries everything.",
    "paper": "the published reward in the reading atmanrl defaults to (paper_reenabled).",
    "paper_printed": "the published formula as printed: the mean of H / c over the causal CoT entries.",
    "paper_reenabled": "the published reward as its text describes it: 1 - the mean of H / c.",
}


def page(title: str, body: str) -> str:
    """A whole self-contained page (no external resources) with the one stylesheet; `body` is already-safe HTML."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def legend(context: dict[str, Any] | None = None, rewards: list[str] | tuple[str, ...] = ()) -> str:
    """What a page shows: the run's context (model, task, method, preset, ...), the colour scale, and the
    definitions of the rewards it prints."""
    ctx = " · ".join(
        f"{html.escape(k)}: <b>{html.escape(str(v))}</b>" for k, v in (context or {}).items() if v
    )
    parts = [f"<p class='legend'>{ctx}</p>"] if ctx else []
    parts.append(
        "<p class='legend'><span class='scale'></span> blue = a negative score (the token works against the "
        "answer) · white = 0 · red = the answer needs this token; each method scaled by its largest |score| "
        "among content tokens. Dotted = punctuation/whitespace (attention sinks), not scaled. Hover for the "
        "score.</p>"
    )
    defs = [(k, REWARD_DEFINITIONS[k]) for k in rewards if k in REWARD_DEFINITIONS]
    if defs:
        parts.append(
            "<dl class='defs'>"
            + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in defs)
            + "</dl>"
        )
    return "".join(parts)


def token_style(strength: float, negative: bool = False) -> str:
    """CSS for a token shaded by `strength` in [0, 1] (red; blue if `negative`), with readable text.

    Past about half strength the background is dark enough that black text falls below WCAG's 4.5:1
    contrast, so the text turns white there.
    """
    a = max(0.0, min(1.0, strength))
    rgb = "40,90,220" if negative else "200,30,30"
    return f"background:rgba({rgb},{a:.2f})" + (";color:#fff" if a > 0.55 else "")


def render_cot(reasoning: str, tokens: list[Token] | list[dict[str, Any]], scores: list[float]) -> str:
    """The reasoning with each token shaded by its score: the one colour rule of every atmanrl heatmap.

    Red = the answer needs the token, blue = a negative score (the token works against the answer; signed
    methods only), strength = |score| / the largest |score| among content tokens. Punctuation and sentence ends
    are attention sinks whose scores are often the highest of all and would wash out the contrast between the
    words that matter, so they are not scaled: drawn with a dotted outline, their score in the tooltip.
    """
    spans = [Token(**t) if isinstance(t, dict) else Token(*t) for t in tokens]
    content = content_mask(spans)
    hi = max((abs(s) for s, c in zip(scores, content) if c), default=0.0) or 1.0
    out, pos = [], 0
    for tok, s, c in zip(spans, scores, content):
        out.append(html.escape(reasoning[pos : tok.start]))  # whitespace the tokenizer split off
        attrs = f' style="{token_style(abs(s) / hi, negative=s < 0)}"' if c else ' class="sink"'
        out.append(f'<span{attrs} title="{s:.4g}">{html.escape(reasoning[tok.start : tok.end])}</span>')
        pos = max(pos, tok.end)
    out.append(html.escape(reasoning[pos:]))
    return "".join(out)


def heatmap_html(
    rows: list[dict[str, Any]], title: str = "atmanrl saliency", context: dict[str, Any] | None = None
) -> str:
    """One page. Each row: `saliency` {method: Saliency} (as `trace_files.score_traces` gives them), `id`,
    `prompt`, `answer`, and optionally `rewards` {name: value} and `correct`. `context` names what the page
    shows (model, task, preset, ...)."""
    rewards = list(dict.fromkeys(k for r in rows for k in (r.get("rewards") or {})))
    parts = [f"<h1>{html.escape(title)}</h1>", legend(context, rewards)]
    for r in rows:
        head = f"{r.get('id', '')}"
        wrong = r.get("correct") is False
        if "correct" in r:
            head += " ✗ wrong answer" if wrong else " ✓"
        parts.append(f"<h2>{html.escape(head)}</h2>")
        parts.append(f"<div class='prompt'>{html.escape(str(r.get('prompt', '')))}</div>")
        sals: dict[str, Saliency] = r["saliency"]
        meta = []
        if sals:
            meta.append(f"log p(answer) = {next(iter(sals.values())).answer_logprob:.3f}")
        for k, v in (r.get("rewards") or {}).items():
            if v is not None:
                meta.append(
                    f"{html.escape(k)} = {v:.3f}" + (" (0 in training: wrong answer)" if wrong else "")
                )
        parts.append(f"<div class='meta'>{' · '.join(meta)}</div><div class='grid'>")
        for method, sal in sals.items():
            preset = sal.config.get("preset") if isinstance(sal.config, dict) else None
            label = method + (f" ({preset})" if preset else "")
            parts.append(
                f"<div class='card'><h3>{html.escape(label)} <span class='meta' title='the batch's time divided "
                f"by its traces'>{sal.seconds:.2f} s/trace (batch mean)</span></h3>"
                f"<div class='cot'>{render_cot(sal.reasoning, sal.tokens, sal.scores)}</div></div>"
            )
        parts.append(f"</div><div class='answer'>{html.escape(answer_line(str(r.get('answer', ''))))}</div>")
    return page(title, "".join(parts))


def answer_line(answer: str) -> str:
    """The answer segment's first line; a run-on completion's repeated lines after it are counted, not shown
    (the saliency stops at the answer's value)."""
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]}\n… {len(lines) - 1} more line(s) after the answer, not scored"


def saliency_fragment(sal: Saliency) -> str:
    """One `Saliency` as a card to embed in a page that carries `CSS` and a `legend` (the eval report)."""
    return (
        f"<div class='card'><h3>{html.escape(sal.method)} <span class='meta'>log p(answer) = "
        f"{sal.answer_logprob:.3f}</span></h3><div class='cot'>{render_cot(sal.reasoning, sal.tokens, sal.scores)}"
        "</div></div>"
    )


def saliency_page(sal: Saliency, title: str | None = None, prompt: str = "", answer: str = "") -> str:
    """A page for one `Saliency` (`Saliency.show`): title, context, colour scale, the CoT, and the answer."""
    row = {"id": "", "saliency": {sal.method: sal}, "prompt": prompt, "answer": answer}
    context = {"method": sal.method, "log p(answer)": f"{sal.answer_logprob:.3f}"}
    return heatmap_html([row], title or f"atmanrl saliency: {sal.method}", context)


def write_heatmap(
    path: str | Path,
    rows: list[dict[str, Any]],
    title: str = "atmanrl saliency",
    context: dict[str, Any] | None = None,
) -> Path:
    atomic_write_text(path, heatmap_html(rows, title, context))
    return Path(path)
