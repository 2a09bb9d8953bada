"""Results page from the recorded runs: docs/results.md, results/summary.csv and docs/img/*.png.

    python sweeps/report.py                          # from MLflow (sqlite:///mlruns.db)
    python sweeps/report.py --source export          # from results/runs.jsonl (same output)
    python sweeps/report.py --tracking-uri sqlite:////tmp/abl/mlruns.db --out /tmp/abl/results.md \
        --csv /tmp/abl/summary.csv

Every number comes from FINISHED runs (the records of sweeps/export.py). Output is deterministic:
rows are sorted, floats have fixed formats, nothing depends on the time or on the source.

Tables: one per (task, teacher, budget, extra overrides) over top-level distil runs (Optuna sweep
children, which carry ``mlflow.parentRunId``, go to the sweep section instead). A cell (method,
student, seed) seen twice keeps its latest run. Scores are the best dev value of the task's main
metric, x100; "± std" is the sample standard deviation over seeds. "% of teacher" divides by the best dev score of the
task's latest FINISHED teacher run (the one whose ``teacher.path`` the students used, when known).
The cross-task summary, the targets and the gate table use each task's primary table, taken from one
common setup (teacher, budget, extra overrides) where possible: the setup present on the most tasks,
then with the most method/student rows, the most runs, the fewest extra overrides. The discussion
compares LAD with every other method of each table against seed noise, and each variant table
with the primary one.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from lad.fileio import write_text  # noqa: E402
from sweeps.export import DEFAULT_EXPORT, DEFAULT_URI, absolute_uri, load_mlflow_records, read_export  # noqa: E402
from sweeps.stats import RULE, Paired, holm, paired  # noqa: E402

def parse_overrides(tag: str) -> list[str]:
    """The ``lad.overrides`` tag: a JSON list (older runs: space-separated)."""
    import json

    try:
        value = json.loads(tag)
        if isinstance(value, list):
            return [str(v) for v in value]
    except ValueError:
        pass
    return tag.split()


GLUE_ORDER = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
METHOD_ORDER = ["lad", "lad-frozen", "lad_reverse", "lad_reverse-frozen", "mean", "attention", "lad-nogate",
                "pkd", "kd", "ce"]
TARGET_TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]
TARGET_RATIO = 97.0          # % of teacher, 3-layer LAD, averaged over TARGET_TASKS
TARGET_WINS = 3              # tasks where LAD >= kd and >= pkd (3-layer students)
TARGET_STUDENT = "3layer"
DEFAULT_TEACHER = "minilm_l6"
MIN_IMPORTANCE_TRIALS = 5    # finished trials a sweep group needs before fANOVA importance is shown
# extra overrides that do not change what a table compares (left out of its title and variant)
NEUTRAL = ("trainer.eval_every=", "trainer.log_every=", "trainer.ckpt_every=")
# overrides the ablation driver sets itself (the rest of a run's overrides were `extra`)
MANAGED = ("task=", "gate=", "loss=", "student=", "seed=", "trainer.max_steps=", "trainer.epochs=",
           "data.max_train_samples=", "trainer.progress=", "trainer.predict_test=", "trainer.resume=",
           "overwrite=", "mlflow.", "paths.", "hydra.", "device=", "trainer.num_threads=",
           "gate.frozen=")  # part of the method label (lad-frozen), not a table variant


# ----------------------------------------------------------------------------- model
@dataclass
class Row:
    method: str
    student: str
    num_layers: int
    scores: dict[int, float]               # seed -> best dev main metric
    student_params: int | None
    throughput: float | None               # mean train examples / s
    pct_teacher: float | None = None

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores[s] for s in sorted(self.scores))

    @property
    def std(self) -> float | None:
        values = [self.scores[s] for s in sorted(self.scores)]
        return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Table:
    task: str
    teacher: str
    budget: str
    budget_args: list[str]
    main_metric: str
    rows: list[Row]
    teacher_score: float | None
    teacher_params: int | None
    extras: list[str]                      # extra overrides shared by every run (sorted)
    n_runs: int
    primary: bool = False

    @property
    def key(self) -> tuple:
        return (task_rank(self.task), self.teacher, self.budget, tuple(self.extras))

    @property
    def variant(self) -> str:
        """The extra overrides that set this table apart from the others of its task, as text."""
        return " ".join(e for e in self.extras if not e.startswith(NEUTRAL))

    @property
    def slug(self) -> str:
        text = f"{self.task}-{self.teacher}-{self.budget}" + (f"-{self.variant}" if self.variant else "")
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace(", ", "-"))

    def row(self, method: str, student: str) -> Row | None:
        return next((r for r in self.rows if (r.method, r.student) == (method, student)), None)


@dataclass
class SweepGroup:
    task: str
    label: str
    main_metric: str
    trials: list[tuple[float, dict]]       # (score, params) of the finished trials
    pruned: int = 0                        # trials stopped by the pruner (no final score)
    importance: dict[str, float] = field(default_factory=dict)   # fANOVA share per searched parameter

    @property
    def method_budget(self) -> tuple[str, str]:
        """("method/student", "budget") from the label that ``sweep_label`` wrote."""
        method, _, budget = self.label.partition(", ")
        return method, budget


@dataclass
class GateRow:
    label: str                              # method/student
    n: int                                  # runs averaged
    values: dict[int, float]                # teacher layer -> mean gate value
    moves: dict[int, float] = field(default_factory=dict)  # teacher layer -> mean ||W - W0|| / ||W0||


@dataclass
class Report:
    tables: list[Table]
    sweeps: list[SweepGroup] = field(default_factory=list)
    gates: dict[str, list[GateRow]] = field(default_factory=dict)
    teachers: list[dict] = field(default_factory=list)      # latest teacher run per (task, teacher)


# ----------------------------------------------------------------------------- helpers
def task_rank(task: str) -> tuple:
    return (GLUE_ORDER.index(task), task) if task in GLUE_ORDER else (len(GLUE_ORDER), task)


def method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method), method) if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def to_int(value, default: int | None = None) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def to_float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def budget_of(params: dict) -> tuple[str, list[str]]:
    """Readable budget label and the matching ``sweeps/ablation.py`` arguments."""
    steps = to_int(params.get("trainer.max_steps"), -1)
    if steps is not None and steps > 0:
        label, args = f"max_steps={steps}", [f"budget.max_steps={steps}"]
    else:
        epochs = params.get("trainer.epochs", "?")
        label, args = f"epochs={epochs}", [f"budget.epochs={epochs}"]
    samples = params.get("data.max_train_samples", "None")
    if samples not in (None, "None", "null"):
        label += f", train={samples}"
        args.append(f"budget.max_train_samples={samples}")
    else:
        label += ", train=full"
    return label, args


def extras_of(record: dict) -> tuple[str, ...]:
    overrides = parse_overrides(str(record.get("tags", {}).get("lad.overrides", "")))
    return tuple(o for o in overrides if not o.lstrip("+~").startswith(MANAGED))


def score_of(record: dict) -> float | None:
    metric = record.get("main_metric")
    return to_float(record.get("metrics", {}).get(f"best/{metric}")) if metric else None


def latest(records: list[dict]) -> dict:
    return max(records, key=lambda r: (str(r.get("start_time") or ""), str(r.get("run_id"))))


def sweep_label(record: dict) -> str:
    return f"{record['method']}/{record['student']}, {budget_of(record.get('params', {}))[0]}"


def is_sweep_child(record: dict) -> bool:
    return bool(record.get("tags", {}).get("mlflow.parentRunId"))


def pick_teacher(teachers: list[dict], paths: Counter) -> dict | None:
    """Latest teacher run, preferring the teacher.path most of the students were distilled from."""
    if not teachers:
        return None
    for path, _ in sorted(paths.items(), key=lambda kv: (-kv[1], kv[0])):
        same = [t for t in teachers if t.get("params", {}).get("teacher.path") == path]
        if same:
            return latest(same)
    return latest(teachers)


# ----------------------------------------------------------------------------- building
def build_report(records: list[dict]) -> Report:
    """Tables, primary flags and sweep groups from export records (any order)."""
    pruned = Counter((r["task"], sweep_label(r)) for r in records
                     if r.get("status") == "KILLED" and r.get("tags", {}).get("optuna.state") == "PRUNED"
                     and is_sweep_child(r) and r.get("student"))
    records = [r for r in records if r.get("status", "FINISHED") == "FINISHED"]
    teachers = defaultdict(list)
    for r in records:
        if r.get("entry") == "train_teacher" and score_of(r) is not None and not is_sweep_child(r):
            teachers[(r["task"], r.get("teacher") or "")].append(r)
    groups = defaultdict(list)
    sweep_groups = defaultdict(list)
    for r in records:
        if r.get("entry") != "distil" or score_of(r) is None or not r.get("student"):
            continue
        if is_sweep_child(r):
            sweep_groups[(r["task"], sweep_label(r))].append(r)
            continue
        budget, _ = budget_of(r.get("params", {}))
        groups[(r["task"], r.get("teacher") or "", budget, tuple(sorted(extras_of(r))))].append(r)
    tables = [make_table(task, teacher, budget, list(extras), runs, teachers.get((task, teacher), []))
              for (task, teacher, budget, extras), runs in groups.items()]
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
    latest_teachers = sorted((latest(runs) for runs in teachers.values()),
                             key=lambda r: (task_rank(r["task"]), r.get("teacher") or ""))
    # gate values and movement per table (one row per method/student, budget and variant: never a mix)
    return Report(tables, sweeps, gate_rows([r for runs in groups.values() for r in runs]), latest_teachers)


def render_teachers(report: Report) -> list[str]:
    if not report.teachers:
        return []
    lines = ["## Teachers", "",
             "Best dev score of the latest finished teacher fine-tuning run per task (x100).", "",
             "| task | teacher | main metric | best dev | budget | command |", "|---|---|---|---:|---|---|"]
    for r in report.teachers:
        params = r.get("params", {})
        budget, _ = budget_of(params)
        cmd = f"python train_teacher.py task={r['task']} teacher={r.get('teacher') or DEFAULT_TEACHER}"
        steps = to_int(params.get("trainer.max_steps"), -1)
        if steps is not None and steps > 0:
            cmd += f" trainer.max_steps={steps}"
        lines.append(f"| {r['task']} | {r.get('teacher') or ''} | {r.get('main_metric')} | "
                     f"{100.0 * score_of(r):.2f} | {budget} | `{cmd}` |")
    return lines + [""]


def gate_rows(records: list[dict]) -> dict[str, list[GateRow]]:
    """Mean gate value per teacher layer (metrics ``gate/layer_NN`` logged at the best eval)."""
    found: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("entry") != "distil" or is_sweep_child(r):
            continue
        metrics = r.get("metrics", {})
        vals = {int(k.rsplit("_", 1)[1]): float(v) for k, v in metrics.items() if k.startswith("gate/layer_")}
        moves = {int(k.rsplit("_", 1)[1]): float(v) for k, v in metrics.items() if k.startswith("gate/move/layer_")}
        if vals:
            budget = budget_of(r.get("params", {}))[0]
            variant = " ".join(e for e in sorted(extras_of(r)) if not e.startswith(NEUTRAL))
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


def render_gates(report: Report, image_for: dict[str, str]) -> list[str]:
    if not report.gates:
        return []
    lines = ["## Gate values", "",
             "Mean highway-gate value g_l per teacher layer l (the weight of H_l against the aggregate "
             "of the layers below it; the anchor layer is 1 by definition), on a fixed probe batch of "
             "training examples at each run's best dev evaluation, averaged over seeds; one row per "
             "method/student, budget and variant.", ""]
    for task in sorted(report.gates, key=task_rank):
        rows = report.gates[task]
        layers = sorted(set().union(*(r.values for r in rows)))
        lines += [f"### {task}", "", "| method/student | n | " + " | ".join(f"layer {l}" for l in layers) + " |",
                  "|---|---:|" + "---:|" * len(layers)]
        for r in rows:
            cells = [f"{r.values[l]:.3f}" if l in r.values else "" for l in layers]
            lines.append(f"| {r.label} | {r.n} | " + " | ".join(cells) + " |")
        lines.append("")
        moved = [r for r in rows if r.moves]
        if moved:
            lines += ["How far each gate's weights moved from their random init by the end of training "
                      "(||W - W0|| / ||W0||, %; 0 for frozen gates):", "",
                      "| method/student | n | " + " | ".join(f"layer {l}" for l in layers) + " |",
                      "|---|---:|" + "---:|" * len(layers)]
            for r in moved:
                cells = [f"{100 * r.moves[l]:.2f}" if l in r.moves else "" for l in layers]
                lines.append(f"| {r.label} | {r.n} | " + " | ".join(cells) + " |")
            lines.append("")
        if task in image_for:
            lines += [f"![{task} gate values]({image_for[task]})", ""]
    return lines


def plot_gates(task: str, rows: list[GateRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(set().union(*(r.values for r in rows)))
    grid = [[r.values.get(l, float("nan")) for l in layers] for r in rows]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(layers), 0.9 + 0.45 * len(rows)))
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), [str(l) for l in layers])
    ax.set_yticks(range(len(rows)), [r.label for r in rows])
    ax.set_xlabel("teacher layer")
    ax.set_title(f"{task}: mean gate value")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def make_table(task: str, teacher: str, budget: str, extras: list[str], runs: list[dict],
               teacher_runs: list[dict]) -> Table:
    cells = defaultdict(list)
    for r in runs:
        cells[(r["method"], r["student"], r.get("seed"))].append(r)
    chosen = [latest(v) for _, v in sorted(cells.items(), key=lambda kv: str(kv[0]))]
    by_row = defaultdict(list)
    for r in chosen:
        by_row[(r["method"], r["student"])].append(r)
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
                  statistics.fmean(speeds) if speeds else None)
        if t_score:
            row.pct_teacher = 100.0 * row.mean / t_score
        rows.append(row)
    rows.sort(key=lambda r: (r.num_layers, r.student, method_rank(r.method)))
    t_params = Counter(to_int(r.get("params", {}).get("teacher.params")) for r in chosen)
    return Table(task=task, teacher=teacher, budget=budget, budget_args=budget_of(chosen[0].get("params", {}))[1],
                 main_metric=str(chosen[0].get("main_metric")), rows=rows, teacher_score=t_score,
                 teacher_params=max(t_params, key=lambda p: (t_params[p], p or 0)),
                 extras=extras, n_runs=len(chosen))


# ----------------------------------------------------------------------------- summary, targets
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


# ----------------------------------------------------------------------------- discussion
@dataclass
class Comparison:
    task: str
    student: str
    other: str
    diff: Paired                  # lad - other, seeds paired, x100

    @property
    def verdict(self) -> str:
        return self.diff.verdict("LAD ahead", "LAD behind")


def comparisons(table: Table, method: str = "lad") -> list[Comparison]:
    """LAD against every other method of the same student in one table (seeds paired)."""
    out = []
    for row in table.rows:
        if row.method != method:
            continue
        for other in table.rows:
            if other.student == row.student and other.method != method:
                out.append(Comparison(table.task, row.student, other.method, paired(row.scores, other.scores)))
    return out


def variant_pairs(report: Report) -> list[tuple[Table, Table]]:
    """(base, variant) tables of one task, teacher and budget where the variant adds extra overrides to
    the base: the base is the table whose overrides are the largest proper subset of the variant's."""
    out = []
    for t in report.tables:
        mine = set(t.variant.split())
        bases = [b for b in report.tables
                 if b is not t and (b.task, b.teacher, b.budget) == (t.task, t.teacher, t.budget)
                 and set(b.variant.split()) < mine]
        if bases:
            out.append((max(bases, key=lambda b: (len(b.variant.split()), b.variant)), t))
    return out


