"""The masked log-prob core: log p(target) of a trace under a bias on its CoT tokens' key columns, over a cached prefix.

Every saliency method, the evaluation's removal curves and the saliency reward are built on these:

    enc = encode(tokenizer, Trace(prompt, reasoning, answer, target))
    batch = MaskedBatch.build([enc], scope="answer", pad_id=tokenizer.pad_token_id, device="cpu")
    prefix = prefix_cache(model, batch)                                   # the part no mask can change
    base = masked_logprob(model, batch, prefix)                           # the unmodified model
    values = torch.zeros(batch.cot_valid.shape); values[0, 3] = torch.finfo(model.dtype).min
    removed = masked_logprob(model, batch, prefix, batch.spread(values))  # CoT token 3 removed

Prompt, reasoning and answer are tokenized separately and concatenated, so CoT tokens carry clean character
offsets into `reasoning`. Every sequence is split at a point `split` (the answer scope's first query row for
scope="answer", the first CoT token for scope="all"). The part before the split does not depend on the mask, so
it is left-padded to a common end, run once without grad, and its keys/values are reused (`past_key_values`) by
every forward of the part after the split (right-padded). Log-probs are taken only at the target tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import (
    DYNAMIC_LAYER_TYPE_MAPPING,
    Cache,
    DynamicLayer,
    get_layer_types_and_kwargs,
)

from .attention import manipulate
from .errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Trace:
    """One rollout: the rendered prompt, the CoT, the answer segment, and the answer value's char span in `answer`."""

    prompt: str
    reasoning: str
    answer: str
    target: tuple[int, int] | None = None  # None: the whole answer segment

    @property
    def target_text(self) -> str:
        """The scored part of the answer segment (the answer value, for a parsed completion)."""
        return self.answer[slice(*self.target)] if self.target is not None else self.answer

    @classmethod
    def from_completion(
        cls, prompt: str, completion: str, answer_start: int, value_span: tuple[int, int]
    ) -> Trace:
        """Split a completion at its answer segment; `value_span` (offsets into the completion) is the target.

        The answer segment is cut after the value: later tokens cannot change log p(value) under causal
        attention, and small models often ramble on for many tokens that every forward would pay for.
        """
        lo, hi = value_span
        return cls(
            prompt,
            completion[:answer_start],
            completion[answer_start:hi],
            (lo - answer_start, hi - answer_start),
        )


class Token(NamedTuple):
    text: str
    start: int  # char offsets into Trace.reasoning
    end: int


def content_mask(tokens: list[Token] | list[str]) -> list[bool]:
    """True for tokens with a letter or digit: scoring metrics ignore punctuation and whitespace (attention sinks)."""
    texts = [t.text if isinstance(t, Token) else t for t in tokens]
    return [any(c.isalnum() for c in s) for s in texts]


@dataclass
class Encoded:
    ids: list[int]
    cot_start: int  # token index of the first CoT token
    tokens: list[Token]  # CoT tokens
    answer_start: int
    targets: list[int]  # token indices of the target tokens


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The rendered prompt as given: a BOS is added only if the tokenizer adds one and the text lacks it."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
    return [bos] + ids if adds_bos and ids[:1] != [bos] else ids


def encode(tokenizer: PreTrainedTokenizerBase, trace: Trace) -> Encoded:
    p = encode_prompt(tokenizer, trace.prompt)
    r = tokenizer(trace.reasoning, add_special_tokens=False, return_offsets_mapping=True)
    a = tokenizer(trace.answer, add_special_tokens=False, return_offsets_mapping=True)
    lo, hi = trace.target if trace.target is not None else (0, len(trace.answer))
    targets = [
        len(p) + len(r["input_ids"]) + i for i, (s, e) in enumerate(a["offset_mapping"]) if s < hi and e > lo
    ]
    if not targets:
        raise UserError(f"target span {trace.target} covers no token of the answer {trace.answer!r}")
    if not r["input_ids"]:
        raise UserError("trace has an empty reasoning: there is nothing to score")
    tokens = [Token(trace.reasoning[s:e], s, e) for s, e in r["offset_mapping"]]
    return Encoded(p + r["input_ids"] + a["input_ids"], len(p), tokens, len(p) + len(r["input_ids"]), targets)


