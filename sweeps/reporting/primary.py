"""The pre-registered headline: one cell per (task, headline method) of the pre-registered student, the
primary family of paired comparisons (Holm over exactly those) with their minimum detectable differences,
and the learning curves.

Which runs: with ``headline_commit`` set, only grid cells recorded at that commit; per (task, method) the
setup (teacher, budget, extra overrides) with the most seeds (methods may differ in their tuned settings;
a cell never mixes setups). With ``headline_commit: null`` (not pinned yet) the cells come from each task's
main table (``grouping.mark_primary``), so that every comparison pairs runs of one setup.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sweeps.kinds import is_grid_cell, is_sweep_trial
from sweeps.reporting.grouping import primary_tables
from sweeps.reporting.model import (Report, SeedScores, budget_of, commit_of, experiment_of, extras_of, latest,
                                    pick_teacher, score_of, teacher_of, variant_text)
from sweeps.reporting.prereg import Prereg
from sweeps.stats import Paired, holm, mde, paired

CURVE_METHODS = ("ce", "kd", "lad")


@dataclass
class Cell(SeedScores):
    task: str
    method: str
    scores: dict[int, float]               # seed -> best dev main metric
    commits: dict[str, int]                # commit -> runs
    budget: str                            # budget of its runs
    variant: str                           # extra overrides of its runs ("" = none)
    teacher_paths: Counter = field(default_factory=Counter)
    teacher_runs: dict = field(default_factory=dict)  # seed -> the teacher run it was distilled from (None: unknown)
    teacher_scores: dict = field(default_factory=dict)  # teacher run id -> its score
    gate_moves: dict = field(default_factory=dict)  # seed -> largest relative change of a gate (runs with gates)


@dataclass
class Comparison:
    task: str
    a: str
    b: str
    diff: Paired | None                    # a - b, seeds paired, x100; None when a cell is missing
    mde: float | None = None               # minimum detectable paired difference (x100) at the page's power
    n_ok: bool = False                     # both cells have at least the required seeds
    unpaired: int = 0                      # seeds left out: their two runs had different teacher runs

    def verdict(self, pre: Prereg) -> str:
        d = self.diff
        if d is None or d.n == 0:
            return "no runs"
        if not self.n_ok:
            return f"undecided (n = {d.n} < {pre.min_seeds} seeds)"
        if d.zero_spread:
            return "undecided: zero spread (every seed differs by the same amount)"
        if d.p is None:
            return "undecided (fewer than 2 paired seeds)"
        if d.p_adj is not None and d.p_adj < pre.alpha:
            return f"{self.a} ahead" if d.delta > 0 else f"{self.a} behind"
        if self.mde is not None and self.mde <= pre.smallest_effect:
            return f"no difference of {pre.smallest_effect:g} point or more (powered)"
        return "undecided (underpowered)"

    def ahead(self, pre: Prereg) -> bool:
        return self.n_ok and self.diff is not None and self.diff.p_adj is not None \
            and self.diff.p_adj < pre.alpha and self.diff.delta > 0

    def could_still_be_ahead(self, pre: Prereg) -> bool:
        """Significantly ahead, or not decided yet: not significant with MDE above the smallest effect,
        fewer seeds than required, zero spread or no runs. Not: significantly behind, or a powered negative."""
        if self.ahead(pre):
            return True
        d = self.diff
        if d is None or not self.n_ok or d.p is None:
            return True
        if d.p_adj is not None and d.p_adj < pre.alpha:
            return False  # significantly behind
        return self.mde is None or self.mde > pre.smallest_effect


@dataclass
class Headline:
    prereg: Prereg
    cells: dict[tuple[str, str], Cell]     # (task, method) -> cell
    comparisons: list[Comparison]          # the primary family, in the pre-registered order
    teachers: dict[str, float]             # task -> teacher score of the headline cells
    metrics: dict[str, str]                # task -> main metric
    curves: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)  # task -> method -> mean curve
    against_lad: list = field(default_factory=list)  # exploratory arms paired against LAD (:func:`against_lad`)

    def cell(self, task: str, method: str) -> Cell | None:
        return self.cells.get((task, method))

    @property
    def commits(self) -> dict[str, int]:
        out: Counter = Counter()
        for c in self.cells.values():
            out.update(c.commits)
        return dict(out)


def _setup(record: dict) -> tuple[str, str, str]:
    budget = budget_of(record.get("params", {}))[0]
    return record.get("teacher") or "", budget, variant_text(extras_of(record))


def same_commit(commit: str, pinned: str) -> bool:
    return bool(commit) and (commit.startswith(pinned) or pinned.startswith(commit))


def headline_runs(records: list[dict], pre: Prereg) -> list[dict]:
    """Grid cells of the pre-registered student and tasks (of the headline commit when pinned)."""
    return [r for r in records if is_grid_cell(r) and r.get("student") == pre.student and r.get("task") in pre.tasks
            and score_of(r) is not None
            and (pre.headline_commit is None or same_commit(commit_of(r), pre.headline_commit))]


def pick_setup(runs: list[dict]) -> list[dict]:
    """The runs of the setup with the most seeds (ties: the latest run), latest run per seed."""
    by_setup = defaultdict(list)
    for r in runs:
        by_setup[_setup(r)].append(r)
    best = max(by_setup, key=lambda k: (len({r.get("seed") for r in by_setup[k]}),
                                        latest(by_setup[k]).get("start_time") or "", k))
    per_seed = defaultdict(list)
    for r in by_setup[best]:
        per_seed[r.get("seed")].append(r)
    return [latest(v) for _, v in sorted(per_seed.items(), key=lambda kv: str(kv[0]))]


def seed_of(record: dict) -> int:
    return record.get("seed") if record.get("seed") is not None else -1


def make_cell(task: str, method: str, runs: list[dict], teachers: list[dict] = ()) -> Cell:
    teacher, budget, variant = _setup(runs[0])
    used = {seed_of(r): teacher_of(r, list(teachers)) for r in runs}
    return Cell(task, method, {seed_of(r): score_of(r) for r in runs},
                dict(Counter(commit_of(r) for r in runs)), budget, variant,
                Counter(r.get("params", {}).get("teacher.path") for r in runs),
                {s: (t or {}).get("run_id") for s, t in used.items()},
                {t["run_id"]: score_of(t) for t in used.values() if t is not None},
                {seed_of(r): m for r in runs if (m := largest_gate_move(r)) is not None})


def largest_gate_move(record: dict) -> float | None:
    """The largest ||W - W0|| / ||W0|| over a run's gates at the end of training (None: no trained gates)."""
    moves = [v for k, v in record.get("metrics", {}).items() if k.startswith("gate/move/")]
    return max(moves) if moves else None