@dataclass
class Discussion:
    """Every comparison the page makes, Holm-adjusted together."""

    tables: list[tuple[Table, list[Comparison]]]
    variants: list[tuple[Table, Table, list[tuple[str, Paired]]]]


def discussion(report: Report) -> Discussion:
    tables = [(t, comps) for t in report.tables if (comps := comparisons(t))]
    variants = []
    for base, var in variant_pairs(report):
        items = [(f"{row.method}/{row.student}", paired(row.scores, ref.scores)) for row in var.rows
                 if (ref := base.row(row.method, row.student)) is not None]
        if items:
            variants.append((base, var, items))
    holm([c.diff for _, comps in tables for c in comps] + [d for _, _, items in variants for _, d in items])
    return Discussion(tables, variants)


def comparison_lines(report: Report, disc: Discussion | None = None) -> list[str]:
    """One bullet per table with a LAD row: LAD minus each other method (paired seeds, Holm-adjusted p)."""
    disc = disc or discussion(report)
    return [f"- **{t.task}** ({t.budget}{', ' + t.variant if t.variant else ''}{', primary' if t.primary else ''}): "
            + "; ".join(f"LAD vs {c.other} ({c.student}) {c.diff.text()}: {c.verdict}" for c in comps) + "."
            for t, comps in disc.tables]


