"""Markdown and CSV of the results page (tables, teachers, gates, sweeps, summary)."""

from __future__ import annotations

import csv
import io
import re
import statistics

from sweeps.reporting.discussion import render_discussion
from sweeps.reporting.grouping import primary_tables, summary_grid
from sweeps.reporting.model import (DEFAULT_TEACHER, MIN_IMPORTANCE_TRIALS, Report, Table, budget_of, fmt_params,
                                    mean_std, method_rank, num, pct, score_of, task_rank, to_int)
from sweeps.reporting.targets import render_targets
from sweeps.stats import RULE


def render_teachers(report: Report) -> list[str]:
    if not report.teachers:
        return []
    lines = ["## Teachers", "",
             "Best dev score of the latest finished teacher fine-tuning run per task (x100), next to the "
             "task's trivial baseline.", "",
             "| task | teacher | main metric | best dev | trivial baseline | budget | command |",
             "|---|---|---|---:|---:|---|---|"]
    for r in report.teachers:
        params = r.get("params", {})
        budget, _ = budget_of(params)
        cmd = f"python train_teacher.py task={r['task']} teacher={r.get('teacher') or DEFAULT_TEACHER}"
        steps = to_int(params.get("trainer.max_steps"), -1)
        if steps is not None and steps > 0:
            cmd += f" trainer.max_steps={steps}"
        trivial = report.trivial(r["task"], r.get("main_metric"))
        lines.append(f"| {r['task']} | {r.get('teacher') or ''} | {r.get('main_metric')} | "
                     f"{100.0 * score_of(r):.2f} | {pct(trivial and trivial['score'])} | {budget} | `{cmd}` |")
    return lines + [""]


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
    lines += [f"| method | student | params | n | dev {metric} (mean ± std) | % of teacher | − teacher |",
              "|---|---|---:|---:|---:|---:|---:|"]
    if table.teacher_score is not None:
        lines.append(f"| teacher | {table.teacher} | {fmt_params(table.teacher_params)} | 1 | "
                     f"{pct(table.teacher_score)} | 100.00 | +0.00 |")
    for r in table.rows:
        lines.append(f"| {r.method} | {r.student} | {fmt_params(r.student_params)} | {r.n} | "
                     f"{mean_std(r)} | {rel_to_teacher(table, r.mean)} |")
    if table.trivial_score is not None:
        lines.append(f"| trivial baseline | {table.trivial['constant']} | – | – | {pct(table.trivial_score)} | "
                     f"{rel_to_teacher(table, table.trivial_score)} |")
    lines.append("")
    if table.teacher_score is None:
        lines += [f"No FINISHED teacher run for {table.task} in the records: % of teacher is not available.", ""]
    if table.trivial_score is None:
        lines += [f"No trivial baseline for {table.task} {metric} in results/baselines.json "
                  "(run python sweeps/baselines.py).", ""]
    lines += ["Reproduce:", "", "```bash", teacher_command(table), ablation_command(table),
              "python sweeps/export.py && python sweeps/report.py", "```", ""]
    if image:
        lines += [f"![{table.task} {table.budget}]({image})", ""]
    return lines


def rel_to_teacher(table: Table, score: float) -> str:
    """The "% of teacher" and "− teacher" (points) cells of a score in ``table``."""
    if table.teacher_score is None:
        return "– | –"
    ratio = "–" if not table.teacher_score else f"{100.0 * score / table.teacher_score:.2f}"
    return f"{ratio} | {100.0 * (score - table.teacher_score):+.2f}"


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
    for label, reference in (("teacher", "teacher_score"), ("trivial baseline", "trivial_score")):
        scores = {task: getattr(prim[task], reference) for task in tasks}
        avg = ("–" if not complete or any(scores[t] is None for t in complete)
               else pct(statistics.fmean(scores[t] for t in complete)))
        lines.append("| " + " | ".join([label, "", *(pct(scores[t]) for t in tasks), avg, "–"]) + " |")
    lines.append("")
    return lines


def render_sweeps(report: Report, image_for: dict[str, str]) -> list[str]:
    if not report.sweeps:
        return []
    lines = ["## Hyper-parameter sweeps", "",
             "Optuna sweep trials (runs an Optuna search launched, see `sweeps/kinds.py`); best trial per task and method/student "
             "(trials: finished + pruned).", "",
             "| task | method/student | trials | best dev | trivial baseline | T | soft weight | μ (hidden weight) | lr "
             "| gate lr |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in report.sweeps:
        score, params = g.trials[0]
        trivial = report.trivial(g.task, g.main_metric)
        lines.append(f"| {g.task} | {g.label} | {len(g.trials)} + {g.pruned} | {pct(score)} | "
                     f"{pct(trivial and trivial['score'])} | "
                     + " | ".join(num(params.get(k)) for k in ("loss.temperature", "loss.soft_weight",
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


def render_markdown(report: Report, images: dict[str, str]) -> str:
    lines = ["# Results", "",
             "Generated by `python sweeps/report.py` from the recorded runs (MLflow or "
             "`results/runs.jsonl`); do not edit by hand.", "",
             "Scores: best dev value of each task's main metric during training, x100, mean ± sample "
             "std over seeds (n = seeds). Every table shows the task's fine-tuned teacher and its trivial "
             "baseline: the best constant prediction on the dev file, scored with the task's own metric "
             "(`sweeps/baselines.py`, `results/baselines.json`: the majority class for accuracy, "
             "all-positive for F1, 0 for MCC and for correlations). % of teacher: student mean / teacher; "
             "− teacher: student mean − teacher, in points. A ratio reads differently per metric: for "
             "accuracy and F1 the trivial baseline already holds a large share of the teacher, for MCC "
             "(CoLA) and correlations (STS-B) the trivial baseline is 0, so a ratio of MCCs is the share of "
             "the teacher's above-chance correlation; compare methods by the difference. "
             "The targets, the cross-task summary and the gate table use each task's *primary* table, "
             "taken from one common setup (teacher, budget, extra overrides) where the task has one: the "
             "setup recorded on the most tasks.", "", f"Statistics: {RULE}", ""]
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
                "mean", "std", "student_params", "teacher_score", "pct_of_teacher", "train_examples_per_s",
                "trivial_score"])

    def f6(x):
        return "" if x is None else f"{x:.6f}"

    for t in report.tables:
        for r in t.rows:
            w.writerow([t.task, t.teacher, t.budget, t.variant, int(t.primary), t.main_metric, r.method, r.student, r.n,
                        " ".join(map(str, sorted(r.scores))), f6(r.mean), f6(r.std), r.student_params or "",
                        f6(t.teacher_score), "" if r.pct_teacher is None else f"{r.pct_teacher:.4f}",
                        "" if r.throughput is None else f"{r.throughput:.1f}", f6(t.trivial_score)])
    return buf.getvalue()
