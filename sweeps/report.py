"""Results pages from the recorded runs: docs/results.md, docs/results/*.md, results/summary.csv, docs/img/*.png.

    python sweeps/report.py                          # from MLflow (sqlite:///mlruns.db)
    python sweeps/report.py --source export          # from results/runs.jsonl (same output)
    python sweeps/report.py --tracking-uri sqlite:////tmp/abl/mlruns.db --out /tmp/abl/results.md \
        --csv /tmp/abl/summary.csv

The main page (``--out``) is short: the pre-registered rule (``results/preregistration.yaml``), the
headline table, the primary family of comparisons (Holm over exactly those, with minimum detectable
differences), the targets decided from it, and the learning curves. Every other table goes to one
exploratory page per task (``docs/results/<task>.md``: next to ``--out``, in a folder named after it)
and a cross-task page (``overview.md``).

Every number comes from FINISHED runs (the records of sweeps/export.py). Output is deterministic:
rows are sorted, floats have fixed formats, nothing depends on the time or on the source.

Tables: one per (task, teacher, budget, extra overrides) over grid cells (Optuna sweep trials go to
the sweep section instead; ``sweeps/kinds.py`` defines both, for the ablation driver too). A cell (method,
student, seed) seen twice keeps its latest run. Scores are the best dev value of the task's main
metric, x100; "± std" is the sample standard deviation over seeds. "% of teacher" divides by the best dev score of the
task's latest FINISHED teacher run (the one whose ``teacher.path`` the students used, when known).
The cross-task summary (and the headline while no commit is pinned) use each task's main table, taken from one
common setup (teacher, budget, extra overrides) where possible: the setup present on the most tasks,
then with the most method/student rows, the most runs, the fewest extra overrides. The per-task pages
compare LAD with every other method of each table, and each variant table with its base table
(exploratory: unadjusted p).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lad.core.fileio import write_text
from sweeps.baselines import DEFAULT_BASELINES, read_baselines
from sweeps.export import DEFAULT_EXPORT, DEFAULT_URI, absolute_uri, load_mlflow_records, read_export
from sweeps.reporting.grouping import build_report
from sweeps.reporting.markdown import (OVERVIEW, render_csv, render_markdown, render_overview, render_task_page,
                                       task_pages)
from sweeps.reporting.model import REPO, Report
from sweeps.reporting.plots import make_plots
from sweeps.reporting.prereg import DEFAULT_PREREG, Prereg, read_prereg
from sweeps.reporting.readme import refresh_readme


def load_records(source: str, tracking_uri: str, export_path: Path) -> list[dict]:
    if source == "export":
        from lad.core.errors import LADError

        if not Path(export_path).is_file():
            raise LADError(f"no export at {export_path} (run python sweeps/export.py)")
        return read_export(export_path)
    return load_mlflow_records(absolute_uri(tracking_uri))


def rel_link(target: Path, page_dir: Path) -> str:
    """``target`` (relative to the repository) as a link from a page in ``page_dir``; the repository-relative
    path when the page lies outside the repository."""
    try:
        page_dir.resolve().relative_to(REPO)
    except ValueError:
        return target.as_posix()
    return Path(os.path.relpath(REPO / target, page_dir.resolve())).as_posix()


def generate(records: list[dict], out: Path, csv_path: Path, img_dir: Path | None, plots: bool = True,
             baselines: dict[str, dict] | None = None, prereg: Prereg | None = None) -> Report:
    """Write the main page ``out``, the per-task pages in ``out.parent/out.stem/``, the CSV and the figures."""
    report = build_report(records, baselines, prereg)
    pages = out.parent / out.stem
    images = {}
    img_dir = img_dir or out.parent / "img"
    if plots:
        images = make_plots(report, img_dir)
    main_prefix = Path(os.path.relpath(img_dir, out.parent)).as_posix()
    page_prefix = Path(os.path.relpath(img_dir, pages)).as_posix()
    write_text(out, render_markdown(report, images, main_prefix, pages.name,
                                    rel_link(Path(report.headline.prereg.path), out.parent)))
    written = {pages / f"{task}.md": render_task_page(report, task, images, page_prefix) for task in task_pages(report)}
    written[pages / f"{OVERVIEW}.md"] = render_overview(report)
    if pages.is_dir():  # the folder is generated: a page of a task no longer recorded goes
        for old in pages.glob("*.md"):
            if old not in written:
                old.unlink()
    for path, text in written.items():
        write_text(path, text)
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
    parser.add_argument("--baselines", type=Path, default=DEFAULT_BASELINES,
                        help="trivial baselines (python sweeps/baselines.py writes them)")
    parser.add_argument("--prereg", type=Path, default=DEFAULT_PREREG,
                        help="the pre-registered analysis (primary family, alpha, power, targets, headline commit)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also refresh the headline block between the results markers of this file")
    args = parser.parse_args(argv)
    from lad.core.errors import LADError

    try:
        records = load_records(args.source, args.tracking_uri, args.export)
        baselines = read_baselines(args.baselines)
        prereg = read_prereg(args.prereg)
    except LADError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = generate(records, args.out, args.csv, args.img_dir, plots=not args.no_plots, baselines=baselines,
                      prereg=prereg)
    print(f"[report] {len(records)} runs, {len(report.tables)} tables -> {args.out} (+ "
          f"{args.out.parent / args.out.stem}/*.md), {args.csv}")
    if args.readme is not None:
        refresh_readme(args.readme, report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
