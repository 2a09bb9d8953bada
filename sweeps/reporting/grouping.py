"""Grouping: export records into tables (one per task, teacher, budget and extra overrides), the primary
table of each task, sweep groups with their fANOVA importance, and gate rows.

A grid cell and a sweep trial are what ``sweeps.kinds`` says (the definition the ablation driver uses).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from lad.core.config import HOUSEKEEPING
from sweeps.kinds import is_grid_cell, is_pruned_trial, is_sweep_trial
from sweeps.reporting.model import (DEFAULT_TEACHER, MIN_IMPORTANCE_TRIALS, REPO, GateRow, Report, Row,
                                    SweepGroup, Table, budget_of, commit_of, experiment_of, extras_of, latest,
                                    method_rank, pick_teacher, score_of, sweep_label, task_rank, teacher_of, to_float,
                                    to_int, variant_text)


def build_report(records: list[dict], baselines: dict[str, dict] | None = None, prereg=None) -> Report:
    """Tables, primary flags and sweep groups from export records (any order); ``baselines``: task ->
    trivial baseline (``sweeps/baselines.py``), shown in every table of its task; ``prereg``: the
    pre-registered analysis (``sweeps.reporting.prereg.Prereg``; default: its defaults, nothing pinned),
    from which the headline and the primary family are built."""
    from sweeps.reporting.prereg import Prereg
    from sweeps.reporting.primary import build_headline

    all_records = records
    pruned = Counter((r["task"], sweep_label(r)) for r in records if is_pruned_trial(r) and r.get("student"))
    records = [r for r in records if r.get("status", "FINISHED") == "FINISHED"]
    teachers = defaultdict(list)
    for r in records:
        if r.get("entry") == "train_teacher" and score_of(r) is not None and not is_sweep_trial(r):
            teachers[(r["task"], r.get("teacher") or "")].append(r)
    groups = defaultdict(list)
    sweep_groups = defaultdict(list)
    for r in records:
        if score_of(r) is None or r.get("entry") != "distil" or not r.get("student"):
            continue
        if is_grid_cell(r):
            budget, _ = budget_of(r.get("params", {}))
            # housekeeping (what a run keeps, whether it times inference) leaves the model as it is: no new table
            trained = tuple(sorted(e for e in extras_of(r) if not e.startswith(HOUSEKEEPING)))
            groups[(r["task"], r.get("teacher") or "", budget, trained)].append(r)
        elif is_sweep_trial(r):
            sweep_groups[(r["task"], sweep_label(r))].append(r)
    # a table's overrides (its title, its Reproduce command) are its latest run's, housekeeping included
    tables = [make_table(task, teacher, budget, sorted(extras_of(latest(runs))), runs,
                         teachers.get((task, teacher), []))
              for (task, teacher, budget, _), runs in groups.items()]
    tables.sort(key=lambda t: t.key)
    mark_primary(tables)
    tables.sort(key=lambda t: (task_rank(t.task), not t.primary, t.key))  # each task opens with its primary
    sweeps = [SweepGroup(task, label, runs[0].get("main_metric") or "",
                         sorted(((score_of(r), r.get("params", {})) for r in runs),
                                key=lambda sp: (-sp[0], sorted(sp[1].items()))), pruned[(task, label)])
              for (task, label), runs in sweep_groups.items()]
    sweeps.sort(key=lambda g: (task_rank(g.task), g.label))
    if sweeps:
        dists = search_distributions()
        for g in sweeps:
            g.importance = param_importances(g, dists)
    # one row per (task, teacher, recipe): a teacher of `experiment=reference_<task>` is its own row, never
    # the task's teacher in place of the project recipe's (students find theirs by path: teacher_of)
    recipes = defaultdict(list)
    for (task, teacher), runs in teachers.items():
        for r in runs:
            recipes[(task, teacher, experiment_of(r))].append(r)
    latest_teachers = sorted((latest(runs) for runs in recipes.values()),
                             key=lambda r: (task_rank(r["task"]), r.get("teacher") or "", experiment_of(r)))
    # gate values and movement per table (one row per method/student, budget and variant: never a mix)
    report = Report(tables, sweeps, gate_rows([r for runs in groups.values() for r in runs]), latest_teachers,
                    dict(baselines or {}))
    for table in tables:
        table.trivial = report.trivial(table.task, table.main_metric)
    report.headline = build_headline([r for r in all_records if r.get("status", "FINISHED") == "FINISHED"], report,
                                     prereg or Prereg())
    return report


def gate_rows(records: list[dict]) -> dict[str, list[GateRow]]:
    """Mean gate value per teacher layer (metrics ``gate/layer_NN`` logged at the best eval)."""
    found: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if not is_grid_cell(r):
            continue
        metrics = r.get("metrics", {})
        vals = {int(k.rsplit("_", 1)[1]): float(v) for k, v in metrics.items() if k.startswith("gate/layer_")}
        moves = {int(k.rsplit("_", 1)[1]): float(v) for k, v in metrics.items() if k.startswith("gate/move/layer_")}
        if vals:
            budget = budget_of(r.get("params", {}))[0]
            variant = variant_text(extras_of(r))
            found[r["task"]][(r.get("method") or "", r.get("student") or "", budget, variant)].append((vals, moves))
    out = {}
    for task, groups in found.items():
        rows = []
        for key in sorted(groups, key=lambda k: (k[2], k[3], method_rank(k[0]), k[1])):
            method, student, budget, variant = key
            runs = groups[key]
            layers = sorted(set().union(*(v for v, _ in runs)))
            moved = sorted(set().union(*(m for _, m in runs)))
            rows.append(GateRow(f"{method}/{student} ({budget}{', ' + variant if variant else ''})", len(runs),
                                {l: statistics.fmean(v[l] for v, _ in runs if l in v) for l in layers},
                                {l: statistics.fmean(m[l] for _, m in runs if l in m) for l in moved}))
        out[task] = rows
    return out


def make_table(task: str, teacher: str, budget: str, extras: list[str], runs: list[dict],
               teacher_runs: list[dict]) -> Table:
    cells = defaultdict(list)
    for r in runs:
        cells[(r["method"], r["student"], r.get("seed"))].append(r)
    chosen = [latest(v) for _, v in sorted(cells.items(), key=lambda kv: str(kv[0]))]
    by_row = defaultdict(list)
    for r in chosen:
        by_row[(r["method"], r["student"])].append(r)
    linked = Counter(t["run_id"] for r in chosen if (t := teacher_of(r, teacher_runs)) is not None)
    if linked:  # the teacher run most of the table's students were distilled from
        t_run = next(t for t in teacher_runs if t["run_id"] == linked.most_common(1)[0][0])
    else:
        t_run = pick_teacher(teacher_runs, Counter(r.get("params", {}).get("teacher.path") for r in chosen))
    t_score = score_of(t_run) if t_run else None
    rows = []
    for (method, student), rs in by_row.items():
        params = Counter(to_int(r.get("params", {}).get("student.params")) for r in rs)
        speeds = [to_float(r.get("metrics", {}).get("train_examples_per_s")) for r in rs]
        speeds = [s for s in speeds if s is not None]
        row = Row(method, student, to_int(rs[0].get("params", {}).get("student.num_layers"), 0) or 0,
                  {r.get("seed") if r.get("seed") is not None else -1: score_of(r) for r in rs},
                  max(params, key=lambda p: (params[p], p or 0)),
                  statistics.fmean(speeds) if speeds else None,
                  commits=dict(Counter(commit_of(r) for r in rs)))
        if t_score:
            row.pct_teacher = 100.0 * row.mean / t_score
        rows.append(row)
    rows.sort(key=lambda r: (r.num_layers, r.student, method_rank(r.method)))
    t_params = Counter(to_int(r.get("params", {}).get("teacher.params")) for r in chosen)
    return Table(task=task, teacher=teacher, budget=budget, budget_args=budget_of(chosen[0].get("params", {}))[1],
                 main_metric=str(chosen[0].get("main_metric")), rows=rows, teacher_score=t_score,
                 teacher_params=max(t_params, key=lambda p: (t_params[p], p or 0)),
                 extras=extras, n_runs=len(chosen))


def mark_primary(tables: list[Table]) -> None:
    """One primary table per task, from one common setup where possible: the setup (teacher,
    budget, extra overrides) that covers the most tasks, then has the most rows, the most runs and
    the fewest extras. A task without a table of that setup ranks its own tables the same way."""
    def rank(rows: int, runs: int, teacher: str, budget: str, variant: str) -> tuple:
        return (-rows, -runs, len(variant.split()), teacher != DEFAULT_TEACHER, teacher, budget, variant)

    setups = defaultdict(list)
    by_task = defaultdict(list)
    for t in tables:
        setups[(t.teacher, t.budget, t.variant)].append(t)
        by_task[t.task].append(t)
    if not setups:
        return
    common = min(setups, key=lambda k: (-len(setups[k]), *rank(sum(len(t.rows) for t in setups[k]),
                                                               sum(t.n_runs for t in setups[k]), *k)))
    for task_tables in by_task.values():
        ranked = sorted(task_tables, key=lambda t: ((t.teacher, t.budget, t.variant) != common,
                                                    *rank(len(t.rows), t.n_runs, t.teacher, t.budget, t.variant)))
        ranked[0].primary = True


def primary_tables(report: Report) -> dict[str, Table]:
    return {t.task: t for t in report.tables if t.primary}


def summary_grid(report: Report) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Tasks (columns), method/student rows, and the tasks every row is present in."""
    prim = primary_tables(report)
    tasks = sorted(prim, key=task_rank)
    keys = {(r.method, r.student, r.num_layers) for t in prim.values() for r in t.rows}
    rows = [(m, s) for m, s, _ in sorted(keys, key=lambda k: (k[2], k[1], method_rank(k[0])))]
    # the rows present on the most tasks fix the tasks averaged over (a row run on one task only,
    # say a 2-layer student, must not shrink everyone's average to that task)
    coverage = {r: sum(prim[t].row(*r) is not None for t in tasks) for r in rows}
    core = [r for r in rows if coverage[r] == max(coverage.values(), default=0)]
    complete = [t for t in tasks if all(prim[t].row(m, s) is not None for m, s in core)]
    return tasks, rows, complete