def task_teachers(records: list[dict], task: str) -> list[dict]:
    return [r for r in records if r.get("entry") == "train_teacher" and r.get("task") == task
            and r.get("status", "FINISHED") == "FINISHED" and score_of(r) is not None and not is_sweep_trial(r)]


def headline_cells(records: list[dict], report: Report, pre: Prereg) -> dict[tuple[str, str], Cell]:
    cells = {}
    if pre.headline_commit is None:
        prim = primary_tables(report)
        for task in pre.tasks:
            table = prim.get(task)
            if table is None:
                continue
            for method in pre.methods:
                row = table.row(method, pre.student)
                if row is not None:
                    cells[(task, method)] = Cell(task, method, dict(row.scores), dict(row.commits),
                                                 table.budget, table.variant)
        return cells
    runs = defaultdict(list)
    for r in headline_runs(records, pre):
        if r.get("method") in pre.methods:
            runs[(r["task"], r["method"])].append(r)
    return {key: make_cell(*key, pick_setup(rs), task_teachers(records, key[0])) for key, rs in runs.items()}


def teacher_scores(records: list[dict], report: Report, cells: dict, pre: Prereg) -> dict[str, float]:
    out = {}
    prim = primary_tables(report)
    for task in pre.tasks:
        if pre.headline_commit is None:
            score = prim[task].teacher_score if task in prim else None
        else:
            used: dict[str, float] = {}
            paths: Counter = Counter()
            for (t, _), c in cells.items():
                if t == task:
                    paths.update(c.teacher_paths)
                    used.update(c.teacher_scores)
            if used:  # the teachers the cells were distilled from (one per machine that ran them): their mean
                score = statistics.fmean(used.values())
            else:
                chosen = pick_teacher(task_teachers(records, task), paths)
                score = score_of(chosen) if chosen else None
        if score:
            out[task] = score
    return out


