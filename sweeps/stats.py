"""Paired comparisons of seeds and a Holm correction over the comparisons of a page.

Runs of two methods with the same seed see the same data order and the same initialisation draws,
so a method difference is estimated from the per-seed differences (paired t-test, scipy), with a
95 % confidence interval of the mean difference. A page makes many comparisons; Holm's step-down
correction keeps the chance of any false "ahead/behind" on the page at ``ALPHA``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05
RULE = ("Seeds are paired across methods (same seed = same data order); each comparison is the mean of "
        "the per-seed differences with its 95 % confidence interval (t distribution) and a two-sided "
        "paired t-test; the p-values of all comparisons on this page are Holm-adjusted together, and a "
        f"difference counts only when its adjusted p < {ALPHA:g}.")


@dataclass
class Paired:
    delta: float                 # mean of a - b over the common seeds (x100)
    lo: float | None             # 95 % confidence interval of delta (x100); None with < 2 pairs
    hi: float | None
    p: float | None              # two-sided paired t-test; None with < 2 pairs
    n: int                       # common seeds
    p_adj: float | None = None   # Holm-adjusted over the page (set by ``holm``)

    def text(self) -> str:
        if self.lo is None:
            return f"{self.delta:+.2f} (n={self.n} paired)"
        return (f"{self.delta:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}] (n={self.n} paired, "
                f"p_adj={_p(self.p_adj if self.p_adj is not None else self.p)})")

    def verdict(self, up: str, down: str) -> str:
        if self.p is None:
            return "fewer than 2 paired seeds, noise unknown"
        p = self.p_adj if self.p_adj is not None else self.p
        if p >= ALPHA:
            return "no significant difference"
        return up if self.delta > 0 else down


def _p(p: float | None) -> str:
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
        return Paired(mean, mean, mean, 0.0 if mean != 0 else 1.0, n)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return Paired(mean, mean - half, mean + half, p, n)


def holm(items: list[Paired]) -> None:
    """Set ``p_adj`` on every item with a p-value (Holm's step-down, monotone, capped at 1)."""
    tested = sorted((x for x in items if x.p is not None), key=lambda x: x.p)
    m, running = len(tested), 0.0
    for rank, item in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * item.p))
        item.p_adj = running
