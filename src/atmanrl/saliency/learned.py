"""`learned`: the AtManRL mask, learned per CoT token (atmanrl's) or per entry (the published one, paper_mask.py),
with its optional second passes (verify, chain)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..defaults import LEARNED_PRESETS
from ..errors import UserError
from ..masked import (
    Encoded,
    MaskedBatch,
    Prefix,
    content_mask,
    cuda_graph_step,
    masked_logprob,
    writable_prefix,
)
from ..paper_mask import LAYERS, ROWS, learn_matrix
from .base import SaliencyMethod, register, score_encoded
from .gradient import AttentionGradient
from .perturbation import LeaveOneOut


@register
@dataclass
class Learned(SaliencyMethod):
    """AtManRL: learn one mask parameter per CoT token so that the answer's log-prob is restored.

    restore (default): minimise  -min(r(mask), restore_cap) + lam * penalty(g), r = the restored share of the gap
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
    presets: ClassVar[dict[str, dict[str, Any]]] = LEARNED_PRESETS
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
    restore_cap: float = 0.9
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
                raise UserError(
                    f"learned: form='matrix' needs a negative init (the published -0.4), got {self.init}"
                )
        self._graphs: dict[tuple, _StepGraph] = {}  # captured steps by shape (CUDA); not an option

    def optimizer_for(self, param: torch.Tensor) -> torch.optim.Optimizer:
        """The mask's optimiser (`optimizer`, `lr`, `betas`, `weight_decay`), for the column and matrix forms alike."""
        if self.optimizer == "sgd":
            return torch.optim.SGD([param], lr=self.lr, momentum=0.5)
        if self.optimizer == "adam":
            return torch.optim.Adam([param], lr=self.lr, betas=self.betas)
        return torch.optim.AdamW([param], lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)

    def refine(self, model, encs, scores, pad_id, device):
        if self.verify:
            scores = _verify(self, model, encs, scores, pad_id, device)
        if self.chain:  # a data-dependent number of passes: SaliencyReward refuses it with several processes
            scores = _chain(self, model, encs, scores, pad_id, device)
        return scores

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
        removed = gap = None
        if self.normalize == "gap":
            if removed_lp is None:
                raise UserError(
                    "learned: normalize='gap' needs the removed log-prob (compute_saliency passes it)"
                )
            removed = removed_lp.detach().float()
            gap = (base_lp.detach().float() - removed).clamp(min=self.min_gap)
        if self.use_cache and self.steps:
            prefix = writable_prefix(
                prefix, batch
            )  # every step writes its columns in place: no prefix copies
        graph = self.cuda_graph and param.is_cuda and self.steps > 1 and not _sharded(model)
        entry = None
        if graph:
            # A step graph reads fixed storage: the batch, prefix and parameter live in buffers kept with the
            # graph, and a later batch of the same shapes copies itself in and replays it (no warm-up, no capture).
            key = _graph_key(model, batch, prefix, removed is not None)
            entry = self._graphs.get(key)
            if entry is not None and entry.model() is model:
                entry.inputs.load(batch, prefix, param, removed, gap)
            else:
                entry = _StepGraph(
                    weakref.ref(model), _StepInputs.copy_of(batch, prefix, param, removed, gap)
                )
                self._graphs.pop(key, None)
                while len(self._graphs) >= GRAPHS_KEPT:  # each holds its buffers and its graph's memory
                    self._graphs.pop(next(iter(self._graphs)))
                self._graphs[key] = entry
            batch, prefix, param, removed, gap = entry.inputs.unpack()
        valid = batch.cot_valid.float()
        opt = self.optimizer_for(param)
        sign = 1.0 if restore else -1.0

        def objective_grad(clamp: bool) -> torch.Tensor:
            # every tensor read here belongs to `batch`, `prefix`, `param`, `removed` or `gap`: a captured step
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
                r = (lp - removed) / gap if self.normalize == "gap" else lp
                if clamp:
                    r = r.clamp(max=self.restore_cap)
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
    removed: torch.Tensor | None
    gap: torch.Tensor | None

    @classmethod
    def copy_of(cls, batch, prefix, param, removed, gap) -> _StepInputs:
        def own(t):
            return None if t is None else t.detach().clone()

        fields_ = {f.name: getattr(batch, f.name) for f in fields(batch)}
        batch = MaskedBatch(**{k: own(v) if isinstance(v, torch.Tensor) else v for k, v in fields_.items()})
        prefix = None if prefix is None else [(own(k), own(v)) for k, v in prefix]
        return cls(batch, prefix, param.detach().clone().requires_grad_(True), own(removed), own(gap))

    @torch.no_grad()
    def load(self, batch, prefix, param, removed, gap) -> None:
        for f in fields(batch):
            if isinstance(getattr(batch, f.name), torch.Tensor):
                getattr(self.batch, f.name).copy_(getattr(batch, f.name))
        for (k0, v0), (k, v) in zip(self.prefix or [], prefix or [], strict=True):
            k0.copy_(k)
            v0.copy_(v)
        self.param.copy_(param)
        for mine, new in ((self.removed, removed), (self.gap, gap)):
            if mine is not None:
                mine.copy_(new)

    def unpack(self):
        return self.batch, self.prefix, self.param, self.removed, self.gap


@dataclass
class _StepGraph:
    model: Callable[[], Any]  # weakref: a new model with the same id must never replay the old one's graph
    inputs: _StepInputs
    replay: Callable[[], torch.Tensor] | None = None


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
