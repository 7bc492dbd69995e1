"""The saliency-method registry, the base class every method subclasses, and one batch scored by one method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from transformers import PreTrainedModel

from ..errors import UserError
from ..masked import Encoded, MaskedBatch, Prefix, masked_logprob, prefix_cache, prefix_compute_dtype

# ----------------------------------------------------------------------------- registry


METHODS: dict[str, type[SaliencyMethod]] = {}


def register(cls: type[SaliencyMethod]) -> type[SaliencyMethod]:
    """Class decorator: add a method to the registry under its `method_name`."""
    METHODS[cls.method_name] = cls
    return cls


def get_method(name: str) -> type[SaliencyMethod]:
    if name not in METHODS:
        raise UserError(f"unknown saliency method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


@dataclass
class SaliencyMethod:
    """Base class. Subclasses are dataclasses (their fields are the config) and implement `scores`."""

    method_name: ClassVar[str]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # named settings: make_method(name, preset=...)
    scope: str = "answer"  # query rows that see the manipulation: "answer" (direct effect) or "all" (total)
    use_cache: bool = True  # reuse the keys/values before the split (exactly equal; off only for tests)
    # The prefix pass (the keys/values of prompt + CoT, computed once and read by every later forward): "model"
    # runs it in the model's dtype (exact); "bfloat16" under bfloat16 autocast; "auto" is bfloat16 for a float32
    # model on a CPU with native bfloat16 matmuls (about 4x the float32 rate there: the pass is compute-bound),
    # else "model". The reward preset uses "auto" (its rewards moved by at most 0.007: docs/performance.md).
    prefix_dtype: str = "model"

    def scores(
        self,
        model: PreTrainedModel,
        batch: MaskedBatch,
        prefix: Prefix,
        base_lp: torch.Tensor,
        removed_lp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N) scores for the CoT tokens of the batch; high = important.

        `base_lp` is log p(A) of the unmodified model, `removed_lp` with every CoT token removed from the scope.
        A method may return (scores, extras): per-trace read-outs, (B,) each, that land in `Saliency.extras`.
        """
        raise NotImplementedError

    def refine(self, model, encs: list[Encoded], scores: torch.Tensor, pad_id: int, device) -> torch.Tensor:
        """Passes after the first, on the batch's encoded traces (`learned`: verify and chain); default: none.

        Runs as many passes as the method's options say, whatever the data, unless the method documents
        otherwise (distributed lockstep)."""
        return scores


def plan_batches(
    lengths: list[int], batch_size: int | None = 8, token_budget: int | None = None
) -> list[list[int]]:
    """Indices of the traces in each forward batch.

    Without `token_budget`: consecutive groups of `batch_size`. With it: traces sorted by length (longest first,
    so little padding), each batch as large as `batch size x longest sequence <= token_budget` allows, and at most
    `batch_size` traces (None: no cap). A trace longer than the budget gets a batch of its own.
    """
    n = len(lengths)
    if token_budget is None:
        step = batch_size or max(n, 1)
        return [list(range(lo, min(lo + step, n))) for lo in range(0, n, step)]
    order = sorted(range(n), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        # longest first: the batch's first trace is its longest
        if (
            cur
            and (len(cur) + 1) * lengths[cur[0]] <= token_budget
            and (batch_size is None or len(cur) < batch_size)
        ):
            cur.append(i)
        else:
            batches.append([i])
    return batches


class Scored(NamedTuple):
    """What `score_encoded` returns for one batch; `extras` holds a method's per-trace read-outs, (B,) each."""

    scores: torch.Tensor  # (B, N) on the CPU
    base_lp: torch.Tensor  # log p(A)
    removed_lp: torch.Tensor  # log p(A | CoT removed)
    extras: dict[str, torch.Tensor]


def base_and_removed_logprob(
    model: PreTrainedModel, batch: MaskedBatch, prefix: Prefix, use_cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target), log p(target | every CoT token removed from the scope's rows)), (B,) each, no grad."""
    with torch.no_grad():
        base_lp = masked_logprob(model, batch, prefix, None, use_cache=use_cache)
        removed = torch.full(
            batch.cot_valid.shape, torch.finfo(model.dtype).min, device=batch.input_ids.device
        )
        removed_lp = masked_logprob(model, batch, prefix, batch.spread(removed), use_cache=use_cache)
    return base_lp, removed_lp


def score_encoded(
    m: SaliencyMethod, model: PreTrainedModel, encs: list[Encoded], pad_id: int, device: torch.device
) -> Scored:
    """One forward batch of already tokenised traces (`encode`), no chain or verify step.
    `compute_saliency` is the text-level entry. A method's `scores` may return (scores, extras)."""
    batch = MaskedBatch.build(encs, m.scope, pad_id, device)
    with torch.no_grad():
        prefix = (
            prefix_cache(model, batch, dtype=prefix_compute_dtype(model, m.prefix_dtype))
            if m.use_cache
            else None
        )
        base_lp, removed_lp = base_and_removed_logprob(model, batch, prefix, m.use_cache)
    out = m.scores(model, batch, prefix, base_lp, removed_lp)
    scores, extras = out if isinstance(out, tuple) else (out, {})
    return Scored(
        scores.detach().float().cpu(),
        base_lp,
        removed_lp,
        {k: v.detach().float().cpu() for k, v in extras.items()},
    )
