"""The one result type of every saliency method: `Saliency`, with `.show()`, `.save()` and `.top()`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ..masked import Token, content_mask


@dataclass
class Saliency:
    """Scores for the CoT tokens of one trace. High score = the answer needs this token."""

    tokens: list[Token]
    scores: list[float]
    answer_logprob: float  # log p(target | prompt, reasoning) of the unmodified model
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall time per trace (a batch's time divided by its size)
    reasoning: str = ""
    # removed_logprob: log p(target) with every CoT token removed from attention (the gap's baseline); one name for
    # it everywhere (tensors: removed_lp)
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; tokens as {"text", "start", "end"} (the same shape as the `saliency` command's rows)."""
        d = asdict(self)
        d["tokens"] = [t._asdict() for t in self.tokens]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Saliency:
        # tokens as objects, or as [text, start, end] lists (files written by atmanrl 0.3 and earlier)
        tokens = [Token(**t) if isinstance(t, dict) else Token(*t) for t in d["tokens"]]
        extras = dict(d.get("extras") or {})
        if "suppressed_logprob" in extras:  # its name before atmanrl 0.6
            extras["removed_logprob"] = extras.pop("suppressed_logprob")
        return cls(**{**d, "tokens": tokens, "extras": extras})

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Saliency:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def top(self, k: int = 5, content_only: bool = True) -> list[tuple[Token, float]]:
        keep = content_mask(self.tokens) if content_only else [True] * len(self.tokens)
        ranked = sorted((s, i) for i, s in enumerate(self.scores) if keep[i])[::-1]
        return [(self.tokens[i], s) for s, i in ranked[:k]]

    def show(self, path: str | Path | None = None, title: str | None = None) -> str:
        """A self-contained HTML page of the CoT coloured by the scores (`heatmap.saliency_page`: title, method,
        colour scale; red = needed, blue = negative), written to `path` if given. Returns the page."""
        from ..heatmap import saliency_page

        page = saliency_page(self, title)
        if path is not None:
            atomic_write_text(path, page)
        return page

    def _repr_html_(self) -> str:  # Jupyter
        return self.show()
