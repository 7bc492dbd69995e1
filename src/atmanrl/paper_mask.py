"""The published AtManRL mask (Höth et al. 2026; ../shared/METHOD.md section 0), learned per (row, column) entry.

One additive matrix H over the pre-softmax attention scores, with an entry for every query row w and CoT key
column v with w >= v (causal). Every entry starts at c = -0.4; before use H is clamped to <= 0 and multiplied by
10 (a start bias of -4). 200 AdamW steps (lr 1e-3, betas (0.6, 0.9999), weight decay 0.05) minimise the mean
teacher-forced cross-entropy of the answer tokens, nothing else. Prompt and answer key columns are never masked.

Two readings the paper leaves open are options of `Learned` (docs/paper.md):
- `rows`: which query rows carry entries: "later" (every row after the column: CoT and answer rows), "cot" (CoT
  rows only: the answer sees the CoT only through the hidden states the mask changed), or "answer" (answer rows
  only: the cheap approximation `preset="paper_answer"`, where prompt and CoT hidden states never change, so
  their keys and values are computed once and reused by every step);
- `layers`: one H shared by every layer and head ("shared", as the paper writes it) or one per layer.

Rows after the last scored answer position are not run (they cannot change the answer's log-prob), so they carry
no entry: they would stay at c and only dilute the reward's mean by a length-dependent constant.

Read-outs, on Hn = clamp(H) / c (1 at the start, 0 fully re-enabled, above 1 suppressed further):
- per-token score of column v: 1 - mean of Hn over the column's entries (and layers), the share of the column
  re-enabled: high = the answer needed the token (the attribution convention of every method);
- `entry_mean`: the mean of Hn over every causal entry of the CoT columns, the quantity the paper's reward
  averages (its two readings are reward variants in rewards.py).
"""

from __future__ import annotations

import torch

from .masked import MaskedBatch, Prefix, full_attention_only, masked_logprob, writable_prefix

ROWS = ("later", "cot", "answer")
LAYERS = ("shared", "per_layer")


def entry_mask(batch: MaskedBatch, rows: str) -> torch.Tensor:
    """(B, T, N) bool: which (row column, CoT token) entries carry a parameter."""
    T = batch.input_ids.shape[1]
    t = torch.arange(T, device=batch.input_ids.device)[None, :, None]  # (1, T, 1) row columns
    ok = (
        (t >= batch.cot_pos[:, None, :])  # causal: w >= v
        & batch.cot_valid[:, None, :]
        & batch.attention_mask[:, :, None].bool()
        & (t >= batch.P)  # rows before the split are the cached prefix: no forward runs them
    )
    if rows == "cot":
        ok &= t < batch.answer_pos[:, None, None]
    elif rows == "answer" and batch.scope != "answer":
        ok &= t >= batch.answer_pos[:, None, None]
    # rows == "answer" in the answer scope: the rows after the split, which `Learned` keeps at the answer (or one
    # row earlier when that row predicts the answer's first scored token)
    return ok


def spread_entries(batch: MaskedBatch, values: torch.Tensor) -> torch.Tensor:
    """(..., B, T, N) per-entry values -> (..., B, T, T) over (row, key column); differentiable."""
    idx = batch.cot_pos[:, None, :].expand(*values.shape)
    out = values.new_zeros(*values.shape[:-1], batch.input_ids.shape[1])
    return out.scatter_add(-1, idx, values)


def entry_bias(m, H: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """The bias added per entry: `bias_scale * min(H, clamp_max)` (published: 10 * min(H, 0)), 0 off the entries."""
    h = H if m.clamp_max is None else H.clamp(max=m.clamp_max)
    return m.bias_scale * h * entries


def readouts(m, H: torch.Tensor, entries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token scores (B, N), entry_mean (B,)) of a learned H ((B, T, N) or (L, B, T, N)) on Hn = min(H, clamp)/c."""
    h = H if m.clamp_max is None else H.clamp(max=m.clamp_max)
    hn = h / m.init
    w = entries.float().expand(H.shape)
    lead = tuple(range(H.ndim - 3))  # the layer dimension, if any
    col_w = w.sum(dim=(*lead, -2))  # (B, N) entries per column
    re_enabled = 1 - (hn * w).sum(dim=(*lead, -2)) / col_w.clamp(min=1)
    scores = torch.where(col_w > 0, re_enabled, torch.zeros_like(re_enabled))
    entry_mean = (hn * w).sum(dim=(*lead, -2, -1)) / w.sum(dim=(*lead, -2, -1)).clamp(min=1)
    return scores, entry_mean


def learn_matrix(
    m, model, batch: MaskedBatch, prefix: Prefix
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(scores (B, N), {"entry_mean": (B,)}) of the published mask for `Learned` options `m` (form="matrix")."""
    entries = entry_mask(batch, m.rows)
    n_layers = model.config.get_text_config().num_hidden_layers
    shape = entries.shape if m.layers == "shared" else (n_layers, *entries.shape)
    H = torch.full(shape, float(m.init), device=entries.device, requires_grad=True)
    opt = m.optimizer_for(H)  # the published one is AdamW
    n_tgt = batch.tgt_valid.sum(-1).clamp(min=1)
    # a sliding-window cache keeps only its window, so a forward's rows would no longer be the absolute positions
    # K - Q .. K - 1 the entries are laid out by: such models run every step on the whole sequence
    use_cache = m.use_cache and full_attention_only(model)
    if use_cache and m.steps:
        prefix = writable_prefix(prefix, batch)  # every step writes its columns in place: no prefix copies
    for _ in range(m.steps):  # a fixed count: every process runs the same passes (distributed lockstep)
        with torch.enable_grad():
            bias = spread_entries(batch, entry_bias(m, H, entries))
            lp = masked_logprob(model, batch, prefix, bias, use_cache=use_cache)
            # the mean teacher-forced cross-entropy of the answer tokens (normalize="none": their sum)
            loss = -(lp / n_tgt if m.normalize == "mean" else lp).sum()  # summed: traces never interact
            (grad,) = torch.autograd.grad(loss, H)
        H.grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
    with torch.no_grad():
        scores, entry_mean = readouts(m, H, entries)
    return scores, {"entry_mean": entry_mean}
