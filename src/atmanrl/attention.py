"""Differentiable attention manipulation for any Hugging Face causal LM.

`manipulate(model, bias, ...)` is a context manager under which every attention layer and head of `model` adds
`bias[b, j]` to the pre-softmax score (after the 1/sqrt(d) scaling) of key position j, for the query rows in scope.
The bias may require grad: gradients flow into it and never into the model weights that the caller froze.

How it hooks in (no forked model files):
- an attention function is registered in transformers' `AttentionInterface` under a unique name, and a mask function
  under the same name in `AttentionMaskInterface`; the model is switched to that name with
  `model.set_attn_implementation(name)` and switched back on exit, exceptions included;
- the mask function always materialises a float (additive) 4D mask (`eager_mask`), so SDPA never takes its
  `is_causal`/no-mask shortcut and there is always a tensor to add the bias to;
- additive mode adds the bias into that float mask and calls the model's own implementation (its module-level
  `eager_attention_forward`, or transformers' `sdpa_attention_forward`): numerically the unmodified model at bias 0;
- multiplicative mode (original AtMan) needs the raw scores, so it runs its own eager computation:
  scores of suppressed key columns are multiplied by `factor` before the mask is added.

Bias layout: `bias` has shape (B, K_total) over key positions of the padded full sequence (one value per key
column, the same for every query row). A layer that sees fewer keys (a prefix-only forward) uses `bias[:, :K]`.
Query row i of a layer has absolute position past_len + i with past_len = K - Q, so `query_start[b]` limits the
bias to rows at absolute position >= query_start[b] (the answer scope), and this works unchanged with
`past_key_values` from a precomputed prefix. Two more layouts hold one value per (query row, key column) entry,
rows and columns both absolute positions: (B, T, K_total), shared by every layer and head, and (L, B, T, K_total),
one matrix per layer (`module.layer_idx`). The published AtManRL mask is such a matrix (`paper_mask.py`).

CUDA caveat: PyTorch's memory-efficient SDPA kernel computes a wrong gradient into a float `attn_mask` (its
backward for the mask is not supported/exact in some versions). When the bias requires grad on CUDA we therefore run
the model's eager attention instead of SDPA; forward-only uses keep SDPA.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from .errors import UserError

SUPPORTED = ("eager", "sdpa")
_PREFIX = "atmanrl_manipulate_"
_ids = itertools.count()  # unique names, so nested or concurrent contexts on different models never collide

Mode = Literal["additive", "multiplicative"]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, K, d) -> (B, H_kv * n_rep, K, d) for grouped-query attention."""
    if n_rep == 1:
        return x
    b, h, k, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, k, d).reshape(b, h * n_rep, k, d)


def eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    score_multiplier: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain eager attention; `score_multiplier` (broadcast to (B, H, Q, K)) scales the scaled raw scores (AtMan).

    Returns (output (B, Q, H, d), weights (B, H, Q, K)), the layout every HF attention function returns.
    """
    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if score_multiplier is not None:
        scores = scores * score_multiplier.to(scores.dtype)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _model_eager(module: torch.nn.Module) -> Callable:
    """The model's own eager function (defined in its modeling file), so bias 0 is bit-for-bit the model."""
    return getattr(sys.modules[type(module).__module__], "eager_attention_forward", eager_attention)


# The parameters of an eager attention function that computes plain softmax(q k^T * scaling + mask) v: a model
# whose own function takes anything else (gpt2's head_mask, gemma2's softcap, gpt-oss' sinks) keeps its own.
_PLAIN_EAGER = {"module", "query", "key", "value", "attention_mask", "scaling", "dropout", "kwargs"}


@functools.cache
def _is_plain(fn: Callable) -> bool:
    return set(inspect.signature(fn).parameters) <= _PLAIN_EAGER