def primary_family(cells: dict, pre: Prereg) -> list[Comparison]:
    out = []
    for task in pre.tasks:
        for a, b in pre.primary:
            ca, cb = cells.get((task, a)), cells.get((task, b))
            if ca is None or cb is None:
                out.append(Comparison(task, a, b, None))
                continue
            # a pair counts only when both runs were distilled from the same teacher run (one machine)
            same = {s for s in set(ca.scores) & set(cb.scores)
                    if ca.teacher_runs.get(s) == cb.teacher_runs.get(s)}
            d = paired({s: ca.scores[s] for s in same}, {s: cb.scores[s] for s in same})
            out.append(Comparison(task, a, b, d, mde(d, pre.alpha_star, pre.power),
                                  n_ok=min(ca.n, cb.n, d.n) >= pre.min_seeds,
                                  unpaired=len(set(ca.scores) & set(cb.scores)) - len(same)))
    holm([c.diff for c in out if c.diff is not None], family_size=pre.family_size)
    return out


@dataclass
class Arm:
    """An exploratory comparison: LAD of one student against another arm of that student on the same task, seeds
    paired, unadjusted. ``arm`` is a method, or a method with its recipe (``lad (experiment=reference_rte)``)."""

    task: str
    student: str
    arm: str
    lad: Cell
    other: Cell
    diff: Paired                           # lad - other, x100
    other_teacher: int = 0                 # paired seeds whose two runs were distilled from different teacher runs


def arm_label(record: dict) -> str:
    exp = experiment_of(record)
    return str(record.get("method")) + (f" (experiment={exp})" if exp else "")


def against_lad(records: list[dict], pre: Prereg) -> list[Arm]:
    """Every arm that the primary family leaves out, against LAD of the same task and student: the exploratory
    methods (ce, the direct map), the other students' methods (2-layer kd, pkd) and the recipes
    (``experiment=reference_<task>``). Runs of the headline commit, and recipe runs of any commit (the
    reference row runs newer code; its cell names its commits). Per arm the setup with the most seeds."""
    runs = defaultdict(list)
    for r in records:
        if not (is_grid_cell(r) and score_of(r) is not None and r.get("task") in pre.tasks):
            continue
        if experiment_of(r) or pre.headline_commit is None or same_commit(commit_of(r), pre.headline_commit):
            runs[(r["task"], str(r.get("student")), arm_label(r))].append(r)
    primary = {b for a, b in pre.primary if a == "lad"}
    teachers = {task: task_teachers(records, task) for task in {t for t, _, _ in runs}}
    bases = {(t, s): make_cell(t, "lad", pick_setup(rs), teachers[t]) for (t, s, arm), rs in runs.items() if arm == "lad"}
    out = []
    for (task, student, arm), rs in sorted(runs.items(), key=lambda kv: kv[0]):
        lad = bases.get((task, student))
        if lad is None or arm == "lad" or (student == pre.student and arm in primary):
            continue
        other = make_cell(task, arm, pick_setup(rs), teachers[task])
        common = set(lad.scores) & set(other.scores)
        out.append(Arm(task, student, arm, lad, other, paired(lad.scores, other.scores),
                       sum(lad.teacher_runs.get(s) != other.teacher_runs.get(s) for s in common)))
    return out