def hyperparameter_lines(report: Report) -> list[str]:
    """The searched parameters the primary tables set by hand, next to each search's best value."""
    lines = []
    for variant in sorted({t.variant for t in report.tables if t.primary and t.variant}):
        pairs = dict(item.split("=", 1) for item in variant.split())
        groups = [(g, [k for k in sorted(pairs) if len({p.get(k) for _, p in g.trials}) > 1])
                  for g in report.sweeps if len(g.trials) + g.pruned >= MIN_IMPORTANCE_TRIALS]
        groups = [(g, keys) for g, keys in groups if keys]  # the group searched one of these parameters
        if not groups:
            continue
        tasks = [t.task for t in report.tables if t.primary and t.variant == variant]
        best = ["{} {}: {}".format(g.task, g.method_budget[0], ", ".join(
                    f"{k} {_num(g.trials[0][1].get(k))}" for k in keys)) for g, keys in groups]
        lines.append(f"- Primary tables of {', '.join(tasks)} set `{variant}` for every method; the best trial "
                     f"of each search (≥ {MIN_IMPORTANCE_TRIALS} trials, see the sweep section) had "
                     + "; ".join(best) + ".")
    return lines


def variant_lines(report: Report, disc: Discussion | None = None) -> list[str]:
    """One bullet per variant table: variant minus its base table, per method/student (paired seeds)."""
    disc = disc or discussion(report)
    lines = []
    for base, var, items in disc.variants:
        added = " ".join(sorted(set(var.variant.split()) - set(base.variant.split())))
        against = f" (on top of `{base.variant}`)" if base.variant else ""
        lines.append(f"- **{var.task}**, `{added}`{against}: " + "; ".join(
            f"{label} {d.text()} ({d.verdict('better', 'worse')})" for label, d in items) + ".")
    return lines


