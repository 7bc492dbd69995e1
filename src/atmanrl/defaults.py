"""Defaults that both the torch-free command line and the library read: one home for each.

`atmanrl --help` must not import torch, so what it shows (the default model, methods, the learned mask's presets)
lives here, and the library's modules import it from here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded SmolLM2-135M-Instruct (models.EMBEDDED)
# One default set of saliency methods for every command that scores CoTs: the AtManRL mask, its first-order
# approximation, and the random floor.
DEFAULT_METHODS = "learned,attention_gradient,random"

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
LEARNED_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's mask exactly: entries on every row after their column (CoT and answer rows), one H for
    # every layer and head (docs/paper.md says why these readings are the default).
    "paper": dict(PUBLISHED, rows="later", scope="all"),
    # The cheap approximation: the same objective, optimiser and read-outs with entries on the answer rows
    # only, so prompt and CoT keys/values are computed once (the cached-prefix path of every other mask).
    "paper_answer": dict(PUBLISHED, rows="answer", scope="answer", prefix_dtype="auto"),
    # atmanrl 0.2-0.4's "paper" preset, our reconstruction before the full text was known: an additive column
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


@dataclass
class SaliencyRewardConfig:
    """Every setting of the saliency reward (`rewards.SaliencyReward`), declared once, here.

    Recipes name a setting `saliency_<name>` (`recipe_key`); `reward_options: {saliency: {...}}` takes the names
    as they are. The `saliency` and `explain` commands take the variants' parameters (`VARIANT_PARAMS`) as flags.
    """

    variant: str = field(
        default="derived_share",
        metadata={
            "help": "derived_share (atmanrl's: needed_share, less for a CoT that states its answer before deriving "
            "it), needed_share (atmanrl 0.2-0.5's), paper (the published reward, docs/paper.md), paper_printed, "
            "paper_reenabled, salient_fraction, cot_reliance or concentration"
        },
    )
    method: str = field(default="learned", metadata={"help": "saliency method behind the reward"})
    steps: int | None = field(
        default=None,
        metadata={"help": "mask optimisation steps (default: the preset's: reward 15, paper 200)"},
    )
    method_options: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": 'the method\'s options, e.g. {"preset": "paper_answer"} or {"lr": 0.2, "lam": 1.0}'
        },
    )
    tau: float = field(default=0.5, metadata={"help": "salient_fraction: threshold on the score"})
    scale: float = field(
        default=5.0, metadata={"help": "cot_reliance: the gap (nats) that earns the full reward"}
    )
    margin: float = field(
        default=1.0,
        metadata={
            "help": "derived_share, needed_share: the CoT must raise log p(answer) by this many nats, else reward 0"
        },
    )
    support_margin: float = field(
        default=1.0,
        metadata={
            "help": "derived_share: the least support (nats) a CoT's first statement of its answer is compared "
            "with (the last statement's support, or this when that is smaller)"
        },
    )
    derived_support: float = field(
        default=3.0,
        metadata={
            "help": "derived_share: a first statement of the answer with this much support (nats) from the CoT "
            "before it counts as derived, whatever comes later"
        },
    )
    correct_only: bool = field(default=True, metadata={"help": "saliency reward for correct rollouts only"})
    min_reasoning_tokens: int = field(default=5, metadata={"help": "shorter CoTs get saliency 0"})
    batch_size: int | None = field(
        default=None, metadata={"help": "at most this many rollouts per saliency forward (unset: no cap)"}
    )
    token_budget: int | None = field(
        default=16384,
        metadata={
            "help": "rollouts x longest length per saliency forward: the whole step in one batch when it fits"
        },
    )


VARIANT_PARAMS = (
    "tau",
    "scale",
    "margin",
    "support_margin",
    "derived_support",
)  # what the variants read; flags of the saliency and explain commands


def recipe_key(name: str) -> str:
    """The recipe key of a `SaliencyRewardConfig` field (the names recipes have used since atmanrl 0.1)."""
    return {"min_reasoning_tokens": "min_reasoning_tokens", "method_options": "saliency_options"}.get(
        name, f"saliency_{name}"
    )
