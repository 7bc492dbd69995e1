"""Bootstrap intervals over problems, and rank correlations within groups: how atmanrl reports an effect.

    lo, hi = bootstrap_ci(values)                       # 95% interval of the mean over problems
    d, lo, hi = paired_diff_ci(a, b)                     # mean(a - b) over the same problems, with its interval
    m, lo, hi = seed_problem_ci(runs)                    # runs = per seed, per problem: seeds then problems
    d, lo, hi = seed_problem_diff_ci(runs_a, runs_b)     # the same for a difference, paired by seed and problem
    seeds_agree(runs_a, runs_b)                          # every seed's difference has the same sign
    rho, lo, hi = grouped_spearman(groups_x, groups_y)   # mean within-group rank correlation, with its interval

Problems are the unit of resampling: every model of a comparison is evaluated on the same problems, so the
difference between two arms is resampled in pairs. A statistic that is a ratio of sums (a share pooled over all
words of all CoTs) is resampled as such (`bootstrap_stat`). Seeded: the same inputs give the same interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

N_BOOT = 2000


def _percentiles(samples: list[float], level: float) -> tuple[float, float]:
    samples = sorted(samples)
    a = (1 - level) / 2
    lo = samples[int(math.floor(a * (len(samples) - 1)))]
    hi = samples[int(math.ceil((1 - a) * (len(samples) - 1)))]
    return lo, hi


def bootstrap_stat(
    rows: Sequence[Any],
    stat: Callable[[Sequence[Any]], float | None],
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None, float | None]:
    """(stat(rows), lo, hi): a percentile interval from resampling `rows` with replacement."""
    point = stat(rows) if rows else None
    if point is None:
        return None, None, None
    rng = random.Random(seed)
    n = len(rows)
    samples = []
    for _ in range(n_boot):
        v = stat([rows[rng.randrange(n)] for _ in range(n)])
        if v is not None and math.isfinite(v):
            samples.append(v)
    if not samples:
        return point, None, None
    return (point, *_percentiles(samples, level))


def mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def bootstrap_ci(values: Sequence[float], **kw: Any) -> tuple[float | None, float | None, float | None]:
    """(mean, lo, hi) of `values` (None entries dropped)."""
    return bootstrap_stat([v for v in values if v is not None], mean, **kw)


def paired_diff_ci(
    a: Sequence[float | None], b: Sequence[float | None], **kw: Any
) -> tuple[float | None, float | None, float | None]:
    """(mean(a - b), lo, hi) over the positions where both are defined (the same problem in both arms)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return bootstrap_ci([x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None], **kw)


def _seed_problem_mean(runs: Sequence[Sequence[float | None]], seeds: Sequence[int], problems: Sequence[int]):
    per_seed = [mean([x for p in problems if (x := runs[s][p]) is not None]) for s in seeds]
    return mean([m for m in per_seed if m is not None])


def seed_problem_ci(
    runs: Sequence[Sequence[float | None]], n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0
) -> tuple[float | None, float | None, float | None]:
    """(mean, lo, hi) of per-seed, per-problem values (`runs[s][p]`, None where undefined), resampling both
    sources of noise: seeds with replacement, then problems with replacement (the same problems for every drawn
    seed: the runs are evaluated on the same problems). With one seed it is the interval over problems alone."""
    if not runs or len({len(r) for r in runs}) != 1:
        raise ValueError("every seed needs a value (or None) for the same problems")
    n_seeds, n_problems = len(runs), len(runs[0])
    point = _seed_problem_mean(runs, range(n_seeds), range(n_problems))
    if point is None:
        return None, None, None
    rng = random.Random(seed)
    samples = []
    for _ in range(n_boot):
        seeds = [rng.randrange(n_seeds) for _ in range(n_seeds)]
        problems = [rng.randrange(n_problems) for _ in range(n_problems)]
        v = _seed_problem_mean(runs, seeds, problems)
        if v is not None:
            samples.append(v)
    return (point, *_percentiles(samples, level)) if samples else (point, None, None)


def _paired(
    runs_a: Sequence[Sequence[float | None]], runs_b: Sequence[Sequence[float | None]]
) -> list[list[float | None]]:
    """a - b per seed and problem (None where either is undefined); one run in `runs_b` (the base model) is
    paired with every seed of `runs_a`."""
    if len(runs_b) == 1:
        runs_b = list(runs_b) * len(runs_a)
    if len(runs_a) != len(runs_b):
        raise ValueError(f"paired runs need the same seeds, got {len(runs_a)} and {len(runs_b)}")
    return [
        [x - y if x is not None and y is not None else None for x, y in zip(a, b, strict=True)]
        for a, b in zip(runs_a, runs_b, strict=True)
    ]


def seed_problem_diff_ci(
    runs_a: Sequence[Sequence[float | None]], runs_b: Sequence[Sequence[float | None]], **kw: Any
) -> tuple[float | None, float | None, float | None]:
    """`seed_problem_ci` of a - b, paired by seed (seed s of every arm starts from the same seed) and problem.
    `runs_b` with one run (the base model) is compared with every seed of `runs_a`."""
    return seed_problem_ci(_paired(runs_a, runs_b), **kw)


def seeds_agree(
    runs_a: Sequence[Sequence[float | None]], runs_b: Sequence[Sequence[float | None]]
) -> bool | None:
    """Whether every seed's own mean difference a - b has the same sign (None with one seed). A percentile
    bootstrap over 3 seeds draws all three the same about 1 time in 9, so its seed part is narrow; a difference
    whose seeds disagree in sign is not called an effect, whatever its interval."""
    if len(runs_a) < 2:
        return None
    per_seed = [mean([d for d in run if d is not None]) for run in _paired(runs_a, runs_b)]
    if any(d is None or d == 0 for d in per_seed):
        return False
    return len({d > 0 for d in per_seed}) == 1


def excludes_zero(lo: float | None, hi: float | None) -> bool:
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def ranks(xs: Sequence[float]) -> list[float]:
    """Ranks 1..n with ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho; None when either side is constant (GRPO sees no difference to learn from)."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = mean(rx), mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def grouped_spearman(
    groups_x: Sequence[Sequence[float]], groups_y: Sequence[Sequence[float]], **kw: Any
) -> tuple[float | None, float | None, float | None, int]:
    """Mean within-group Spearman rho over the groups where both sides vary, its interval over groups, and how
    many groups counted. This is the direction GRPO's group-relative advantage pushes x when it rewards y."""
    rhos = [spearman(x, y) for x, y in zip(groups_x, groups_y, strict=True)]
    rhos = [r for r in rhos if r is not None]
    return (*bootstrap_ci(rhos, **kw), len(rhos))
