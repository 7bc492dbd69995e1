"""Saliency of chain-of-thought tokens for the answer: a registry of methods and one result type.

    traces = [Trace(prompt, reasoning="3 + 4 = 7, so", answer="\\n#### 7", target=(6, 7))]
    [sal] = compute_saliency(model, tokenizer, traces, method="learned")
    sal.show("heatmap.html")

Every method scores each CoT token by how much the answer's log-probability log p(A) depends on it; a high score
always means "important" (removing the token lowers log p(A)). Methods are built on the public core in
`masked.py` (log p(target) under a key mask, over a cached prefix): a new method subclasses `SaliencyMethod`,
implements `scores(model, batch: MaskedBatch, prefix, base_lp, removed_lp)` and registers with `@register`.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .attention import check_backend
from .errors import UserError
from .heatmap import CSS, render_cot  # the one renderer of saliency (it imports the core, not this module)
from .io import atomic_write_text
from .paper_mask import LAYERS, ROWS, learn_matrix
from .masked import (  # noqa: F401  (Trace, Token, content_mask and encode are part of this module's API too)
    PREFIX_DTYPES,
    Encoded,
    MaskedBatch,
    Prefix,
    Token,
    Trace,
    content_mask,
    cuda_graph_step,
    encode,
    encode_prompt,
    frozen,
    masked_forward,
    masked_logprob,
    prefix_cache,
    prefix_compute_dtype,
    repeat_prefix,
    variants_logprob,
    writable_prefix,
)

log = logging.getLogger(__name__)


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
    # suppressed_logprob: log p(target) with every CoT token removed from attention (the cot_reliance baseline)
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
        return cls(**{**d, "tokens": tokens})

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Saliency:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def top(self, k: int = 5, content_only: bool = True) -> list[tuple[Token, float]]:
        keep = content_mask(self.tokens) if content_only else [True] * len(self.tokens)
        ranked = sorted((s, i) for i, s in enumerate(self.scores) if keep[i])[::-1]
        return [(self.tokens[i], s) for s, i in ranked[:k]]

    def show(self, path: str | Path | None = None) -> str:
        """HTML heatmap of the CoT (`heatmap.render_cot`: red = needed, blue = negative); a self-contained page
        is written to `path` if given. Returns the fragment."""
        doc = (
            "<div style='font-family:monospace;white-space:pre-wrap;line-height:1.6'>"
            f"<div><b>{html.escape(self.method)}</b> log p(answer) = "
            f"{self.answer_logprob:.3f}</div>{render_cot(self.reasoning, self.tokens, self.scores)}</div>"
        )
        if path is not None:
            atomic_write_text(
                path, f"<!doctype html><meta charset='utf-8'><style>{CSS}</style><body>{doc}</body>"
            )
        return doc

    def _repr_html_(self) -> str:  # Jupyter
        return self.show()


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
        """
        raise NotImplementedError


