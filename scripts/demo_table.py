#!/usr/bin/env python
"""The closing table of ``make demo``: teacher, distilled student and the majority-class baseline.

Reads the two runs' ``metrics.json`` / ``config.yaml``, counts each model's parameters, times
inference on the dev set, and scores the trivial baseline (always the most frequent training
label, or the mean training score for a regression task) on the same dev examples::

    python scripts/demo_table.py outputs/demo/train_teacher/sst2/experiment=demo \\
        outputs/demo/distil/sst2/experiment=demo

Columns: dev metric (best evaluation of the run), parameters, inference examples/s (forward
passes over pre-tokenised dev batches, after one warm-up batch, with the run's thread setting).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lad.errors import LADError


@dataclass
class Row:
    label: str
    score: float
    params: int | None = None
    examples_per_s: float | None = None


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

    from lad.data.glue import read_split, resolve_data_dir
    from lad.data.tasks import TaskSpec, eval_splits
    from lad.metrics import compute_split_metrics, main_score

    task = TaskSpec.from_config(cfg.task)
    data_dir = resolve_data_dir(cfg.data.data_dir)
    train = [ex.label for ex in read_split(task, data_dir, "train", cfg.data.max_train_samples)]
    constant = float(np.mean(train)) if task.is_regression else Counter(train).most_common(1)[0][0]
    results = {}
    for split in eval_splits(task):
        labels = np.array([ex.label for ex in read_split(task, data_dir, split, cfg.data.max_eval_samples)])
        results[split] = (np.full(len(labels), constant, dtype=labels.dtype), labels)
    return Row("majority", main_score(task, compute_split_metrics(task, results)), 0, None)


def dev_batches(cfg, tokenizer, n: int, batch_size: int) -> list[dict]:
    """The first ``n`` dev examples, tokenised and padded per batch."""
    from lad.data.glue import read_split, resolve_data_dir
    from lad.data.tasks import TaskSpec, eval_splits

    task = TaskSpec.from_config(cfg.task)
    examples = read_split(task, resolve_data_dir(cfg.data.data_dir), eval_splits(task)[0], n)
    batches = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        text_b = [ex.text_b for ex in chunk] if task.is_pair else None
        batches.append(tokenizer([ex.text_a for ex in chunk], text_b, truncation=True,
                                 max_length=int(task.max_seq_length), padding=True, return_tensors="pt"))
    return batches


def inference_rate(model, batches: list[dict]) -> float:
    """Examples per second of forward passes over ``batches`` (the first one is a warm-up)."""
    import torch

    model.eval()
    with torch.no_grad():
        model(**batches[0])
        timed = batches[1:] or batches
        start = time.perf_counter()
        for batch in timed:
            model(**batch)
        elapsed = time.perf_counter() - start
    return sum(len(b["input_ids"]) for b in timed) / max(elapsed, 1e-9)


def model_row(label: str, run_dir: Path, n: int, batch_size: int) -> Row:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lad.models.teacher import _quiet_transformers
    from lad.runtime import set_threads

    _quiet_transformers()

    metrics, cfg = load_run(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise LADError(f"{model_dir}: no saved model (config.json missing)")
    set_threads(cfg.trainer.get("num_threads"))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    params = sum(p.numel() for p in model.parameters())
    rate = inference_rate(model, dev_batches(cfg, tokenizer, n, batch_size))
    return Row(label, float(metrics["best"][metrics["main_metric"]]), params, rate)


def format_params(n: int | None) -> str:
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
    parser.add_argument("--examples", type=int, default=256, help="dev examples to time (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lad.config import setup_environment

    setup_environment()
    try:
        teacher = model_row("teacher", args.teacher_run, args.examples, args.batch_size)
        student = model_row("student", args.student_run, args.examples, args.batch_size)
        metrics, cfg = load_run(args.student_run)
        majority = majority_row(cfg)
    except LADError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table([teacher, student, majority], metrics["main_metric"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
