"""Paired statistics for comparing controllers on the same evaluation seeds (scipy.stats underneath).

Every script and the evaluation protocol compare through here, so a figure means the same thing
everywhere. The decision is a pre-registered one-sided paired t-test (is `a` better than `b`?);
the Wilcoxon signed-rank test and wins out of n are reported beside it.

    cmp = paired(ppo_acc, heuristic_acc, a="ppo", b="heuristic")
    cmp.p_t < 0.05 and cmp.wins >= 8
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats


def mean_std(xs: Sequence[float], *, ignore_nan: bool = False) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value, NaN for none). NaN values
    propagate unless `ignore_nan` (e.g. episodes that ended before a test evaluation)."""
    x = np.asarray(xs, dtype=np.float64)
    if ignore_nan:
        x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


@dataclass(frozen=True)
class PairedComparison:
    a: str
    b: str
    n: int
    diff_mean: float          # mean of a − b over the pairs
    diff_std: float
    t: float
    p_t: float                # one-sided paired t-test, H1: a > b
    p_wilcoxon: float         # one-sided Wilcoxon signed-rank, H1: a > b (NaN when every pair ties)
    wins: int
    ties: int
    losses: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired(a_values: Sequence[float], b_values: Sequence[float], *, a: str = "a", b: str = "b") -> PairedComparison:
    """Compare `a` against `b` on the same seeds, in the same order."""
    x, y = np.asarray(a_values, dtype=np.float64), np.asarray(b_values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need the same seeds: got {x.shape} for {a!r} and {y.shape} for {b!r}")
    d = x - y
    mean, sd = mean_std(d)
    t = p_t = p_w = float("nan")
    if d.size > 1 and sd > 0:
        res = stats.ttest_rel(x, y, alternative="greater")
        t, p_t = float(res.statistic), float(res.pvalue)
    if d.size > 0 and np.any(d != 0):
        p_w = float(stats.wilcoxon(x, y, alternative="greater", zero_method="wilcox").pvalue)
    return PairedComparison(a, b, int(d.size), mean, sd, t, p_t, p_w, int((d > 0).sum()), int((d == 0).sum()),
                            int((d < 0).sum()))


def is_significant(cmp: PairedComparison, alpha: float = 0.05) -> bool:
    return not math.isnan(cmp.p_t) and cmp.p_t < alpha