def search_distributions() -> dict:
    """Search-space distributions by parameter, from every conf/hparams_search/*.yaml file."""
    from lad.search.trials import load_space

    out = {}
    for path in sorted((REPO / "conf" / "hparams_search").glob("*.yaml")):
        out.update(load_space(str(path)).distributions)
    return out


def param_importances(group: SweepGroup, dists: dict | None = None) -> dict[str, float]:
    """fANOVA importance (fixed seed, deterministic) of the searched parameters over a group's trials."""
    import optuna

    dists = search_distributions() if dists is None else dists
    values = {k: [to_float(p.get(k)) for _, p in group.trials] for k in dists}
    keys = [k for k, vs in values.items()
            if all(v is not None and dists[k].low <= v <= dists[k].high for v in vs) and len(set(vs)) > 1]
    if len(group.trials) < MIN_IMPORTANCE_TRIALS or not keys or len({score for score, _ in group.trials}) < 2:
        return {}  # fANOVA needs a few trials and some variance in the score
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    for i, (score, _) in enumerate(group.trials):
        study.add_trial(optuna.trial.create_trial(params={k: values[k][i] for k in keys},
                                                  distributions={k: dists[k] for k in keys}, value=score))
    imp = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {k: float(imp[k]) for k in sorted(imp)}