@dataclass
class MaskedBatch:
    """Padded layout [left pad | before split | after split | right pad]; every `split` lands on column P."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    P: int
    cot_pos: torch.Tensor  # (B, N) column of each CoT token (0 where invalid)
    cot_valid: torch.Tensor  # (B, N) bool
    tgt_pos: torch.Tensor  # (B, M) column of each target token
    tgt_ids: torch.Tensor  # (B, M)
    tgt_valid: torch.Tensor  # (B, M)
    scope: str  # "answer" or "all"
    # sorted distinct columns whose logits are needed (tgt_pos - 1), found once on the CPU: no forward ever
    # waits on the device for them (which would also forbid CUDA-graph capture)
    logit_cols: torch.Tensor | None = None
    answer_pos: torch.Tensor | None = None  # (B,) column of each answer segment's first token

    @classmethod
    def build(cls, encs: list[Encoded], scope: str, pad_id: int, device) -> MaskedBatch:
        # Answer scope starts at the answer, or one token earlier if needed so that every row that predicts a
        # target token is in scope (a target that is the answer's first token is predicted by the CoT's last row).
        splits = [min(e.answer_start, e.targets[0] - 1) if scope == "answer" else e.cot_start for e in encs]
        P = max(splits)
        # Columns after a row's last target's predecessor predict nothing that is scored, and causality keeps
        # them from reaching any column that is: they are left out (every mask step runs fewer rows).
        used = [e.ids[: e.targets[-1]] for e in encs]
        T = P + max(len(u) - s for u, s in zip(used, splits, strict=True))
        B, N, M = len(encs), max(len(e.tokens) for e in encs), max(len(e.targets) for e in encs)
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        cot_pos, cot_valid = torch.zeros(B, N, dtype=torch.long), torch.zeros(B, N, dtype=torch.bool)
        tgt_pos, tgt_ids = (
            torch.full((B, M), P + 1, dtype=torch.long),
            torch.full((B, M), pad_id, dtype=torch.long),
        )
        tgt_valid = torch.zeros(B, M, dtype=torch.bool)
        answer_pos = torch.zeros(B, dtype=torch.long)
        for b, (e, u, s) in enumerate(zip(encs, used, splits, strict=True)):
            off = P - s
            ids[b, off : off + len(u)] = torch.tensor(u)
            mask[b, off : off + len(u)] = 1
            n = len(e.tokens)
            cot_pos[b, :n] = torch.arange(e.cot_start, e.cot_start + n) + off
            cot_valid[b, :n] = True
            tgt_pos[b, : len(e.targets)] = torch.tensor(e.targets) + off
            tgt_ids[b, : len(e.targets)] = torch.tensor([e.ids[t] for t in e.targets])
            tgt_valid[b, : len(e.targets)] = True
            answer_pos[b] = e.answer_start + off
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logit_cols = torch.unique(tgt_pos - 1)
        return cls(
            ids.to(device),
            mask.to(device),
            position_ids.to(device),
            P,
            cot_pos.to(device),
            cot_valid.to(device),
            tgt_pos.to(device),
            tgt_ids.to(device),
            tgt_valid.to(device),
            scope,
            logit_cols.to(device),
            answer_pos.to(device),
        )

    def repeat(self, b: int, n: int) -> MaskedBatch:
        """Row b repeated n times (the many suppressed variants of one trace)."""

        def rep(t):
            return t[b : b + 1].expand(n, *t.shape[1:])

        return MaskedBatch(
            rep(self.input_ids),
            rep(self.attention_mask),
            rep(self.position_ids),
            self.P,
            rep(self.cot_pos),
            rep(self.cot_valid),
            rep(self.tgt_pos),
            rep(self.tgt_ids),
            rep(self.tgt_valid),
            self.scope,
            self.logit_cols,
            None if self.answer_pos is None else rep(self.answer_pos),
        )

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N) per-CoT-token values -> (B, T) over key columns (0 elsewhere); differentiable."""
        # a scatter, not one_hot: one_hot checks its indices on the host, which a CUDA graph cannot capture
        out = values.new_zeros(self.input_ids.shape)
        return out.scatter_add(1, self.cot_pos, values * self.cot_valid)

    @property
    def query_start(self) -> int | None:
        # In "all" scope every row may see the mask (causality already hides key i from rows before it).
        return self.P if self.scope == "answer" else None