def mean_curve(runs: list[dict]) -> list[tuple[int, float]]:
    """Mean dev value (x100) over runs at the evaluation steps every run has."""
    histories = [{int(step): float(v) for step, v in r.get("history") or []} for r in runs]
    histories = [h for h in histories if h]
    if not histories:
        return []
    steps = sorted(set.intersection(*(set(h) for h in histories)))
    return [(s, 100.0 * statistics.fmean(h[s] for h in histories)) for s in steps]


def last_gain(curve: list[tuple[int, float]]) -> float | None:
    """Points gained over a mean curve's last evaluation interval (None with fewer than 2 evaluations)."""
    return curve[-1][1] - curve[-2][1] if len(curve) >= 2 else None


def plateau(curves: dict[str, dict[str, list[tuple[int, float]]]],
            pre: Prereg) -> dict[str, dict[str, tuple[float | None, str]]]:
    """task -> method -> (points gained over the last evaluation interval, verdict): "plateau" (less than the
    smallest effect), "rising" (that much or more: the budget ends before the plateau) or "one evaluation"
    (no curve; the gain is None)."""
    out: dict = defaultdict(dict)
    for task, by_method in curves.items():
        for method, curve in by_method.items():
            gain = last_gain(curve)
            out[task][method] = (gain, "one evaluation" if gain is None
                                 else "plateau" if gain < pre.smallest_effect else "rising")
    return dict(out)


def curves(records: list[dict], pre: Prereg) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """task -> method -> mean learning curve of the headline student (runs with a recorded history)."""
    out: dict = defaultdict(dict)
    runs = defaultdict(list)
    for r in headline_runs(records, pre):
        if r.get("method") in CURVE_METHODS and r.get("history"):
            runs[(r["task"], r["method"])].append(r)
    for (task, method), rs in sorted(runs.items()):
        curve = mean_curve(pick_setup(rs))
        if curve:
            out[task][method] = curve
    return dict(out)


def build_headline(records: list[dict], report: Report, pre: Prereg) -> Headline:
    cells = headline_cells(records, report, pre)
    metrics = {t: m for t in pre.tasks
               if (m := next((r.get("main_metric") for r in records if r.get("task") == t and r.get("main_metric")),
                             None))}
    return Headline(pre, cells, primary_family(cells, pre), teacher_scores(records, report, cells, pre), metrics,
                    curves(records, pre), against_lad(records, pre))


def ratio_of_teacher(head: Headline) -> tuple[dict[str, float], float | None, tuple[float, float] | None]:
    """Per task: the target method's mean % of teacher; their mean over the tasks; and a 95 % interval of
    that mean from the seed spread (per-task variances of the mean added, t with the smallest n - 1 df).
    For the tasks of ``prereg.ratio_by_difference`` (metrics whose trivial baseline is 0: MCC, correlations,
    where a ratio is the share of the teacher's above-chance score) a seed's % of teacher is 100 minus its
    gap to the teacher in points: 100 + 100 * (score - teacher)."""
    from scipy import stats

    pre = head.prereg
    pcts, var, dfs = {}, 0.0, []
    for task in pre.tasks:
        cell, teacher = head.cell(task, pre.ratio_method), head.teachers.get(task)
        if cell is None or not teacher:
            continue
        if task in pre.ratio_by_difference:
            values = [100.0 + 100.0 * (cell.scores[s] - teacher) for s in sorted(cell.scores)]
        else:
            values = [100.0 * cell.scores[s] / teacher for s in sorted(cell.scores)]
        pcts[task] = statistics.fmean(values)
        if len(values) > 1:
            var += statistics.variance(values) / len(values)
            dfs.append(len(values) - 1)
    if len(pcts) < len(pre.tasks):
        return pcts, None, None
    k = len(pre.tasks)
    avg = statistics.fmean(pcts[t] for t in pre.tasks)
    if len(dfs) < k:
        return pcts, avg, None
    half = float(stats.t.ppf(0.975, min(dfs))) * math.sqrt(var) / k
    return pcts, avg, (avg - half, avg + half)
