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

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px;border-top:1px solid #ddd;padding-top:12px}
.grid{display:grid;gap:12px;grid-template-columns:repeat(auto-fit,minmax(320px,1fr))}
.card{border:1px solid #ddd;border-radius:6px;padding:10px;background:#fff}
.card h3{margin:0 0 6px;font-size:13px} .meta{color:#666;font-size:12px;margin-bottom:6px}
.cot{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;line-height:1.7}
.prompt,.answer{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;background:#f6f6f6;
 padding:6px;border-radius:4px} .answer{background:#eef6ee}
.sink{outline:1px dotted #999} .legend{font-size:12px;color:#555}
"""


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


def heatmap_html(rows: list[dict[str, Any]], title: str = "atmanrl saliency") -> str:
    """One page. Each row: `saliency` {method: Saliency} (as `explain.score_traces` gives them), `id`,
    `prompt`, `answer`, and optionally `rewards` {name: value} and `correct`."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        "<p class='legend'>Red = the answer needs this token, blue = a negative score (scaled per method by "
        "the largest |score| among content tokens). Dotted = punctuation/whitespace (attention sinks), not "
        "scaled. Hover for the score.</p>",
    ]
    for r in rows:
        head = f"{r.get('id', '')}"
        if "correct" in r:
            head += " ✓" if r["correct"] else " ✗"
        parts.append(f"<h2>{html.escape(head)}</h2>")
        parts.append(f"<div class='prompt'>{html.escape(str(r.get('prompt', '')))}</div>")
        sals: dict[str, Saliency] = r["saliency"]
        meta = []
        if sals:
            meta.append(f"log p(answer) = {next(iter(sals.values())).answer_logprob:.3f}")
        for k, v in (r.get("rewards") or {}).items():
            if v is not None:
                meta.append(f"{html.escape(k)} = {v:.3f}")
        parts.append(f"<div class='meta'>{' · '.join(meta)}</div><div class='grid'>")
        for method, sal in sals.items():
            parts.append(
                f"<div class='card'><h3>{html.escape(method)} <span class='meta'>{sal.seconds:.2f} s</span></h3>"
                f"<div class='cot'>{render_cot(sal.reasoning, sal.tokens, sal.scores)}</div></div>"
            )
        parts.append(f"</div><div class='answer'>{html.escape(str(r.get('answer', '')))}</div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_heatmap(path: str | Path, rows: list[dict[str, Any]], title: str = "atmanrl saliency") -> Path:
    atomic_write_text(path, heatmap_html(rows, title))
    return Path(path)
