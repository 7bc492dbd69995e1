"""Perturbation methods: suppress one CoT token at a time and measure the drop of log p(A) (leave-one-out, AtMan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..masked import variants_logprob
from .base import SaliencyMethod, register


def _variant_scores(method, model, batch, prefix, base_lp, suppress_fn, mode: str, factor: float, chunk: int):
    """Score each CoT token by the drop of log p(A) when it (and whatever suppress_fn adds) is suppressed."""
    out = torch.zeros(batch.cot_valid.shape, device=batch.input_ids.device)
    for b in range(batch.input_ids.shape[0]):
        idx = torch.arange(int(batch.cot_valid[b].sum()), device=out.device)
        values = suppress_fn(b, idx)  # (n, N): row i suppresses token i (and what suppress_fn adds)
        lp = variants_logprob(
            model, batch, prefix, b, values, chunk=chunk, use_cache=method.use_cache, mode=mode, factor=factor
        )
        out[b, idx] = base_lp[b] - lp
    return out


@register
@dataclass
class LeaveOneOut(SaliencyMethod):
    """Deletion: remove one CoT token at a time (bias = dtype min); score = drop in log p(A)."""

    method_name: ClassVar[str] = "leave_one_out"
    chunk: int = 32  # suppressed variants per forward

    def scores(self, model, batch, prefix, base_lp, removed_lp=None):
        N, neg = batch.cot_valid.shape[1], torch.finfo(model.dtype).min

        def one(b, idx):
            return F.one_hot(idx, N).to(model.dtype) * neg

        return _variant_scores(self, model, batch, prefix, base_lp, one, "additive", 0.0, self.chunk)


@register
@dataclass
class AtMan(SaliencyMethod):
    """AtMan (Deb et al. 2023): multiply the pre-softmax scores of one CoT token by `factor`; score = drop.

    conceptual=True also suppresses the CoT tokens whose input embedding has cosine similarity >= threshold with
    it (AtMan's conceptual suppression, restricted to the CoT so prompt tokens are never attributed to it).
    """

    method_name: ClassVar[str] = "atman"
    factor: float = 0.1
    conceptual: bool = False
    threshold: float = 0.6
    chunk: int = 32

    def scores(self, model, batch, prefix, base_lp, removed_lp=None):
        N = batch.cot_valid.shape[1]
        if self.conceptual:
            ids = torch.gather(batch.input_ids, 1, batch.cot_pos)
            emb = F.normalize(model.get_input_embeddings()(ids).float(), dim=-1)
            sim = (emb @ emb.transpose(1, 2) >= self.threshold) & batch.cot_valid[:, None, :]

        def one(b, idx):
            if self.conceptual:
                return (sim[b, idx] | F.one_hot(idx, N).bool()).float()
            return F.one_hot(idx, N).float()

        return _variant_scores(
            self, model, batch, prefix, base_lp, one, "multiplicative", self.factor, self.chunk
        )
