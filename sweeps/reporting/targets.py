"""The targets of the results page (issue targets), computed from each task's primary table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sweeps.reporting.grouping import primary_tables
from sweeps.reporting.model import TARGET_RATIO, TARGET_STUDENT, TARGET_TASKS, TARGET_WINS, Report


@dataclass
class TargetResult:
    name: str
    status: str        # met | not met | not enough data
    detail: str


def target_ratio(report: Report) -> TargetResult:
    prim = primary_tables(report)
    name = (f"3-layer LAD student ≥ {TARGET_RATIO:g}% of teacher, average over the five tasks "
            f"({', '.join(TARGET_TASKS)})")
    pcts, missing = {}, []
    for task in TARGET_TASKS:
        row = prim[task].row("lad", TARGET_STUDENT) if task in prim else None
        if row is None or row.pct_teacher is None:
            missing.append(task)
        else:
            pcts[task] = row.pct_teacher
    per_task = ", ".join(f"{t} {pcts[t]:.2f}%" for t in TARGET_TASKS if t in pcts)
    if missing:
        return TargetResult(name, "not enough data",
                            f"no lad/{TARGET_STUDENT} run or teacher run for: {', '.join(missing)}"
                            + (f" (have: {per_task})" if per_task else ""))
    avg = statistics.fmean(pcts[t] for t in TARGET_TASKS)
    status = "met" if avg >= TARGET_RATIO else "not met"
    return TargetResult(name, status, f"average {avg:.2f}% ({per_task})")


def target_wins(report: Report) -> TargetResult:
    prim = primary_tables(report)
    name = (f"LAD ≥ kd and ≥ pkd ({TARGET_STUDENT} students) on ≥ {TARGET_WINS} of "
            f"{len(TARGET_TASKS)} tasks ({', '.join(TARGET_TASKS)})")
    wins, losses, undecided = [], [], []
    for task in TARGET_TASKS:
        t = prim.get(task)
        rows = [t.row(m, TARGET_STUDENT) if t else None for m in ("lad", "kd", "pkd")]
        if any(r is None for r in rows):
            undecided.append(task)
        elif rows[0].mean >= rows[1].mean and rows[0].mean >= rows[2].mean:
            wins.append(task)
        else:
            losses.append(task)
    detail = (f"wins: {', '.join(wins) or 'none'}; losses: {', '.join(losses) or 'none'}; "
              f"missing lad/kd/pkd: {', '.join(undecided) or 'none'}")
    if len(wins) >= TARGET_WINS:
        return TargetResult(name, "met", detail)
    if len(wins) + len(undecided) < TARGET_WINS:
        return TargetResult(name, "not met", detail)
    return TargetResult(name, "not enough data", detail)


def render_targets(report: Report) -> list[str]:
    lines = ["## Targets", ""]
    for res in (target_ratio(report), target_wins(report)):
        lines.append(f"- **{res.status}** — {res.name}: {res.detail}.")
    lines.append("")
    return lines
