"""Fine-tune the MiniLM teachers used by the results page (resumable: finished teachers are skipped).

    python sweeps/teachers.py                 # rte mrpc stsb cola sst2
    python sweeps/teachers.py --tasks rte     # just one

Each task runs ``train_teacher.py`` in a subprocess; a task whose teacher directory already holds
``metrics.json`` is skipped, an interrupted one resumes from its last checkpoint. SST-2 is capped
at ``--sst2-steps`` optimisation steps (its 67k-example train split is long on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]


def teacher_done(artifacts: Path, teacher: str, task: str) -> bool:
    return (artifacts / "teachers" / teacher / task / "metrics.json").is_file()


def command(task: str, args) -> list[str]:
    cmd = [sys.executable, str(REPO / "train_teacher.py"), f"task={task}", f"teacher={args.teacher}",
           "trainer.resume=true", "trainer.progress=false", "mlflow.purpose=results"]
    if task == "sst2":
        cmd += [f"trainer.max_steps={args.sst2_steps}", "trainer.eval_every=200"]
    return cmd + list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    parser.add_argument("--teacher", default="minilm_l6")
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--sst2-steps", type=int, default=800)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    known = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
    unknown = [t for t in args.tasks if t not in known]
    if unknown:  # e.g. an override swallowed by --tasks: put overrides before --tasks or after --
        print(f"error: unknown task(s) {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    failed = []
    for task in args.tasks:
        if teacher_done(Path(args.artifacts), args.teacher, task):
            print(f"[teachers] {task}: done, skipping", flush=True)
            continue
        cmd = command(task, args)
        print(f"[teachers] {task}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            failed.append(task)
    if failed:
        print(f"[teachers] failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