def render_discussion(report: Report) -> list[str]:
    """Effect sizes against seed noise, variants against the default, and what differs from the paper."""
    lines = ["## Discussion", "", f"Generated from the tables above. {RULE} Differences are in points (x100).", ""]
    disc = discussion(report)
    lines += comparison_lines(report, disc) or ["- No table has a LAD row next to another method yet."]
    lines.append("")
    variants = variant_lines(report, disc)
    if variants:
        lines += ["Variants (same task, teacher and budget; difference = table with the added overrides − table "
                  "without them, same method and student):", ""] + variants + [""]
    hparams = hyperparameter_lines(report)
    if hparams:
        lines += ["Hyper-parameters:", ""] + hparams + [""]
    lines += ["What differs from the paper (Lin, Chen, Kao, Sensors 2023):", "",
              "- Teacher: all-MiniLM-L6-v2 (6 layers, hidden 384, a sentence-embedding model) fine-tuned here, "
              "not a 12-layer bert-base; the students keep 2 or 3 of its 6 layers, so there are fewer "
              "teacher layers for the gates to aggregate.",
              "- Budget: CPU-only training capped at the step budgets named in each table heading, far "
              "shorter than the paper's epochs, with default or briefly searched hyper-parameters.",
              "- Seeds: means and spreads come from the seeds listed in each table; RTE and MRPC dev sets are "
              "small, so single-point differences are usually noise.", ""]
    lines += render_published()
    return lines


