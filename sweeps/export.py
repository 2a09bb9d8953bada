"""Export finished LAD runs from MLflow to ``results/runs.jsonl`` (diff-friendly, no weights).

    python sweeps/export.py                                   # sqlite:///mlruns.db -> results/runs.jsonl
    python sweeps/export.py --tracking-uri sqlite:////tmp/abl/mlruns.db --out /tmp/abl/runs.jsonl

Each record holds ``history``: the main dev metric at every evaluation, ``[[step, value], ...]`` (the
learning curve of the results page; left out when the run logged none).

Only runs recorded for the results are exported: their ``lad.purpose`` tag (``mlflow.purpose``, set
to ``results`` by ``sweeps/ablation.py`` and ``sweeps/teachers.py``) must be one of ``--purpose``;
ad-hoc, demo, smoke and test runs never reach the committed file. A tag alone is not enough
(:func:`refusal`): the run's experiment must be a declared results experiment (``lad-<GLUE task>``,
:data:`RESULTS_EXPERIMENTS`) and it must have trained on all the data for its whole budget (no
``data.max_*_samples``, no ``trainer.max_steps`` below ``trainer.epochs`` passes over the data). Runs already in the file and not
in the store (recorded by an earlier session's store) are kept as they are; a run in both is
refreshed from the store.

One JSON object per line (keys sorted), one line per FINISHED ``distil`` / ``train_teacher`` run of
every ``lad-*`` experiment (plus Optuna trials stopped by the pruner, status KILLED, which only count
towards a study's trials), lines sorted by (task, entry, method, student, seed, start time, run id).
The same record format is what ``sweeps/report.py`` and ``sweeps/ablation.py`` read from MLflow, so
the export is a drop-in replacement for the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from lad.core.fileio import write_text
from lad.tracking.store import sqlite_path
from lad.tracking.tracker import full_params

REPO = Path(__file__).resolve().parent.parent

DEFAULT_URI = "sqlite:///mlruns.db"
DEFAULT_EXPORT = Path("results") / "runs.jsonl"
EXPERIMENT_PREFIX = "lad-"
ENTRIES = ("distil", "train_teacher")
TAG_KEYS = ("lad.entry", "lad.kind", "lad.method", "lad.task", "lad.teacher", "lad.overrides", "lad.purpose",
            "mlflow.source.git.commit", "mlflow.parentRunId", "optuna.state")
# params worth keeping: what was trained (gate / loss / student / optimiser / budget) and its size
PARAM_PREFIXES = ("gate.", "loss.", "student.", "optim.", "trainer.", "data.")
PARAM_KEYS = ("seed", "task.name", "task.main_metric", "teacher.name", "teacher.path", "teacher.params",
              "teacher.num_layers", "teacher.hidden_size", "cache.enabled",
              "runtime.num_threads")  # the threads the run used (its throughput is per this many)
PARAM_SKIP = ("data.data_dir", "data.cache_dir", "trainer.num_threads", "trainer.eval_batch_size",
              "trainer.log_every", "trainer.ckpt_every", "trainer.keep_checkpoints",
              "trainer.measure_inference")
PARAM_SKIP_PREFIXES = ("trainer.inference.",)  # how inference was timed, not what was trained
METRIC_PREFIXES = ("best/", "final/", "gate/", "inference/")
# the experiments whose runs are results: mlflow.experiment's default (lad-${task.name}) for the GLUE tasks
RESULTS_TASKS = ("ax", "cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")
RESULTS_EXPERIMENTS = tuple(f"{EXPERIMENT_PREFIX}{task}" for task in RESULTS_TASKS)
METRIC_KEYS = ("train_examples_per_s", "peak_rss_mb")


def absolute_uri(uri: str, base: Path | None = None) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db`` (relative to ``base``, default the cwd)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix):])
        return prefix + str(((base or Path.cwd()) / path).resolve())
    return uri


def keep_param(key: str) -> bool:
    if key in PARAM_SKIP or key.startswith(PARAM_SKIP_PREFIXES) or key.endswith("._target_"):
        return False
    return key in PARAM_KEYS or key.startswith(PARAM_PREFIXES)


def keep_metric(key: str) -> bool:
    return key in METRIC_KEYS or key.startswith(METRIC_PREFIXES)


def iso_time(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def make_record(run_id: str, experiment: str, status: str, start_ms: int | None,
                tags: dict, params: dict, metrics: dict, history: list | None = None) -> dict | None:
    """The exported view of one run, or None when it is not a LAD training run. ``history``: the main
    metric at every evaluation, ``[[step, value], ...]`` (the learning curve; the key is left out when empty)."""
    entry = tags.get("lad.entry")
    if entry not in ENTRIES:
        return None
    method, _, student = str(tags.get("lad.method", "")).partition("/")
    seed = params.get("seed")
    try:
        seed = int(seed) if seed is not None else None
    except ValueError:
        seed = None
    return {
        "run_id": run_id,
        "experiment": experiment,
        "status": status,
        "entry": entry,
        "task": tags.get("lad.task") or params.get("task.name"),
        "method": method or ("teacher" if entry == "train_teacher" else None),
        "student": student or None,
        "seed": seed,
        "teacher": tags.get("lad.teacher") or params.get("teacher.name"),
        "main_metric": params.get("task.main_metric"),
        "start_time": iso_time(start_ms),
        "tags": {k: str(tags[k]) for k in TAG_KEYS if k in tags},
        "params": {k: str(v) for k, v in sorted(params.items()) if keep_param(k)},
        "metrics": {k: float(v) for k, v in sorted(metrics.items()) if keep_metric(k)},
        **({"history": [[int(step), float(v)] for step, v in sorted(history)]} if history else {}),
    }


def _number(params: dict, key: str) -> float | None:
    try:
        return float(params[key])
    except (KeyError, TypeError, ValueError):
        return None


PREREGISTRATION = REPO / "results" / "preregistration.yaml"


def declared_budgets(path: Path = PREREGISTRATION) -> dict[str, float]:
    """Epochs per task of the headline distillation runs, as results/preregistration.yaml declares them."""
    if not Path(path).is_file():
        return {}
    import yaml

    budgets = (yaml.safe_load(Path(path).read_text()) or {}).get("budgets") or {}
    return {str(task): float(epochs) for task, epochs in budgets.items()}


def refusal(rec: dict, experiments: Iterable[str] = RESULTS_EXPERIMENTS,
            budgets: dict[str, float] | None = None) -> str | None:
    """Why ``rec`` cannot be a results run (None: it can): another experiment, part of the data, fewer
    epochs than the declared budget of its task (distillation runs, ``budgets``), or a step cap that
    ends training before ``trainer.epochs`` passes over the training set."""
    if rec.get("experiment") not in set(experiments):
        return f"experiment {rec.get('experiment')} is not a results experiment"
    params = rec.get("params") or {}
    for key in ("data.max_train_samples", "data.max_eval_samples"):
        if str(params.get(key, "None")) not in ("None", "null", ""):
            return f"{key}={params[key]} (part of the data)"
    if rec.get("status") != "FINISHED":  # a pruned trial: counted for its study, its budget is the pruner's
        return None
    cap, epochs = _number(params, "trainer.max_steps"), _number(params, "trainer.epochs")
    declared = (budgets or {}).get(str(rec.get("task"))) if rec.get("entry") == "distil" else None
    if declared is not None and (epochs is None or epochs < declared):
        return f"trainer.epochs={params.get('trainer.epochs')} is below the declared budget ({declared:g} epochs)"
    examples, batch = _number(params, "data.train_examples"), _number(params, "optim.batch_size")
    if cap is None or cap <= 0:
        return None
    if None in (epochs, examples, batch) or not batch:
        return f"trainer.max_steps={int(cap)} with no declared epoch budget to compare it with"
    import math

    budget = int(epochs) * math.ceil(examples / batch)
    if cap < budget:
        return f"trainer.max_steps={int(cap)} is below the declared budget ({int(epochs)} epochs = {budget} steps)"
    return None


def sort_key(rec: dict) -> tuple:
    seed = rec.get("seed")
    return (str(rec.get("task")), str(rec.get("entry")), str(rec.get("method")),
            str(rec.get("student") or ""), seed if isinstance(seed, int) else -1,
            str(rec.get("start_time") or ""), str(rec.get("run_id")))


def sort_records(records: Iterable[dict]) -> list[dict]:
    return sorted(records, key=sort_key)


# runs exported: finished ones, and Optuna trials stopped by the pruner (status KILLED), so that a
# study's trial count survives the store; every consumer keeps to FINISHED runs for scores
KEPT = ("attributes.status = 'FINISHED'",
        "attributes.status = 'KILLED' and tags.`optuna.state` = 'PRUNED'")


def load_mlflow_records(tracking_uri: str, experiments: Iterable[str] | None = None,
                        missing_ok: bool = False) -> list[dict]:
    """FINISHED LAD runs of the ``lad-*`` experiments (or of ``experiments``) as export records."""
    from lad.core.config import setup_environment
    from lad.core.errors import LADError

    setup_environment()
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        if missing_ok:
            return []
        raise LADError(f"no MLflow store at {db} (tracking uri {tracking_uri})")
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri)
    wanted = set(experiments) if experiments is not None else None
    exps = [e for e in client.search_experiments()
            if (e.name in wanted if wanted is not None else e.name.startswith(EXPERIMENT_PREFIX))]
    records = []
    for exp in exps:
        for query in KEPT:
            token = None
            while True:
                page = client.search_runs([exp.experiment_id], filter_string=query, max_results=1000,
                                          page_token=token)
                for run in page:
                    rec = make_record(run.info.run_id, exp.name, run.info.status, run.info.start_time,
                                      run.data.tags, full_params(client, run), run.data.metrics,
                                      dev_history(client, run))
                    if rec is not None:
                        records.append(rec)
                token = page.token
                if not token:
                    break
    return sort_records(records)


def dev_history(client, run) -> list[tuple[int, float]]:
    """(step, value) of the run's main dev metric at every evaluation (``dev/<main metric>``); the last
    value logged at a step wins (a resumed run may log a step twice)."""
    metric = run.data.params.get("task.main_metric")
    if not metric or run.data.tags.get("lad.entry") not in ENTRIES:
        return []
    points = {}
    for m in sorted(client.get_metric_history(run.info.run_id, f"dev/{metric}"), key=lambda m: (m.step, m.timestamp)):
        points[int(m.step)] = float(m.value)
    return sorted(points.items())


def dumps_records(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in sort_records(records))


def write_export(records: Iterable[dict], path: Path) -> int:
    text = dumps_records(records)
    write_text(path, text)
    return text.count("\n")


def read_export(path: Path) -> list[dict]:
    """Records of an export file ([] when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                from lad.core.errors import LADError

                raise LADError(f"{path}:{n}: not a JSON object ({exc.msg})") from exc
    return sort_records(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI))
    parser.add_argument("--out", type=Path, default=DEFAULT_EXPORT)
    parser.add_argument("--purpose", nargs="+", default=["results"],
                        help="lad.purpose tags to export (default: results)")
    args = parser.parse_args(argv)
    from lad.core.errors import LADError

    try:
        stored = load_mlflow_records(absolute_uri(args.tracking_uri))
        previous = read_export(args.out)
    except LADError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tagged = [r for r in stored if r["tags"].get("lad.purpose") in args.purpose]
    budgets = declared_budgets()
    refused = [(r, refusal(r, budgets=budgets)) for r in tagged]
    chosen = [r for r, why in refused if why is None]
    for r, why in refused:
        if why is not None:
            print(f"[export] skipped run {r['run_id']} ({r['experiment']}): {why}")
    records, kept = merge_records(previous, chosen)
    n = write_export(records, args.out)
    print(f"[export] {n} runs -> {args.out} ({len(chosen)} from the store, {kept} kept from the file; "
          f"{len(stored) - len(tagged)} in the store skipped: purpose not in {', '.join(args.purpose)}; "
          f"{len(tagged) - len(chosen)} skipped: not a full results run)")
    return 0


def merge_records(previous: list[dict], new: list[dict]) -> tuple[list[dict], int]:
    """``new`` plus the ``previous`` records whose run is not in ``new``; and how many were kept."""
    ids = {r["run_id"] for r in new}
    kept = [r for r in previous if r["run_id"] not in ids]
    return sort_records([*kept, *new]), len(kept)


if __name__ == "__main__":
    sys.exit(main())
