"""Markdown and CSV of the results pages: the short main page (rule, headline, primary family, targets,
curves), one exploratory page per task (tables, teachers, gates, sweeps, comparisons) and an exploratory
cross-task page."""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import defaultdict

from sweeps.reporting.discussion import render_context, render_discussion
from sweeps.reporting.grouping import primary_tables, summary_grid
from sweeps.reporting.model import (DEFAULT_TEACHER, MIN_IMPORTANCE_TRIALS, Report, Table, budget_of,
                                    commits_text, experiment_of, fmt_params, mean_std, method_rank, num, pct,
                                    score_of, task_rank, to_int)
from sweeps.reporting.targets import render_targets
from sweeps.reporting.prereg import tuning_progress
from sweeps.reporting.primary import CURVE_METHODS, plateau
from sweeps.stats import fmt_p


def render_teachers(report: Report, task: str | None = None) -> list[str]:
    teachers = [r for r in report.teachers if task in (None, r["task"])]
    if not teachers:
        return []
    lines = ["## Teachers", "",
             "Best dev score of the latest finished teacher fine-tuning run per task and recipe (x100), next "
             "to the task's trivial baseline.", "",
             "| task | teacher | main metric | best dev | trivial baseline | budget | command |",
             "|---|---|---|---:|---:|---|---|"]
    for r in teachers:
        params = r.get("params", {})
        budget, _ = budget_of(params)
        recipe = experiment_of(r)
        cmd = "python train_teacher.py " + (f"experiment={recipe}" if recipe else f"task={r['task']}")
        cmd += f" teacher={r.get('teacher') or DEFAULT_TEACHER}"
        steps = to_int(params.get("trainer.max_steps"), -1)
        if steps is not None and steps > 0 and not recipe:  # a recipe sets its own steps
            cmd += f" trainer.max_steps={steps}"
        trivial = report.trivial(r["task"], r.get("main_metric"))
        lines.append(f"| {r['task']} | {r.get('teacher') or ''} | {r.get('main_metric')} | "
                     f"{100.0 * score_of(r):.2f} | {pct(trivial and trivial['score'])} | {budget} | `{cmd}` |")
    return lines + [""]


def render_gates(report: Report, image_for: dict[str, str], task: str | None = None) -> list[str]:
    if not any(task in (None, t) for t in report.gates):
        return []
    lines = ["## Gate values", "",
             "Mean highway-gate value g_l per teacher layer l (the weight of H_l against the aggregate "
             "of the layers below it; the anchor layer is 1 by definition), on a fixed probe batch of "
             "training examples at each run's best dev evaluation, averaged over seeds; one row per "
             "method/student, budget and variant.", ""]
    for task in sorted((t for t in report.gates if task in (None, t)), key=task_rank):
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


def recipe_commands(table: Table) -> list[str] | None:
    """A recipe table's (``experiment=reference_<task>``) own commands: its teacher recipe, then its students,
    one per seed (a Hydra multirun); None for a table of the project recipe."""
    if not any(e.lstrip("+").startswith("experiment=") for e in table.extras):
        return None
    seeds = ",".join(map(str, sorted({s for r in table.rows for s in r.scores})))
    teacher = [e for e in table.extras if e.lstrip("+").startswith(("experiment=", "teacher="))]
    return ["python train_teacher.py " + " ".join(quote(e) for e in teacher),
            "python distil.py -m " + " ".join(quote(e) for e in table.extras) + f" seed={seeds}"]


def teacher_command(table: Table) -> str:
    extra = f" --teacher {table.teacher}" if table.teacher and table.teacher != DEFAULT_TEACHER else ""
    return f"python sweeps/teachers.py --tasks {table.task}{extra}"


def render_table(table: Table, image: str | None) -> list[str]:
    metric = table.main_metric
    lines = [f"### {table.task.upper()} — teacher {table.teacher}, {table.budget}"
             + (f", {table.variant}" if table.variant else "") + (" (main)" if table.primary else "")
             + f" — {commits_text(table.commits)}", ""]
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
    commands = recipe_commands(table) or [teacher_command(table), ablation_command(table)]
    lines += ["Reproduce:", "", "```bash", *commands, "python sweeps/export.py && python sweeps/report.py", "```", ""]
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
             "Exploratory. Mean best dev score (x100) of each task's main table. Averages are over the tasks "
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