def render_published(path: Path | None = None) -> list[str]:
    """Published 6-layer students of bert-base teachers (sweeps/published.yaml), for context only."""
    import yaml

    path = path or REPO / "sweeps" / "published.yaml"
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text())
    tasks = [t for t in TARGET_TASKS if any(t in m["scores"] for m in data["models"])]
    lines = ["Published numbers, **different setup** (12-layer bert-base teachers, 6-layer students "
             "with hidden size 768, full GPU training); quoted from the papers for context only, not "
             "comparable with the tables above:", "",
             "| model | split | " + " | ".join(tasks) + " | source |", "|---|---|" + "---:|" * len(tasks) + "---|"]
    for m in data["models"]:
        cells = [str(m["scores"].get(t, "–")) for t in tasks]
        lines.append(f"| {m['name']} | {m['split']} | " + " | ".join(cells) + f" | {m['source']} |")
    return lines + ["", data.get("note", "").strip(), ""] if data.get("note") else lines + [""]


# ----------------------------------------------------------------------------- rendering
def pct(score: float | None) -> str:
    return "–" if score is None else f"{100.0 * score:.2f}"


def mean_std(row: Row) -> str:
    return f"{100.0 * row.mean:.2f}" + ("" if row.std is None else f" ± {100.0 * row.std:.2f}")


def fmt_params(n: int | None) -> str:
    return "–" if not n else f"{n / 1e6:.1f}M"


def quote(arg: str) -> str:
    return f"'{arg}'" if re.search(r"[\[\]{}*?\"'\s,]", arg) else arg


def ablation_command(table: Table) -> str:
    methods = list(dict.fromkeys(r.method for r in sorted(table.rows, key=lambda r: method_rank(r.method))))
    students = list(dict.fromkeys(r.student for r in table.rows))
    seeds = sorted({s for r in table.rows for s in r.scores})
    args = [f"task={table.task}", f"methods=[{','.join(methods)}]", f"students=[{','.join(students)}]",
            f"seeds=[{','.join(map(str, seeds))}]", *table.budget_args]
    if table.extras:
        args.append("extra=[" + ",".join(f'"{e}"' for e in table.extras) + "]")
    return "python sweeps/ablation.py " + " ".join(quote(a) for a in args)


