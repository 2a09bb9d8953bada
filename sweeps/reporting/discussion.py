"""Exploratory statistics of the per-task pages: LAD against every other method of each table (seeds paired),
variants against their base table, each with its 95 % interval and UNADJUSTED p (``sweeps.stats``): only the
pre-registered primary family (``sweeps.reporting.primary``) is Holm-adjusted and decides anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeps.reporting.model import MIN_IMPORTANCE_TRIALS, REPO, TARGET_TASKS, Report, Table, commits_text, num
from sweeps.stats import Paired, paired


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
    """Every exploratory comparison of the tables (unadjusted p)."""

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
    return Discussion(tables, variants)


def comparison_lines(report: Report, disc: Discussion | None = None, task: str | None = None) -> list[str]:
    """One bullet per table with a LAD row: LAD minus each other method (paired seeds, unadjusted p)."""
    disc = disc or discussion(report)
    return [f"- **{t.task}** ({t.budget}{', ' + t.variant if t.variant else ''}{', main' if t.primary else ''}; "
            f"{commits_text(t.commits)}), exploratory: "
            + "; ".join(f"LAD vs {c.other} ({c.student}) {c.diff.text()}: {c.verdict}" for c in comps) + "."
            for t, comps in disc.tables if task in (None, t.task)]


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
                    f"{k} {num(g.trials[0][1].get(k))}" for k in keys)) for g, keys in groups]
        lines.append(f"- Primary tables of {', '.join(tasks)} set `{variant}` for every method; the best trial "
                     f"of each search (≥ {MIN_IMPORTANCE_TRIALS} trials, see the sweep section) had "
                     + "; ".join(best) + ".")
    return lines


def variant_lines(report: Report, disc: Discussion | None = None, task: str | None = None) -> list[str]:
    """One bullet per variant table: variant minus its base table, per method/student (paired seeds, unadjusted p)."""
    disc = disc or discussion(report)
    lines = []
    for base, var, items in disc.variants:
        if task not in (None, var.task):
            continue
        added = " ".join(sorted(set(var.variant.split()) - set(base.variant.split())))
        against = f" (on top of `{base.variant}`)" if base.variant else ""
        lines.append(f"- **{var.task}**, `{added}`{against}, exploratory: " + "; ".join(
            f"{label} {d.text()} ({d.verdict('better', 'worse')})" for label, d in items) + ".")
    return lines


def against_lad_lines(report: Report, task: str) -> list[str]:
    """One bullet per arm left out of the primary family, against LAD of the same student (seeds paired,
    unadjusted p), with every seed's two scores: the recipes (``experiment=reference_<task>``), the
    exploratory methods and the other students."""
    head = report.headline
    lines = []
    for a in getattr(head, "against_lad", None) or []:
        if a.task != task:
            continue
        seeds = sorted(set(a.lad.scores) & set(a.other.scores))
        per_seed = ", ".join(f"{s}: {100 * a.lad.scores[s]:.2f} / {100 * a.other.scores[s]:.2f}" for s in seeds)
        teacher = (f" {a.other_teacher} of {len(seeds)} pairs were distilled from different teacher runs (a recipe's "
                   "own teacher, or a teacher retrained on another machine)." if a.other_teacher else "")
        lines.append(f"- **{a.student}**, LAD − {a.arm}: {a.diff.text()}: "
                     f"{a.diff.verdict('LAD ahead', 'LAD behind')}. Per seed (LAD / {a.arm}): {per_seed or 'none'}. "
                     f"LAD: n = {a.lad.n}, {commits_text(a.lad.commits)}; {a.arm}: n = {a.other.n}, "
                     f"{commits_text(a.other.commits)}.{teacher}")
    return lines


def render_discussion(report: Report, task: str) -> list[str]:
    """The exploratory comparisons and variants of one task's tables (its per-task page)."""
    disc = discussion(report)
    lines = ["## Exploratory comparisons", "",
             "Exploratory: each comparison is shown with its 95 % interval and its UNADJUSTED p; none of them "
             "is corrected for the many comparisons made, and none decides a target (only the pre-registered "
             "primary family on the main page does). Differences are in points (x100).", ""]
    lines += comparison_lines(report, disc, task) or ["- No table of this task has a LAD row next to another method."]
    lines.append("")
    arms = against_lad_lines(report, task)
    if arms:
        lines += ["Against LAD of the same student (the arms the primary family leaves out: exploratory methods, "
                  "the other student, the reference recipe; each arm's setup with the most seeds):", ""] + arms + [""]
    variants = variant_lines(report, disc, task)
    if variants:
        lines += ["Variants (same task, teacher and budget; difference = table with the added overrides − table "
                  "without them, same method and student):", ""] + variants + [""]
    return lines


def render_context(report: Report) -> list[str]:
    """Hand-set hyper-parameters against the searches, what differs from the paper, published numbers."""
    lines = []
    hparams = hyperparameter_lines(report)
    if hparams:
        lines += ["## Hyper-parameters", ""] + hparams + [""]
    lines += ["## What differs from the paper (Lin, Chen, Kao, Sensors 2023)", "",
              "- Teacher: all-MiniLM-L6-v2 (6 layers, hidden 384, a sentence-embedding model) fine-tuned here, "
              "not a 12-layer bert-base; the students keep 2 or 3 of its 6 layers, so there are fewer "
              "teacher layers for the gates to aggregate.",
              "- Budget: CPU-only training at the budgets named in each table heading, far "
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
