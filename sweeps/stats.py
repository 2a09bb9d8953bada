"""Paired comparisons of seeds, Holm's correction over one declared family, and the minimum detectable
paired difference.

Runs of two methods with the same seed see the same data order and the same initialisation draws,
so a method difference is estimated from the per-seed differences (paired t-test, scipy), with a
95 % confidence interval of the mean difference. Which comparisons form the corrected family is not
decided here: the results page reads it from ``results/preregistration.yaml`` (``sweeps.reporting.prereg``);
every other comparison is exploratory and keeps its unadjusted p.

Zero spread: when every seed gives the same difference, the t statistic is undefined (the standard
error is 0); such a comparison has no p-value (never p = 0) and is reported as zero spread.

MDE: the smallest true mean paired difference a two-sided paired t-test at level ``alpha`` detects
with probability ``power``, from the observed spread ``sd`` of the differences and ``n`` pairs, by the
usual approximation (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n) (central t quantiles, not a
noncentral-t solve; it errs slightly small for n < 5). The page passes alpha / m (Bonferroni over the
family of m, the level of Holm's first step): conservative for the later steps.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05
ZERO_SPREAD = "zero spread (every seed differs by the same amount)"


@dataclass
class Paired:
    delta: float                 # mean of a - b over the common seeds (x100)
    lo: float | None             # 95 % confidence interval of delta (x100); None with < 2 pairs or no spread
    hi: float | None
    p: float | None              # two-sided paired t-test; None with < 2 pairs or no spread
    n: int                       # common seeds
    sd: float | None = None      # sample std of the per-seed differences (x100); None with < 2 pairs
    p_adj: float | None = None   # Holm-adjusted over its family (set by ``holm``); None = exploratory

    @property
    def zero_spread(self) -> bool:
        return self.sd is not None and self.p is None

    def text(self) -> str:
        """``+1.23 [-0.40, +2.86] (n=5 paired, p_adj=0.210)``; exploratory comparisons show ``p=`` (unadjusted)."""
        if self.zero_spread:
            return f"{self.delta:+.2f} (n={self.n} paired, {ZERO_SPREAD})"
        if self.lo is None:
            return f"{self.delta:+.2f} (n={self.n} paired)"
        p = f"p_adj={fmt_p(self.p_adj)}" if self.p_adj is not None else f"p={fmt_p(self.p)}"
        return f"{self.delta:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}] (n={self.n} paired, {p})"

    def significant(self, alpha: float = ALPHA) -> bool:
        p = self.p_adj if self.p_adj is not None else self.p
        return p is not None and p < alpha

    def verdict(self, up: str, down: str, alpha: float = ALPHA) -> str:
        if self.zero_spread:
            return ZERO_SPREAD
        if self.p is None:
            return "fewer than 2 paired seeds, noise unknown"
        if not self.significant(alpha):
            return "no significant difference"
        return up if self.delta > 0 else down


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def paired(a: dict[int, float], b: dict[int, float]) -> Paired:
    """Compare ``a`` and ``b`` (seed -> score) on their common seeds, in points (x100)."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [100.0 * (a[s] - b[s]) for s in seeds]
    n = len(diffs)
    if n == 0:
        return Paired(float("nan"), None, None, None, 0)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(mean, None, None, None, n)
    sd = statistics.stdev(diffs)
    if sd <= 1e-9 * max(1.0, abs(mean)):  # every seed gave the same difference: no spread to test against
        return Paired(mean, None, None, None, n, sd=0.0)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return Paired(mean, mean - half, mean + half, p, n, sd=sd)


def holm(items: list[Paired], family_size: int | None = None) -> None:
    """Set ``p_adj`` on every item with a p-value (Holm's step-down, monotone, capped at 1).

    ``family_size``: the number of hypotheses declared in the family (default: the items with a
    p-value). Declared comparisons without a p-value (missing runs, < 2 pairs, zero spread) still
    count: they are treated as untested with p = 1, which keeps the correction conservative.
    """
    tested = sorted((x for x in items if x.p is not None), key=lambda x: x.p)
    m = max(len(tested), family_size or 0)
    running = 0.0
    for rank, item in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * item.p))
        item.p_adj = running


def mde(d: Paired, alpha: float, power: float) -> float | None:
    """Minimum detectable mean paired difference (x100, same units as ``d.delta``) of a two-sided paired
    t-test at level ``alpha`` with probability ``power``, from the observed spread; None without one."""
    from scipy import stats

    if d.sd is None or d.sd == 0.0 or d.n < 2:
        return None
    df = d.n - 1
    return (float(stats.t.ppf(1 - alpha / 2, df)) + float(stats.t.ppf(power, df))) * d.sd / math.sqrt(d.n)
