#!/usr/bin/env python
"""The closing table of ``make demo``: teacher, distilled student and the majority-class baseline.

Reads the two runs' ``metrics.json`` / ``config.yaml`` and scores the trivial baseline (always the
most frequent training label, or the mean training score for a regression task) on the same dev
examples::

    python scripts/demo_table.py outputs/demo/train_teacher/sst2/experiment=demo \\
        outputs/demo/distil/sst2/experiment=demo

Columns: dev metric (best evaluation of the run), parameters and inference examples/s, both as
each run measured them at its end (``metrics.json``'s ``inference``: one protocol, see
``lad/deploy/inference.py``); the thread count of that measurement is printed under the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lad.core.errors import LADError


@dataclass
class Row:
    label: str
    score: float
    params: int | None = None
    examples_per_s: float | None = None
    threads: int | None = None


def load_run(run_dir: Path) -> tuple[dict, object]:
    """``metrics.json`` and the resolved ``config.yaml`` of a finished run."""
    from omegaconf import OmegaConf

    metrics, config = run_dir / "metrics.json", run_dir / "config.yaml"
    for path in (metrics, config):
        if not path.is_file():
            raise LADError(f"{path} not found: is {run_dir} a finished LAD run directory?")
    return json.loads(metrics.read_text()), OmegaConf.load(config)


def majority_row(cfg) -> Row:
    """Score of predicting the most frequent training label (regression: the mean score)."""
    import numpy as np

    from lad.data.metrics import compute_split_metrics, main_score
    from lad.data.sources import read_split
    from lad.data.tasks import TaskSpec, eval_splits

    task = TaskSpec.from_config(cfg.task)
    data_dir = cfg.data.data_dir  # resolved by the task's layout (GLUE folder, own files, Hub)
    train = [ex.label for ex in read_split(task, data_dir, "train", cfg.data.max_train_samples)]
    constant = float(np.mean(train)) if task.is_regression else Counter(train).most_common(1)[0][0]
    results = {}
    for split in eval_splits(task):
        labels = np.array([ex.label for ex in read_split(task, data_dir, split, cfg.data.max_eval_samples)])
        results[split] = (np.full(len(labels), constant, dtype=labels.dtype), labels)
    return Row("majority", main_score(task, compute_split_metrics(task, results)), 0, None)


def model_row(label: str, run_dir: Path) -> Row:
    """The run's best dev score and its end-of-run inference measurement (``metrics.json``)."""
    metrics, _ = load_run(run_dir)
    inference = metrics.get("inference") or {}
    rate = inference.get("throughput_examples_per_s")
    return Row(label, float(metrics["best"][metrics["main_metric"]]), inference.get("params_total"),
               None if rate is None else float(rate), inference.get("num_threads"))


def threads_note(rows: list[Row]) -> str:
    """One line under the table: the thread count of the speed numbers (a warning when they differ)."""
    threads = {r.label: r.threads for r in rows if r.examples_per_s is not None}
    if not threads:
        return "inference ex/s: not measured (trainer.measure_inference=false)"
    if len(set(threads.values())) == 1:
        n = next(iter(threads.values()))
        return f"inference ex/s: PyTorch fp32 on the CPU, {n} thread{'s' * (n != 1)}, measured at the end of each run"
    each = ", ".join(f"{label} {n}" for label, n in threads.items())
    return f"warning: the speeds were measured with different thread counts ({each}): not comparable"


def format_params(n: int | None) -> str:
    if n is None:
        return "-"
    if not n:
        return "0"
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def format_table(rows: list[Row], metric: str) -> str:
    """Fixed-width table; the first number after each row label is its dev metric."""
    header = ("model", f"dev {metric}", "params", "inference ex/s")
    cells = [header] + [(r.label, f"{r.score:.4f}", format_params(r.params),
                         "-" if r.examples_per_s is None else f"{r.examples_per_s:.0f}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = []
    for i, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher_run", type=Path, help="run directory of train_teacher.py")
    parser.add_argument("student_run", type=Path, help="run directory of distil.py")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lad.core.config import setup_environment

    setup_environment()
    try:
        teacher = model_row("teacher", args.teacher_run)
        student = model_row("student", args.student_run)
        metrics, cfg = load_run(args.student_run)
        majority = majority_row(cfg)
    except LADError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [teacher, student, majority]
    print(format_table(rows, metrics["main_metric"]))
    print(threads_note(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
