"""Fine-tune the MiniLM teachers used by the results page (resumable: finished teachers are skipped).

    python sweeps/teachers.py                          # rte mrpc stsb cola sst2, each with its lr grid
    python sweeps/teachers.py --tasks rte              # just one
    python sweeps/teachers.py --tasks rte --dry-run    # what would run

A task with one learning rate (``--lr-grid``; default: the teacher recipe's ``optim.lr``) trains
straight into the published teacher folder ``<artifacts>/teachers/<teacher>/<task>``. A task with
several trains one teacher per rate under ``<artifacts>/teacher_lr/<lr>/`` and publishes a copy of
the one with the best dev score (ties: the first rate listed) as the task's teacher; the choice is
written next to it (``lr_grid.json``). Every run is a ``train_teacher.py`` subprocess recorded with
``mlflow.purpose=results``; an interrupted one resumes from its last checkpoint. SST-2 trains
``--sst2-epochs`` full epochs (evaluated every ``--sst2-eval-every`` steps).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from lad.core.fileio import atomic_dir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]
# learning-rate grids where the default recipe gave a weak teacher (CoLA MCC 0.23, RTE 0.59)
DEFAULT_LR_GRID = {"rte": [2e-5, 5e-5, 1e-4, 2e-4], "cola": [2e-5, 5e-5, 1e-4, 2e-4]}


def teacher_dir(artifacts: Path, teacher: str, task: str, lr: float | None = None) -> Path:
    root = artifacts if lr is None else artifacts / "teacher_lr" / f"{lr:g}"
    return root / "teachers" / teacher / task


def teacher_done(artifacts: Path, teacher: str, task: str, lr: float | None = None) -> bool:
    return (teacher_dir(artifacts, teacher, task, lr) / "metrics.json").is_file()


def grid_covered(artifacts: Path, teacher: str, task: str, lrs: list[float]) -> bool:
    """Whether the published teacher was chosen from (at least) these rates (a grid can be extended)."""
    record = teacher_dir(artifacts, teacher, task) / "lr_grid.json"
    if len(lrs) <= 1:
        return True
    try:
        chosen_from = {float(lr) for lr in json.loads(record.read_text())["dev"]}
    except (OSError, ValueError, KeyError):
        return False
    return {float(f"{lr:g}") for lr in lrs} <= chosen_from


def command(task: str, args, lr: float | None = None) -> list[str]:
    cmd = [sys.executable, str(REPO / "train_teacher.py"), f"task={task}", f"teacher={args.teacher}",
           "trainer.resume=true", "trainer.progress=false", "mlflow.purpose=results",
           f"paths.artifacts={args.artifacts if lr is None else Path(args.artifacts) / 'teacher_lr' / f'{lr:g}'}"]
    if lr is not None:
        cmd.append(f"optim.lr={lr:g}")
    if task == "sst2":
        cmd += [f"trainer.epochs={args.sst2_epochs}", f"trainer.eval_every={args.sst2_eval_every}"]
    return cmd + list(args.overrides)


def main_score(run: Path) -> float:
    metrics = json.loads((run / "metrics.json").read_text())
    return float(metrics["best"][metrics["main_metric"]])


def publish_best(artifacts: Path, teacher: str, task: str, lrs: list[float]) -> Path:
    """Copy the best of the per-rate teachers to the published folder; record the choice."""
    scores = {lr: main_score(teacher_dir(artifacts, teacher, task, lr)) for lr in lrs}
    best = max(lrs, key=lambda lr: scores[lr])  # max keeps the first of equal scores
    source = teacher_dir(artifacts, teacher, task, best)

    def fill(tmp: Path) -> None:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        (tmp / "lr_grid.json").write_text(json.dumps({"chosen_lr": best, "dev": {f"{lr:g}": s for lr, s in scores.items()}},
                                                     indent=1) + "\n")
    return atomic_dir(teacher_dir(artifacts, teacher, task), fill)


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    grid = dict(DEFAULT_LR_GRID)
    for item in items:
        task, _, values = item.partition("=")
        grid[task] = [float(v) for v in values.split(",") if v]
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    parser.add_argument("--teacher", default="minilm_l6")
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--lr-grid", nargs="*", default=[], metavar="TASK=LR,LR",
                        help="learning rates per task (default: " + "; ".join(
                            f"{t}={','.join(f'{x:g}' for x in v)}" for t, v in DEFAULT_LR_GRID.items()) + ")")
    parser.add_argument("--sst2-epochs", type=int, default=1)
    parser.add_argument("--sst2-eval-every", type=int, default=500)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    known = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
    unknown = [t for t in args.tasks if t not in known]
    if unknown:  # e.g. an override swallowed by --tasks: put overrides before --tasks or after --
        print(f"error: unknown task(s) {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    try:
        grid = parse_grid(args.lr_grid)
    except ValueError as err:
        print(f"error: --lr-grid: {err}", file=sys.stderr)
        return 2
    artifacts, failed = Path(args.artifacts), []
    for task in args.tasks:
        lrs = grid.get(task, [])
        if teacher_done(artifacts, args.teacher, task) and grid_covered(artifacts, args.teacher, task, lrs):
            print(f"[teachers] {task}: done, skipping", flush=True)
            continue
        for lr in (lrs if len(lrs) > 1 else [lrs[0] if lrs else None]):
            single = len(lrs) <= 1
            if not single and teacher_done(artifacts, args.teacher, task, lr):
                print(f"[teachers] {task} lr={lr:g}: done, skipping", flush=True)
                continue
            cmd = command(task, args, None if single else lr)
            if single and lr is not None:
                cmd.append(f"optim.lr={lr:g}")
            print(f"[teachers] {task}: {' '.join(cmd[1:])}", flush=True)
            if not args.dry_run and subprocess.run(cmd, cwd=REPO).returncode != 0:
                failed.append(task if single else f"{task}@{lr:g}")
        if len(lrs) > 1 and not args.dry_run and all(teacher_done(artifacts, args.teacher, task, lr) for lr in lrs):
            path = publish_best(artifacts, args.teacher, task, lrs)
            print(f"[teachers] {task}: published {path} ({(path / 'lr_grid.json').read_text().strip()})", flush=True)
    if failed:
        print(f"[teachers] failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
