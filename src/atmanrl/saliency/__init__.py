"""Saliency of chain-of-thought tokens for the answer: a registry of methods and one result type.

    traces = [Trace(prompt, reasoning="3 + 4 = 7, so", answer="\\n#### 7", target=(6, 7))]
    [sal] = compute_saliency(model, tokenizer, traces, method="learned")
    sal.show("heatmap.html")

Every method scores each CoT token by how much the answer's log-probability log p(A) depends on it; a high score
always means "important" (removing the token lowers log p(A)). Methods are built on the public core in
`masked.py` (log p(target) under a key mask, over a cached prefix): a new method subclasses `SaliencyMethod`,
implements `scores(model, batch: MaskedBatch, prefix, base_lp, removed_lp)` and registers with `@register`.

Layout: `base.py` (registry, `SaliencyMethod`, `score_encoded`), `result.py` (`Saliency`), `derivation.py` (where a
CoT states its answer and whether it derives it: `mention_support`), one module per method
family (`learned.py`, `perturbation.py`, `gradient.py`); this module builds methods and scores traces.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, fields
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..attention import check_backend
from ..errors import UserError
from ..masked import (  # noqa: F401  (Trace, Token, content_mask, encode and frozen are part of this API too)
    PREFIX_DTYPES,
    Encoded,
    MaskedBatch,
    Token,
    Trace,
    content_mask,
    encode,
    frozen,
    masked_logprob,
    prefix_cache,
)
from .base import (  # noqa: F401
    METHODS,
    SaliencyMethod,
    Scored,
    base_and_removed_logprob,
    get_method,
    plan_batches,
    register,
    score_encoded,
)
from .derivation import MentionSupport, mention_support  # noqa: F401
from .gradient import Attention, AttentionGradient, GradXInput, Random  # noqa: F401
from .learned import Learned  # noqa: F401
from .perturbation import AtMan, LeaveOneOut  # noqa: F401
from .result import Saliency

log = logging.getLogger(__name__)


# every method's presets by method name (read-only view; a method owns its own as `presets`)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {n: c.presets for n, c in METHODS.items() if c.presets}


def method_options(
    method: str,
    *,
    steps: int | None = None,
    scope: str | None = None,
    seed: int | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """The common settings (mask steps, scope, seed, preset) as options of `method`, only those it has and only
    those given: every command and the reward turn their flags into a method's options here."""
    cls = get_method(method)
    known = {f.name for f in fields(cls)}
    out = {
        k: v
        for k, v in {"scope": scope, "steps": steps, "seed": seed}.items()
        if k in known and v is not None
    }
    if preset is not None and cls.presets:
        out["preset"] = preset
    return out


def make_method(method: str, preset: str | None = None, **config) -> SaliencyMethod:
    """A configured method: its dataclass defaults, then the named `preset` (see PRESETS), then `config`."""
    cls = get_method(method)
    if preset is not None:
        presets = cls.presets
        if preset not in presets:
            raise UserError(
                f"saliency method {method!r} has no preset {preset!r}; presets: {', '.join(presets) or 'none'}"
            )
        config = {**presets[preset], **config}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UserError(f"saliency method {method!r} has no option {unknown}; valid options: {sorted(known)}")
    m = cls(**config)
    if m.scope not in ("answer", "all"):
        raise UserError(f"scope must be 'answer' or 'all', got {m.scope!r}")
    if m.prefix_dtype not in PREFIX_DTYPES:
        raise UserError(f"prefix_dtype must be one of {'|'.join(PREFIX_DTYPES)}, got {m.prefix_dtype!r}")
    return m


def compute_saliency(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    traces: list[Trace],
    method: str | SaliencyMethod = "learned",
    batch_size: int | None = 8,
    token_budget: int | None = None,
    **config,
) -> list[Saliency]:
    """One `Saliency` per trace, in the order given. `config` holds the method's options (its dataclass fields).

    `method` is a registered name (configured by `config`) or a built method (`make_method`): a caller that
    scores many batches keeps one, so what the method caches (the learned mask's CUDA step graphs) is reused.
    `batch_size` traces per forward, or with `token_budget` as many as `traces x longest length <= budget`
    allows (see `plan_batches`): the whole GRPO step in one batch when memory allows.
    """
    if isinstance(method, SaliencyMethod):
        if config:
            raise UserError(
                f"compute_saliency: options {sorted(config)} go to make_method, not with a built method"
            )
        m, method = method, method.method_name
    else:
        m = make_method(method, **config)
    check_backend(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, t) for t in traces]
    results: list[Saliency | None] = [None] * len(traces)
    with frozen(model):
        for idx in plan_batches([len(e.ids) for e in encoded], batch_size, token_budget):
            t0 = time.perf_counter()
            encs = [encoded[i] for i in idx]
            scores, base_lp, removed_lp, extras = score_encoded(m, model, encs, pad_id, device)
            scores = m.refine(model, encs, scores, pad_id, device)
            if not torch.isfinite(scores).all():
                log.warning(
                    "saliency %s: %d non-finite scores replaced by 0",
                    method,
                    int((~torch.isfinite(scores)).sum()),
                )
                scores = torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
            seconds = (time.perf_counter() - t0) / len(encs)
            for b, (e, i) in enumerate(zip(encs, idx, strict=True)):
                t = traces[i]
                results[i] = Saliency(
                    e.tokens,
                    scores[b, : len(e.tokens)].tolist(),
                    float(base_lp[b]),
                    method,
                    asdict(m),
                    seconds,
                    t.reasoning,
                    {"removed_logprob": float(removed_lp[b]), **{k: float(v[b]) for k, v in extras.items()}},
                )
    return [r for r in results if r is not None]