# The absolute restore loss with a mean penalty and Adam, one hop: what the paper describes and atmanrl 0.1 ran.
ABSOLUTE_LOSS: dict[str, Any] = dict(normalize="none", penalty="mean", optimizer="adam", chain=False)
# The published mask (METHOD.md section 0; paper_mask.py): per-entry H, start -0.4, clamp <= 0, x10, the mean
# answer-token cross-entropy alone, AdamW (lr 1e-3, betas (0.6, 0.9999), weight decay 0.05), 200 steps.
PUBLISHED: dict[str, Any] = dict(
    form="matrix",
    parametrization="additive",
    init=-0.4,
    clamp_max=0.0,
    bias_scale=10.0,
    normalize="mean",
    lam=0.0,
    optimizer="adamw",
    lr=1e-3,
    betas=(0.6, 0.9999),
    weight_decay=0.05,
    steps=200,
    chain=False,
    layers="shared",
)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "learned": {
        # The paper's mask exactly: entries on every row after their column (CoT and answer rows), one H for
        # every layer and head (docs/paper.md says why these readings are the default).
        "paper": dict(PUBLISHED, rows="later", scope="all"),
        # The cheap approximation: the same objective, optimiser and read-outs with entries on the answer rows
        # only, so prompt and CoT keys/values are computed once (the cached-prefix path of every other mask).
        "paper_answer": dict(PUBLISHED, rows="answer", scope="answer", prefix_dtype="auto"),
        # atmanrl 0.1-0.4's "paper" preset, our reconstruction before the full text was known: an additive column
        # mask started at -0.4, 200 Adam steps restoring p(A) with a mean penalty.
        "additive_restore": dict(
            parametrization="additive", init=-0.4, steps=200, lr=0.1, lam=0.05, **ABSOLUTE_LOSS
        ),
        # atmanrl 0.1's defaults (collapses on confident traces, see docs/saliency.md).
        "v0.1": dict(parametrization="gate", init=0.5, steps=15, lr=0.2, lam=10.0, **ABSOLUTE_LOSS),
        # The saliency reward's mask (SaliencyReward uses it unless told otherwise): one hop, 15 steps. It measures
        # the share of the CoT the answer needs directly; validated as a reward in docs/saliency.md (reward
        # validity, non-collapse, direction) and costs a fixed number of passes, so distributed ranks stay in step.
        "reward": dict(chain=False, steps=15, lam=0.05, prefix_dtype="auto"),
        # The library default spelled out (atmanrl 0.2 called it "chained"): kept so scripts that name it still run.
        "chained": dict(chain=True, chain_by="leave_one_out", chain_top=3, steps=30, lam=0.3),
    }
}


