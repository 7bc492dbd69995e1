"""Single-pass methods: the attention gradient, gradient x input, attention weights, and the random floor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..masked import masked_forward, masked_logprob
from .base import SaliencyMethod, register


@register
@dataclass
class AttentionGradient(SaliencyMethod):
    """d log p(A) / d bias_i at bias 0: one forward+backward.

    Removing token i moves its bias from 0 to -inf; to first order (in the gate g = exp(bias), from 1 to 0) that
    changes log p(A) by -gradient, so score = +gradient: high = removing it lowers log p(A).
    """

    method_name: ClassVar[str] = "attention_gradient"

    def scores(self, model, batch, prefix, base_lp, removed_lp=None):
        values = torch.zeros(batch.cot_valid.shape, device=batch.input_ids.device, requires_grad=True)
        with torch.enable_grad():
            lp = masked_logprob(model, batch, prefix, batch.spread(values), use_cache=self.use_cache)
            (grad,) = torch.autograd.grad(lp.sum(), values)
        return grad


@register
@dataclass
class GradXInput(SaliencyMethod):
    """Gradient x input embedding, summed over the hidden dimension (signed: the first-order change of log p(A)
    when the embedding is zeroed is -grad.x, so high = important). Always the total effect: split at the CoT."""

    method_name: ClassVar[str] = "grad_x_input"
    scope: str = "all"

    def scores(self, model, batch, prefix, base_lp, removed_lp=None):
        emb = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
        with torch.enable_grad():
            lp = masked_logprob(model, batch, prefix, None, use_cache=self.use_cache, inputs_embeds=emb)
            (grad,) = torch.autograd.grad(lp.sum(), emb)
        gx = (grad * emb).sum(-1)
        return torch.gather(gx, 1, batch.cot_pos)


@register
@dataclass
class Attention(SaliencyMethod):
    """Mean attention weight from the answer-scope query rows to each CoT key, over layers and heads (eager)."""

    method_name: ClassVar[str] = "attention"

    def scores(self, model, batch, prefix, base_lp, removed_lp=None):
        _, out = masked_forward(
            model,
            batch,
            prefix,
            None,
            use_cache=self.use_cache,
            implementation="eager",
            output_attentions=True,
        )
        att = torch.stack(out.attentions).float().mean(dim=(0, 2))  # (B, Q, T): mean over layers and heads
        q0 = batch.P if not self.use_cache else 0
        rows = batch.attention_mask[:, batch.P :].float()  # valid answer-scope rows
        att = (att[:, q0:] * rows[..., None]).sum(1) / rows.sum(1, keepdim=True).clamp(min=1)
        return torch.gather(att, 1, batch.cot_pos)


@register
@dataclass
class Random(SaliencyMethod):
    """Seeded uniform scores: the floor every method has to beat."""

    method_name: ClassVar[str] = "random"
    seed: int = 0

    def scores(self, model, batch, prefix, base_lp, removed_lp=None):
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(batch.cot_valid.shape, generator=gen).to(batch.input_ids.device)