Prefix = list[tuple[torch.Tensor, torch.Tensor]] | None


PREFIX_DTYPES = ("model", "bfloat16", "auto")


def prefix_compute_dtype(model: PreTrainedModel, prefix_dtype: str) -> torch.dtype | None:
    """The autocast dtype of the prefix pass for a method's `prefix_dtype` (None: the model's own)."""
    if prefix_dtype == "bfloat16":
        return torch.bfloat16
    if prefix_dtype == "auto" and model.dtype == torch.float32 and model.device.type == "cpu":
        return torch.bfloat16 if _native_cpu_bf16() else None
    return None


def _native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); emulated it is slower than float32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probes: stay exact
        return False


@torch.no_grad()
def prefix_cache(
    model: PreTrainedModel, batch: MaskedBatch, share_prompts: bool = True, dtype: torch.dtype | None = None
) -> Prefix:
    """Keys/values of the columns before the split; they do not depend on the mask, so they are computed once.

    With `dtype` the pass runs under autocast to it (the pass is compute-bound; see `prefix_compute_dtype`) and
    the keys/values come back in the model's dtype.

    With `share_prompts`, rows whose prompts are the same token sequence (a GRPO group's rollouts) compute that
    prompt once: the prompt, then each row's CoT on top of its prompt's cache, then the result laid out in the
    batch's columns. The same keys and values as one forward over every row (a test compares them).
    """
    if batch.P == 0:
        return None
    if dtype is not None and dtype != model.dtype:
        with torch.autocast(model.device.type, dtype=dtype):
            prefix = prefix_cache(model, batch, share_prompts)
        return [(k.to(model.dtype), v.to(model.dtype)) for k, v in prefix]
    if share_prompts and batch.input_ids.shape[0] > 1:
        shared = _shared_prompt_cache(model, batch)
        if shared is not None:
            return shared
    out = model(
        input_ids=batch.input_ids[:, : batch.P],
        attention_mask=batch.attention_mask[:, : batch.P],
        position_ids=batch.position_ids[:, : batch.P],
        use_cache=True,
        logits_to_keep=1,  # only the keys and values are wanted: not a vocabulary row per token
    )
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def _padded(rows: list[list[int]], left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token rows padded to the longest, on the left or on the right."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        if r:
            ids[i, cols], mask[i, cols] = torch.tensor(r), 1
    return ids.to(device), mask.to(device)


def _shared_prompt_cache(model, batch: MaskedBatch) -> Prefix:
    """`prefix_cache` computing each distinct prompt once; None when no two rows share one."""
    device, P = batch.input_ids.device, batch.P
    first = batch.attention_mask[:, :P].argmax(-1).tolist()  # left padding: the first real column of each row
    ends = batch.cot_pos[:, 0].clamp(max=P).tolist()  # the prompt's end column (P when the split is there)
    ids = batch.input_ids[:, :P].tolist()
    prompts = [tuple(row[f:e]) for row, f, e in zip(ids, first, ends, strict=True)]
    unique = list(dict.fromkeys(prompts))
    if len(unique) == len(prompts):
        return None
    # 1. each distinct prompt once, left-padded to the longest
    u_ids, u_mask = _padded([list(u) for u in unique], left=True, device=device)
    out = model(
        input_ids=u_ids,
        attention_mask=u_mask,
        position_ids=(u_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,  # only the keys and values are wanted: not a vocabulary row per token
    )
    group = torch.tensor([unique.index(p) for p in prompts], device=device)
    layers = [(layer.keys[group], layer.values[group]) for layer in out.past_key_values.layers]
    # 2. every row's CoT part (right-padded) on top of its prompt's cache
    cot = [row[e:P] for row, e in zip(ids, ends, strict=True)]
    if any(cot):
        c_ids, c_mask = _padded(cot, left=False, device=device)
        start = torch.tensor([len(p) for p in prompts], device=device)
        out = model(
            input_ids=c_ids,
            attention_mask=torch.cat([u_mask[group], c_mask], dim=1),
            position_ids=start[:, None] + torch.arange(c_ids.shape[1], device=device),
            past_key_values=DynamicCache(ddp_cache_data=layers, config=model.config),
            use_cache=True,
            logits_to_keep=1,
        )
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    # 3. into the batch's columns: row b's column c holds its token c - first[b] (prompt, then CoT); the left
    # pads read any finite entry (they are masked)
    lp = u_ids.shape[1]
    shift = torch.tensor([lp - len(p) - f for p, f in zip(prompts, first, strict=True)], device=device)
    src = (torch.arange(P, device=device)[None, :] + shift[:, None]).clamp(min=0)

    def place(t: torch.Tensor) -> torch.Tensor:
        return torch.gather(t, 2, src[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))

    return [(place(k), place(v)) for k, v in layers]


def writable_prefix(prefix: Prefix, batch: MaskedBatch) -> Prefix:
    """The prefix laid out in buffers as wide as the batch: a forward over it writes its own keys and values into
    the columns after the split instead of copying the whole prefix per layer. For a loop of forwards over one
    batch (the learned mask's steps); each forward overwrites the last one's columns, so a graph must be used
    (backward) before the next forward runs."""
    if prefix is None:
        return None
    width = batch.input_ids.shape[1]

    def widen(t: torch.Tensor) -> torch.Tensor:
        out = t.new_zeros(*t.shape[:2], width, t.shape[3])
        out[:, :, : batch.P] = t
        return out

    return [(widen(k), widen(v)) for k, v in prefix]


class _PrefixLayer(DynamicLayer):
    """A cache layer that starts from a prefix without copying it (DynamicCache copies it once on construction
    and once more per update). With `past` set, keys/values are `writable_prefix` buffers: an update writes the
    new columns in place."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, past: int | None):
        super().__init__()
        self.keys, self.values, self.past = keys, values, past
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        if self.past is None:
            return super().update(key_states, value_states)
        end = self.past + key_states.shape[-2]
        # a fresh alias per forward: this forward's writes start a new autograd history
        keys, values = self.keys.detach(), self.values.detach()
        keys[:, :, self.past : end] = key_states
        values[:, :, self.past : end] = value_states
        return keys[:, :, :end], values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.keys.shape[-2] if self.past is None else self.past


def full_attention_only(model: PreTrainedModel) -> bool:
    """Every layer keeps a plain growing cache (no sliding window, chunked or linear-attention state)."""
    types, _ = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    return all(DYNAMIC_LAYER_TYPE_MAPPING.get(t) is DynamicLayer for t in types)


def _cache(model: PreTrainedModel, prefix: list, P: int) -> Cache:
    if full_attention_only(model):
        return Cache(layers=[_PrefixLayer(k, v, P if k.shape[2] > P else None) for k, v in prefix])
    # other layer kinds keep transformers' own cache layers (a sliding window trims what it keeps)
    return DynamicCache(ddp_cache_data=[(k[:, :, :P], v[:, :, :P]) for k, v in prefix], config=model.config)


def repeat_prefix(prefix: Prefix, b: int, n: int) -> Prefix:
    return (
        None
        if prefix is None
        else [(k[b : b + 1].expand(n, -1, -1, -1), v[b : b + 1].expand(n, -1, -1, -1)) for k, v in prefix]
    )


def masked_logprob(
    model: PreTrainedModel,
    batch: MaskedBatch,
    prefix: Prefix,
    bias: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """log p(target) per row (B,), under `bias` on the key columns (None: the unmodified model).

    `bias` is (B, T) over the batch's columns (`batch.spread` maps per-CoT-token values there): additive, it is
    added to the pre-softmax scores (dtype min removes a key); multiplicative (AtMan), 1 scales that key's scores
    by `factor`. `options` are `masked_forward`'s (use_cache, mode, factor, implementation, inputs_embeds), which
    also returns the model output.
    """
    return masked_forward(model, batch, prefix, bias, **options)[0]


def masked_forward(
    model: PreTrainedModel,
    batch: MaskedBatch,
    prefix: Prefix,
    bias: torch.Tensor | None = None,
    *,
    use_cache: bool = True,
    mode: str = "additive",
    factor: float = 0.1,
    implementation: str | None = None,
    inputs_embeds: torch.Tensor | None = None,
    output_attentions: bool = False,
    per_target: bool = False,
) -> tuple[torch.Tensor, Any]:
    """(log p(target) per row, the model output): `masked_logprob` plus the output, e.g. its attentions.

    With `use_cache` only the columns after the split are run, on a fresh cache built from `prefix` (fresh every
    call: the cache grows in place, and the prefix must stay the same for every optimisation step).
    `per_target`: the log-prob of each target token, (B, M) (0 at padding), instead of their sum.
    """
    P = batch.P if use_cache else 0
    kwargs: dict[str, Any] = dict(attention_mask=batch.attention_mask, position_ids=batch.position_ids[:, P:])
    if use_cache and prefix is not None:
        kwargs["past_key_values"] = _cache(model, prefix, batch.P)
    if inputs_embeds is not None:
        kwargs["inputs_embeds"] = inputs_embeds[:, P:]
    else:
        kwargs["input_ids"] = batch.input_ids[:, P:]
    # Logits only at rows that predict a target (row t-1 predicts token t); one index list for the whole batch.
    rows = batch.tgt_pos - 1 - P
    keep = torch.unique(rows) if batch.logit_cols is None else batch.logit_cols - P
    kwargs["logits_to_keep"] = keep
    if bias is None and implementation is None:
        out = model(**kwargs, output_attentions=output_attentions)
    else:
        if bias is None:
            bias = torch.zeros(batch.input_ids.shape, device=batch.input_ids.device)
        with manipulate(
            model,
            bias,
            query_start=batch.query_start,
            mode=mode,
            factor=factor,
            implementation=implementation,
            # the prefix is built without grad (prefix_cache), so no gradient can reach it
            past_constant="past_key_values" in kwargs and not any(k.requires_grad for k, _ in prefix),
        ):
            out = model(**kwargs, output_attentions=output_attentions)
    logits = out.logits[
        torch.arange(rows.shape[0], device=rows.device)[:, None], torch.searchsorted(keep, rows)
    ]
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch.tgt_ids[..., None])[..., 0]
    lp = lp * batch.tgt_valid
    return (lp if per_target else lp.sum(-1)), out


def variants_logprob(
    model: PreTrainedModel,
    batch: MaskedBatch,
    prefix: Prefix,
    b: int,
    values: torch.Tensor,
    *,
    chunk: int = 32,
    use_cache: bool = True,
    mode: str = "additive",
    factor: float = 0.1,
) -> torch.Tensor:
    """log p(target) of trace `b` under each row of `values` (V, N): one per-CoT-token bias per variant, run
    `chunk` variants per forward over the trace's cached prefix. The unit of leave-one-out, AtMan and the
    deletion/insertion curves."""
    out = []
    for lo in range(0, values.shape[0], chunk):
        part = values[lo : lo + chunk]
        sub = batch.repeat(b, part.shape[0])
        out.append(
            masked_logprob(
                model,
                sub,
                repeat_prefix(prefix, b, part.shape[0]),
                sub.spread(part),
                use_cache=use_cache,
                mode=mode,
                factor=factor,
            )
        )
    return torch.cat(out) if out else values.new_zeros(0)


def cuda_graph_step(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
    """(replay, first output): `fn` run once eagerly on a side stream (CUDA graphs need that warm-up; its output
    is returned, so the work is not wasted), then captured as a CUDA graph. `replay()` reruns the whole capture
    with one launch and returns its output tensor, which the next replay overwrites.

    `fn` must read only tensors whose storage stays put (update them in place between replays) and must never
    wait on the device (no .item(), no data-dependent shapes). If capture fails, replay is plain `fn`.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        first = fn().clone()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = fn()
    except RuntimeError as e:  # an op that cannot be captured: correctness first, speed second
        log.warning("CUDA graph capture failed, running eagerly: %s", str(e).splitlines()[0])
        return fn, first

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay, first


@contextmanager
def frozen(model: PreTrainedModel):
    """Eval mode and requires_grad=False on every weight for the block, restored afterwards.

    Gradients then reach only the mask (or the input embeddings), and no `.grad` is ever set on a weight, which
    matters when saliency runs inside a GRPO step on the live policy.
    """
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(training)