@register
@dataclass
class Learned(SaliencyMethod):
    """AtManRL: learn one mask parameter per CoT token so that the answer's log-prob is restored.

    restore (default): minimise  -min(r(mask), target) + lam * penalty(g), r = the restored share of the gap
        r = (log p(A | mask) - log p(A | CoT removed)) / (log p(A | x, R) - log p(A | CoT removed))
        (normalize="gap"; normalize="none" uses -log p(A | mask), the absolute loss of atmanrl 0.1). With the gap,
        lam means the same thing on confident and unsure traces: a token stays open when its share of the gap
        outweighs the penalty (penalty="sum": lam per token; "mean": lam / |R|).
    delete:  start open, minimise  +r(mask) + lam * penalty(1 - g)  -> tokens whose removal hurts most close.
    Parametrisations (g in (0, 1] is how much attention the token keeps; score = g, "open" = needed):
      gate:     g = sigmoid(phi), bias = log g (reaches removal as phi -> -inf);
      linear:   g = sigmoid(phi), bias = max_bias * (g - 1), in [-max_bias, 0];
      additive: bias = theta (the paper's), g = exp(min(theta, 0)), score theta - init.
    Fixed number of steps: no data-dependent early stop (it would deadlock distributed training).
    The defaults are for attribution (which CoT tokens the answer stands on, one hop through the CoT included);
    the saliency reward uses `preset="reward"` (one hop, fewer steps). Named settings: `make_method("learned",
    preset="paper")` (see PRESETS).
    """

    method_name: ClassVar[str] = "learned"
    # Defaults from the study in docs/saliency.md (tuning splits of benchmarks/planted.py and reward_validity.py).
    parametrization: str = "linear"
    objective: str = "restore"
    normalize: str = "gap"
    penalty: str = "sum"
    # attribution: a sharper first pass (more steps, a higher penalty) closes the open distractors that would
    # otherwise become the chain's targets (planted tuning AUC 0.84 -> 0.93 with the chain; the reward keeps 15 / 0.05)
    steps: int = 30
    lr: float = 10.0  # sgd on the gap-normalised objective (adam: ~0.5)
    lam: float = 0.3
    # gate/linear: the initial g (0.9); additive: theta (restore -0.4, delete 0)
    init: float | None = None
    max_bias: float = 10.0  # linear only: the bias of a closed token (e^-10: removed)
    min_gap: float = 0.1  # gaps below this (nats) are normalised by it: such traces have nothing to restore
    # adam moves every gate ~lr per step whatever its gradient, so tokens with a weak pull open as far as strong
    # ones; sgd keeps the gradient's magnitudes (with normalize="gap" its step is still scale-free per trace),
    # which ranked padded CoTs below load-bearing ones more reliably in the study (docs/saliency.md).
    optimizer: str = "sgd"
    # restore objective: no credit for restoring more than this share of the gap, so once the kept tokens carry
    # it, every further token only costs -- redundant copies and filler close (a minimal sufficient subset).
    target: float = 0.9
    # warm start: shift each gate's start by its first gradient (scaled per trace to at most +-warm_start logits).
    # With adam every gate then moves by about the same steps, so tokens that close keep the gradient's order.
    warm_start: float = 0.0
    # chain: one more hop. The CoT tokens the answer needs most (up to chain_top, gate >= chain_min) become targets
    # themselves, and the tokens *they* need score decay * g_target * need (see `_chain`). It lifts the
    # computation behind a copied result ("6 * 7" behind "42"), which one hop cannot see. Off in the reward
    # preset: a data-dependent number of passes would break distributed lockstep. chain_by: how the hop measures
    # need -- "leave_one_out" (the drop share of the hop's own gap), "mask" (a learned mask per target) or
    # "gradient" (one attention-gradient pass).
    chain: bool = True
    chain_by: str = "leave_one_out"
    chain_top: int = 3
    chain_min: float = 0.5
    chain_decay: float = (
        0.9  # an indirect need counts a little less than a direct one: the copied result ranks first
    )
    # verify: check the first pass with leave-one-out. A token whose removal moves log p(A) by less than `verify`
    # of the trace's gap keeps only that share of its gate (score g * min(1, drop share / verify)). The mask can
    # leave a token open that the answer does not need (nothing pushes it shut once the target is reached);
    # leave-one-out sees that. 0: off (it did not raise planted tuning AUC over a sharper first pass, and cut
    # hit@1 on one family: docs/saliency.md). Costs one leave-one-out pass.
    verify: float = 0.0
    # On CUDA, capture one mask step as a CUDA graph and replay it (the step is launch-bound: thousands of small
    # kernels). Same arithmetic as the eager step (tests compare the scores); False: always eager.
    cuda_graph: bool = True
    # form: "column" (one parameter per CoT token, atmanrl's) or "matrix" (the published per-entry H:
    # paper_mask.py, `preset="paper"`). The options below are the matrix form's; it reads init, steps, lr,
    # optimizer, normalize ("mean": the mean answer-token cross-entropy, the published objective; "none": its sum)
    # and no penalty (lam must be 0).
    form: str = "column"
    rows: str = "later"  # matrix: query rows with entries: "later" (CoT and answer), "cot" or "answer"
    layers: str = "shared"  # matrix: one H for every layer and head, or "per_layer"
    bias_scale: float = 10.0  # matrix: H is multiplied by this before it is added
    clamp_max: float | None = 0.0  # matrix: H is clamped to <= this before scaling (None: no clamp)
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw
    weight_decay: float = 0.0  # adamw

    def __post_init__(self) -> None:  # a bad option fails when the method is built, before any model work
        choices = {
            "parametrization": ("gate", "linear", "additive"),
            "objective": ("restore", "delete"),
            "normalize": ("gap", "none"),
            "penalty": ("sum", "mean"),
            "optimizer": ("adam", "sgd", "adamw"),
            "chain_by": ("leave_one_out", "mask", "gradient"),
            "form": ("column", "matrix"),
            "rows": ROWS,
            "layers": LAYERS,
        }
        if self.form == "matrix":
            choices["normalize"] = ("mean", "none")
        else:
            choices["normalize"] = ("gap", "none")
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise UserError(
                    f"learned: {name} must be one of {'|'.join(valid)}, got {getattr(self, name)!r}"
                )
        if self.parametrization != "additive" and self.init is not None and not 0 < self.init < 1:
            raise UserError(f"learned: a gate init must lie in (0, 1), got {self.init}")
        if self.chain_top < 1 or not 0 < self.chain_decay <= 1:
            raise UserError(
                f"learned: chain_top must be >= 1 and chain_decay in (0, 1], got {self.chain_top}, {self.chain_decay}"
            )
        if not 0 <= self.verify <= 1:
            raise UserError(f"learned: verify must lie in [0, 1], got {self.verify}")
        if self.steps < 0 or self.lr <= 0:
            raise UserError(f"learned: steps must be >= 0 and lr > 0, got steps={self.steps}, lr={self.lr}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]  (JSON gives a list)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"learned: betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.form == "matrix":
            wanted = "answer" if self.rows == "answer" else "all"
            if self.scope != wanted:
                raise UserError(
                    f"learned: form='matrix' with rows={self.rows!r} runs scope={wanted!r} (the rows it changes "
                    f"must be run on every step), got scope={self.scope!r}"
                )
            if self.lam or self.chain or self.verify or self.objective != "restore":
                raise UserError(
                    "learned: form='matrix' is the published mask: the answer's cross-entropy alone (lam=0, "
                    "objective='restore'), without chain or verify"
                )
            if self.init is None or self.init >= 0:
                raise UserError(f"learned: form='matrix' needs a negative init (the published -0.4), got {self.init}")
        self._graphs: dict[tuple, _StepGraph] = {}  # captured steps by shape (CUDA); not an option

    def scores(self, model, batch, prefix, base_lp, removed_lp=None):
        if self.form == "matrix":
            return learn_matrix(self, model, batch, prefix)
        sigmoid_gate = self.parametrization in ("gate", "linear")
        restore = self.objective == "restore"
        init = self.init if self.init is not None else (0.9 if sigmoid_gate else (-0.4 if restore else 0.0))
        start = math.log(init / (1 - init)) if sigmoid_gate else init
        param = torch.full(
            batch.cot_valid.shape, float(start), device=batch.input_ids.device, requires_grad=True
        )
        floor = gap = None
        if self.normalize == "gap":
            if removed_lp is None:
                raise UserError(
                    "learned: normalize='gap' needs the removed log-prob (compute_saliency passes it)"
                )
            floor = removed_lp.detach().float()
            gap = (base_lp.detach().float() - floor).clamp(min=self.min_gap)
        if self.use_cache and self.steps:
            prefix = writable_prefix(
                prefix, batch
            )  # every step writes its columns in place: no prefix copies
        graph = self.cuda_graph and param.is_cuda and self.steps > 1 and not _sharded(model)
        entry = None
        if graph:
            # A step graph reads fixed storage: the batch, prefix and parameter live in buffers kept with the
            # graph, and a later batch of the same shapes copies itself in and replays it (no warm-up, no capture).
            key = _graph_key(model, batch, prefix, floor is not None)
            entry = self._graphs.get(key)
            if entry is not None and entry.model() is model:
                entry.inputs.load(batch, prefix, param, floor, gap)
            else:
                entry = _StepGraph(weakref.ref(model), _StepInputs.copy_of(batch, prefix, param, floor, gap))
                self._graphs.pop(key, None)
                while len(self._graphs) >= GRAPHS_KEPT:  # each holds its buffers and its graph's memory
                    self._graphs.pop(next(iter(self._graphs)))
                self._graphs[key] = entry
            batch, prefix, param, floor, gap = entry.inputs.unpack()
        valid = batch.cot_valid.float()
        if self.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD([param], lr=self.lr, momentum=0.5)
        elif self.optimizer == "adam":
            opt = torch.optim.Adam([param], lr=self.lr, betas=self.betas)
        else:
            opt = torch.optim.AdamW([param], lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        sign = 1.0 if restore else -1.0

        def objective_grad(clamp: bool) -> torch.Tensor:
            # every tensor read here belongs to `batch`, `prefix`, `param`, `floor` or `gap`: a captured step
            # replays on exactly those buffers, so nothing made outside may be closed over
            valid = batch.cot_valid.float()
            n_valid = valid.sum(-1).clamp(min=1)
            with torch.enable_grad():
                if self.parametrization == "gate":
                    g, values = torch.sigmoid(param), F.logsigmoid(param)
                elif self.parametrization == "linear":
                    g = torch.sigmoid(param)
                    values = self.max_bias * (g - 1)
                else:
                    g, values = torch.exp(param.clamp(max=0)), param
                lp = masked_logprob(model, batch, prefix, batch.spread(values), use_cache=self.use_cache)
                r = (lp - floor) / gap if self.normalize == "gap" else lp
                if clamp:
                    r = r.clamp(max=self.target)
                kept = ((g if restore else 1 - g) * valid).sum(-1)
                reg = kept / n_valid if self.penalty == "mean" else kept
                loss = (-sign * r + self.lam * reg).sum()  # summed: traces in a batch never interact
                (grad,) = torch.autograd.grad(loss, param)
            # A non-finite step (a trace whose answer log-prob overflows) must not poison the whole batch.
            return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

        clamp = self.normalize == "gap" and restore
        capture_at = int(bool(self.warm_start))  # a warm start's first step differs from the rest
        for step in range(self.steps):
            if entry is not None and entry.replay is not None and step >= capture_at:
                grad = entry.replay()
            elif entry is not None and step == capture_at:
                # Every step from here on is the same computation on the same storage: capture it once and
                # replay it (one launch per step instead of thousands).
                entry.replay, grad = cuda_graph_step(lambda: objective_grad(clamp))
            else:
                grad = objective_grad(clamp and not (step == 0 and self.warm_start))
            if step == 0 and self.warm_start:
                with torch.no_grad():  # graded start: the first gradient, scaled per trace to +-warm_start
                    scale = (grad.abs() * valid).amax(-1, keepdim=True).clamp(min=1e-12)
                    param -= self.warm_start * grad / scale * valid
            param.grad = grad
            opt.step()
        with torch.no_grad():
            s = torch.sigmoid(param) if sigmoid_gate else param - start
            return s if restore else (1 - s if sigmoid_gate else -s)


GRAPHS_KEPT = 4  # captured step graphs a Learned keeps (the least recently made goes first)


def _sharded(model) -> bool:
    """DeepSpeed ZeRO-3 gathers the weights into new buffers in every forward: a replayed graph would not see them."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def _graph_key(model, batch: MaskedBatch, prefix: Prefix, gap: bool) -> tuple:
    tensors = [batch.input_ids, batch.cot_valid, batch.tgt_pos, batch.logit_cols]
    kv = tuple(tuple(k.shape) + tuple(v.shape) for k, v in prefix) if prefix else None
    return (id(model), batch.P, batch.scope, *(tuple(t.shape) for t in tensors), kv, gap, str(model.dtype))


@dataclass
class _StepInputs:
    """Buffers a captured mask step reads: a new batch of the same shapes is copied into them."""

    batch: MaskedBatch
    prefix: Prefix
    param: torch.Tensor
    floor: torch.Tensor | None
    gap: torch.Tensor | None

    @classmethod
    def copy_of(cls, batch, prefix, param, floor, gap) -> _StepInputs:
        def own(t):
            return None if t is None else t.detach().clone()

        fields_ = {f.name: getattr(batch, f.name) for f in fields(batch)}
        batch = MaskedBatch(**{k: own(v) if isinstance(v, torch.Tensor) else v for k, v in fields_.items()})
        prefix = None if prefix is None else [(own(k), own(v)) for k, v in prefix]
        return cls(batch, prefix, param.detach().clone().requires_grad_(True), own(floor), own(gap))

    @torch.no_grad()
    def load(self, batch, prefix, param, floor, gap) -> None:
        for f in fields(batch):
            if isinstance(getattr(batch, f.name), torch.Tensor):
                getattr(self.batch, f.name).copy_(getattr(batch, f.name))
        for (k0, v0), (k, v) in zip(self.prefix or [], prefix or [], strict=True):
            k0.copy_(k)
            v0.copy_(v)
        self.param.copy_(param)
        for mine, new in ((self.floor, floor), (self.gap, gap)):
            if mine is not None:
                mine.copy_(new)

    def unpack(self):
        return self.batch, self.prefix, self.param, self.floor, self.gap


@dataclass
class _StepGraph:
    model: Callable[[], Any]  # weakref: a new model with the same id must never replay the old one's graph
    inputs: _StepInputs
    replay: Callable[[], torch.Tensor] | None = None


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


# ----------------------------------------------------------------------------- batched API


class Scored(NamedTuple):
    """What `score_encoded` returns for one batch; `extras` holds a method's per-trace read-outs, (B,) each."""

    scores: torch.Tensor  # (B, N) on the CPU
    base_lp: torch.Tensor  # log p(A)
    removed_lp: torch.Tensor  # log p(A | CoT removed)
    extras: dict[str, torch.Tensor]


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
        base_lp = masked_logprob(model, batch, prefix, None, use_cache=m.use_cache)
        removed = torch.full(batch.cot_valid.shape, torch.finfo(model.dtype).min, device=device)
        empty_lp = masked_logprob(model, batch, prefix, batch.spread(removed), use_cache=m.use_cache)
    out = m.scores(model, batch, prefix, base_lp, empty_lp)
    scores, extras = out if isinstance(out, tuple) else (out, {})
    return Scored(scores.detach().float().cpu(), base_lp, empty_lp, {k: v.detach().float().cpu() for k, v in extras.items()})


def _verify(
    m: Learned, model, encs: list[Encoded], scores: torch.Tensor, pad_id: int, device
) -> torch.Tensor:
    """The first pass checked by leave-one-out: g * min(1, drop share / m.verify) (see `Learned.verify`)."""
    share = _removal_share(model, encs, pad_id, device, m.scope, m.min_gap)
    return scores * (share / m.verify).clamp(max=1)


def _removal_share(
    model, encs: list[Encoded], pad_id: int, device, scope: str, min_gap: float
) -> torch.Tensor:
    """(B, N) in [0, 1]: how much of each trace's gap removing one CoT token costs (leave-one-out drop / gap)."""
    drop, base, empty, _ = score_encoded(LeaveOneOut(scope=scope), model, encs, pad_id, device)
    gap = (base - empty).float().cpu().clamp(min=min_gap)
    return (drop / gap[:, None]).clamp(0, 1)


def _chain(m: Learned, model, encs: list[Encoded], scores: torch.Tensor, pad_id: int, device) -> torch.Tensor:
    """One more hop: the CoT tokens the answer needs most become targets themselves.

    The answer usually copies a result ("42") and needs little of what computed it ("6 * 7 ="); the hop asks
    which earlier CoT tokens each needed token needs. Token i's score becomes max(g_i, max_j g_j * h_ji), where
    g_j is the first pass's gate of target j and h_ji in [0, 1] how much j needs i (chain_by): the chain of
    reasoning the answer stands on. Each target is its own short row whose one predicting row is all that runs.
    """
    hops: list[tuple[int, int]] = []  # (trace, CoT index of the target)
    rows: list[Encoded] = []
    for b, e in enumerate(encs):
        content = content_mask(e.tokens)
        need = sorted(
            (j for j in range(1, len(e.tokens)) if content[j] and scores[b, j] >= m.chain_min),
            key=lambda j: -float(scores[b, j]),
        )[: m.chain_top]
        for j in need:
            hops.append((b, j))
            rows.append(
                Encoded(
                    e.ids[: e.cot_start + j + 1],
                    e.cot_start,
                    e.tokens[:j],
                    e.cot_start + j,
                    [e.cot_start + j],
                )
            )
    if not rows:
        return scores
    if m.chain_by == "gradient":
        grad = score_encoded(AttentionGradient(), model, rows, pad_id, device).scores
        # scale-free per hop: the strongest pull is 1, pushes away are 0
        hop = (grad / grad.amax(-1, keepdim=True).clamp(min=1e-12)).clamp(min=0)
    elif m.chain_by == "leave_one_out":
        hop = _removal_share(model, rows, pad_id, device, "answer", m.min_gap)
    else:
        hop = score_encoded(m, model, rows, pad_id, device).scores
    out = scores.clone()
    for k, (b, j) in enumerate(hops):
        out[b, :j] = torch.maximum(out[b, :j], m.chain_decay * scores[b, j] * hop[k, :j])
    return out


def make_method(method: str, preset: str | None = None, **config) -> SaliencyMethod:
    """A configured method: its dataclass defaults, then the named `preset` (see PRESETS), then `config`."""
    cls = get_method(method)
    if preset is not None:
        presets = PRESETS.get(method, {})
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
            scores, base_lp, empty_lp, extras = score_encoded(m, model, encs, pad_id, device)
            if isinstance(m, Learned) and m.verify:
                scores = _verify(m, model, encs, scores, pad_id, device)
            if isinstance(m, Learned) and m.chain:
                scores = _chain(m, model, encs, scores, pad_id, device)
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
                    {"suppressed_logprob": float(empty_lp[b]), **{k: float(v[b]) for k, v in extras.items()}},
                )
    return [r for r in results if r is not None]
