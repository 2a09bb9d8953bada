#!/usr/bin/env python
"""Download GLUE from the Hugging Face Hub (``nyu-mll/glue``, with the ``datasets`` library) and
write it in the TSV layout LAD's readers expect (``conf/task/<task>.yaml``).

    pip install datasets                          # or: pip install -e ".[glue]"
    python scripts/fetch_glue.py                  # every task into data/glue (data.data_dir=auto finds it)
    python scripts/fetch_glue.py --tasks rte mrpc --out /data/glue   # then data.data_dir=/data/glue

Needs a network connection: offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable) it stops with
one ``error:`` line and exit status 2 before downloading anything. Existing task folders are
left alone unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from lad.core.errors import LADError

HF_DATASET = "nyu-mll/glue"
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax")
# the Hub's text columns per task (text_a, text_b)
HF_TEXT = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
    "ax": ("premise", "hypothesis"),
}


def hf_split(split: str) -> str:
    """LAD's split name -> the Hub's (``dev_matched`` -> ``validation_matched``)."""
    return split.replace("dev", "validation", 1) if split.startswith("dev") else split


def label_text(task, value, names: list[str] | None) -> str | None:
    """The label as the task's TSV spells it: a class name the task lists, else the class id."""
    if value is None or (not task.is_regression and int(value) < 0):
        return None  # unlabelled (test)
    if task.is_regression:
        return f"{float(value):g}"
    if names and names[int(value)] in task.labels:
        return names[int(value)]
    return task.labels[int(value)]


def _clean(text) -> str:
    return " ".join(str(text or "").split())  # no tabs or newlines inside a TSV cell


def tsv_lines(task, split: str, rows: Iterable[dict]) -> Iterator[str]:
    """Lines of ``split``'s file; ``rows`` hold ``text_a``, ``text_b``, ``label`` (text or None), ``idx``."""
    spec = task.split(split)
    fields = [(spec.index, "idx"), (spec.text_a, "text_a"), (spec.text_b, "text_b")]
    if spec.labeled:
        fields.append((spec.label, "label"))
    fields = [(col, key) for col, key in fields if col is not None]
    if spec.header:
        yield "\t".join(str(col) for col, _ in fields)
        for row in rows:
            yield "\t".join(_clean(row[key]) for _, key in fields)
        return
    width = spec.num_columns or max(int(col) for col, _ in fields) + 1
    for row in rows:
        cells = [""] * width
        for col, key in fields:
            cells[int(col)] = _clean(row[key])
        yield "\t".join(cells)


def write_split(task, split: str, rows: Iterable[dict], data_dir: Path) -> Path:
    from lad.core.fileio import write_text

    path = data_dir / task.glue_name / task.split(split).file
    write_text(path, "\n".join(tsv_lines(task, split, rows)) + "\n")
    return path


def hf_rows(task, dataset) -> Iterator[dict]:
    """Rows of a Hub split in the shape ``tsv_lines`` takes."""
    a, b = HF_TEXT[task.name]
    feature = dataset.features.get("label")
    names = list(getattr(feature, "names", None) or []) or None
    for i, ex in enumerate(dataset):
        yield {"idx": ex.get("idx", i), "text_a": ex[a], "text_b": ex[b] if b else None,
               "label": label_text(task, ex.get("label"), names)}


def check_online() -> None:
    from lad.models.hub import hub_reachable, offline_requested

    if offline_requested():
        raise LADError("HF_HUB_OFFLINE is set: fetching GLUE needs the Hugging Face Hub; unset it on a "
                       "connected machine, or copy a GLUE folder here and pass data.data_dir")
    if not hub_reachable():
        raise LADError("cannot reach the Hugging Face Hub (no network?): fetching GLUE needs it; copy a GLUE "
                       "folder from a connected machine and pass data.data_dir")


def load_task(name: str):
    from omegaconf import OmegaConf

    from lad.data.tasks import TaskSpec

    return TaskSpec.from_config(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml"))


def fetch(names: list[str], out: Path, force: bool = False) -> list[Path]:
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise LADError("scripts/fetch_glue.py needs the 'datasets' package: pip install datasets "
                       "(or pip install -e '.[glue]')") from exc
    written = []
    for name in names:
        task = load_task(name)
        if (out / task.glue_name).is_dir() and not force:
            print(f"{name}: {out / task.glue_name} exists, skipped (--force replaces it)")
            continue
        for split in task.split_names:
            try:
                data = load_dataset(HF_DATASET, name, split=hf_split(split))
            except Exception as exc:  # noqa: BLE001 - network/hub failures become one line
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise LADError(f"cannot download {HF_DATASET} {name}/{hf_split(split)}: {first[:200]}") from exc
            path = write_split(task, split, hf_rows(task, data), out)
            print(f"{name}: {len(data)} rows -> {path}")
            written.append(path)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, metavar="TASK",
                        help=f"tasks to fetch (default: all of {' '.join(TASKS)})")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "glue", help="GLUE folder (default data/glue)")
    parser.add_argument("--force", action="store_true", help="replace task folders that exist")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lad.core.config import setup_environment

    setup_environment()
    try:
        check_online()
        fetch(args.tasks, args.out, args.force)
    except LADError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done: data.data_dir={args.out}" + ("  (found by data.data_dir=auto)" if args.out == REPO / "data" / "glue" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
