"""Where a CoT states its answer, and whether the CoT before that point derives it.

One-hop saliency cannot tell a CoT that derives its answer from one that states it first and rationalises it
afterwards: in both, the answer copies a number that is in the CoT. What differs is where that number comes from.
Derived, it comes out of the CoT tokens before it ("6 * 3 = 18"); stated first, nothing in the CoT before it
predicts it ("The answer is 18." at the top). For a statement (mention) of the answer value in the CoT, its
support is what the CoT before it adds to its log-prob, with the same key mask as the answer's own gap:

    support = log p(mention | prompt, CoT before it) - log p(mention | prompt, CoT before it removed)

`mention_support` measures the first and the last mention of each trace; `derived_share` compares their support
(docs/saliency.md). With `value_tokens` it also gives the specific support: the support minus the same difference
for the class of the mention's first token (any number, or any option letter), i.e. how much the CoT before it
raises this value among the values that could stand there, since "The answer is" makes *some* number likely. The
derivation study measured it as a candidate (benchmarks/derivation_study.py); no reward variant reads it.

Every trace adds exactly one row to the pass, run twice: unmodified, and with a per-entry mask under which the rows of
each mention lose the CoT before that mention (a trace without a usable mention runs a placeholder row whose values
are dropped). The number of forwards depends only on the number of traces: distributed ranks stay in lockstep.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..masked import Encoded, MaskedBatch, Trace, encode, masked_forward, prefix_cache, prefix_compute_dtype
from ..paper_mask import spread_entries
from .base import plan_batches


class MentionSupport(NamedTuple):
    """Support (nats) of the first and the last mention of the answer value (equal when there is one), and the
    specific support of each (what is left once the support of the value's class is taken out; 0 without
    `value_tokens`)."""

    first: float
    last: float
    mentions: int  # usable mentions (not at the CoT's first token)
    first_specific: float = 0.0
    last_specific: float = 0.0
    # the share of the CoT's tokens between the end of the first mention and the start of the last: the part
    # written after the answer was first stated (0 with one mention)
    between: float = 0.0


def _mention_row(e: Encoded, spans: list[tuple[int, int]]) -> tuple[Encoded, int, int, int]:
    """One row for the first and last usable mentions (not at the CoT's first token): their tokens are the targets,
    the CoT is everything before the last one. Returns (row, targets of the first mention, CoT index where the
    first mention starts, usable mentions); without one, the CoT's last token stands in (a row of the usual shape
    whose values are dropped)."""
    tok = [[j for j, t in enumerate(e.tokens) if t.start < hi and t.end > lo] for lo, hi in spans]
    tok = [js for js in tok if js and js[0] > 0]
    if not tok:
        n = max(len(e.tokens) - 1, 1)
        row = Encoded(
            e.ids[: e.cot_start + n + 1], e.cot_start, e.tokens[:n], e.cot_start + n, [e.cot_start + n]
        )
        return row, 1, n, 0
    first, last = tok[0], tok[-1]
    targets = [e.cot_start + j for j in first] + ([e.cot_start + j for j in last] if len(tok) > 1 else [])
    row = Encoded(e.ids[: targets[-1] + 1], e.cot_start, e.tokens[: last[0]], e.cot_start + first[0], targets)
    return row, len(first), first[0], len(tok)


def _removal_bias(batch: MaskedBatch, n_first: list[int], first_at: list[int], dtype) -> torch.Tensor:
    """(B, T, T) per (row, key column): each target row loses the CoT before its own mention (rows of the first
    mention the CoT before it, rows of the last mention the CoT before that one). Other rows lose what the first
    mention's rows lose; nothing scored reads them through a key the last mention's rows keep."""
    B, T = batch.input_ids.shape
    rows = torch.arange(T, device=batch.input_ids.device)
    cut = torch.empty(B, T, dtype=torch.long, device=batch.input_ids.device)
    for b in range(B):
        # the rows that predict the last mention's targets start one column before its first target
        n_last = int(batch.tgt_valid[b].sum()) - n_first[b]
        last_row = int(batch.tgt_pos[b, n_first[b]]) - 1 if n_last > 0 else T
        cut[b] = torch.where(rows >= last_row, int(batch.cot_valid[b].sum()), first_at[b])
    cot_index = torch.arange(batch.cot_pos.shape[1], device=cut.device)
    masked = (cot_index[None, None, :] < cut[:, :, None]) & batch.cot_valid[:, None, :]  # (B, T, N)
    return spread_entries(batch, torch.where(masked, torch.finfo(dtype).min, 0.0).to(dtype))


def _class_logmass(out, batch: MaskedBatch, positions: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """log P(the next token is in `class_ids`) at the rows that predict the targets at `positions` (B,)."""
    keep = batch.logit_cols - batch.P
    row = torch.searchsorted(keep, batch.tgt_pos.gather(1, positions[:, None])[:, 0] - 1 - batch.P)
    logits = out.logits[torch.arange(row.shape[0], device=row.device), row].float()
    return torch.logsumexp(torch.log_softmax(logits, -1)[:, class_ids], -1)


def mention_support(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    traces: list[Trace],
    mentions: list[list[tuple[int, int]]],
    value_tokens: list[int] | None = None,
    batch_size: int | None = None,
    token_budget: int | None = 16384,
    prefix_dtype: str = "auto",
    fixed: bool = True,
    least: int = 1,
) -> list[MentionSupport | None]:
    """For each trace, the support of the first and last of its `mentions` (character spans in its reasoning,
    in order), or None where it has no usable mention. `value_tokens`: the ids of the tokens that can begin a
    value (`Task.is_value_token`), for the specific support. `fixed`: one row per trace whatever the data, run
    twice (with and without the CoT before each mention; see the module), as distributed training needs; without
    it only the traces with at least `least` usable mentions are run, and the others get support 0 (a single
    process has no lockstep to keep, and `derived_share` reads nothing from a trace with fewer than two)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows, n_first, first_at, counts, between = [], [], [], [], []
    for t, spans in zip(traces, mentions, strict=True):
        e = encode(tokenizer, t)
        row, nf, at, n = _mention_row(e, spans)
        rows.append(row)
        n_first.append(nf)
        first_at.append(at)
        counts.append(n)
        # CoT tokens after the first mention's end and before the last one's start
        between.append(max(len(row.tokens) - (at + nf), 0) / len(e.tokens) if n > 1 else 0.0)
    class_ids = torch.tensor(value_tokens, device=device) if value_tokens else None
    values = torch.zeros(len(rows), 4)  # support first, last; specific first, last
    dtype = prefix_compute_dtype(model, prefix_dtype)
    run = [i for i in range(len(rows)) if fixed or counts[i] >= max(least, 1)]
    for part in plan_batches([len(rows[i].ids) for i in run], batch_size, token_budget):
        idx = [run[k] for k in part]
        batch = MaskedBatch.build([rows[i] for i in idx], "answer", pad_id, device)
        nf = torch.tensor([n_first[i] for i in idx], device=device)
        with torch.no_grad():
            prefix = prefix_cache(model, batch, dtype=dtype)
            bias = _removal_bias(batch, [n_first[i] for i in idx], [first_at[i] for i in idx], model.dtype)
            lps, masses = [], []
            for b in (None, bias):
                lp, out = masked_forward(model, batch, prefix, b, per_target=True)
                lps.append(lp.float())
                if class_ids is not None:
                    heads = torch.stack([torch.zeros_like(nf), nf.clamp(max=batch.tgt_pos.shape[1] - 1)], 1)
                    masses.append(
                        torch.stack([_class_logmass(out, batch, heads[:, k], class_ids) for k in (0, 1)], 1)
                    )
        first_part = torch.arange(batch.tgt_pos.shape[1], device=device)[None, :] < nf[:, None]
        diff = lps[0] - lps[1]
        sup_first = (diff * first_part).sum(-1)
        has_last = batch.tgt_valid.sum(-1) > nf
        sup_last = torch.where(has_last, (diff * ~first_part).sum(-1), sup_first)
        support = torch.stack([sup_first, sup_last], 1)
        if masses:
            cls = masses[0] - masses[1]
            cls[:, 1] = torch.where(has_last, cls[:, 1], cls[:, 0])
            specific = support - cls
        else:
            specific = torch.zeros_like(support)
        values[idx] = torch.cat([support, specific], 1).cpu()
    out_: list[MentionSupport | None] = []
    for k, n in enumerate(counts):
        v = values[k].tolist()
        out_.append(MentionSupport(v[0], v[1], n, v[2], v[3], between[k]) if n else None)
    return out_
