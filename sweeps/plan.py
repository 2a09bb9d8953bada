"""Compute plan of a results grid: how many CPU-hours it needs on this machine, before it starts.

    python -m sweeps.plan                          # sweeps/conf/plan.yaml, throughput from results/runs.jsonl
    python -m sweeps.plan --plan my_plan.yaml --export results/runs.jsonl

A run costs ``epochs x train examples`` training examples. The throughput of one thread is
measured, not assumed: the recorded 1-thread runs of the export (``runtime.num_threads == 1``)
give words per second per model kind (teacher, or a student of a given depth distilled from a
cached teacher), so tasks without a measured run are priced by the length of their sentences, and
a kind without a measured run is priced from the 3-layer student by its number of layers.
Evaluation and teacher-cache builds are not counted: the plan is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEACHER_LAYERS = 6  # the default MiniLM-L6 teacher


class PlanError(Exception):
    """A plan that cannot be priced: one ``error:`` line."""


@dataclass(frozen=True)
class TaskData:
    examples: int          # train split size
    words: float           # mean whitespace words per train example (both texts)


def task_data(task: str, data_dir: str) -> TaskData:
    from lad.data.sources import read_split
    from sweeps.baselines import task_spec

    rows = read_split(task_spec(task), data_dir, "train", None)
    words = [len(r.text_a.split()) + (len(r.text_b.split()) if r.text_b else 0) for r in rows]
    return TaskData(len(rows), statistics.fmean(words))


def reference_epochs(task: str) -> float | None:
    from omegaconf import OmegaConf

    path = REPO / "conf" / "experiment" / f"reference_{task}.yaml"
    return float(OmegaConf.load(path).trainer.epochs) if path.is_file() else None


def model_kind(record: dict) -> str | None:
    if record.get("entry") == "train_teacher":
        return "teacher"
    layers = record.get("params", {}).get("student.num_layers")
    return f"student{layers}" if layers not in (None, "None") else None


def measured_words_per_s(records: list[dict], data: dict[str, TaskData]) -> dict[str, list[tuple[str, float]]]:
    """kind -> [(task, words/s)] from the finished 1-thread runs (the fastest run per task and kind:
    the others shared the CPU with other work, so the plan stays a lower bound)."""
    best: dict[tuple[str, str], float] = {}
    for r in records:
        kind, task = model_kind(r), r.get("task")
        rate = r.get("metrics", {}).get("train_examples_per_s")
        if kind is None or task not in data or not rate or str(r.get("params", {}).get("runtime.num_threads")) != "1":
            continue
        best[(kind, task)] = max(best.get((kind, task), 0.0), float(rate) * data[task].words)
    out: dict[str, list[tuple[str, float]]] = {}
    for (kind, task), rate in sorted(best.items()):
        out.setdefault(kind, []).append((task, rate))
    return out


def rate_for(kind: str, task: str, measured: dict[str, list[tuple[str, float]]]) -> tuple[float, str]:
    """Words/s of ``kind`` on ``task`` and where it comes from."""
    scale, source = 1.0, kind
    if not measured.get(kind):  # priced from the 3-layer student by depth (cost grows with the layers)
        depth = TEACHER_LAYERS if kind == "teacher" else int(kind.removeprefix("student"))
        scale, source = 3 / depth, f"student3 x 3/{depth}"
        kind = "student3"
    rows = measured.get(kind)
    if not rows:
        raise PlanError("no recorded 1-thread distil run of a 3-layer student in the export; run one grid cell "
                        "with trainer.num_threads=1 and export it first")
    for t, rate in rows:
        if t == task:
            return rate * scale, f"{source} on {task}"
    return statistics.median(r for _, r in rows) * scale, f"{source} on {', '.join(t for t, _ in rows)}"


def epochs_for(budget, task: str, fallback: float) -> float:
    if budget == "reference":
        return reference_epochs(task) or fallback
    return float(budget)


def plan(cfg: dict, data: dict[str, TaskData], measured: dict) -> dict:
    """CPU-hours per stage for every budget scenario."""
    out: dict[str, dict[str, float]] = {}
    for scenario, budget in cfg["budgets"].items():
        stages = {}
        for name, stage in cfg["stages"].items():
            tasks = cfg["tasks"] if stage.get("tasks", "all") == "all" else stage["tasks"]
            kind = "teacher" if stage["kind"] == "teacher" else f"student{stage.get('student_layers', 3)}"
            seconds = 0.0
            for task in tasks:
                epochs = epochs_for(budget, task, float(cfg.get("reference_fallback", 3)))
                words = epochs * stage.get("budget_fraction", 1.0) * data[task].examples * data[task].words
                rate, _ = rate_for(kind, task, measured)
                seconds += stage["runs_per_task"] * words / rate
            stages[name] = seconds / 3600
        out[scenario] = stages
    return out


def render(cfg: dict, table: dict, data: dict[str, TaskData], measured: dict) -> str:
    lines = ["measured 1-thread throughput (fastest finished run per task; words = whitespace words):"]
    for kind, rows in measured.items():
        lines.append(f"  {kind:9s} " + ", ".join(f"{t} {r / data[t].words:.1f} ex/s ({r:.0f} words/s)"
                                                  for t, r in rows))
    lines.append("train split: " + ", ".join(f"{t} {d.examples} ex x {d.words:.1f} words" for t, d in data.items()))
    stages = list(cfg["stages"])
    lines.append("")
    lines.append("| budget | " + " | ".join(stages) + " | total CPU-h | wall-clock h at "
                 f"{cfg['lanes']} lanes | sessions |")
    lines.append("|---" * (len(stages) + 4) + "|")
    for scenario, row in table.items():
        total = sum(row.values())
        wall = total / cfg["lanes"]
        lines.append(f"| {scenario} | " + " | ".join(f"{row[s]:.1f}" for s in stages)
                     + f" | {total:.1f} | {wall:.1f} | {wall / cfg['session_hours']:.1f} |")
    lines.append("")
    lines.append(f"target: {cfg['target_cpu_hours']} CPU-hours for the whole grid")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(REPO / "sweeps" / "conf" / "plan.yaml"))
    parser.add_argument("--export", default=str(REPO / "results" / "runs.jsonl"))
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "glue"))
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from lad.errors import LADError

    for path, what in ((args.plan, "plan"), (args.export, "export")):
        if not Path(path).is_file():
            print(f"error: {what} file {path} not found", file=sys.stderr)
            return 2
    cfg = OmegaConf.to_container(OmegaConf.load(args.plan), resolve=True)
    try:
        data = {t: task_data(t, args.data_dir) for t in cfg["tasks"]}
    except LADError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    records = [json.loads(line) for line in Path(args.export).read_text().splitlines() if line.strip()]
    measured = measured_words_per_s(records, data)
    try:
        print(render(cfg, plan(cfg, data, measured), data, measured))
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
