"""Trivial baselines: the score of a constant prediction on each task's dev file -> results/baselines.json.

    python sweeps/baselines.py                       # the tasks of results/runs.jsonl
    python sweeps/baselines.py --tasks rte mrpc --out /tmp/baselines.json --data-dir /path/to/glue

A classifier's constant prediction is the class that scores best on the dev file (the majority class
for accuracy, all-positive for F1, any class for MCC: 0); a regression's is the dev mean (its
correlation is 0). Scores come from the task's own config (``conf/task/<task>.yaml``), reader
(``lad.data.glue``) and metric code (``lad.data.metrics``), so they are what a model that ignores its input
would score in the tables. The report reads the file (it needs no GLUE data): every table shows the
trivial baseline next to its scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lad.core.config import CONF_DIR
from lad.core.errors import ConfigError, LADError
from lad.core.fileio import write_text
from sweeps.export import DEFAULT_EXPORT, read_export

DEFAULT_BASELINES = Path("results") / "baselines.json"


def task_spec(name: str):
    """The TaskSpec of ``conf/task/<name>.yaml``; ConfigError for an unknown task."""
    from omegaconf import OmegaConf

    from lad.data.tasks import TaskSpec

    path = CONF_DIR / "task" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
        raise ConfigError(f"unknown task {name!r} (known: {', '.join(known)})")
    return TaskSpec.from_config(OmegaConf.load(path))


def task_baseline(name: str, data_dir: str | None = None) -> dict:
    from lad.data.glue import read_split
    from lad.data.metrics import constant_baseline
    from lad.data.tasks import eval_splits

    task = task_spec(name)
    return constant_baseline(task, {s: [ex.label for ex in read_split(task, data_dir, s)] for s in eval_splits(task)})


def read_baselines(path: Path = DEFAULT_BASELINES) -> dict[str, dict]:
    """Task -> baseline record of a baselines file ({} when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LADError(f"{path}: not a JSON file ({exc.msg})") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: the tasks of --export")
    parser.add_argument("--export", type=Path, default=DEFAULT_EXPORT)
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: as data.data_dir=auto)")
    parser.add_argument("--out", type=Path, default=DEFAULT_BASELINES)
    args = parser.parse_args(argv)
    try:
        tasks = args.tasks or sorted({str(r["task"]) for r in read_export(args.export) if r.get("task")})
        if not tasks:
            raise ConfigError(f"no tasks: {args.export} holds no runs (pass --tasks)")
        for name in tasks:
            task_spec(name)  # every name checked before any data is read
        out = {name: task_baseline(name, args.data_dir) for name in tasks}
    except LADError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    write_text(args.out, json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"[baselines] {len(out)} tasks -> {args.out}: "
          + ", ".join(f"{t} {100 * b['score']:.2f} ({b['constant']})" for t, b in sorted(out.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