def teacher_command(table: Table) -> str:
    extra = f" --teacher {table.teacher}" if table.teacher and table.teacher != DEFAULT_TEACHER else ""
    return f"python sweeps/teachers.py --tasks {table.task}{extra}"


def render_table(table: Table, image: str | None) -> list[str]:
    metric = table.main_metric
    lines = [f"### {table.task.upper()} — teacher {table.teacher}, {table.budget}"
             + (f", {table.variant}" if table.variant else "") + (" (primary)" if table.primary else ""), ""]
    lines += [f"| method | student | params | n | dev {metric} (mean ± std) | % of teacher |",
              "|---|---|---:|---:|---:|---:|"]
    if table.teacher_score is not None:
        lines.append(f"| teacher | {table.teacher} | {fmt_params(table.teacher_params)} | 1 | "
                     f"{pct(table.teacher_score)} | 100.00 |")
    for r in table.rows:
        rel = "–" if r.pct_teacher is None else f"{r.pct_teacher:.2f}"
        lines.append(f"| {r.method} | {r.student} | {fmt_params(r.student_params)} | {r.n} | "
                     f"{mean_std(r)} | {rel} |")
    lines.append("")
    if table.teacher_score is None:
        lines += [f"No FINISHED teacher run for {table.task} in the records: % of teacher is not available.", ""]
    lines += ["Reproduce:", "", "```bash", teacher_command(table), ablation_command(table),
              "python sweeps/export.py && python sweeps/report.py", "```", ""]
    if image:
        lines += [f"![{table.task} {table.budget}]({image})", ""]
    return lines


def render_summary(report: Report) -> list[str]:
    prim = primary_tables(report)
    tasks, rows, complete = summary_grid(report)
    lines = ["## Cross-task summary", "",
             "Mean best dev score (x100) of each task's primary table. Averages are over the tasks "
             "where every method/student run on the most tasks is present: "
             + (", ".join(complete) if complete else "none") + "; a row missing one of them has no average.", ""]
    head = ["method", "student", *tasks, "avg", "avg % of teacher"]
    lines += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for method, student in rows:
        cells = []
        for task in tasks:
            row = prim[task].row(method, student)
            cells.append("–" if row is None else f"{100.0 * row.mean:.2f}")
        if complete and all(prim[t].row(method, student) is not None for t in complete):
            avg = f"{100.0 * statistics.fmean(prim[t].row(method, student).mean for t in complete):.2f}"
            rel = [prim[t].row(method, student).pct_teacher for t in complete]
            avg_rel = "–" if any(v is None for v in rel) else f"{statistics.fmean(rel):.2f}"
        else:
            avg, avg_rel = "–", "–"
        lines.append("| " + " | ".join([method, student, *cells, avg, avg_rel]) + " |")
    lines.append("")
    return lines


def render_targets(report: Report) -> list[str]:
    lines = ["## Targets", ""]
    for res in (target_ratio(report), target_wins(report)):
        lines.append(f"- **{res.status}** — {res.name}: {res.detail}.")
    lines.append("")
    return lines


def _num(value) -> str:
    x = to_float(value)
    return "–" if x is None else f"{x:.4g}"