def past_constant_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    scaling: float,
    past: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention for a forward whose first `past` key/value columns are a constant cache.

    The same arithmetic as the model's eager function, arranged for the mask's gradient: autograd never builds
    the gradient of the cached keys and values (two batched matmuls over the whole cache per layer, the largest
    part of a mask step's backward), and grouped-query heads are stacked as query rows instead of copying every
    key and value n_rep times. (B, Q, H, d) output and (B, H, Q, K) weights, like every HF attention function.
    """
    b, h, q, d = query.shape
    hkv = key.shape[1]
    rows = query.reshape(b, hkv, h // hkv * q, d)  # the query heads that share a key head, stacked as rows
    k_past, k_new = key[:, :, :past].detach(), key[:, :, past:]
    v_past, v_new = value[:, :, :past].detach(), value[:, :, past:]
    scores = torch.cat([rows @ k_past.transpose(2, 3), rows @ k_new.transpose(2, 3)], dim=-1) * scaling
    scores = scores.view(b, hkv, h // hkv, q, -1) + mask[:, :, None]
    weights = (
        torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype).view(b, hkv, h // hkv * q, -1)
    )
    out = weights[..., :past] @ v_past + weights[..., past:] @ v_new
    # value heads may be narrower than query heads (MLA models)
    return out.view(b, h, q, value.shape[-1]).transpose(1, 2).contiguous(), weights.view(b, h, q, -1)


def _float_mask(mask: torch.Tensor | None, query: torch.Tensor, k_len: int) -> torch.Tensor:
    """Any mask the model hands us as an additive float (B|1, 1, Q, K) tensor (our mask function makes this a no-op)."""
    q_len, dtype, device = query.shape[2], query.dtype, query.device
    min_value = torch.finfo(dtype).min
    if mask is None:  # a model that skipped mask creation: plain causal with the past in front
        q_pos = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
        allowed = torch.arange(k_len, device=device)[None, :] <= q_pos
        return torch.where(allowed, 0.0, min_value).to(dtype)[None, None]
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, min_value).to(dtype)
    return mask[..., :k_len].to(dtype)


def _row_scope(query_start: torch.Tensor | None, batch: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """(B, 1, Q, 1) bool: which query rows see the manipulation. Absolute position of row i is K - Q + i."""
    if query_start is None:
        return torch.ones(batch, 1, q_len, 1, dtype=torch.bool, device=device)
    pos = torch.arange(q_len, device=device) + (k_len - q_len)
    return (pos[None, :] >= query_start.to(device)[:, None])[:, None, :, None]


def _make_attention(
    base: str,
    bias: torch.Tensor,
    query_start: torch.Tensor | None,
    mode: Mode,
    factor: float,
    past_constant: bool,
) -> Callable:
    """The attention function registered for one context: a closure, so the bias lives only in the context."""

    # Every layer of one forward gets the same mask object and shapes, so the manipulated mask is built once per
    # forward and shared by all layers (one autograd node instead of one per layer). The entry holds the mask
    # object itself, so a later forward's mask can never be mistaken for it.
    built: dict[str, object] = {}

    def manipulated(attention_mask, query, k_len, layer):
        key_ = (attention_mask, query.shape[0], query.shape[2], k_len, query.dtype, query.device, layer)
        hit = built.get("key")
        if hit is not None and hit[0] is key_[0] and hit[1:] == key_[1:]:
            return built["value"]
        batch, q_len = query.shape[0], query.shape[2]
        mask = _float_mask(attention_mask, query, k_len)
        rows = _row_scope(query_start, batch, q_len, k_len, query.device)
        if bias.ndim == 2:
            b = bias[:, None, None, :k_len]  # (B, 1, 1, K): one value per key column
        else:  # one value per entry: this forward's query rows are absolute positions K - Q .. K - 1
            entries = bias[layer] if bias.ndim == 4 else bias
            b = entries[:, None, k_len - q_len : k_len, :k_len]  # (B, 1, Q, K)
        b = b.to(device=query.device, dtype=query.dtype)
        if mode == "multiplicative":
            # b = suppression weight: 1 -> score * factor, 0 -> unchanged. Differentiable in b.
            value = (
                mask,
                torch.where(rows, 1.0 - b * (1.0 - factor), torch.ones((), dtype=b.dtype, device=b.device)),
            )
        else:
            # Additive: clamp so dtype-min bias on an already masked key stays finite (-inf there would turn
            # fully masked padding rows into NaN, and NaN values leak through 0 attention weights into real rows).
            value = (
                (mask + torch.where(rows, b, torch.zeros((), dtype=b.dtype, device=b.device))).clamp_min(
                    torch.finfo(query.dtype).min
                ),
                None,
            )
        built["key"], built["value"] = key_, value
        return value

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        batch, k_len = query.shape[0], key.shape[2]
        layer = None
        if bias.ndim == 4:
            layer = getattr(module, "layer_idx", None)
            if layer is None or layer >= bias.shape[0]:
                raise ValueError(f"a per-layer bias needs module.layer_idx < {bias.shape[0]}, got {layer}")
        if k_len > bias.shape[-1] or (bias.ndim > 2 and k_len > bias.shape[-2]):
            raise ValueError(
                f"layer sees {k_len} keys but the bias covers only {tuple(bias.shape[-2:])} positions"
            )
        n = bias.shape[-3] if bias.ndim > 2 else bias.shape[0]
        if n != batch:
            raise ValueError(f"bias has batch {n} but the forward has batch {batch}")
        mask, mult = manipulated(attention_mask, query, k_len, layer)
        if mode == "multiplicative":
            return eager_attention(module, query, key, value, mask, scaling, dropout, score_multiplier=mult)
        use_eager = base == "eager" or (query.is_cuda and bias.requires_grad)  # see the CUDA caveat above
        if (
            past_constant
            and bias.requires_grad
            and torch.is_grad_enabled()
            and k_len > query.shape[2]
            and scaling is not None
            and (dropout == 0 or not module.training)
            and _is_plain(_model_eager(module))
            and getattr(module, "sinks", None) is None  # attention sinks (gpt-oss) enter the softmax
        ):
            return past_constant_attention(query, key, value, mask, scaling, k_len - query.shape[2])
        fn = _model_eager(module) if use_eager else AttentionInterface._global_mapping["sdpa"]
        return fn(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)

    return attention


def _as_query_start(query_start, batch: int, device) -> torch.Tensor | None:
    if query_start is None:
        return None
    if isinstance(query_start, int):  # filled on the device: no host-to-device copy (CUDA-graph capturable)
        return torch.full((batch,), query_start, dtype=torch.long, device=device)
    qs = torch.as_tensor(query_start, dtype=torch.long, device=device)
    return qs.expand(batch).clone() if qs.ndim == 0 else qs


def check_backend(model: PreTrainedModel) -> str:
    """The model's attention implementation if we can manipulate it, else a `UserError` naming the fix."""
    impl = model.config._attn_implementation
    if impl not in SUPPORTED:
        raise UserError(
            f"attention manipulation needs eager or sdpa attention, but the model uses {impl!r}: "
            'load it with attn_implementation="sdpa" (or "eager")'
        )
    return impl


@contextmanager
def manipulate(
    model: PreTrainedModel,
    bias: torch.Tensor,
    *,
    query_start: torch.Tensor | int | None = None,
    mode: Mode = "additive",
    factor: float = 0.1,
    implementation: str | None = None,
    past_constant: bool = False,
) -> Iterator[PreTrainedModel]:
    """Manipulate every attention layer of `model` inside the block.

    Args:
        bias: (B, K_total) over key positions of the padded full sequence (a 1D tensor is taken as batch 1);
            or one value per (query row, key column) entry: (B, T, K_total) for every layer, (L, B, T, K_total)
            per layer, rows and columns absolute positions (additive mode only).
            Additive mode: added to the scaled pre-softmax scores (0 = unmodified, dtype min = token removed).
            Multiplicative mode: suppression weight s in [0, 1]; scores become score * (1 - s * (1 - factor)).
        query_start: None (all query rows), an int, or (B,) absolute positions; only rows at position >= it are
            manipulated.
        mode: "additive" (AtManRL) or "multiplicative" (AtMan's factor on the pre-softmax scores).
        factor: AtMan's suppression factor (multiplicative mode only).
        implementation: force the wrapped base ("eager" gives attention weights with `output_attentions=True`);
            default: the model's own.
        past_constant: the forward's `past_key_values` do not depend on `bias` (a cache built without grad).
            A gradient into the bias then skips the cached keys and values (`past_constant_attention`): the same
            scores and gradient, much less work per layer.
    """
    original = check_backend(model)
    base = implementation or original
    if base not in SUPPORTED:
        raise UserError(f"implementation must be one of {SUPPORTED}, got {base!r}")
    if mode not in ("additive", "multiplicative"):
        raise UserError(f"mode must be 'additive' or 'multiplicative', got {mode!r}")
    bias = bias[None] if bias.ndim == 1 else bias
    if bias.ndim > 2 and mode != "additive":
        raise UserError("a per-entry bias (B, T, K) or (L, B, T, K) is additive only")
    name = f"{_PREFIX}{next(_ids)}"
    AttentionInterface.register(
        name,
        _make_attention(
            base,
            bias,
            _as_query_start(query_start, bias.shape[-3] if bias.ndim > 2 else bias.shape[0], bias.device),
            mode,
            factor,
            past_constant,
        ),
    )
    AttentionMaskInterface.register(name, eager_mask)
    try:
        model.set_attn_implementation(name)
        if model.config._attn_implementation != name:  # remote-code models may refuse silently (a warning)
            raise UserError(f"{type(model).__name__} does not support switching its attention implementation")
        yield model
    finally:
        model.set_attn_implementation(original)
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)