def render_sweeps(report: Report, image_for: dict[str, str], task: str | None = None) -> list[str]:
    groups = [g for g in report.sweeps if task in (None, g.task)]
    if not groups:
        return []
    lines = ["## Hyper-parameter sweeps", "",
             "Optuna sweep trials (runs an Optuna search launched, see `sweeps/kinds.py`); best trial per task and method/student "
             "(trials: finished + pruned).", "",
             "| task | method/student | trials | best dev | trivial baseline | T | soft weight | μ (hidden weight) | lr "
             "| gate lr |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in groups:
        score, params = g.trials[0]
        trivial = report.trivial(g.task, g.main_metric)
        lines.append(f"| {g.task} | {g.label} | {len(g.trials)} + {g.pruned} | {pct(score)} | "
                     f"{pct(trivial and trivial['score'])} | "
                     + " | ".join(num(params.get(k)) for k in ("loss.temperature", "loss.soft_weight",
                                                               "loss.hidden_weight", "optim.lr", "optim.gate_lr"))
                     + " |")
    lines.append("")
    for task in sorted({g.task for g in groups}, key=task_rank):
        if task in image_for:
            lines += [f"![{task} sweep]({image_for[task]})", ""]
        if f"importance:{task}" in image_for:
            lines += [f"![{task} parameter importance]({image_for[f'importance:{task}']})", ""]
    rows = [(g, g.importance) for g in groups if g.importance]
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


SCORES = ("Scores: best dev value of each task's main metric during training, x100, mean ± sample std over seeds "
          "(n = seeds). The trivial baseline is the best constant prediction on the dev file, scored with the "
          "task's own metric (`sweeps/baselines.py`, `results/baselines.json`: the majority class for accuracy, "
          "all-positive for F1, 0 for MCC and for correlations). % of teacher: student mean / teacher; "
          "− teacher: student mean − teacher, in points. A ratio reads differently per metric: for accuracy and "
          "F1 the trivial baseline already holds a large share of the teacher, for MCC (CoLA) and correlations "
          "(STS-B) the trivial baseline is 0, so their ratio is the share of the teacher's above-chance "
          "correlation; compare methods by the difference.")
GENERATED = ("Generated by `python sweeps/report.py` from the recorded runs (MLflow or `results/runs.jsonl`); "
             "do not edit by hand.")


def render_rule(report: Report, prereg_link: str) -> list[str]:
    pre = report.headline.prereg
    pairs = ", ".join(f"{a} vs {b}" for a, b in pre.primary)
    pinned = (f"runs recorded at commit `{pre.headline_commit}` only" if pre.headline_commit else
              "**not pinned yet** (`headline_commit: null`): every recorded run may fill it, from each task's "
              "main table")
    return ["## The rule (pre-registered)", "",
            f"Declared in [`{pre.path}`]({prereg_link}) before the headline runs; the page reads it and "
            "decides nothing else.", "",
            f"- **Primary family** (the only comparisons that decide anything): per task ({', '.join(pre.tasks)}) "
            f"{pairs} for the {pre.student} student — {pre.family_size} comparisons. Seeds are paired (same seed "
            "= same data order and initial draws); each comparison is the mean per-seed difference with its 95 % "
            "interval and a two-sided paired t-test, Holm-adjusted over exactly these "
            f"{pre.family_size}; a difference counts when its adjusted p < {pre.alpha:g}.",
            f"- **Minimum detectable difference (MDE)** at {100 * pre.power:g} % power, from the observed spread "
            "of the paired differences: (t(1 − α*/2, n − 1) + t(power, n − 1)) · sd / √n with α* = α / "
            f"{pre.family_size} = {pre.alpha_star:.4g} (Bonferroni, the level of Holm's first step: conservative; "
            "central-t approximation, not a noncentral-t solve).",
            f"- **Verdict of a comparison**: ahead / behind when significant; \"no difference of "
            f"{pre.smallest_effect:g} point or more (powered)\" when not significant with MDE ≤ "
            f"{pre.smallest_effect:g}; \"undecided (underpowered)\" when the MDE is larger; \"undecided\" with "
            f"fewer than {pre.min_seeds} seeds in a cell, or with zero spread (every seed differs by the same "
            "amount: no p-value exists, it is never reported as p = 0).",
            f"- **Ratio target**: {pre.ratio_method}'s mean % of teacher over the tasks, per task the mean over "
            "seeds of score / teacher" + (f"; for {', '.join(pre.ratio_by_difference)} (trivial baseline 0, where a "
                                          "ratio is the share of the teacher's above-chance score) 100 minus the gap "
                                          "to the teacher in points" if pre.ratio_by_difference else "") + ".",
            f"- **Headline runs**: {pinned}; a cell needs ≥ {pre.min_seeds} seeds to count.",
            "- **Everything else** on these pages (other methods, students, variants, budgets, the per-task "
            "tables) is **exploratory**: shown with its 95 % interval and its unadjusted p, labelled so.", ""]


def cell_text(cell, pre) -> str:
    if cell is None:
        return "–"
    text = f"{100.0 * cell.mean:.2f}" + ("" if cell.std is None else f" ± {100.0 * cell.std:.2f}")
    return text + (f" (n={cell.n})" if cell.n >= pre.min_seeds else f" (n={cell.n} < {pre.min_seeds})")


def grid_progress(report: Report) -> str | None:
    """While the pinned grid is still running, how far it got (None once every headline run is in)."""
    head = report.headline
    pre = head.prereg
    expected = len(pre.tasks) * len(pre.methods) * len(pre.seeds)
    recorded = sum(min(c.n, len(pre.seeds)) for c in head.cells.values()) if pre.headline_commit else expected
    if recorded >= expected:
        return None
    tuning = tuning_progress(pre)
    studies = "" if tuning is None else "; tuning (" + ", ".join(
        f"{m} {n}/{pre.tuning_trials}" for m, n in tuning.items()) + " trials)"
    return f"Grid in progress: {recorded} of {expected} headline runs recorded{studies}."


def render_headline(report: Report) -> list[str]:
    head = report.headline
    pre = head.prereg
    methods = pre.methods
    heading = "## Headline" + (f" — {commits_text(head.commits)}" if head.cells else "")
    lines = [heading, ""]
    if pre.headline_commit is None:
        lines += ["The headline commit is **not pinned yet**: no grid has been recorded from one pinned commit. "
                  "The cells below come from each task's main table of the runs recorded so far (older code, "
                  "mixed commits, fewer seeds than required): orientation only; every verdict below stays "
                  "undecided until the pinned grid is recorded.", ""]
    elif not head.cells:
        lines += [f"No run of the headline commit `{pre.headline_commit}` has been recorded yet; the per-task "
                  "pages show the older runs as exploratory material.", ""]
    if (progress := grid_progress(report)) is not None:
        lines += [progress, ""]
    lines += [f"{pre.student} students, dev score x100, mean ± std (n = seeds).", "",
              "| task | metric | teacher | trivial baseline | " + " | ".join(methods) + " |",
              "|---|---|---:|---:|" + "---:|" * len(methods)]
    for task in pre.tasks:
        metric = head.metrics.get(task, "")
        trivial = report.trivial(task, metric)
        cells = [cell_text(head.cell(task, m), pre) for m in methods]
        lines.append(f"| {task} | {metric or '–'} | {pct(head.teachers.get(task))} | "
                     f"{pct(trivial and trivial['score'])} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines + render_setups(head) + render_gate_moves(head)


def render_setups(head) -> list[str]:
    """One row per method: the budget and the overrides of its headline runs, each written once when every task
    shares it, else per group of tasks."""
    pre = head.prereg
    rows = []
    for method in pre.methods:
        cells = [(t, c) for t in pre.tasks if (c := head.cell(t, method)) is not None]
        if cells:
            rows.append(f"| {method} | {per_task(cells, 'budget')} | {per_task(cells, 'variant')} |")
    return ["Setups of these runs (the tuned setting of each method):", "", "| method | budget | overrides |",
            "|---|---|---|", *rows, ""] if rows else []


def per_task(cells: list[tuple[str, object]], attr: str) -> str:
    groups: dict[str, list[str]] = {}
    for task, cell in cells:
        groups.setdefault(getattr(cell, attr) or "none", []).append(task)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(tasks)}: {value}" for value, tasks in groups.items())


def render_gate_moves(head) -> list[str]:
    """Did the method's gates learn? The largest gate movement of its headline runs, per task, against the
    threshold under which a run's gates count as unmoved (the warning every such run prints)."""
    from lad.run.gate_report import GATE_MOVED

    pre = head.prereg
    moves = {t: c.gate_moves for t in pre.tasks if (c := head.cell(t, pre.methods[0])) is not None and c.gate_moves}
    if not moves:
        return []
    lines = [f"Gate movement of the {pre.methods[0]} runs (largest relative change ||W−W0||/||W0|| of a gate by the "
             "end of training, median over seeds [range]): " + "; ".join(
                 f"{t} {statistics.median(m.values()):.2%} [{min(m.values()):.2%}, {max(m.values()):.2%}]"
                 for t, m in moves.items()) + "."]
    unmoved = [t for t, m in moves.items() if statistics.median(m.values()) < GATE_MOVED]
    if unmoved:
        lines[-1] += (f" On {', '.join(unmoved)} the median is under {GATE_MOVED:.0%}, the threshold under which a "
                      "run's gates count as unmoved: there its targets stay close to their random initial mix of "
                      f"teacher layers, so {pre.methods[0]} vs a frozen-gate arm compares two tuned settings, not "
                      "learned against random aggregation.")
    return lines + [""]


def render_primary(report: Report) -> list[str]:
    head = report.headline
    pre = head.prereg
    lines = [f"## Primary family ({pre.family_size} comparisons, Holm)", "",
             f"Difference = first − second method, points, seeds paired; MDE at {100 * pre.power:g} % power "
             f"(α* = {pre.alpha_star:.4g}).", "",
             "| task | comparison | n | difference [95 % CI] | p | Holm p | MDE | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for c in head.comparisons:
        d = c.diff
        if d is None or d.n == 0:
            lines.append(f"| {c.task} | {c.a} vs {c.b} | 0 | – | – | – | – | {c.verdict(pre)} |")
            continue
        if d.zero_spread:
            diff = f"{d.delta:+.2f} (zero spread)"
        elif d.lo is None:
            diff = f"{d.delta:+.2f}"
        else:
            diff = f"{d.delta:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}]"
        mde = "–" if c.mde is None else f"{c.mde:.2f}"
        lines.append(f"| {c.task} | {c.a} vs {c.b} | {d.n} | {diff} | {fmt_p(d.p) if d.p is not None else '–'} | "
                     f"{fmt_p(d.p_adj) if d.p_adj is not None else '–'} | {mde} | {c.verdict(pre)} |")
    unpaired = [f"{c.task} {c.a} vs {c.b} ({c.unpaired})" for c in head.comparisons if c.unpaired]
    if unpaired:
        lines += ["", "Left out of n: seeds whose two runs were distilled from different teacher runs (teachers are "
                  "retrained on every machine): " + ", ".join(unpaired) + "."]
    return lines + [""]


def render_curves(report: Report, image: str | None) -> list[str]:
    lines = ["## Learning curves", ""]
    if not report.headline.curves:
        return lines + ["No recorded run of the headline student has a per-evaluation history yet (the export "
                        "records it as `history` since Results v3): no learning-curve figure.", ""]
    lines += [f"Dev score (x100) vs training step of {', '.join(CURVE_METHODS)} "
              f"({report.headline.prereg.student}), mean over seeds at common evaluation steps.", ""]
    if image is not None:
        lines += [f"![learning curves]({image})", ""]
    return lines + render_plateau(report)


def render_plateau(report: Report) -> list[str]:
    """Whether each budget sits on its plateau: the gain over each mean curve's last evaluation interval."""
    head = report.headline
    pre = head.prereg
    state = plateau(head.curves, pre)
    methods = [m for m in CURVE_METHODS if any(m in by_method for by_method in head.curves.values())]
    lines = [f"**Plateau** (this page's rule, stated after the curves were recorded; it decides no comparison): a "
             f"budget sits on its plateau when the mean curve gained less than the smallest effect "
             f"({pre.smallest_effect:g} point) over its last evaluation interval; gain in points:", "",
             "| task | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    tasks = [t for t in pre.tasks if t in state]
    for task in tasks:
        row = []
        for m in methods:
            gain, verdict = state[task].get(m, (None, "–"))
            row.append(verdict if gain is None else f"{gain:+.2f} ({verdict})")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    by_state = defaultdict(list)
    for task in tasks:
        for s in ("rising", "one evaluation"):
            if ms := [m for m in methods if state[task].get(m, (None, None))[1] == s]:
                by_state[s].append(f"{task} ({', '.join(ms)})")
    if rising := by_state.get("rising"):
        lines += ["", "Still rising when the budget ended: " + "; ".join(rising) + ". There the "
                  "comparisons measure the methods before they converge, not at their plateau."]
    if single := by_state.get("one evaluation"):
        lines += ["", "One evaluation per run (no curve, the plateau is not shown): " + "; ".join(single) + "."]
    if not by_state:
        lines += ["", "Every budget sits on its plateau."]
    return lines + [""]


def render_markdown(report: Report, images: dict[str, str], img_prefix: str = "img", pages: str = "results",
                    prereg_link: str = "../results/preregistration.yaml") -> str:
    """The main page: the rule, the headline, the primary family, the targets, the curves, links."""
    lines = ["# Results", "", GENERATED, ""]
    lines += render_rule(report, prereg_link)
    lines += render_headline(report)
    lines += render_primary(report)
    lines += render_targets(report)
    curve = images.get("curves")
    lines += render_curves(report, curve and f"{img_prefix}/{curve}")
    tasks = task_pages(report)
    lines += ["## Details (exploratory)", "",
              "Every table of every recorded run, teachers, gate values and movement, sweeps and tuning, with "
              "exploratory comparisons (unadjusted p): "
              + ", ".join(f"[{t}]({pages}/{t}.md)" for t in tasks)
              + ("; " if tasks else "") + f"[cross-task summary and context]({pages}/{OVERVIEW}.md).", "",
              SCORES, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


OVERVIEW = "overview"


def task_pages(report: Report) -> list[str]:
    found = {t.task for t in report.tables} | {r["task"] for r in report.teachers} | set(report.gates) \
        | {g.task for g in report.sweeps}
    return sorted(found, key=task_rank)


def render_task_page(report: Report, task: str, images: dict[str, str], img_prefix: str) -> str:
    """One task's exploratory page: every table, the teacher, gates, sweeps and comparisons."""
    def img(key: str) -> str | None:
        return f"{img_prefix}/{images[key]}" if key in images else None

    lines = [f"# Results: {task} (exploratory)", "", GENERATED, "",
             "Everything on this page is **exploratory** (see the rule on the [main page](../results.md)): "
             "intervals and p-values are unadjusted and decide no target. Each table heading names the commit "
             "of its runs.", "", SCORES, ""]
    lines += render_teachers(report, task)
    tables = [t for t in report.tables if t.task == task]
    if tables:
        lines += ["## Tables", ""]
        for table in tables:
            lines += render_table(table, img(f"table:{table.slug}"))
    lines += render_gates(report, {task: f"{img_prefix}/{images[f'gates:{task}']}"} if f"gates:{task}" in images
                          else {}, task)
    sweep_images = {k[len("sweep:"):]: f"{img_prefix}/{v}" for k, v in images.items() if k.startswith("sweep:")}
    lines += render_sweeps(report, sweep_images, task)
    if tables:
        lines += render_discussion(report, task)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_overview(report: Report) -> str:
    lines = ["# Results: cross-task summary and context (exploratory)", "", GENERATED, "",
             "Back to the [main page](../results.md). Exploratory: the main table of each task, averaged; no "
             "verdict is read from here.", "", SCORES, ""]
    if report.tables:
        lines += render_summary(report)
    else:
        lines += ["No FINISHED distillation runs recorded yet.", ""]
    lines += render_context(report)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "teacher", "budget", "variant", "primary", "main_metric", "method", "student", "n", "seeds",
                "mean", "std", "student_params", "teacher_score", "pct_of_teacher", "train_examples_per_s",
                "trivial_score", "commits"])

    def f6(x):
        return "" if x is None else f"{x:.6f}"

    for t in report.tables:
        for r in t.rows:
            w.writerow([t.task, t.teacher, t.budget, t.variant, int(t.primary), t.main_metric, r.method, r.student, r.n,
                        " ".join(map(str, sorted(r.scores))), f6(r.mean), f6(r.std), r.student_params or "",
                        f6(t.teacher_score), "" if r.pct_teacher is None else f"{r.pct_teacher:.4f}",
                        "" if r.throughput is None else f"{r.throughput:.1f}", f6(t.trivial_score),
                        " ".join(sorted(r.commits))])
    return buf.getvalue()