def render_sweeps(report: Report, image_for: dict[str, str]) -> list[str]:
    if not report.sweeps:
        return []
    lines = ["## Hyper-parameter sweeps", "",
             "Optuna sweep trials (runs with a parent sweep run); best trial per task and method/student "
             "(trials: finished + pruned).", "",
             "| task | method/student | trials | best dev | T | soft weight | μ (hidden weight) | lr | gate lr |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in report.sweeps:
        score, params = g.trials[0]
        lines.append(f"| {g.task} | {g.label} | {len(g.trials)} + {g.pruned} | {pct(score)} | "
                     + " | ".join(_num(params.get(k)) for k in ("loss.temperature", "loss.soft_weight",
                                                               "loss.hidden_weight", "optim.lr", "optim.gate_lr"))
                     + " |")
    lines.append("")
    for task in sorted({g.task for g in report.sweeps}, key=task_rank):
        if task in image_for:
            lines += [f"![{task} sweep]({image_for[task]})", ""]
        if f"importance:{task}" in image_for:
            lines += [f"![{task} parameter importance]({image_for[f'importance:{task}']})", ""]
    rows = [(g, g.importance) for g in report.sweeps if g.importance]
    if rows:
        lines += [f"Parameter importance (fANOVA with a fixed seed over each group's finished trials, groups with "
                  f"at least {MIN_IMPORTANCE_TRIALS}; pruned trials are not included):", "",
                  "| task | method/student | trials | importance (parameter: share) |", "|---|---|---:|---|"]
        for g, imp in rows:
            lines.append(f"| {g.task} | {g.label} | {len(g.trials)} | "
                         + ", ".join(f"{k}: {v:.2f}" for k, v in sorted(imp.items(), key=lambda kv: (-kv[1], kv[0])))
                         + " |")
        lines.append("")
    return lines


def search_distributions() -> dict:
    """Search-space distributions by parameter, from every conf/hparams_search/*.yaml file."""
    from lad.search import load_space

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


def plot_importances(groups: list[SweepGroup], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(g, g.importance) for g in groups if g.importance]
    if not data:
        return False
    fig, axes = plt.subplots(1, len(data), figsize=(4.8 * len(data), 3.0), squeeze=False)
    for ax, (g, imp) in zip(axes[0], data):
        keys = sorted(imp, key=lambda k: imp[k])
        ax.barh(range(len(keys)), [imp[k] for k in keys])
        ax.set_yticks(range(len(keys)), keys, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fANOVA importance")
        method, budget = g.method_budget
        ax.set_title(f"{g.task} {method} ({len(g.trials)} finished trials)\n{budget}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def render_markdown(report: Report, images: dict[str, str]) -> str:
    lines = ["# Results", "",
             "Generated by `python sweeps/report.py` from the recorded runs (MLflow or "
             "`results/runs.jsonl`); do not edit by hand.", "",
             "Scores: best dev value of each task's main metric during training, x100, mean ± sample "
             "std over seeds (n = seeds). % of teacher: student mean / the task's fine-tuned teacher. "
             "The targets, the cross-task summary and the gate table use each task's *primary* table, "
             "taken from one common setup (teacher, budget, extra overrides) where the task has one: the "
             "setup recorded on the most tasks.", ""]
    if not report.tables:
        lines += ["No FINISHED distillation runs recorded yet.", ""]
    lines += render_targets(report)
    lines += render_teachers(report)
    if report.tables:
        lines += render_summary(report)
        lines += ["## Per-task results", ""]
        for table in report.tables:
            lines += render_table(table, images.get(f"table:{table.slug}"))
    lines += render_gates(report, {k[len("gates:"):]: v for k, v in images.items() if k.startswith("gates:")})
    lines += render_sweeps(report, {k[len("sweep:"):]: v for k, v in images.items() if k.startswith("sweep:")})
    if report.tables:
        lines += render_discussion(report)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "teacher", "budget", "variant", "primary", "main_metric", "method", "student", "n", "seeds",
                "mean", "std", "student_params", "teacher_score", "pct_of_teacher", "train_examples_per_s"])

    def f6(x):
        return "" if x is None else f"{x:.6f}"

    for t in report.tables:
        for r in t.rows:
            w.writerow([t.task, t.teacher, t.budget, t.variant, int(t.primary), t.main_metric, r.method, r.student, r.n,
                        " ".join(map(str, sorted(r.scores))), f6(r.mean), f6(r.std), r.student_params or "",
                        f6(t.teacher_score), "" if r.pct_teacher is None else f"{r.pct_teacher:.4f}",
                        "" if r.throughput is None else f"{r.throughput:.1f}"])
    return buf.getvalue()


# ----------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})


def plot_table(table: Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = list(dict.fromkeys(r.student for r in table.rows))
    methods = sorted({r.method for r in table.rows}, key=method_rank)
    width = 0.8 / max(1, len(students))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(methods) + 2), 3.6))
    for i, student in enumerate(students):
        xs, ys, es = [], [], []
        for j, method in enumerate(methods):
            row = table.row(method, student)
            if row is not None:
                xs.append(j + (i - (len(students) - 1) / 2) * width)
                ys.append(100.0 * row.mean)
                es.append(100.0 * (row.std or 0.0))
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=student)
    if table.teacher_score is not None:
        ax.axhline(100.0 * table.teacher_score, color="k", linestyle="--", linewidth=1, label="teacher")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(f"dev {table.main_metric} (x100)")
    ax.set_title(f"{table.task} — {table.budget}" + (f"\n{table.variant}" if table.variant else ""),
                 fontsize=9 if table.variant else None)
    values = [100.0 * r.mean for r in table.rows] + ([100.0 * table.teacher_score] if table.teacher_score else [])
    low = min(values) - 10
    ax.set_ylim(max(low, 0.0) if min(values) >= 0 else low, max(values) + 5)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_sweeps(groups: list[SweepGroup], path: Path) -> bool:
    """Dev score vs temperature and vs μ for one task's sweep trials; False when nothing varies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_keys = [("loss.temperature", "temperature T", False), ("loss.hidden_weight", "μ (hidden weight)", True)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    drawn = False
    for ax, (key, name, log) in zip(axes, axes_keys):
        for g in groups:
            pts = [(to_float(p.get(key)), 100.0 * s) for s, p in g.trials if to_float(p.get(key)) is not None]
            if len({x for x, _ in pts}) > 1:
                ax.scatter([x for x, _ in pts], [y for _, y in pts], s=14, label=g.label)
                drawn = True
        if log and any(c.get_offsets().size for c in ax.collections):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"dev {groups[0].main_metric} (x100)")
        if ax.collections:
            ax.legend(fontsize=7)
    fig.suptitle(f"{groups[0].task}: sweep trials")
    fig.tight_layout()
    if drawn:
        _save(fig, path)
    plt.close(fig)
    return drawn


def make_plots(report: Report, img_dir: Path, rel_prefix: str) -> dict[str, str]:
    images = {}
    for table in report.tables:
        name = f"results-{table.slug}.png"
        plot_table(table, img_dir / name)
        images[f"table:{table.slug}"] = f"{rel_prefix}/{name}"
    by_task = defaultdict(list)
    for g in report.sweeps:
        by_task[g.task].append(g)
    for task, groups in by_task.items():
        name = f"sweep-{task}.png"
        if plot_sweeps(groups, img_dir / name):
            images[f"sweep:{task}"] = f"{rel_prefix}/{name}"
        name = f"importance-{task}.png"
        if plot_importances(groups, img_dir / name):
            images[f"sweep:importance:{task}"] = f"{rel_prefix}/{name}"
    for task, rows in report.gates.items():
        name = f"gates-{task}.png"
        plot_gates(task, rows, img_dir / name)
        images[f"gates:{task}"] = f"{rel_prefix}/{name}"
    return images


# ----------------------------------------------------------------------------- entry point
def load_records(source: str, tracking_uri: str, export_path: Path) -> list[dict]:
    if source == "export":
        from lad.errors import LADError

        if not Path(export_path).is_file():
            raise LADError(f"no export at {export_path} (run python sweeps/export.py)")
        return read_export(export_path)
    return load_mlflow_records(absolute_uri(tracking_uri))


def generate(records: list[dict], out: Path, csv_path: Path, img_dir: Path | None, plots: bool = True) -> Report:
    report = build_report(records)
    images = {}
    if plots:
        img_dir = img_dir or out.parent / "img"
        rel = Path(os.path.relpath(img_dir, out.parent)).as_posix()
        images = make_plots(report, img_dir, rel)
    write_text(out, render_markdown(report, images))
    write_text(csv_path, render_csv(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["mlflow", "export"], default="mlflow")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI))
    parser.add_argument("--export", type=Path, default=DEFAULT_EXPORT, help="export file for --source export")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--csv", type=Path, default=Path("results/summary.csv"))
    parser.add_argument("--img-dir", type=Path, default=None, help="default: img/ next to --out")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also refresh the headline block between the results markers of this file")
    args = parser.parse_args(argv)
    from lad.errors import LADError

    try:
        records = load_records(args.source, args.tracking_uri, args.export)
    except LADError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = generate(records, args.out, args.csv, args.img_dir, plots=not args.no_plots)
    print(f"[report] {len(records)} runs, {len(report.tables)} tables -> {args.out}, {args.csv}")
    if args.readme is not None:
        refresh_readme(args.readme, report, args.out)
    return 0


README_BEGIN = "<!-- results:begin (generated by sweeps/report.py --readme README.md) -->"
README_END = "<!-- results:end -->"


def refresh_readme(path: Path, report: Report, results_page: Path) -> None:
    """Replace the block between the results markers with the headline targets and links.

    The block stays short (the README has a line budget): the per-task comparisons and variants
    live in the results page's Discussion, which the block links to.
    """
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"error: {path} has no results markers ({README_BEGIN} ... {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    page = results_page.as_posix()
    body = [f"Headline numbers, copied from [`{page}`]({page}):", ""]
    body += [line for line in render_targets(report) if line.startswith("- ")]
    if comparison_lines(report) or variant_lines(report):
        tasks = list(primary_tables(report))
        body += ["", "LAD against each baseline per task (paired seeds, 95 % intervals, Holm-adjusted p), and the "
                 f"variants: [Discussion]({page}#discussion) "
                 f"({', '.join(tasks)})."]
    write_text(path, head + README_BEGIN + "\n" + "\n".join(body) + "\n" + README_END + tail)


if __name__ == "__main__":
    sys.exit(main())
