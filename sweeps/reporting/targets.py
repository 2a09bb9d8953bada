"""The targets of the results page, decided from the pre-registered primary family (``sweeps.reporting.primary``)
with the rule the page states; three outcomes: met, not met, undecided (underpowered)."""

from __future__ import annotations

from dataclasses import dataclass

from sweeps.reporting.model import Report

MET, NOT_MET, UNDECIDED = "met", "not met", "undecided (underpowered)"


@dataclass
class TargetResult:
    name: str
    status: str        # MET | NOT_MET | UNDECIDED
    detail: str


def target_wins(report: Report) -> TargetResult:
    """Wins: the method ahead of each of ``over`` with Holm-adjusted p < alpha on >= min_tasks tasks (met);
    not met when even the tasks that could still become wins are too few (a powered negative or a loss);
    otherwise undecided."""
    head = report.headline
    pre = head.prereg
    over = " and of ".join(pre.wins_over)
    name = (f"{pre.wins_method} ({pre.student}) ahead of {over} with Holm-adjusted p < {pre.alpha:g} on ≥ "
            f"{pre.min_tasks} of {len(pre.tasks)} tasks")
    wins, could, lost, notes = [], [], [], []
    for task in pre.tasks:
        comps = [c for c in head.comparisons if c.task == task and c.a == pre.wins_method and c.b in pre.wins_over]
        if len(comps) == len(pre.wins_over) and all(c.ahead(pre) for c in comps):
            wins.append(task)
        elif len(comps) < len(pre.wins_over) or all(c.could_still_be_ahead(pre) for c in comps):
            could.append(task)
            notes += [(c.verdict(pre), f"{task} vs {c.b}") for c in comps if not c.ahead(pre)]
        else:
            lost.append(task)
    mdes = [f"{c.task} vs {c.b} {c.mde:.2f}" for c in head.comparisons
            if c.a == pre.wins_method and c.b in pre.wins_over and c.mde is not None]
    detail = (f"wins: {', '.join(wins) or 'none'}; could still be wins: {', '.join(could) or 'none'}; "
              f"decided against: {', '.join(lost) or 'none'}")
    if len(wins) >= pre.min_tasks:
        return TargetResult(name, MET, detail + ".")
    if len(wins) + len(could) < pre.min_tasks:
        return TargetResult(name, NOT_MET, detail + f"; no effect of {pre.smallest_effect:g} point or more was found "
                            f"where it could have been (MDE, points: {'; '.join(mdes) or 'n/a'}).")
    grouped = {v: [w for v2, w in notes if v2 == v] for v in dict.fromkeys(v for v, _ in notes)}
    text = "; ".join(f"{v}: {', '.join(ws)}" for v, ws in grouped.items())
    return TargetResult(name, UNDECIDED, detail + (f" ({text})." if text else "."))


def target_ratio(report: Report) -> TargetResult:
    """Ratio: the method's mean % of teacher over the tasks; a descriptive target read from the means (the
    95 % interval of that mean is shown next to it). Undecided while a cell is missing or has too few seeds."""
    from sweeps.reporting.primary import ratio_of_teacher

    head = report.headline
    pre = head.prereg
    name = (f"{pre.ratio_method} ({pre.student}) ≥ {pre.min_pct_of_teacher:g}% of teacher, mean over "
            f"{', '.join(pre.tasks)} (descriptive, from means)")
    pcts, avg, ci = ratio_of_teacher(head)
    per_task = ", ".join(f"{t} {pcts[t]:.2f}%" for t in pre.tasks if t in pcts)
    missing = [t for t in pre.tasks if t not in pcts]
    if missing:
        return TargetResult(name, UNDECIDED, f"no {pre.ratio_method}/{pre.student} cell or teacher for "
                            f"{', '.join(missing)}" + (f" (have: {per_task})" if per_task else ""))
    few = [f"{t} n = {head.cell(t, pre.ratio_method).n}" for t in pre.tasks
           if head.cell(t, pre.ratio_method).n < pre.min_seeds]
    interval = f", 95 % interval [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    detail = f"mean {avg:.2f}%{interval} ({per_task})"
    if few:
        return TargetResult(name, UNDECIDED, detail + f"; fewer than {pre.min_seeds} seeds: {', '.join(few)}")
    return TargetResult(name, MET if avg >= pre.min_pct_of_teacher else NOT_MET, detail)


def render_targets(report: Report) -> list[str]:
    lines = ["## Targets", "",
             "Decided from the primary family above with the stated rule; each is **met**, **not met** or "
             "**undecided (underpowered)**.", ""]
    for t in (target_ratio(report), target_wins(report)):
        lines.append(f"- **{t.status}** — {t.name}: {t.detail}")
    return lines + [""]
